//! Graceful drain: under traffic, every client is told to reconnect elsewhere (4006), the server
//! exits, and every message it ACKed reaches its recipient from a fresh server on the same store.

use crate::common;

use common::scrape::{UPGRADE, request};
use common::{TestServer, WAIT, test_config};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use titan_client::Client;
use titan_server::config::Backend;

/// The close code of a draining server.
const DRAINING: u16 = 4006;
const SENDERS: usize = 3;
const RECEIVERS: usize = 3;
/// Messages ACKed before the drain starts, so it happens under traffic.
const BEFORE_DRAIN: usize = 30;

fn receiver(i: usize) -> String {
    format!("receiver-{i}")
}

/// Sends to every receiver in turn until the connection ends; records what was ACKed.
async fn send_until_closed(
    client: Arc<Client>,
    me: usize,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) {
    for n in 0.. {
        let to = receiver(n % RECEIVERS);
        let body = format!("sender-{me} #{n}");
        match client.send(&to, &body).await {
            Ok(()) => acked.lock().unwrap().push((to, body)),
            Err(_) => return,
        }
    }
}

/// Takes deliveries (acking them) until the connection ends; records every body seen.
async fn receive_until_closed(
    client: Arc<Client>,
    me: String,
    seen: Arc<Mutex<HashSet<(String, String)>>>,
) {
    while let Some(d) = client.next_delivery().await {
        for m in &d.messages {
            seen.lock().unwrap().insert((me.clone(), m.message.clone()));
        }
        // Fails once the drain closed the connection: the messages then stay pending.
        let _ = d.ack().await;
    }
}

/// A drain under traffic: every client (senders, receivers, one idle unauthenticated connection)
/// gets 4006, `/readyz` is 503 and new connections are refused meanwhile, the server exits, and a
/// fresh server on the same embedded store delivers every ACKed message: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_under_traffic_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.store.backend = Backend::Embedded;
    config.server.drain_window = Duration::from_millis(1500);
    config.server.drain_timeout = Duration::from_secs(10);
    let server = TestServer::start_config(config.clone(), None);

    let acked = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..RECEIVERS {
        let c = Arc::new(server.client(&receiver(i), Some("phone")).await);
        tasks.push(tokio::spawn(receive_until_closed(
            c.clone(),
            receiver(i),
            seen.clone(),
        )));
        clients.push(c);
    }
    for i in 0..SENDERS {
        let c = Arc::new(server.client(&format!("sender-{i}"), Some("phone")).await);
        tasks.push(tokio::spawn(send_until_closed(c.clone(), i, acked.clone())));
        clients.push(c);
    }
    clients.push(Arc::new(Client::connect(&server.url).await.unwrap()));
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked.lock().unwrap().len() < BEFORE_DRAIN {
        assert!(tokio::time::Instant::now() < deadline, "no traffic");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let addr = server.addr;
    // Dropping the server resolves its shutdown future (a drain) and waits for it to exit.
    let stopped = tokio::task::spawn_blocking(move || drop(server));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, response) = request(addr, "/readyz", &[]).await;
        if status == 503 {
            assert!(response.contains("draining"), "{response}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never said draining"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, response) = request(addr, "/ws", UPGRADE).await;
    assert_eq!(status, 503, "a new connection during the drain: {response}");
    for client in &clients {
        let closed = tokio::time::timeout(WAIT, client.closed())
            .await
            .expect("not closed within the drain");
        assert_eq!(closed.map(|(code, _)| code), Some(DRAINING));
    }
    for task in tasks {
        tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    }
    tokio::time::timeout(WAIT, stopped)
        .await
        .expect("server did not exit after the drain")
        .unwrap();

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= BEFORE_DRAIN);
    // The HTTP workers of the first server let go of the store shortly after it returned.
    let deadline = tokio::time::Instant::now() + WAIT;
    while let Err(e) =
        titan_store::EmbeddedStore::open(dir.path(), titan_store::InboxLimits::default())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "store still locked: {e}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let server = TestServer::start_config(config, None);
    let mut again = Vec::new();
    for i in 0..RECEIVERS {
        again.push(server.client(&receiver(i), Some("phone")).await);
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    for (i, client) in again.iter().enumerate() {
        loop {
            let missing = acked
                .iter()
                .filter(|m| m.0 == receiver(i) && !seen.lock().unwrap().contains(*m))
                .count();
            if missing == 0 {
                break;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let d = client
                .next_delivery_timeout(left)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{missing} ACKed messages of {} lost", receiver(i)));
            for m in &d.messages {
                seen.lock()
                    .unwrap()
                    .insert((receiver(i), m.message.clone()));
            }
            d.ack().await.unwrap();
        }
    }
    drop(dir);
}
