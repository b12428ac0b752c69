//! The behaviour every [`Inbox`] backend must show, as async checks any backend's tests run.
//!
//! Each check takes a fresh, empty inbox built with the [`InboxLimits`] it asks for
//! ([`Check::limits`]) and panics on the first difference. [`run_all`] builds one inbox per check
//! through a factory, so the embedded backend (memory and file) and a later Redis backend run
//! the very same assertions:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use titan_store::{EmbeddedStore, Inbox};
//! # async fn example() {
//! titan_store::conformance::run_all(|limits| async move {
//!     Arc::new(EmbeddedStore::memory(limits).unwrap()) as Arc<dyn Inbox>
//! })
//! .await;
//! # }
//! ```
//!
//! Checks never sleep to synchronise: when one needs time to pass (delivery times, retention),
//! it polls the clock or the store in a bounded loop and asserts on state.

// A test suite: a failed expectation is a test failure, and the panic says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod delivery;
mod inboxes;
mod push;
mod users;

pub use delivery::*;
pub use inboxes::*;
pub use push::*;
pub use users::*;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use titan_protocol::{DeviceId, Message, MessageId, UserId};

use crate::inbox::{Appended, Delivered, Inbox, InboxLimits, NewMessage, Position};

/// A boxed check run, so checks of different futures fit in one list.
pub type CheckFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One conformance check and the limits its inbox must be built with.
pub struct Check {
    pub name: &'static str,
    pub limits: InboxLimits,
    pub run: fn(Arc<dyn Inbox>) -> CheckFuture,
}

/// Every check, in a stable order.
pub fn checks() -> Vec<Check> {
    let default = InboxLimits::default();
    let small = InboxLimits {
        max_pending: 3,
        ..default
    };
    let instant_expiry = InboxLimits {
        retention: Duration::from_millis(1),
        ..default
    };
    let small_instant_expiry = InboxLimits {
        max_pending: 3,
        ..instant_expiry
    };
    macro_rules! check {
        ($name:ident, $limits:expr) => {
            Check {
                name: stringify!($name),
                limits: $limits,
                run: |inbox| Box::pin($name(inbox)),
            }
        };
    }
    vec![
        check!(ping_and_empty_cases, default),
        check!(append_then_read_new_in_order, default),
        check!(every_device_gets_every_message, default),
        check!(new_device_catches_up_on_retained, default),
        check!(
            device_first_seen_on_empty_inbox_gets_later_messages,
            default
        ),
        check!(read_new_moves_the_cursor, default),
        check!(ack_removes_from_pending, default),
        check!(ack_many_acks_each_device, default),
        check!(append_and_read_delivers_what_was_stored, default),
        check!(append_and_read_refuses_each_batch_alone, small),
        check!(ack_ignores_unknown_positions, default),
        check!(claim_pending_respects_delivery_time_and_pages, default),
        check!(client_id_makes_append_idempotent, default),
        check!(inbox_full_stores_nothing, small),
        check!(depth_counts_the_slowest_device, default),
        check!(trim_keeps_messages_within_retention, default),
        check!(trim_drops_expired_messages_keys_and_pending, instant_expiry),
        check!(trimmed_messages_free_their_room, small_instant_expiry),
        check!(concurrent_appends_are_all_stored_in_order, default),
        check!(concurrent_appends_never_exceed_max_pending, small),
    ]
}

/// Runs every check, each on a fresh inbox from `make(limits)`. Panics naming the failed check.
/// Needs a tokio runtime (checks run as tasks so a failure can be attributed).
pub async fn run_all<F, Fut>(mut make: F)
where
    F: FnMut(InboxLimits) -> Fut,
    Fut: Future<Output = Arc<dyn Inbox>>,
{
    for check in checks() {
        let inbox = make(check.limits).await;
        if let Err(e) = tokio::spawn((check.run)(inbox)).await {
            let reason = match e.try_into_panic() {
                Ok(payload) => payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "non-string panic".to_owned()),
                Err(e) => e.to_string(),
            };
            panic!("conformance check `{}` failed: {reason}", check.name);
        }
    }
}

/// A user id for tests.
pub fn user(name: &str) -> UserId {
    UserId::new(name).unwrap()
}

/// A device id for tests.
pub fn device(name: &str) -> DeviceId {
    DeviceId::new(name).unwrap()
}

/// A read of `append_and_read` for `device` of `user`, of at most `limit` messages.
pub fn live_read(user: &UserId, device: &DeviceId, limit: usize) -> crate::LiveRead {
    crate::LiveRead {
        user: user.clone(),
        device: device.clone(),
        limit,
    }
}

/// A message as the server would build it: fresh time-ordered id, acceptance time set.
pub fn message(from: &UserId, to: &UserId, text: &str) -> NewMessage {
    NewMessage {
        message: Message {
            id: MessageId::new(uuid::Uuid::now_v7().to_string()).unwrap(),
            from: from.clone(),
            to: to.clone(),
            time: "2025-01-01T00:00:00Z".to_owned(),
            message: text.to_owned(),
        },
        client_id: None,
    }
}

/// [`message`] with a client id.
pub fn message_with_client_id(from: &UserId, to: &UserId, text: &str, id: &str) -> NewMessage {
    NewMessage {
        client_id: Some(MessageId::new(id).unwrap()),
        ..message(from, to, text)
    }
}

/// Appends and returns the positions, asserting every message was stored.
pub async fn append_stored(inbox: &dyn Inbox, batch: Vec<NewMessage>) -> Vec<Position> {
    let n = batch.len();
    let out = inbox.append(batch).await.unwrap();
    assert_eq!(out.len(), n, "one result per message");
    out.into_iter()
        .map(|a| match a {
            Appended::Stored { position } => position,
            other => panic!("expected Stored, got {other:?}"),
        })
        .collect()
}

/// Positions of delivered messages, in order.
pub fn positions(delivered: &[Delivered]) -> Vec<Position> {
    delivered.iter().map(|d| d.position).collect()
}

/// Texts of delivered messages, in order.
pub fn texts(delivered: &[Delivered]) -> Vec<String> {
    delivered
        .iter()
        .map(|d| d.message.decode().unwrap().message)
        .collect()
}

/// Asserts that positions strictly increase.
pub fn assert_increasing(positions: &[Position]) {
    for pair in positions.windows(2) {
        assert!(pair[0] < pair[1], "positions out of order: {pair:?}");
    }
}

/// How far a store's delivery times may lag the wall clock. Redis stamps a delivery (XREADGROUP,
/// XCLAIM) with the time it cached for the command, and clamps any explicit later time to it;
/// that cached time can be from before the event loop's last sleep. Checks that need a cutoff
/// *before* a delivery keep this much room.
pub const STORE_CLOCK_LAG: Duration = Duration::from_millis(200);

/// Trims until `count` messages were dropped in all, polling while the clock moves past the
/// retention of the messages (bounded: 500 tries 2 ms apart), and returns how many were
/// dropped, for the caller to assert on (more than `count` is returned too).
pub async fn trim_until_dropped(inbox: &dyn Inbox, count: u64) -> u64 {
    let mut dropped = 0;
    for _ in 0..500 {
        dropped += inbox.trim().await.unwrap();
        if dropped >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    dropped
}

/// Waits until the wall clock is on a later millisecond than `t` and returns that time: a
/// `delivered_before` that every delivery made before `t` is strictly older than, and that is
/// already past (so re-delivery at "now" moves entries to or after it). Bounded.
pub async fn clock_past(t: SystemTime) -> SystemTime {
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
    for _ in 0..1000 {
        let now = SystemTime::now();
        if ms(now) > ms(t) {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the clock did not advance");
}
