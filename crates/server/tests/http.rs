//! Plain HTTP routes next to the WebSocket endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one HTTP/1.1 GET and returns the whole response text.
async fn get(server: &TestServer, path: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(common::WAIT, tcp.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    response
}

/// /healthz and /readyz answer 200 on a healthy single node; a plain GET / explains itself.
#[tokio::test]
async fn probes_and_plain_root() {
    let server = TestServer::start();
    let health = get(&server, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let ready = get(&server, "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 200") && ready.contains("ready"),
        "{ready}"
    );
    let root = get(&server, "/").await;
    assert!(
        root.starts_with("HTTP/1.1 200") && root.contains("WebSocket"),
        "{root}"
    );
    let missing = get(&server, "/nope").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}
