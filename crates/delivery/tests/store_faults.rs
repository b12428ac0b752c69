//! The dispatcher when the store fails: a read that the store applied but whose answer was lost
//! (a Redis timeout or dropped connection) must not strand the messages it moved to pending.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod collector;

use actix::Actor;
use async_trait::async_trait;
use collector::{Probe, bodies, online, submit};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use titan_delivery::{Dispatcher, DispatcherConfig};
use titan_protocol::{DeviceId, UserId};
use titan_store::{
    Appended, Delivered, EmbeddedStore, Inbox, InboxLimits, NewMessage, Position, StoreError,
};

/// An inbox whose first `read_new` is applied but answered with an error, as when the reply
/// of a store round trip is lost.
struct LostReply {
    inner: EmbeddedStore,
    reads: AtomicUsize,
}

#[async_trait]
impl Inbox for LostReply {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
        self.inner.append(batch).await
    }

    async fn read_new(
        &self,
        user: &UserId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        let result = self.inner.read_new(user, device, limit).await;
        if self.reads.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(StoreError::unavailable("reply lost"));
        }
        result
    }

    async fn claim_pending(
        &self,
        user: &UserId,
        device: &DeviceId,
        delivered_before: Option<SystemTime>,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        self.inner
            .claim_pending(user, device, delivered_before, after, limit)
            .await
    }

    async fn ack(
        &self,
        user: &UserId,
        device: &DeviceId,
        positions: &[Position],
    ) -> Result<u64, StoreError> {
        self.inner.ack(user, device, positions).await
    }

    async fn depth(&self, user: &UserId) -> Result<u64, StoreError> {
        self.inner.depth(user).await
    }

    async fn trim(&self) -> Result<u64, StoreError> {
        self.inner.trim().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// Messages a failed-but-applied read moved to pending still reach the connected device, long
/// before the ack timeout (an hour here) or a reconnect could bring them.
#[actix_rt::test]
async fn lost_read_reply_does_not_strand_messages() {
    let store = LostReply {
        inner: EmbeddedStore::memory(InboxLimits::default()).unwrap(),
        reads: AtomicUsize::new(0),
    };
    let config = DispatcherConfig {
        ack_timeout: Duration::from_secs(3600),
        ..DispatcherConfig::default()
    };
    let d = Dispatcher::new(Arc::new(store), config).start();
    let mut bob = Probe::start();
    online(&d, &bob, "bob", "phone");
    submit(&d, "alice", "bob", &bodies(3)).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(bob.next_delivery().await);
    }
    let texts: Vec<_> = got.iter().map(|d| d.message.message.clone()).collect();
    assert_eq!(texts, bodies(3));
}
