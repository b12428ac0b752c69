//! [`PushStats`]: counters of push outcomes by provider, for the metrics endpoint to export.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use titan_protocol::PushPlatform;

use crate::metrics::Metrics;

/// What became of one push job (or one attempt, for [`PushOutcome::Retried`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PushOutcome {
    /// Accepted, carrying the message.
    SentContent,
    /// Accepted, as the content-free "new messages" form.
    SentContentFree,
    /// An attempt failed temporarily and will be retried.
    Retried,
    /// Retries exhausted; the message waits for the device to connect.
    GaveUp,
    /// The service said the token is dead; it was removed.
    Unregistered,
    /// The token was unusable; it was removed.
    BadToken,
    /// The request was refused as malformed (logged with the reason).
    Invalid,
    /// Titan's credentials were refused (logged).
    AuthFailed,
    /// Not attempted: too many pushes queued.
    Dropped,
}

impl PushOutcome {
    /// Every outcome, in a stable order.
    pub const ALL: [PushOutcome; 9] = [
        PushOutcome::SentContent,
        PushOutcome::SentContentFree,
        PushOutcome::Retried,
        PushOutcome::GaveUp,
        PushOutcome::Unregistered,
        PushOutcome::BadToken,
        PushOutcome::Invalid,
        PushOutcome::AuthFailed,
        PushOutcome::Dropped,
    ];

    /// A metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            PushOutcome::SentContent => "sent_content",
            PushOutcome::SentContentFree => "sent_content_free",
            PushOutcome::Retried => "retried",
            PushOutcome::GaveUp => "gave_up",
            PushOutcome::Unregistered => "unregistered",
            PushOutcome::BadToken => "bad_token",
            PushOutcome::Invalid => "invalid",
            PushOutcome::AuthFailed => "auth_failed",
            PushOutcome::Dropped => "dropped",
        }
    }
}

const PLATFORMS: [PushPlatform; 2] = [PushPlatform::Fcm, PushPlatform::Apns];

/// Lock-free counters, one per (platform, outcome). Shared by the pusher and whoever exports.
#[derive(Default)]
pub struct PushStats {
    counts: [[AtomicU64; PushOutcome::ALL.len()]; PLATFORMS.len()],
    /// The server's registry, once [`PushStats::export_to`] named it: every outcome is then
    /// also counted in `titan_push_sends_total{provider, outcome}`.
    exported: OnceLock<Metrics>,
}

/// One counter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushCount {
    pub platform: PushPlatform,
    pub outcome: PushOutcome,
    pub count: u64,
}

impl std::fmt::Debug for PushStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushStats")
            .field("counts", &self.snapshot())
            .field("exported", &self.exported.get().is_some())
            .finish()
    }
}

impl PushStats {
    pub(crate) fn record(&self, platform: PushPlatform, outcome: PushOutcome) {
        self.counter(platform, outcome)
            .fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = self.exported.get() {
            metrics.record_push(platform.as_str(), outcome.as_str());
        }
    }

    /// Also counts every outcome from now on in `metrics` (the server's `/metrics`). A second
    /// call is ignored: one pusher reports to one registry.
    pub fn export_to(&self, metrics: Metrics) {
        let _ = self.exported.set(metrics);
    }

    fn counter(&self, platform: PushPlatform, outcome: PushOutcome) -> &AtomicU64 {
        let p = PLATFORMS.iter().position(|p| *p == platform).unwrap_or(0);
        let o = PushOutcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(0);
        &self.counts[p][o]
    }

    /// The current value of one counter.
    pub fn get(&self, platform: PushPlatform, outcome: PushOutcome) -> u64 {
        self.counter(platform, outcome).load(Ordering::Relaxed)
    }

    /// Every counter, zeros included, in a stable order.
    pub fn snapshot(&self) -> Vec<PushCount> {
        PLATFORMS
            .iter()
            .flat_map(|&platform| {
                PushOutcome::ALL.iter().map(move |&outcome| PushCount {
                    platform,
                    outcome,
                    count: self.get(platform, outcome),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters are kept per platform and outcome and all appear in the snapshot.
    #[test]
    fn counts_per_platform_and_outcome() {
        let stats = PushStats::default();
        stats.record(PushPlatform::Fcm, PushOutcome::SentContent);
        stats.record(PushPlatform::Fcm, PushOutcome::SentContent);
        stats.record(PushPlatform::Apns, PushOutcome::Unregistered);
        assert_eq!(stats.get(PushPlatform::Fcm, PushOutcome::SentContent), 2);
        assert_eq!(stats.get(PushPlatform::Apns, PushOutcome::SentContent), 0);
        let snap = stats.snapshot();
        assert_eq!(snap.len(), 18);
        assert_eq!(snap.iter().map(|c| c.count).sum::<u64>(), 3);
    }
}
