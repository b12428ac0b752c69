//! Test harness: a real Titan server on 127.0.0.1:0 in its own thread (its own actix system),
//! stopped and joined when the `TestServer` is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod keys;
pub mod mock_oidc;
pub mod process;
pub mod push;
pub mod raw;
pub mod rpc;
pub mod scrape;
pub mod silent_peer;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use titan_client::Client;
use titan_protocol::{DeviceId, UserId};
use titan_server::Config;
use titan_server::config::Backend;

pub const SECRET: &str = "integration-test-secret";

/// A running server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub url: String,
    pub config: Config,
    /// Declared before `_dir`, so the server stops before its directory is removed.
    _server: titan_server::BackgroundServer,
    _dir: Option<tempfile::TempDir>,
}

/// The config tests start from: memory store, a known secret, short timeouts.
pub fn test_config(dir: &std::path::Path) -> Config {
    let mut c = Config::defaults().unwrap();
    c.store.backend = Backend::Memory;
    c.store.path = dir.to_owned();
    c.auth.jwt_secret = SECRET.to_owned();
    c.delivery.ack_timeout = Duration::from_secs(30);
    c.server.workers = 2;
    // Dropping a test server drains it: keep that short.
    c.server.drain_window = Duration::from_millis(100);
    c.log.level = "warn".into();
    c
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Starts with the test config changed by `tweak`.
    pub fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start_config(config, Some(dir))
    }

    pub fn start_config(config: Config, dir: Option<tempfile::TempDir>) -> Self {
        init_logs();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = titan_server::BackgroundServer::start(listener, config.clone()).unwrap();
        Self {
            addr: server.addr(),
            url: server.url(),
            config,
            _server: server,
            _dir: dir,
        }
    }

    /// A token for `user` signed with the test secret.
    pub fn token(&self, user: &str) -> String {
        token(user, None)
    }

    /// A connected client authenticated as (user, device).
    pub async fn client(&self, user: &str, device: Option<&str>) -> Client {
        let c = Client::connect(&self.url).await.unwrap();
        c.authenticate(&self.token(user), device).await.unwrap();
        c
    }
}

/// A token for `user` (optionally bound to `device`) signed with the test secret.
pub fn token(user: &str, device: Option<&str>) -> String {
    let auth =
        titan_session::Authenticator::hs256(SECRET.as_bytes(), Duration::from_secs(3600)).unwrap();
    let device = device.map(|d| DeviceId::new(d).unwrap());
    auth.mint(&UserId::new(user).unwrap(), device.as_ref(), None)
        .unwrap()
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("TITAN_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Upper bound for any single awaited event in a test (never a synchronisation sleep).
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` until it holds, for a condition that no event announces (a row in a store, a
/// socket's receive queue); `false` once [`WAIT`] has passed without it.
pub async fn poll_until<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// [`poll_until`], failing the test when the condition is not reached.
pub async fn wait_until<F, Fut>(check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(poll_until(check).await, "condition not reached in time");
}

/// A client of the server at `url`, authenticated as `user` (default device).
pub async fn client_at(url: &str, user: &str) -> Client {
    let client = Client::connect(url).await.unwrap();
    client.authenticate(&token(user, None), None).await.unwrap();
    client
}

/// Waits for the next delivery, failing the test after [`WAIT`].
pub async fn next(c: &Client) -> titan_client::Delivery {
    tokio::time::timeout(WAIT, c.next_delivery())
        .await
        .expect("timed out waiting for msg.recv")
        .expect("connection closed while waiting for msg.recv")
}

/// Sends one HTTP/1.1 GET to `addr` and returns the whole response text.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    http_exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Writes `request` (whole, asking for `Connection: close`) to a new connection to `addr` and
/// returns everything the server answers until it closes.
pub async fn http_exchange(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, tcp.read_to_string(&mut response))
        .await
        .expect("no HTTP response in time")
        .unwrap();
    response
}
