//! The conformance suite against both backends of the embedded store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use titan_store::{EmbeddedStore, Inbox, conformance};

/// The embedded engine on redb's in-memory backend passes every conformance check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend_conforms() {
    conformance::run_all(|limits| async move {
        Arc::new(EmbeddedStore::memory(limits).unwrap()) as Arc<dyn Inbox>
    })
    .await;
}

/// The embedded engine on a durable file passes every conformance check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    conformance::run_all(|limits| {
        let path = dir
            .path()
            .join(next.fetch_add(1, Ordering::Relaxed).to_string());
        async move { Arc::new(EmbeddedStore::open(&path, limits).unwrap()) as Arc<dyn Inbox> }
    })
    .await;
}
