//! The chat page end to end in a real headless Chromium: `tests/browser/e2e.mjs` (node +
//! playwright-core, installed by `scripts/install-test-deps`) drives two pages against this
//! real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// Upper bound on the whole browser run (browser start included), so a hung browser fails the
/// test instead of hanging CI.
const BROWSER_RUN: Duration = Duration::from_secs(180);

/// Two pages sign in with dev tokens, chat both ways, one leaves and comes back to what arrived
/// meanwhile, and no message is shown twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_page_in_headless_chromium() {
    let server = TestServer::start_with(|c| c.auth.dev_tokens = true);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run scripts/install-test-deps"
    );
    // Refresh the README's picture with TITAN_E2E_SCREENSHOT=docs/chat.png; by default the
    // screenshot goes to a scratch file so a test run leaves the tree clean.
    let screenshot = match std::env::var_os("TITAN_E2E_SCREENSHOT") {
        Some(path) => root.join(path),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chat.png"),
    };
    let mut node = tokio::process::Command::new("node");
    node.arg("e2e.mjs")
        .arg(format!("http://{}/", server.addr))
        .arg(&screenshot)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = node
        .spawn()
        .expect("cannot run node (scripts/install-test-deps installs it)");
    let output = tokio::time::timeout(BROWSER_RUN, child.wait_with_output())
        .await
        .expect("the browser test did not finish in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    assert!(
        screenshot.is_file(),
        "no screenshot at {}",
        screenshot.display()
    );
}
