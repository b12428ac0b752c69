//! Durability of the embedded store with the real binary: an ACKed `msg.send` survives
//! `kill -9` of the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::process::ServerProcess;
use titan_client::{Client, Outgoing};

/// Every message ACKed before a SIGKILL is delivered after a restart on the same data directory.
/// Checkpoints are an hour apart, so when the server dies the messages are only in the journal:
/// the restart must replay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acked_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("titan.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[auth]\njwt_secret = \"{}\"\n[store]\npath = \"{}\"\ncheckpoint_interval = \"1h\"\n",
            common::SECRET,
            dir.path().join("data").display()
        ),
    )
    .unwrap();

    let server = ServerProcess::start(&config);
    let alice = Client::connect(&server.url).await.unwrap();
    alice
        .authenticate(&common::token("alice", None), None)
        .await
        .unwrap();
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
    let bob = Client::connect(&server.url).await.unwrap();
    bob.authenticate(&common::token("bob", None), None)
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let d = common::next(&bob).await;
        got.extend(d.messages.iter().map(|m| m.message.clone()));
        d.ack().await.unwrap();
    }
    assert_eq!(got, sent);
}
