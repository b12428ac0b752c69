//! The Pusher actor: gets messages stored for offline devices to their push providers.
//!
//! The dispatcher hands it every freshly stored batch ([`PushStored`]) with the recipients'
//! devices that are online here. The handler only spawns work, so its mailbox never waits on
//! the store or a provider. Per recipient, a task reads the push bindings, skips devices with a
//! live session here or (through the bus) on another instance, and starts one job per message
//! per device. Jobs share a semaphore of `max_in_flight` permits (the HTTP requests at once),
//! retry temporary failures with exponential backoff and jitter (or the service's
//! `Retry-After`), and remove tokens the service declares dead. Redelivery never comes here:
//! only a new append does, so a message is pushed at most once per device. With
//! `push.after_unacked`, the dispatcher also sends [`PushUnacked`]: messages a connected device
//! did not ack in time, pushed to that device alone, once.

use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use titan_protocol::{DeviceId, Message, PushPlatform, UserId};
use titan_store::{Appended, Bus, DevicePush, PushRegistry};
use tokio::sync::Semaphore;
use tracing::{debug, error, warn};

use super::provider::{Notification, PushError, PushProvider, Sent};
use super::stats::{PushOutcome, PushStats};

/// Messages just stored (each for its `to`), and the recipients' devices live on this instance.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PushStored {
    pub messages: Vec<Message>,
    pub online_here: Vec<(UserId, DeviceId)>,
}

impl PushStored {
    /// What the pusher gets after an append: the messages it stored (not duplicates of earlier
    /// sends, which were pushed then), and the recipients' devices online here per `online`.
    /// `None` when nothing new was stored.
    pub fn after_append(
        messages: Vec<Message>,
        appended: &[Appended],
        recipients: &[UserId],
        online: impl Fn(&UserId) -> Vec<DeviceId>,
    ) -> Option<Self> {
        let messages: Vec<_> = messages
            .into_iter()
            .zip(appended)
            .filter(|(_, a)| matches!(a, Appended::Stored { .. }))
            .map(|(m, _)| m)
            .collect();
        if messages.is_empty() {
            return None;
        }
        let online_here = recipients
            .iter()
            .flat_map(|u| online(u).into_iter().map(move |d| (u.clone(), d)))
            .collect();
        Some(Self {
            messages,
            online_here,
        })
    }
}

/// Messages a connected device was given and did not ack within `push.after_unacked`, or had
/// not acked when its session ended: pushed to that device (if it has a token), whether or not
/// it is online (`dispatcher::unacked`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PushUnacked {
    pub user: UserId,
    pub device: DeviceId,
    pub messages: Vec<Message>,
    /// The device's session here has ended: not pushed if the device is live on another
    /// instance now (it got them there again). A device with a live session here is pushed
    /// whatever the bus says.
    pub session_ended: bool,
}

/// The longest `Retry-After` honoured; a longer one (or a bogus one) is cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Push behaviour (`[push]`).
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Carry the message in the push when it fits; `false` always sends the content-free form.
    pub include_content: bool,
    /// Most provider requests at once, all providers together.
    pub max_in_flight: usize,
    /// Most push jobs waiting or running; more are dropped (counted) rather than queued.
    pub max_queued: usize,
    /// Attempts per push, the first included.
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles per attempt up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            include_content: true,
            max_in_flight: 64,
            max_queued: 10_000,
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// What every task shares.
struct Shared {
    registry: Arc<dyn PushRegistry>,
    providers: HashMap<PushPlatform, Arc<dyn PushProvider>>,
    config: PushConfig,
    permits: Semaphore,
    queued: AtomicUsize,
    stats: Arc<PushStats>,
}

/// See the module docs.
pub struct Pusher {
    shared: Arc<Shared>,
    /// Other instances' presence, when instances share the store.
    bus: Option<Arc<dyn Bus>>,
}

impl Pusher {
    pub fn new(
        registry: Arc<dyn PushRegistry>,
        providers: Vec<Arc<dyn PushProvider>>,
        config: PushConfig,
    ) -> Self {
        let providers = providers.into_iter().map(|p| (p.platform(), p)).collect();
        Self {
            bus: None,
            shared: Arc::new(Shared {
                registry,
                providers,
                permits: Semaphore::new(config.max_in_flight.max(1)),
                queued: AtomicUsize::new(0),
                stats: Arc::new(PushStats::default()),
                config,
            }),
        }
    }

    /// Asks the bus whether a device is live on another instance before pushing to it.
    pub fn with_bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// The outcome counters, for metrics.
    pub fn stats(&self) -> Arc<PushStats> {
        self.shared.stats.clone()
    }
}

impl Actor for Pusher {
    type Context = Context<Self>;
}

impl Handler<PushStored> for Pusher {
    type Result = ();

    fn handle(&mut self, msg: PushStored, _: &mut Context<Self>) {
        let mut per_user: HashMap<UserId, Vec<Message>> = HashMap::new();
        for m in msg.messages {
            per_user.entry(m.to.clone()).or_default().push(m);
        }
        for (user, messages) in per_user {
            let online: Vec<DeviceId> = msg
                .online_here
                .iter()
                .filter(|(u, _)| *u == user)
                .map(|(_, d)| d.clone())
                .collect();
            let bus = self.bus.clone();
            actix::spawn(fan_out(self.shared.clone(), bus, user, messages, online));
        }
    }
}

impl Handler<PushUnacked> for Pusher {
    type Result = ();

    fn handle(&mut self, msg: PushUnacked, _: &mut Context<Self>) {
        actix::spawn(to_device(self.shared.clone(), self.bus.clone(), msg));
    }
}

/// Starts one job per message for the device of `msg`, if it has a push token.
async fn to_device(shared: Arc<Shared>, bus: Option<Arc<dyn Bus>>, msg: PushUnacked) {
    if let (true, Some(bus)) = (msg.session_ended, &bus)
        && let Ok(true) = bus.is_online(&msg.user, &msg.device).await
    {
        return;
    }
    let devices = match shared.registry.push_devices(&msg.user).await {
        Ok(devices) => devices,
        Err(e) => {
            warn!(user = %msg.user, error = %e, "cannot read push tokens; no push for these messages");
            return;
        }
    };
    let Some(binding) = devices.into_iter().find(|b| b.device == msg.device) else {
        return;
    };
    let Some(provider) = shared.providers.get(&binding.platform).cloned() else {
        return;
    };
    start_jobs(&shared, &provider, &msg.user, &binding, &msg.messages);
}

/// Starts one job per message per offline device of `user` that has a push token.
async fn fan_out(
    shared: Arc<Shared>,
    bus: Option<Arc<dyn Bus>>,
    user: UserId,
    messages: Vec<Message>,
    online: Vec<DeviceId>,
) {
    let devices = match shared.registry.push_devices(&user).await {
        Ok(devices) => devices,
        Err(e) => {
            warn!(%user, error = %e, "cannot read push tokens; no push for these messages");
            return;
        }
    };
    for binding in devices {
        if online.contains(&binding.device) {
            continue;
        }
        let Some(provider) = shared.providers.get(&binding.platform).cloned() else {
            debug!(%user, device = %binding.device, platform = %binding.platform, "push platform not enabled");
            continue;
        };
        if let Some(bus) = &bus {
            match bus.is_online(&user, &binding.device).await {
                Ok(true) => continue,
                Ok(false) => {}
                // Unknown: a push the app dedupes beats a message nobody hears about.
                Err(e) => debug!(error = %e, "presence unknown; pushing anyway"),
            }
        }
        start_jobs(&shared, &provider, &user, &binding, &messages);
    }
}

/// One job per message to the device of `binding`, within `max_queued`.
fn start_jobs(
    shared: &Arc<Shared>,
    provider: &Arc<dyn PushProvider>,
    user: &UserId,
    binding: &DevicePush,
    messages: &[Message],
) {
    for message in messages {
        if shared.queued.fetch_add(1, Ordering::Relaxed) >= shared.config.max_queued {
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            shared.stats.record(binding.platform, PushOutcome::Dropped);
            warn!(%user, "push queue full; dropping a push (the message waits in the inbox)");
            continue;
        }
        let job = Job {
            user: user.clone(),
            binding: binding.clone(),
            content: shared.config.include_content.then(|| message.clone()),
        };
        actix::spawn(run(shared.clone(), provider.clone(), job));
    }
}

/// One push of one message to one device.
struct Job {
    user: UserId,
    binding: DevicePush,
    content: Option<Message>,
}

/// Sends a job, retrying temporary failures, and acts on the final outcome.
async fn run(shared: Arc<Shared>, provider: Arc<dyn PushProvider>, job: Job) {
    let platform = job.binding.platform;
    let notification = Notification {
        token: job.binding.token.clone(),
        content: job.content,
    };
    let mut attempt = 1;
    let outcome = loop {
        let result = match shared.permits.acquire().await {
            Ok(_permit) => provider.send(&notification).await,
            // The semaphore is never closed; treat it as a failure to be safe.
            Err(_) => {
                break Err(PushError::Invalid {
                    reason: "push permits closed".to_owned(),
                });
            }
        };
        match result {
            Err(PushError::Retry { after, reason }) if attempt < shared.config.max_attempts => {
                shared.stats.record(platform, PushOutcome::Retried);
                let wait = backoff(&shared.config, attempt, after);
                debug!(user = %job.user, attempt, ?wait, %reason, "push failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            other => break other,
        }
    };
    shared.queued.fetch_sub(1, Ordering::Relaxed);
    let (user, device) = (&job.user, &job.binding.device);
    let forget = |at| {
        let shared = shared.clone();
        let binding = job.binding.clone();
        let user = user.clone();
        async move {
            match shared
                .registry
                .remove_push(&user, &binding.device, platform, &binding.token, at)
                .await
            {
                Ok(removed) => debug!(%user, device = %binding.device, removed, "dead push token"),
                Err(e) => warn!(%user, error = %e, "cannot remove a dead push token"),
            }
        }
    };
    match outcome {
        Ok(Sent::Content) => shared.stats.record(platform, PushOutcome::SentContent),
        Ok(Sent::ContentFree) => shared.stats.record(platform, PushOutcome::SentContentFree),
        Err(PushError::Unregistered { at }) => {
            shared.stats.record(platform, PushOutcome::Unregistered);
            forget(at).await;
        }
        Err(PushError::BadToken { reason }) => {
            shared.stats.record(platform, PushOutcome::BadToken);
            debug!(%user, %device, %reason, "push token refused");
            forget(None).await;
        }
        Err(PushError::Retry { reason, .. }) => {
            shared.stats.record(platform, PushOutcome::GaveUp);
            warn!(%user, %device, %platform, %reason, attempts = attempt, "push given up");
        }
        Err(PushError::Invalid { reason }) => {
            shared.stats.record(platform, PushOutcome::Invalid);
            warn!(%user, %device, %platform, %reason, "push refused as invalid");
        }
        Err(PushError::Auth { reason }) => {
            shared.stats.record(platform, PushOutcome::AuthFailed);
            error!(%platform, %reason, "push credentials refused; check the [push] configuration");
        }
    }
}

/// The wait before retry number `attempt` (1-based): the service's `Retry-After` when given,
/// else `initial * 2^(attempt-1)` capped at `max_backoff`, with jitter in its upper half so
/// many devices failing together do not retry together.
fn backoff(config: &PushConfig, attempt: u32, after: Option<Duration>) -> Duration {
    if let Some(after) = after {
        return after.min(MAX_RETRY_AFTER);
    }
    let exp = config
        .initial_backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(config.max_backoff);
    let half = exp / 2;
    let jitter_ms = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
    half + Duration::from_millis(rand::random_range(0..=jitter_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Backoff doubles, stays within [d/2, d], is capped, and Retry-After wins.
    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let config = PushConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..PushConfig::default()
        };
        for (attempt, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            for _ in 0..20 {
                let d = backoff(&config, attempt, None);
                let full = Duration::from_millis(full);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
            }
        }
        assert_eq!(
            backoff(&config, 1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            backoff(&config, 1, Some(Duration::from_secs(99_999))),
            MAX_RETRY_AFTER
        );
    }
}
