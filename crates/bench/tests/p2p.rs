//! The load generator against a real Titan server started in this process (memory store and
//! embedded store): a short p2p run loses and duplicates nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;
use titan_bench::p2p::{self, P2pOptions, Rate};
use titan_bench::tokens::TokenSource;
use titan_server::Config;
use titan_server::config::Backend;

const SECRET: &str = "bench-test-secret";

/// A server on 127.0.0.1:0 in its own thread and actix system; stopped and joined on drop.
struct Server {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(backend: Backend) -> Self {
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

fn options(url: &str) -> P2pOptions {
    P2pOptions {
        urls: vec![url.to_owned()],
        pairs: 4,
        size: 100,
        // Well under the default per-connection request rate (500/s), so no call is refused.
        rate: Rate::PerSecond(400.0),
        window: 8,
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(500),
        drain: Duration::from_secs(20),
        server_pid: Some(std::process::id()),
        connect_concurrency: 8,
    }
}

async fn run_and_check(backend: Backend) {
    let server = Server::start(backend);
    let tokens = TokenSource::secret(SECRET).unwrap();
    let report = p2p::run(&options(&server.url), &tokens).await.unwrap();
    assert!(report.sent > 0, "{report}");
    assert!(report.send_errors.is_empty(), "{report}");
    assert_eq!(report.acked, report.sent, "{report}");
    assert_eq!(report.delivered, report.sent, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicates, 0, "{report}");
    assert_eq!(report.foreign, 0, "{report}");
    assert_eq!(
        report.end_to_end.count, report.send_to_ack.count,
        "{report}"
    );
}

/// Every message of a short p2p run on the memory store is delivered once: none lost, none doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_memory_store_delivers_everything_once() {
    run_and_check(Backend::Memory).await;
}

/// Every message of a short p2p run on the embedded (redb) store is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_embedded_store_delivers_everything_once() {
    run_and_check(Backend::Embedded).await;
}
