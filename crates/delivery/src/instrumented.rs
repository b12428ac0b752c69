//! [`InstrumentedInbox`]: any [`Inbox`] with its calls timed and its failures counted, so store
//! latency and errors are measured the same way for every backend without touching their code.

use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use titan_protocol::{DeviceId, UserId};
use titan_store::{
    Appended, AppendedAndRead, Delivered, DeviceAcks, Inbox, LiveRead, NewMessage, Position,
    StoreError,
};

use crate::metrics::Metrics;

/// Delegates every call to `inner`, recording `titan_store_operation_seconds{op}` and
/// `titan_store_errors_total{op}`. `InboxFull` is a refusal, not a fault, and is not counted as
/// an error.
pub struct InstrumentedInbox {
    inner: Arc<dyn Inbox>,
    metrics: Metrics,
}

impl InstrumentedInbox {
    pub fn new(inner: Arc<dyn Inbox>, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }

    async fn timed<T>(
        &self,
        op: &str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = call.await;
        self.metrics
            .store_seconds
            .with_label_values(&[op])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result
            && !matches!(e, StoreError::InboxFull { .. })
        {
            self.metrics.store_errors.with_label_values(&[op]).inc();
        }
        result
    }
}

#[async_trait]
impl Inbox for InstrumentedInbox {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
        self.timed("append", self.inner.append(batch)).await
    }

    async fn append_and_read(
        &self,
        batches: Vec<Vec<NewMessage>>,
        reads: Vec<LiveRead>,
    ) -> Result<AppendedAndRead, StoreError> {
        self.timed("append", self.inner.append_and_read(batches, reads))
            .await
    }

    async fn read_new(
        &self,
        user: &UserId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        self.timed("read_new", self.inner.read_new(user, device, limit))
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
        let call = self
            .inner
            .claim_pending(user, device, delivered_before, after, limit);
        self.timed("claim_pending", call).await
    }

    async fn ack(
        &self,
        user: &UserId,
        device: &DeviceId,
        positions: &[Position],
    ) -> Result<u64, StoreError> {
        self.timed("ack", self.inner.ack(user, device, positions))
            .await
    }

    async fn ack_many(&self, acks: Vec<DeviceAcks>) -> Result<u64, StoreError> {
        self.timed("ack", self.inner.ack_many(acks)).await
    }

    async fn depth(&self, user: &UserId) -> Result<u64, StoreError> {
        self.timed("depth", self.inner.depth(user)).await
    }

    async fn trim(&self) -> Result<u64, StoreError> {
        self.timed("trim", self.inner.trim()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }

    fn runs_calls_in_order(&self) -> bool {
        self.inner.runs_calls_in_order()
    }
}
