//! `/metrics` and `/debug/vars`: the exposition parses as Prometheus text, and its figures move
//! as connections open, messages flow and authentications fail.

use crate::common;

use common::scrape::{body, request, scrape, value};
use common::{TestServer, WAIT, next};
use std::time::Duration;
use titan_client::Client;

/// Messages to send in the flow test.
const MESSAGES: usize = 5;
/// Pause between scrapes while waiting for an asynchronously recorded figure (pacing a loop
/// bounded by [`WAIT`]).
const POLL: Duration = Duration::from_millis(20);

/// With `server.metrics_listen` set, `/metrics` and `/debug/vars` are served on that address
/// only: the public listener answers 404 for them, and the metrics listener serves nothing else.
#[tokio::test]
async fn metrics_listen_moves_the_metrics_off_the_public_port() {
    // A free port, given back for the server to bind.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::start_with(|c| c.server.metrics_listen = format!("127.0.0.1:{port}"));
    // Once the public listener serves, the metrics listener (bound before it) does too.
    let (status, _) = request(server.addr, "/readyz", &[]).await;
    assert_eq!(status, 200);
    let internal: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    for path in ["/metrics", "/debug/vars"] {
        let (status, response) = request(server.addr, path, &[]).await;
        assert_eq!(status, 404, "{path} on the public port: {response}");
        let (status, response) = request(internal, path, &[]).await;
        assert_eq!(status, 200, "{path} on the metrics port: {response}");
    }
    let (_, exposition) = request(internal, "/metrics", &[]).await;
    assert!(
        exposition.contains("titan_connections_open"),
        "{exposition}"
    );
    for path in ["/ws", "/", "/healthz"] {
        let (status, _) = request(internal, path, &[]).await;
        assert_eq!(status, 404, "{path} on the metrics port");
    }
}

/// Counters and gauges follow a real message flow: connections, authenticated sessions, online
/// users, accepted / delivered / acked messages, msg.send requests, store latency, latency
/// histograms, and a refused token by reason.
#[tokio::test]
async fn figures_move_as_messages_flow() {
    let server = TestServer::start();
    let before = scrape(server.addr).await;
    assert_eq!(value(&before, "titan_messages_accepted_total", &[]), 0.0);
    assert_eq!(value(&before, "titan_connections_open", &[]), 0.0);

    let alice = server.client("alice", Some("phone")).await;
    let bob = server.client("bob", Some("phone")).await;
    for i in 0..MESSAGES {
        alice.send("bob", &format!("m{i}")).await.unwrap();
    }
    let mut got = 0;
    while got < MESSAGES {
        let d = next(&bob).await;
        got += d.messages.len();
        d.ack().await.unwrap();
    }
    let bad = Client::connect(&server.url).await.unwrap();
    let refused = bad.authenticate("not-a-jwt", None).await;
    assert!(refused.is_err());

    let n = MESSAGES as f64;
    let deadline = tokio::time::Instant::now() + WAIT;
    let after = loop {
        let s = scrape(server.addr).await;
        // Acks and the online figures are recorded by actors after the client's last call.
        if value(&s, "titan_messages_acked_total", &[]) >= n
            && value(&s, "titan_online_users", &[]) >= 2.0
        {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "acks never counted: {s:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    assert_eq!(value(&after, "titan_messages_accepted_total", &[]), n);
    assert!(value(&after, "titan_messages_delivered_total", &[]) >= n);
    assert_eq!(value(&after, "titan_messages_acked_total", &[]), n);
    assert_eq!(value(&after, "titan_connections_open", &[]), 3.0);
    assert_eq!(value(&after, "titan_connections_total", &[]), 3.0);
    assert_eq!(value(&after, "titan_sessions_authenticated", &[]), 2.0);
    assert_eq!(value(&after, "titan_online_users", &[]), 2.0);
    assert_eq!(value(&after, "titan_online_devices", &[]), 2.0);
    assert_eq!(
        value(
            &after,
            "titan_rpc_requests_total",
            &[("method", "msg.send"), ("code", "ok")]
        ),
        n
    );
    assert_eq!(
        value(
            &after,
            "titan_rpc_requests_total",
            &[("method", "auth.jwt"), ("code", "-32002")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "titan_auth_failures_total",
            &[("reason", "malformed")]
        ),
        1.0
    );
    assert!(
        value(
            &after,
            "titan_store_operation_seconds_count",
            &[("op", "append")]
        ) >= n
    );
    assert!(value(&after, "titan_accept_to_deliver_seconds_count", &[]) >= n);
    assert_eq!(value(&after, "titan_deliver_to_ack_seconds_count", &[]), n);
    assert_eq!(
        value(
            &after,
            "titan_accept_to_deliver_seconds_bucket",
            &[("le", "+Inf")]
        ),
        value(&after, "titan_accept_to_deliver_seconds_count", &[])
    );

    drop(bad);
    drop(alice);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = scrape(server.addr).await;
        if value(&s, "titan_connections_open", &[]) == 1.0
            && value(&s, "titan_online_users", &[]) == 1.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "closes never counted: {s:?}"
        );
        tokio::time::sleep(POLL).await;
    }
    drop(bob);
}

/// The embedded store's checkpoints are timed into `titan_store_checkpoint_seconds`: with a
/// 1 ms interval, messages sent one after another soon make one (the first batch after the
/// interval checkpoints). Fails if the server does not hand the store its observer.
#[tokio::test]
async fn embedded_store_checkpoints_are_timed() {
    let server = TestServer::start_with(|c| {
        c.store.backend = titan_server::config::Backend::Embedded;
        c.store.checkpoint_interval = Duration::from_millis(1);
    });
    let before = scrape(server.addr).await;
    assert_eq!(
        value(&before, "titan_store_checkpoint_seconds_count", &[]),
        0.0
    );
    let alice = server.client("alice", None).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let after = loop {
        alice.send("bob", "to be checkpointed").await.unwrap();
        let s = scrape(server.addr).await;
        if value(&s, "titan_store_checkpoint_seconds_count", &[]) >= 1.0 {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint timed: {s:?}"
        );
        // The next send must come after the interval for its batch to checkpoint.
        tokio::time::sleep(POLL).await;
    };
    assert!(value(&after, "titan_store_checkpoint_seconds_sum", &[]) > 0.0);
    assert_eq!(
        value(
            &after,
            "titan_store_checkpoint_seconds_bucket",
            &[("le", "+Inf")]
        ),
        value(&after, "titan_store_checkpoint_seconds_count", &[])
    );
}

/// Every journal sync of the embedded store is timed into `titan_store_journal_sync_seconds`,
/// before the sends it covers are answered: none before the first send, at least one once a
/// send is acknowledged. Fails if the server does not hand the store its observer.
#[tokio::test]
async fn embedded_store_journal_syncs_are_timed() {
    let server = TestServer::start_with(|c| {
        c.store.backend = titan_server::config::Backend::Embedded;
    });
    let alice = server.client("alice", None).await;
    let before = scrape(server.addr).await;
    assert_eq!(
        value(&before, "titan_store_journal_sync_seconds_count", &[]),
        0.0
    );
    alice.send("bob", "to be synced").await.unwrap();
    let after = scrape(server.addr).await;
    let count = value(&after, "titan_store_journal_sync_seconds_count", &[]);
    assert!(count >= 1.0, "no sync timed: {after:?}");
    assert!(value(&after, "titan_store_journal_sync_seconds_sum", &[]) > 0.0);
    assert_eq!(
        value(
            &after,
            "titan_store_journal_sync_seconds_bucket",
            &[("le", "+Inf")]
        ),
        count
    );
}

/// A message delivered but not acked is sent again to the device's next session, and
/// `titan_messages_redelivered_total` counts it; a server-side close is counted by its code.
#[tokio::test]
async fn redelivery_and_closes_are_counted() {
    let server = TestServer::start();
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", Some("phone")).await;
    alice.send("bob", "not acked the first time").await.unwrap();
    let first = next(&bob).await;
    // The same device connecting again replaces the first session (4002), which never acked.
    let again = server.client("bob", Some("phone")).await;
    let d = next(&again).await;
    assert_eq!(d.message_ids(), first.message_ids());
    d.ack().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = scrape(server.addr).await;
        if value(&s, "titan_messages_redelivered_total", &[]) >= 1.0
            && value(&s, "titan_connections_closed_total", &[("code", "4002")]) == 1.0
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not counted: {s:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// `/debug/vars` is one JSON object with the Prometheus figures and the old server's names
/// (`conns`, `requests`, `queue-length`, `users`).
#[tokio::test]
async fn debug_vars_has_old_names() {
    let server = TestServer::start();
    let alice = server.client("alice", None).await;
    alice.send("alice", "to myself").await.unwrap();
    let d = next(&alice).await;
    d.ack().await.unwrap();
    let (status, response) = request(server.addr, "/debug/vars", &[]).await;
    assert_eq!(status, 200, "{response}");
    let vars: serde_json::Value = serde_json::from_str(&body(&response)).unwrap();
    assert_eq!(vars["conns"], 1.0, "{vars}");
    assert!(vars["requests"].as_f64().unwrap() >= 2.0, "{vars}");
    assert!(vars["queue-length"].is_number(), "{vars}");
    assert!(vars["users"].is_number(), "{vars}");
    assert_eq!(vars["titan_messages_accepted_total"], 1.0, "{vars}");
    assert_eq!(
        vars["titan_rpc_requests_total"]["code=ok,method=msg.send"], 1.0,
        "{vars}"
    );
}

/// The Grafana dashboard in docker/ is valid JSON and every metric it queries is one Titan
/// defines (so a renamed family cannot leave an empty panel behind).
#[test]
fn dashboard_queries_existing_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../../docker/grafana/titan.json")).unwrap();
    let defined = include_str!("../../../delivery/src/metrics.rs");
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("titan_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                let family = ["_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    defined.contains(&format!("\"{family}\"")),
                    "{family} in {expr}"
                );
            }
        }
    }
}
