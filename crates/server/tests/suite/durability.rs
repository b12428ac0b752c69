//! Durability of the embedded store with the real binary: an ACKed `msg.send` survives
//! `kill -9` of the server, after a quiet stream and in the middle of a load.

use crate::common;

use common::client_at;
use common::process::{ServerProcess, embedded_config};
use titan_client::Outgoing;

/// Every message ACKed before a SIGKILL is delivered after a restart on the same data directory.
/// Checkpoints are an hour apart, so when the server dies the messages are only in the journal:
/// the restart must replay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acked_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = embedded_config(
        dir.path(),
        "workers = 1",
        "checkpoint_interval = \"1h\"",
        "",
    );

    let server = ServerProcess::start(&config);
    let alice = client_at(&server.url, "alice").await;
    let mut sent = Vec::new();
    for i in 0..50 {
        let body = format!("durable {i}");
        alice.send("bob", &body).await.unwrap();
        sent.push(body);
    }
    // A concurrent burst, so group-committed appends are covered too.
    let burst: Vec<Outgoing> = (0..20)
        .map(|i| Outgoing::new("bob", format!("burst {i}")))
        .collect();
    alice.send_many(&burst).await.unwrap();
    sent.extend(burst.into_iter().map(|o| o.message));
    // Kill right after the last ACK: no chance for a clean shutdown.
    server.kill();
    drop(alice);

    let server = ServerProcess::start(&config);
    let bob = client_at(&server.url, "bob").await;
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let d = common::next(&bob).await;
        got.extend(d.messages.iter().map(|m| m.message.clone()));
        d.ack().await.unwrap();
    }
    assert_eq!(got, sent);
}

/// SIGKILL in the middle of a load: four senders, each with batches to a recipient of its own,
/// checkpoints every 5 ms, so the kill lands among appends, journal syncs and checkpoint page
/// writes. After a restart each recipient gets every message whose ACK its sender saw, once and
/// in the order sent (a batch in flight at the kill may follow them, or not: it was never
/// ACKed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acked_message() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    const SENDERS: usize = 4;
    const BATCH: usize = 5;
    /// ACKed messages, over all senders, before the kill.
    const KILL_AFTER: usize = 2_000;

    let dir = tempfile::tempdir().unwrap();
    let config = embedded_config(
        dir.path(),
        "",
        "checkpoint_interval = \"5ms\"",
        "[limits]\nrequests_per_second = 1000000\nrequest_burst = 1000000\nmessages_per_minute = 0",
    );
    let server = ServerProcess::start(&config);

    let acked: Arc<Vec<Mutex<Vec<String>>>> =
        Arc::new((0..SENDERS).map(|_| Mutex::new(Vec::new())).collect());
    let total = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(tokio::sync::Notify::new());
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let sender = client_at(&server.url, &format!("sender{s}")).await;
        let (acked, total, enough) = (acked.clone(), total.clone(), enough.clone());
        senders.push(tokio::spawn(async move {
            // Until the server is gone (a send fails); bounded in case it never is.
            for n in 0..100_000 {
                let batch: Vec<Outgoing> = (0..BATCH)
                    .map(|k| {
                        Outgoing::new(format!("recipient{s}"), format!("{s}:{}", n * BATCH + k))
                    })
                    .collect();
                if sender.send_many(&batch).await.is_err() {
                    return;
                }
                acked[s]
                    .lock()
                    .unwrap()
                    .extend(batch.into_iter().map(|o| o.message));
                if total.fetch_add(BATCH, Ordering::SeqCst) + BATCH >= KILL_AFTER {
                    enough.notify_one();
                }
            }
        }));
    }
    tokio::time::timeout(common::WAIT, enough.notified())
        .await
        .expect("the senders never reached the kill point");
    server.kill();
    for sender in senders {
        tokio::time::timeout(common::WAIT, sender)
            .await
            .expect("a sender did not notice the server's death")
            .unwrap();
    }

    let server = ServerProcess::start(&config);
    for s in 0..SENDERS {
        let expected = acked[s].lock().unwrap().clone();
        assert!(!expected.is_empty(), "sender {s} had nothing ACKed");
        let recipient = client_at(&server.url, &format!("recipient{s}")).await;
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let d = common::next(&recipient).await;
            got.extend(d.messages.iter().map(|m| m.message.clone()));
            d.ack().await.unwrap();
        }
        assert_eq!(got[..expected.len()], expected[..], "recipient{s}");
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "recipient{s} got a message twice");
    }
}
