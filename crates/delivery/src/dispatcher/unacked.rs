//! `push.after_unacked`, a child module of the Dispatcher: a message given to a connected device
//! that the device has not acked `after` later is pushed to that device, once.
//!
//! Why: a phone's app can hold a live WebSocket that nobody reads (iOS suspends a backgrounded
//! app with its socket open; the server learns of it only at the heartbeat timeout). A message
//! delivered then is neither acked nor pushed, since the device was online when it was stored,
//! and would wait unannounced until the app runs again. Off by default (`None`).
//!
//! The first delivery's time counts (a redelivery does not restart the delay), a message is
//! pushed at most once per device even if redelivered, and an ack cancels it. When the session
//! ends before the delay is up, its unacked messages are kept (`gone`) and pushed when it is,
//! unless the device has come back, here (its catch-up then gives them again and they are
//! tracked anew) or, per the bus, on another instance. The tick checks, so a push goes out up to one tick (at most a second) after `after`.
//! The app dedupes by message id what it gets both ways, as with any push.

use super::*;
use std::collections::BTreeMap;
use titan_protocol::{Message as StoredMessage, MessageJson};

/// Messages given and not acked, with when they were first given.
pub(super) type Unpushed = BTreeMap<Position, (Instant, MessageJson)>;

/// Records messages just given to the device, and forgets entries no longer in flight (a
/// redelivery found them acked or trimmed; a failed read restarted the catch-up).
pub(super) fn track(feed: &mut Feed, messages: &[Delivered], now: Instant) {
    for d in messages {
        if !feed.pushed.contains(&d.position) {
            feed.unpushed
                .entry(d.position)
                .or_insert_with(|| (now, d.message.clone()));
        }
    }
    let inflight = &feed.inflight;
    feed.unpushed.retain(|pos, _| inflight.contains_key(pos));
    feed.pushed.retain(|pos| inflight.contains_key(pos));
}

/// The device acked `positions`: nothing to push for them.
pub(super) fn forget(feed: &mut Feed, positions: &[Position]) {
    if feed.unpushed.is_empty() && feed.pushed.is_empty() {
        return;
    }
    for pos in positions {
        feed.unpushed.remove(pos);
        feed.pushed.remove(pos);
    }
}

/// Takes the entries of `unpushed` first given at least `after` before `now`, decoded.
fn take_due(
    unpushed: &mut Unpushed,
    now: Instant,
    after: Duration,
) -> Vec<(Position, StoredMessage)> {
    let due: Vec<Position> = unpushed
        .iter()
        .filter(|(_, (first, _))| now.saturating_duration_since(*first) >= after)
        .map(|(pos, _)| *pos)
        .collect();
    let mut messages = Vec::with_capacity(due.len());
    for pos in due {
        let Some((_, json)) = unpushed.remove(&pos) else {
            continue;
        };
        match json.decode() {
            Ok(message) => messages.push((pos, message)),
            // Stored by this server, so it decodes; a message that does not is not pushed.
            Err(e) => warn!(error = %e, "cannot decode an unacked message for push"),
        }
    }
    messages
}

impl Dispatcher {
    /// From the tick: pushes every message that has waited `push_after_unacked`, on a live
    /// session or after its session ended.
    pub(super) fn push_overdue(&mut self, now: Instant) {
        let (Some(pusher), Some(after)) = (&self.push_unacked, self.config.push_after_unacked)
        else {
            return;
        };
        for ((user, device), feed) in &mut self.feeds {
            if feed.unpushed.is_empty() {
                continue;
            }
            let due = take_due(&mut feed.unpushed, now, after);
            if due.is_empty() {
                continue;
            }
            let mut messages = Vec::with_capacity(due.len());
            for (pos, message) in due {
                feed.pushed.insert(pos);
                messages.push(message);
            }
            pusher.do_send(PushUnacked {
                user: user.clone(),
                device: device.clone(),
                messages,
                session_ended: false,
            });
        }
        self.gone.retain(|(user, device), unpushed| {
            let messages: Vec<StoredMessage> = take_due(unpushed, now, after)
                .into_iter()
                .map(|(_, m)| m)
                .collect();
            if !messages.is_empty() {
                pusher.do_send(PushUnacked {
                    user: user.clone(),
                    device: device.clone(),
                    messages,
                    session_ended: true,
                });
            }
            !unpushed.is_empty()
        });
    }

    /// A device's session ended: what it was given and had not acked (nor been pushed) waits
    /// in `gone` for its delay.
    pub(super) fn keep_unacked(&mut self, key: FeedKey, feed: Feed) {
        if self.push_unacked.is_none() || feed.unpushed.is_empty() {
            return;
        }
        self.gone.entry(key).or_default().extend(feed.unpushed);
    }

    /// The device is back: its catch-up gives its unacked messages again.
    pub(super) fn device_back(&mut self, key: &FeedKey) {
        self.gone.remove(key);
    }
}
