//! `titan-server revoke USER` against real server processes: on the embedded store (through the
//! running server's loopback admin endpoint, or into the database while no server runs) and
//! across two instances sharing one Redis.

use crate::common;
use crate::redis_server;

use common::WAIT;
use common::keys::unix_now;
use common::process::ServerProcess;
use redis_server::{RedisServer, ServerConfig, fresh_prefix};
use serde_json::json;
use std::path::{Path, PathBuf};
use titan_client::Client;

/// The close code of a session whose tokens were revoked.
const REVOKED: u16 = 4007;

/// Writes a config file: `store` is the body of its `[store]` section.
fn write_config(dir: &Path, name: &str, store: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[auth]\njwt_secret = \"{}\"\n\
         [store]\n{store}\n[log]\nlevel = \"info\"\n",
        common::SECRET
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `titan-server revoke USER --config CONFIG`; returns its output (asserting success).
fn revoke(config: &Path, user: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_titan-server"))
        .args(["revoke", user, "--config"])
        .arg(config)
        .env_remove("TITAN_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "revoke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn connect(url: &str, token: &str, device: &str) -> Client {
    let c = Client::connect(url).await.unwrap();
    c.authenticate(token, Some(device)).await.unwrap();
    c
}

/// The message of the refusal of `token` on `url`.
async fn refusal(url: &str, token: &str) -> String {
    let c = Client::connect(url).await.unwrap();
    let err = c.authenticate(token, None).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32002), "{err:?}");
    err.to_string()
}

/// A token for `user` issued `delta` seconds from now (signed with the test secret).
fn token_issued_at(user: &str, delta: i64) -> String {
    common::keys::sign_hs256(
        common::SECRET.as_bytes(),
        &json!({"sub": user, "iat": unix_now(delta), "exp": unix_now(3600)}),
    )
}

/// Embedded store, server running: the command reaches it over the loopback admin endpoint;
/// the user's live session closes with 4007, the old token is refused, a token issued after the
/// revocation and other users' tokens still work.
#[tokio::test]
async fn revoke_on_a_running_embedded_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        "titan.toml",
        &format!("backend = \"embedded\"\npath = \"{}\"", data.display()),
    );
    let server = ServerProcess::start(&config);
    let old = common::token("alice", None);
    let alice = connect(&server.url, &old, "phone").await;
    let bob = connect(&server.url, &common::token("bob", None), "phone").await;
    let report = revoke(&config, "alice");
    assert!(report.contains("running server"), "{report}");
    assert_eq!(
        tokio::time::timeout(WAIT, alice.close_code())
            .await
            .unwrap(),
        Some(REVOKED)
    );
    assert!(refusal(&server.url, &old).await.contains("revoked"));
    connect(&server.url, &token_issued_at("alice", 2), "phone").await;
    assert_eq!(
        bob.echo(json!(["still here"])).await.unwrap(),
        json!(["still here"])
    );
}

/// Embedded store, no server running: the command writes into the database, and the server
/// refuses the old token from its next start.
#[tokio::test]
async fn revoke_while_the_embedded_server_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(
        dir.path(),
        "titan.toml",
        &format!("backend = \"embedded\"\npath = \"{}\"", data.display()),
    );
    let old = common::token("alice", None);
    let report = revoke(&config, "alice");
    assert!(report.contains("next start"), "{report}");
    let server = ServerProcess::start(&config);
    assert!(refusal(&server.url, &old).await.contains("revoked"));
    connect(&server.url, &common::token("bob", None), "phone").await;
}

/// Two instances on one Redis: one command closes the user's sessions on both and both refuse
/// the old token from then on.
#[tokio::test]
async fn revoke_across_two_instances() {
    let redis = RedisServer::start(ServerConfig::default());
    let prefix = fresh_prefix();
    let dir = tempfile::tempdir().unwrap();
    let store = |i: usize| {
        format!(
            "backend = \"redis\"\npath = \"{}\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"",
            dir.path().join(format!("data-{i}")).display(),
            redis.url()
        )
    };
    let configs = [
        write_config(dir.path(), "a.toml", &store(0)),
        write_config(dir.path(), "b.toml", &store(1)),
    ];
    let a = ServerProcess::start(&configs[0]);
    let b = ServerProcess::start(&configs[1]);
    let old = common::token("alice", None);
    let on_a = connect(&a.url, &old, "phone").await;
    let on_b = connect(&b.url, &old, "laptop").await;
    let bob = connect(&b.url, &common::token("bob", None), "phone").await;
    revoke(&configs[0], "alice");
    for c in [&on_a, &on_b] {
        assert_eq!(
            tokio::time::timeout(WAIT, c.close_code()).await.unwrap(),
            Some(REVOKED)
        );
    }
    assert!(refusal(&a.url, &old).await.contains("revoked"));
    assert!(refusal(&b.url, &old).await.contains("revoked"));
    assert_eq!(bob.echo(json!([1])).await.unwrap(), json!([1]));
    drop((a, b));
}
