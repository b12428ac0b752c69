//! `titan-cli` (the real binary) against a real Titan server running in this test process.

use std::process::Stdio;
use std::time::Duration;
use titan_client::Client;
use titan_protocol::UserId;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const SECRET: &str = "cli-test-secret";
/// Upper bound on any single awaited event.
const WAIT: Duration = Duration::from_secs(20);

/// A Titan server (memory store) on 127.0.0.1:0 in its own thread, stopped on drop.
struct Server {
    url: String,
    /// Declared before `_dir`, so the server stops before its directory is removed.
    _server: titan_server::BackgroundServer,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = titan_server::Config::defaults().unwrap();
        config.store.backend = titan_server::config::Backend::Memory;
        config.store.path = dir.path().to_owned();
        config.auth.jwt_secret = SECRET.to_owned();
        config.server.workers = 1;
        config.log.level = "warn".into();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = titan_server::BackgroundServer::start(listener, config).unwrap();
        Self {
            url: server.url(),
            _server: server,
            _dir: dir,
        }
    }

    async fn client(&self, user: &str) -> Client {
        let client = Client::connect(&self.url).await.unwrap();
        client.authenticate(&token(user), None).await.unwrap();
        client
    }
}

fn token(user: &str) -> String {
    let auth =
        titan_session::Authenticator::hs256(SECRET.as_bytes(), Duration::from_secs(3600)).unwrap();
    auth.mint(&UserId::new(user).unwrap(), None, None).unwrap()
}

/// `titan-cli --url URL --token T ARGS...`, with its own environment left out.
fn cli(server: &Server, user: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_titan-cli"));
    command
        .env_remove("TITAN_URL")
        .env_remove("TITAN_TOKEN")
        .env_remove("TITAN_DEVICE")
        .args(["--url", &server.url, "--token", &token(user)])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("no output line in time")
        .unwrap()
        .expect("stdout ended")
}

async fn wait_success(child: Child) -> String {
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("titan-cli did not exit in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{}: {stderr}", output.status);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `send` prints ACK and the recipient gets the message; a refused send exits non-zero with
/// the server's error on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_delivers_and_reports_errors() {
    let server = Server::start();
    let bob = server.client("bob").await;
    let out = wait_success(
        cli(&server, "alice", &["send", "bob", "hi from the cli"])
            .spawn()
            .unwrap(),
    )
    .await;
    assert_eq!(out.trim(), "ACK");
    let delivery = tokio::time::timeout(WAIT, bob.next_delivery())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.messages[0].message, "hi from the cli");
    assert_eq!(delivery.messages[0].from.as_str(), "alice");
    delivery.ack().await.unwrap();

    let mut bad = cli(&server, "alice", &["send", "bob", "x"]);
    bad.args(["--token", "not-a-jwt"]);
    let output = tokio::time::timeout(WAIT, bad.output())
        .await
        .unwrap()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("-32002") || stderr.contains("token"),
        "{stderr}"
    );
}

/// `listen` prints each message once as a JSON line, acks it (it is not redelivered to the same
/// device), and `--count` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_prints_json_lines_and_acks() {
    let server = Server::start();
    let alice = server.client("alice").await;
    alice.send("bob", "first").await.unwrap();
    let mut child = cli(
        &server,
        "bob",
        &["--device", "term", "listen", "--count", "2"],
    )
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&next_line(&mut lines).await).unwrap();
    assert_eq!(first["message"], "first");
    assert_eq!(first["from"], "alice");
    assert_eq!(first["to"], "bob");
    assert!(first["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(first["time"].as_str().is_some());
    alice.send("bob", "second").await.unwrap();
    let second: serde_json::Value = serde_json::from_str(&next_line(&mut lines).await).unwrap();
    assert_eq!(second["message"], "second");
    wait_success(child).await;

    // Both were acked: the same device, connected again, gets nothing old, only a new message.
    let bob_term = Client::connect(&server.url).await.unwrap();
    bob_term
        .authenticate(&token("bob"), Some("term"))
        .await
        .unwrap();
    alice.send("bob", "third").await.unwrap();
    let delivery = tokio::time::timeout(WAIT, bob_term.next_delivery())
        .await
        .unwrap()
        .unwrap();
    let bodies: Vec<_> = delivery
        .messages
        .iter()
        .map(|m| m.message.as_str())
        .collect();
    assert_eq!(bodies, ["third"]);
}

/// `chat`: stdin lines reach the peer in order and are confirmed; the peer's messages are printed;
/// end of input ends the chat successfully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_sends_lines_and_prints_incoming() {
    let server = Server::start();
    let alice = server.client("alice").await;
    let mut command = cli(&server, "bob", &["chat", "alice"]);
    command.stdin(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    alice.send("bob", "hello bob").await.unwrap();
    let line = next_line(&mut lines).await;
    assert!(line.ends_with("] alice: hello bob"), "{line}");

    stdin.write_all(b"hi alice\nhow are you?\n").await.unwrap();
    assert_eq!(next_line(&mut lines).await, "✓ hi alice");
    assert_eq!(next_line(&mut lines).await, "✓ how are you?");
    let mut got = Vec::new();
    while got.len() < 2 {
        let delivery = tokio::time::timeout(WAIT, alice.next_delivery())
            .await
            .unwrap()
            .unwrap();
        got.extend(
            delivery
                .messages
                .iter()
                .map(|m| (m.from.to_string(), m.message.clone())),
        );
        delivery.ack().await.unwrap();
    }
    assert_eq!(
        got,
        [
            ("bob".to_owned(), "hi alice".to_owned()),
            ("bob".to_owned(), "how are you?".to_owned())
        ]
    );
    drop(stdin);
    wait_success(child).await;
}
