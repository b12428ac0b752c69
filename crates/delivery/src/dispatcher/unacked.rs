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
//! tracked anew) or, per the bus, on another instance. The tick checks, so a push goes out up
//! to one tick (at most a second) after `after`. The app dedupes by message id what it gets
//! both ways, as with any push.

use super::*;
use crate::feed::Unacked;
use std::collections::BTreeMap;
use titan_protocol::Message as StoredMessage;

/// A device's messages given and not acked, by position.
pub(super) type Pending = BTreeMap<Position, Unacked>;

/// Records messages just given to the device (a redelivery keeps the first time, and a pushed
/// message stays pushed), and forgets entries no longer in flight (a redelivery found them
/// acked or trimmed; a failed read restarted the catch-up).
pub(super) fn track(feed: &mut Feed, messages: &[Delivered], now: Instant) {
    for d in messages {
        feed.unacked.entry(d.position).or_insert_with(|| Unacked {
            first: now,
            message: Some(d.message.clone()),
        });
    }
    let inflight = &feed.inflight;
    feed.unacked.retain(|pos, _| inflight.contains_key(pos));
}

/// The device acked `positions`: nothing to push for them.
pub(super) fn forget(feed: &mut Feed, positions: &[Position]) {
    if feed.unacked.is_empty() {
        return;
    }
    for pos in positions {
        feed.unacked.remove(pos);
    }
}

/// Takes the messages of `pending` not pushed yet and first given at least `after` before
/// `now`, decoded; their entries stay, marked pushed.
fn take_due(pending: &mut Pending, now: Instant, after: Duration) -> Vec<StoredMessage> {
    let mut messages = Vec::new();
    for entry in pending.values_mut() {
        if now.saturating_duration_since(entry.first) < after {
            continue;
        }
        let Some(json) = entry.message.take() else {
            continue;
        };
        match json.decode() {
            Ok(message) => messages.push(message),
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
            if feed.unacked.is_empty() {
                continue;
            }
            let messages = take_due(&mut feed.unacked, now, after);
            if !messages.is_empty() {
                pusher.do_send(PushUnacked {
                    user: user.clone(),
                    device: device.clone(),
                    messages,
                    session_ended: false,
                });
            }
        }
        self.gone.retain(|(user, device), pending| {
            let messages = take_due(pending, now, after);
            if !messages.is_empty() {
                pusher.do_send(PushUnacked {
                    user: user.clone(),
                    device: device.clone(),
                    messages,
                    session_ended: true,
                });
            }
            pending.retain(|_, entry| entry.message.is_some());
            !pending.is_empty()
        });
    }

    /// A device's session ended: what it was given and had not acked (nor been pushed) waits
    /// in `gone` for its delay.
    pub(super) fn keep_unacked(&mut self, key: FeedKey, mut feed: Feed) {
        if self.push_unacked.is_none() {
            return;
        }
        feed.unacked.retain(|_, entry| entry.message.is_some());
        if !feed.unacked.is_empty() {
            self.gone.entry(key).or_default().extend(feed.unacked);
        }
    }

    /// The device is back: its catch-up gives its unacked messages again.
    pub(super) fn device_back(&mut self, key: &FeedKey) {
        self.gone.remove(key);
    }
}
