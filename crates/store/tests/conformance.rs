//! The conformance suite against both backends of the embedded store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use titan_store::{EmbeddedStore, Inbox, InboxLimits, PushRegistry, conformance};

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

/// The embedded engine on redb's in-memory backend passes every push registry check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_backend_push_registry_conforms() {
    conformance::run_push_all(|| async {
        Arc::new(EmbeddedStore::memory(InboxLimits::default()).unwrap()) as Arc<dyn PushRegistry>
    })
    .await;
}

/// The embedded engine on a durable file passes every push registry check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_push_registry_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    conformance::run_push_all(|| {
        let path = dir
            .path()
            .join(next.fetch_add(1, Ordering::Relaxed).to_string());
        async move {
            Arc::new(EmbeddedStore::open(&path, InboxLimits::default()).unwrap())
                as Arc<dyn PushRegistry>
        }
    })
    .await;
}
