//! Plain HTTP routes next to the WebSocket endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

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
