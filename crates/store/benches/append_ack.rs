//! Micro-benchmarks of the store's hot path, per message: append (durable for the embedded
//! store: one fsync per write transaction), read it for a device, ack it. On the embedded store
//! in a temporary directory and on the memory store. `cargo bench -p titan-store`.
//!
//! "append only" appends to recipients that never had a message (so no inbox grows).
//! "x16" runs 16 such cycles at once, as 16 concurrent senders would: the embedded store's group
//! commit can share one transaction (one fsync) between them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::future::join_all;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use titan_protocol::{DeviceId, Message, MessageId, UserId};
use titan_store::{EmbeddedStore, Inbox, InboxLimits, NewMessage, Position};

/// Monotonic ids so every appended message is new.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn new_message(to: &UserId) -> NewMessage {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    NewMessage {
        message: Message {
            id: MessageId::new(format!("0193a5c2-7d1e-7c3a-9b1f-{n:012}")).unwrap(),
            from: UserId::new("alice").unwrap(),
            to: to.clone(),
            time: "2026-11-29T01:02:03.456Z".to_owned(),
            message: "x".repeat(100),
        },
        client_id: None,
    }
}

/// One message through the store: append, read for the device, ack.
async fn cycle(store: &EmbeddedStore, user: &UserId, device: &DeviceId) {
    store.append(vec![new_message(user)]).await.unwrap();
    let read = store.read_new(user, device, 32).await.unwrap();
    let positions: Vec<Position> = read.iter().map(|d| d.position).collect();
    store.ack(user, device, &positions).await.unwrap();
}

fn bench_store(c: &mut Criterion, name: &str, store: EmbeddedStore) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Arc::new(store);
    let device = DeviceId::new("phone").unwrap();
    let users: Vec<UserId> = (0..16)
        .map(|i| UserId::new(format!("bob-{name}-{i}")).unwrap())
        .collect();
    c.bench_function(&format!("{name}: append+read+ack, 1 message"), |b| {
        b.iter(|| rt.block_on(cycle(&store, &users[0], &device)))
    });
    c.bench_function(&format!("{name}: append+read+ack, x16 concurrent"), |b| {
        b.iter(|| {
            rt.block_on(join_all(
                users.iter().map(|user| cycle(&store, user, &device)),
            ))
        })
    });
    // Appends alone, each to recipients that never had a message: the cost of one msg.send
    // without the delivery that follows it.
    c.bench_function(&format!("{name}: append only, 1 message"), |b| {
        b.iter(|| {
            rt.block_on(async {
                let to = UserId::new(format!("fresh-{}", NEXT.load(Ordering::Relaxed))).unwrap();
                store.append(vec![new_message(&to)]).await.unwrap();
            })
        })
    });
    c.bench_function(
        &format!("{name}: append only, 100 messages in one call"),
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    let batch = (0..100)
                        .map(|_| {
                            let n = NEXT.load(Ordering::Relaxed);
                            new_message(&UserId::new(format!("fresh-{n}")).unwrap())
                        })
                        .collect();
                    store.append(batch).await.unwrap();
                })
            })
        },
    );
}

fn limits() -> InboxLimits {
    InboxLimits {
        max_pending: u64::MAX,
        ..InboxLimits::default()
    }
}

fn embedded(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), limits()).unwrap();
    bench_store(c, "embedded", store);
}

fn memory(c: &mut Criterion) {
    bench_store(c, "memory", EmbeddedStore::memory(limits()).unwrap());
}

criterion_group! {
    name = benches;
    // Each embedded iteration is an fsync: fewer samples keep `cargo bench` short.
    config = Criterion::default().sample_size(20);
    targets = embedded, memory
}
criterion_main!(benches);
