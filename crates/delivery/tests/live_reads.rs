//! A send to a device that is online and waiting reads the device's feed in the append's own
//! store call ([`Inbox::append_and_read`]) instead of a separate `read_new` after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod collector;

use actix::Actor;
use async_trait::async_trait;
use collector::{Probe, online, submit};
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use titan_delivery::{Dispatcher, DispatcherConfig};
use titan_protocol::{DeviceId, UserId};
use titan_store::{
    Appended, AppendedAndRead, Delivered, EmbeddedStore, Inbox, InboxLimits, LiveRead, NewMessage,
    Position, StoreError,
};
use tokio::sync::watch;

/// The embedded store, remembering which positions reached a device through an append's read,
/// and counting the separate reads running.
struct Recording {
    inner: EmbeddedStore,
    read_with_append: Mutex<HashSet<Position>>,
    reads_running: watch::Sender<usize>,
}

impl Recording {
    async fn separate_read<T>(&self, read: impl Future<Output = T>) -> T {
        self.reads_running.send_modify(|n| *n += 1);
        let result = read.await;
        self.reads_running.send_modify(|n| *n -= 1);
        result
    }
}

#[async_trait]
impl Inbox for Recording {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
        self.inner.append(batch).await
    }

    async fn append_and_read(
        &self,
        batch: Vec<NewMessage>,
        reads: Vec<LiveRead>,
    ) -> Result<AppendedAndRead, StoreError> {
        let (appended, read) = self.inner.append_and_read(batch, reads).await?;
        let mut seen = self.read_with_append.lock().unwrap();
        for delivered in read.iter().flatten().flatten() {
            seen.insert(delivered.position);
        }
        Ok((appended, read))
    }

    async fn read_new(
        &self,
        user: &UserId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        self.separate_read(self.inner.read_new(user, device, limit))
            .await
    }

    async fn claim_pending(
        &self,
        user: &UserId,
        device: &DeviceId,
        delivered_before: Option<SystemTime>,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        let claim = self
            .inner
            .claim_pending(user, device, delivered_before, after, limit);
        self.separate_read(claim).await
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

/// One message at a time to a device that has acked everything and whose feed is idle: the
/// message reaches it through the append's read. Between rounds the test waits for the separate
/// reads the dispatcher may still run (the end of the connect-time catch-up, a re-check after a
/// wake-up) to end; their answer can still be on its way to the dispatcher when the next message
/// arrives, which then takes the separate path (also correct), so the check is over many rounds:
/// nearly all must be read with the append, where a dispatcher without the fused read reads
/// none of them that way.
#[actix_rt::test]
async fn a_waiting_device_is_read_with_the_append() {
    const ROUNDS: usize = 20;
    let store = Arc::new(Recording {
        inner: EmbeddedStore::memory(InboxLimits::default()).unwrap(),
        read_with_append: Mutex::default(),
        reads_running: watch::Sender::new(0),
    });
    let mut reads_running = store.reads_running.subscribe();
    let config = DispatcherConfig {
        ack_timeout: Duration::from_secs(30),
        ..DispatcherConfig::default()
    };
    let d = Dispatcher::new(store.clone(), config).start();
    let mut bob = Probe::start();
    online(&d, &bob, "bob", "phone");
    let mut fused = 0;
    for round in 0..ROUNDS {
        let body = format!("r{round}");
        submit(&d, "alice", "bob", std::slice::from_ref(&body)).await;
        let got = bob.next_delivery().await;
        assert_eq!(got.len(), 1, "round {round}");
        assert_eq!(got[0].message.message, body);
        if store
            .read_with_append
            .lock()
            .unwrap()
            .contains(&got[0].position)
        {
            fused += 1;
        }
        collector::ack(&d, &bob, "bob", "phone", vec![got[0].position]);
        let idle = reads_running.wait_for(|n| *n == 0);
        tokio::time::timeout(collector::WAIT, idle)
            .await
            .expect("separate reads never ended")
            .unwrap();
    }
    assert!(
        fused >= ROUNDS - 5,
        "only {fused} of {ROUNDS} read with the append"
    );
}
