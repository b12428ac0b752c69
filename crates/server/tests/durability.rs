//! Durability of the embedded store with the real binary: an ACKed `msg.send` survives
//! `kill -9` of the server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use titan_client::{Client, Outgoing};

/// A `titan-server` child process, killed (SIGKILL) and reaped on drop.
struct ServerProcess {
    child: Child,
    url: String,
}

impl ServerProcess {
    /// Starts the binary with `config` and waits for its "listening" log line.
    fn start(config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_titan-server"))
            .arg("--config")
            .arg(config)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keep draining stderr for the child's whole life so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && line.contains("listening") {
                    let addr = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .map(str::to_owned);
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        });
        let addr = rx
            .recv_timeout(common::WAIT)
            .expect("server did not log its address")
            .expect("no addr= in the listening line");
        Self {
            child,
            url: format!("ws://{addr}/ws"),
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every message ACKed before a SIGKILL is delivered after a restart on the same data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acked_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("titan.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[auth]\njwt_secret = \"{}\"\n[store]\npath = \"{}\"\n",
            common::SECRET,
            dir.path().join("data").display()
        ),
    )
    .unwrap();

    let server = ServerProcess::start(&config);
    let alice = Client::connect(&server.url).await.unwrap();
    alice.authenticate(&common::token("alice", None), None).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..50 {
        let body = format!("durable {i}");
        alice.send("bob", &body).await.unwrap();
        sent.push(body);
    }
    // A concurrent burst, so group-committed appends are covered too.
    let burst: Vec<Outgoing> = (0..20).map(|i| Outgoing::new("bob", format!("burst {i}"))).collect();
    alice.send_many(&burst).await.unwrap();
    sent.extend(burst.into_iter().map(|o| o.message));
    // Kill right after the last ACK: no chance for a clean shutdown.
    server.kill();
    drop(alice);

    let server = ServerProcess::start(&config);
    let bob = Client::connect(&server.url).await.unwrap();
    bob.authenticate(&common::token("bob", None), None).await.unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let d = common::next(&bob).await;
        got.extend(d.messages.iter().map(|m| m.message.clone()));
        d.ack().await.unwrap();
    }
    assert_eq!(got, sent);
}
