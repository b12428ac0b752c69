//! A real Titan server started in the test process, for the load generator's tests.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::TcpListener;
use titan_server::Config;
use titan_server::config::Backend;

pub const SECRET: &str = "bench-test-secret";

/// A server on 127.0.0.1:0 in its own thread and actix system; stopped and joined on drop.
pub struct Server {
    pub url: String,
    /// Declared before `_dir`, so the server stops before its directory is removed.
    _server: titan_server::BackgroundServer,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults().unwrap();
        config.store.backend = backend;
        config.store.path = dir.path().to_owned();
        config.auth.jwt_secret = SECRET.to_owned();
        config.server.workers = 2;
        config.log.level = "warn".into();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = titan_server::BackgroundServer::start(listener, config).unwrap();
        Self {
            url: server.url(),
            _server: server,
            _dir: dir,
        }
    }
}
