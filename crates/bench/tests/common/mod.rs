//! A real Titan server started in the test process, for the load generator's tests.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::TcpListener;
use std::thread::JoinHandle;
use titan_server::Config;
use titan_server::config::Backend;

pub const SECRET: &str = "bench-test-secret";

/// A server on 127.0.0.1:0 in its own thread and actix system; stopped and joined on drop.
pub struct Server {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::load(None).unwrap();
        config.store.backend = backend;
        config.store.path = dir.path().to_owned();
        config.auth.jwt_secret = SECRET.to_owned();
        config.server.workers = 2;
        config.log.level = "warn".into();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new()
                .block_on(titan_server::run(listener, config, async {
                    let _ = stopped.await;
                }))
                .unwrap();
        });
        Self {
            url,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
