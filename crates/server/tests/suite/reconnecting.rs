//! `ReconnectingClient` against the real binary killed with SIGKILL and restarted: nothing sent
//! is lost and the application sees nothing twice.

use crate::common;

use common::WAIT;
use common::process::ServerProcess;
use std::collections::BTreeSet;
use std::time::Duration;
use titan_client::{Backoff, ConnectionState, ReconnectOptions, ReconnectingClient};

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Waits until `client` has noticed that its connection is gone.
async fn wait_offline(client: &ReconnectingClient) {
    let mut state = client.watch_state();
    within(
        "noticing the dead server",
        state.wait_for(|s| !matches!(s, ConnectionState::Online)),
    )
    .await
    .unwrap();
}

/// Sender and receiver both reconnect by themselves across a kill -9 and restart on the same
/// port; every message (ACKed before the kill, or sent while the server was down) arrives
/// exactly once at the application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_and_restart_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A port that is free now, used by both server lives (the listener sets SO_REUSEADDR).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("titan.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\n[auth]\njwt_secret = \"{}\"\n[store]\npath = \"{}\"\n",
            common::SECRET,
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws");
    let options = |device: &str| ReconnectOptions {
        device: Some(device.to_owned()),
        backoff: Backoff {
            min: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
        ..ReconnectOptions::default()
    };

    let server = ServerProcess::start(&config);
    let alice = ReconnectingClient::start(&url, common::token("alice", None), options("a"));
    let bob = ReconnectingClient::start(&url, common::token("bob", None), options("b"));
    within("alice online", alice.online()).await.unwrap();
    within("bob online", bob.online()).await.unwrap();

    let mut got = Vec::new();
    for i in 0..10 {
        within("send", alice.send("bob", &format!("m{i}")))
            .await
            .unwrap();
    }
    while got.len() < 5 {
        got.push(within("receive", bob.next_message()).await.unwrap());
    }

    server.kill();
    wait_offline(&alice).await;
    wait_offline(&bob).await;
    // Sent while the server is down: they wait in alice's outbox and go out after the restart.
    let later = async {
        for i in 10..20 {
            alice.send("bob", &format!("m{i}")).await.unwrap();
        }
    };
    let restart = async {
        tokio::task::spawn_blocking(move || ServerProcess::start(&config))
            .await
            .unwrap()
    };
    let ((), server) = within("sends across the restart", async {
        tokio::join!(later, restart)
    })
    .await;

    while got.len() < 20 {
        got.push(
            within("receive after restart", bob.next_message())
                .await
                .unwrap(),
        );
    }
    // Anything more would be a duplicate (or a phantom): give it a moment to show up.
    let extra = bob
        .next_message_timeout(Duration::from_millis(500))
        .await
        .unwrap();
    assert!(extra.is_none(), "unexpected extra message {extra:?}");

    let bodies: Vec<&str> = got.iter().map(|m| m.message.as_str()).collect();
    let distinct: BTreeSet<&str> = bodies.iter().copied().collect();
    let expected: BTreeSet<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(distinct.len(), bodies.len(), "duplicates in {bodies:?}");
    assert_eq!(
        distinct,
        expected.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    // The first ten were sent one after another before the kill: they arrive in order.
    assert_eq!(
        &bodies[..10],
        (0..10)
            .map(|i| format!("m{i}"))
            .collect::<Vec<_>>()
            .as_slice()
    );
    let ids: BTreeSet<&str> = got.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 20, "every message has its own id");
    alice.stop().await;
    bob.stop().await;
    drop(server);
}
