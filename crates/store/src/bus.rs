//! Coordination between Titan instances that share one store: which instance holds the live
//! session of a (user, device), and waking the instance that must deliver a new message.
//!
//! The bus is only ever a hint. Messages live in the store; a lost wake-up only delays delivery
//! until the dispatcher's next periodic catch-up read, and a lost kick is repaired when the
//! replaced session's next claim or read sees it no longer owns the device. A single instance
//! needs no bus at all (its Router and Dispatcher see every session and every append).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use titan_protocol::{DeviceId, UserId};
use tokio::sync::mpsc;

use crate::error::StoreError;

/// What another instance tells this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "lowercase")]
pub enum BusEvent {
    /// New messages were stored for `user`: pump its devices' feeds.
    Wake { user: UserId },
    /// (user, device) connected on another instance: close the local session `conn` of it.
    Kick {
        user: UserId,
        device: DeviceId,
        conn: u64,
    },
    /// Every token of `user` issued before `at_ms` (ms since the Unix epoch) is revoked: record
    /// it and close the user's live sessions. Sent to every instance, the sender included.
    Revoked { user: UserId, at_ms: u64 },
    /// The bus reconnected and may have missed events (and Redis may have restarted): re-assert
    /// every local claim and re-read every feed.
    #[serde(skip)]
    Resync,
}

/// Presence and wake-ups across instances.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// This instance's id, unique per process start.
    fn instance(&self) -> &str;

    /// Records that (user, device) is live here as `conn`. If another instance held it, that
    /// instance receives [`BusEvent::Kick`] for its session (the newest session wins).
    async fn claim(&self, user: &UserId, device: &DeviceId, conn: u64) -> Result<(), StoreError>;

    /// Re-asserts the claim of `conn` after the bus may have missed events (see
    /// [`BusEvent::Resync`]): records it again when the device has no claim (Redis lost it) and
    /// returns `false`, changing nothing, when another session holds the device: a newer one,
    /// whose kick may have been lost, so the caller closes its own session.
    async fn reclaim(
        &self,
        user: &UserId,
        device: &DeviceId,
        conn: u64,
    ) -> Result<bool, StoreError>;

    /// Forgets the claim of `conn`, unless a newer session has claimed the device since.
    async fn release(&self, user: &UserId, device: &DeviceId, conn: u64) -> Result<(), StoreError>;

    /// Sends [`BusEvent::Wake`] to every other instance holding a session of these users.
    async fn wake(&self, users: &[UserId]) -> Result<(), StoreError>;

    /// True when (user, device) has a session on an instance that is alive.
    async fn is_online(&self, user: &UserId, device: &DeviceId) -> Result<bool, StoreError>;

    /// Sends `event` to every instance, this one included. Used for [`BusEvent::Revoked`].
    async fn broadcast(&self, event: &BusEvent) -> Result<(), StoreError>;

    /// The events for this instance. Given out once; later calls return `None`.
    fn take_events(&self) -> Option<mpsc::Receiver<BusEvent>>;

    /// Publishes a canary on this instance's own event channel and waits, at most `within`, for
    /// it to come back through this instance's subscription. Proves the whole pub/sub path
    /// works, which commands succeeding does not: a subscription can be dead while every other
    /// call still answers. Used by the readiness probe.
    async fn canary(&self, within: Duration) -> Result<(), StoreError>;
}
