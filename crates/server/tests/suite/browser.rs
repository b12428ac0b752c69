//! The chat page end to end in a real headless Chromium: `tests/browser/e2e.mjs` (node +
//! playwright-core, installed by `scripts/install-test-deps`) drives two pages against the real
//! `titan-server` binary, which this test kills and restarts when the script asks.

use crate::common;

use common::process::ServerProcess;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Upper bound on the whole browser run (browser start included), so a hung browser fails the
/// test instead of hanging CI.
const BROWSER_RUN: Duration = Duration::from_secs(240);

/// A config for the binary: embedded store (it must survive the kill), dev tokens on, a fixed
/// port so the pages find the restarted server where they left it.
fn write_config(dir: &Path) -> PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("titan.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nworkers = 1\n[auth]\njwt_secret = \"{}\"\ndev_tokens = true\n[store]\npath = \"{}\"\n",
            common::SECRET,
            dir.join("data").display()
        ),
    )
    .unwrap();
    config
}

/// Two pages sign in with dev tokens, chat both ways, one leaves and comes back to what arrived
/// meanwhile, both ride out a kill -9 and restart of the server (a message typed while it is
/// down is delivered after), and no message is shown twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_page_in_headless_chromium() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run scripts/install-test-deps"
    );
    let data = tempfile::tempdir().unwrap();
    let config = write_config(data.path());
    let mut server = Some(ServerProcess::start(&config));
    let base = server
        .as_ref()
        .unwrap()
        .url
        .replace("ws://", "http://")
        .replace("/ws", "/");
    // Refresh the README's picture with TITAN_E2E_SCREENSHOT=docs/chat.png; by default the
    // screenshot goes to a scratch file so a test run leaves the tree clean.
    let screenshot = match std::env::var_os("TITAN_E2E_SCREENSHOT") {
        Some(path) => root.join(path),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chat.png"),
    };
    let mut child = tokio::process::Command::new("node")
        .arg("e2e.mjs")
        .arg(&base)
        .arg(&screenshot)
        .env("TITAN_E2E_CONTROL", "1")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cannot run node (scripts/install-test-deps installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();

    let mut output = String::new();
    let driving = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            output.push_str(&line);
            output.push('\n');
            match line.as_str() {
                "@@kill" => {
                    if let Some(running) = server.take() {
                        running.kill();
                    }
                    stdin.write_all(b"kill done\n").await.unwrap();
                }
                "@@start" => {
                    let config = config.clone();
                    let started =
                        tokio::task::spawn_blocking(move || ServerProcess::start(&config))
                            .await
                            .unwrap();
                    server = Some(started);
                    stdin.write_all(b"start done\n").await.unwrap();
                }
                _ => {}
            }
        }
        let mut errors = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut errors)
            .await
            .unwrap();
        (child.wait().await.unwrap(), errors)
    };
    let (status, errors) = tokio::time::timeout(BROWSER_RUN, driving)
        .await
        .expect("the browser test did not finish in time");
    assert!(
        status.success(),
        "browser test failed ({status}):\n{output}\n{errors}"
    );
    assert!(output.contains(" passed, 0 failed"), "{output}");
    assert!(
        output.contains("ok - bob shows it once (1)"),
        "the restart scenario did not run:\n{output}"
    );
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
    drop(server);
}
