//! Plain HTTP routes next to the WebSocket endpoint.

use crate::common;

use common::{TestServer, http_get};

/// /healthz and /readyz answer 200 on a healthy single node; a plain GET / serves the chat page.
#[tokio::test]
async fn probes_and_plain_root() {
    let server = TestServer::start();
    let health = http_get(server.addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = http_get(server.addr, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("ready"),
        "{ready}"
    );
    let root = http_get(server.addr, "/").await;
    assert!(
        root.starts_with("HTTP/1.1 200") && root.contains("<title>Titan chat</title>"),
        "{root}"
    );
    let missing = http_get(server.addr, "/nope").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}

/// The listening socket's accept queue is `server.backlog` long, not the 128 the standard
/// library listens with, which a reconnect storm overflows (each client the kernel then drops
/// waits a second or more for TCP's retransmission). Read with `ss` (iproute2, installed by
/// scripts/install-test-deps): its Send-Q column is a listening socket's backlog.
#[tokio::test]
async fn listener_takes_the_configured_backlog() {
    // Below the kernel's cap (net.core.somaxconn), and other than 128 wherever that cap is.
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let backlog = somaxconn.min(1000) - 1;
    let server = TestServer::start_with(|c| c.server.backlog = backlog);
    // Served: `run` sets the backlog before it serves anything.
    let ready = http_get(server.addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let ss = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", server.addr.port())])
        .output()
        .expect("ss (iproute2) runs");
    assert!(ss.status.success(), "{ss:?}");
    let text = String::from_utf8_lossy(&ss.stdout);
    let queues: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2))
        .collect();
    assert_eq!(queues, [backlog.to_string()], "{text}");
}

/// A `server.metrics_listen` address that is taken stops the start, naming the failure, rather
/// than leaving a server whose metrics nobody can scrape.
#[test]
fn a_taken_metrics_address_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.server.metrics_listen = taken.local_addr().unwrap().to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = titan_server::BackgroundServer::start(listener, config).unwrap();
    let err = server.stop().expect_err("the metrics address is in use");
    assert!(err.to_string().contains("in use"), "{err}");
}

/// A server that cannot start (its store path is a file, not a directory) reports why through
/// `BackgroundServer::stop` instead of vanishing with its thread.
#[test]
fn background_server_reports_a_failed_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.store.backend = titan_server::config::Backend::Embedded;
    config.store.path = dir.path().join("not-a-directory");
    std::fs::write(&config.store.path, b"x").unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = titan_server::BackgroundServer::start(listener, config).unwrap();
    let err = server
        .stop()
        .expect_err("the store cannot open under a file");
    assert!(err.to_string().contains("store"), "{err}");
}
