//! [`ObservedStore`]: the embedded memory store with what tests of the dispatcher's store use
//! need to see or break.

use async_trait::async_trait;
use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;
use titan_protocol::{DeviceId, UserId};
use titan_store::{
    Appended, AppendedAndRead, Delivered, DeviceAcks, EmbeddedStore, Inbox, InboxLimits, LiveRead,
    NewMessage, Position, StoreError,
};
use tokio::sync::{oneshot, watch};

/// Delegates to a memory [`EmbeddedStore`], and records which positions reached a device
/// through an append's own read ([`Inbox::append_and_read`]) and how many separate reads
/// (`read_new`, `claim_pending`) are running. Built with [`ObservedStore::losing_first_read`],
/// its first `read_new` is applied but answered with an error, as when the reply of a store
/// round trip is lost. It also records the shape of each append and ack call.
pub struct ObservedStore {
    inner: EmbeddedStore,
    lose_next_read: AtomicBool,
    pub read_with_append: Mutex<HashSet<Position>>,
    pub reads_running: watch::Sender<usize>,
    /// The senders of each `append_and_read` call's batches, one list per call.
    pub appends: Mutex<Vec<Vec<UserId>>>,
    /// How many `append_and_read` calls the dispatcher has made.
    pub append_calls: watch::Sender<usize>,
    /// How many `read_new` calls (reads not made with an append) have reached the store.
    pub separate_reads: watch::Sender<usize>,
    /// Gates of the next `append_and_read` calls, in call order: such a call runs in the store
    /// at once, in order, but returns only when its gate opens (or its sender is dropped), so a
    /// test can make answers come back in another order.
    pub held_answers: Mutex<VecDeque<oneshot::Receiver<()>>>,
    /// The devices of each ack call (`ack` or `ack_many`), one list per call.
    pub acks: watch::Sender<Vec<Vec<(UserId, DeviceId)>>>,
}

impl ObservedStore {
    pub fn new() -> Self {
        Self::with_limits(InboxLimits::default())
    }

    pub fn with_limits(limits: InboxLimits) -> Self {
        Self {
            inner: EmbeddedStore::memory(limits).unwrap(),
            lose_next_read: AtomicBool::new(false),
            read_with_append: Mutex::default(),
            reads_running: watch::Sender::new(0),
            appends: Mutex::default(),
            append_calls: watch::Sender::new(0),
            separate_reads: watch::Sender::new(0),
            held_answers: Mutex::default(),
            acks: watch::Sender::new(Vec::new()),
        }
    }

    pub fn losing_first_read() -> Self {
        let store = Self::new();
        store.lose_next_read.store(true, Ordering::SeqCst);
        store
    }

    async fn separate_read<T>(&self, read: impl Future<Output = T>) -> T {
        self.reads_running.send_modify(|n| *n += 1);
        let result = read.await;
        self.reads_running.send_modify(|n| *n -= 1);
        result
    }
}

#[async_trait]
impl Inbox for ObservedStore {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
        self.inner.append(batch).await
    }

    async fn append_and_read(
        &self,
        batches: Vec<Vec<NewMessage>>,
        reads: Vec<LiveRead>,
    ) -> Result<AppendedAndRead, StoreError> {
        let senders = batches
            .iter()
            .filter_map(|batch| batch.first().map(|m| m.message.from.clone()))
            .collect();
        self.appends.lock().unwrap().push(senders);
        let gate = self.held_answers.lock().unwrap().pop_front();
        let answer = self.inner.append_and_read(batches, reads);
        self.append_calls.send_modify(|n| *n += 1);
        let (appended, read) = answer.await?;
        {
            let mut seen = self.read_with_append.lock().unwrap();
            for delivered in read.iter().flatten().flatten() {
                seen.insert(delivered.position);
            }
        }
        if let Some(gate) = gate {
            let _ = gate.await;
        }
        Ok((appended, read))
    }

    async fn read_new(
        &self,
        user: &UserId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        self.separate_reads.send_modify(|n| *n += 1);
        let result = self
            .separate_read(self.inner.read_new(user, device, limit))
            .await;
        if self.lose_next_read.swap(false, Ordering::SeqCst) {
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
        let result = self.inner.ack(user, device, positions).await;
        self.acks
            .send_modify(|calls| calls.push(vec![(user.clone(), device.clone())]));
        result
    }

    async fn ack_many(&self, acks: Vec<DeviceAcks>) -> Result<u64, StoreError> {
        let devices = acks
            .iter()
            .map(|a| (a.user.clone(), a.device.clone()))
            .collect();
        let result = self.inner.ack_many(acks).await;
        self.acks.send_modify(|calls| calls.push(devices));
        result
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

    fn runs_calls_in_order(&self) -> bool {
        self.inner.runs_calls_in_order()
    }
}
