//! The conformance suite against both backends of the embedded store.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use titan_store::{EmbeddedStore, Inbox, InboxLimits, PushRegistry, Users, conformance};

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

/// Users and revocations on the in-memory embedded store pass the users checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend_users_conform() {
    let store = EmbeddedStore::memory(InboxLimits::default()).unwrap();
    conformance::run_users(Arc::new(store) as Arc<dyn Users>).await;
}

/// Users and revocations on a durable file pass the users checks and survive a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn file_backend_users_conform_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
    conformance::run_users(Arc::new(store.clone()) as Arc<dyn Users>).await;
    let profile = titan_store::SignInProfile {
        issuer: "https://issuer.test".to_owned(),
        subject: "s-1".to_owned(),
        email: "e@example.com".to_owned(),
        name: None,
        picture: None,
    };
    let before = store.sign_in(&profile).await.unwrap().id;
    let revoked = store
        .revoked_before(&conformance::user("revoked-alice"))
        .await
        .unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path(), InboxLimits::default()).unwrap();
    let after = store.sign_in(&profile).await.unwrap();
    assert_eq!((after.id, after.created), (before, false));
    let again = store
        .revoked_before(&conformance::user("revoked-alice"))
        .await
        .unwrap();
    assert_eq!(again, revoked);
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
