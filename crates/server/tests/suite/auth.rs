//! Authentication rules beyond the first `auth.jwt`: re-authentication, tokens bound to a
//! device, token expiry, and the `titan-server token` command a newcomer uses.

use crate::common;

use common::{TestServer, WAIT};
use serde_json::json;
use std::time::Duration;
use titan_client::Client;
use titan_protocol::{DeviceId, UserId};

/// A fresh token for the same user and device keeps the connection; one for another identity
/// is refused with -32602 and the connection stays who it was.
#[tokio::test]
async fn reauthentication_keeps_the_identity() {
    let server = TestServer::start();
    let c = server.client("alice", Some("phone")).await;
    c.authenticate(&server.token("alice"), Some("phone"))
        .await
        .unwrap();
    let err = c
        .authenticate(&server.token("bob"), Some("phone"))
        .await
        .unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32602), "{err:?}");
    let err = c
        .authenticate(&server.token("alice"), Some("laptop"))
        .await
        .unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32602), "{err:?}");
    // Still alice: a message to herself through the echo bot comes back to alice.
    c.send("echo", "who am I").await.unwrap();
    let d = common::next(&c).await;
    assert_eq!(d.messages[0].to.as_str(), "alice");
}

/// A token with a `device` claim binds the connection to that device: asking for another is
/// -32002, naming none uses the token's.
#[tokio::test]
async fn device_claim_binds_the_device() {
    let server = TestServer::start();
    let bound = common::token("alice", Some("phone"));
    let c = Client::connect(&server.url).await.unwrap();
    let err = c.authenticate(&bound, Some("laptop")).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32002), "{err:?}");
    c.authenticate(&bound, None).await.unwrap();
    // The same device connecting again replaces this session: so it really is "phone".
    let again = server.client("alice", Some("phone")).await;
    assert_eq!(
        tokio::time::timeout(WAIT, c.close_code()).await.unwrap(),
        Some(4002)
    );
    assert_eq!(again.echo(json!([1])).await.unwrap(), json!([1]));
}

/// When the token expires the session is closed with 4004.
#[tokio::test]
async fn expiry_closes_with_4004() {
    let server = TestServer::start();
    let auth =
        titan_session::Authenticator::hs256(common::SECRET.as_bytes(), Duration::from_secs(60))
            .unwrap();
    // One second of life: `exp` is whole seconds.
    let token = auth
        .mint(
            &UserId::new("alice").unwrap(),
            Some(&DeviceId::new("phone").unwrap()),
            Some(Duration::from_secs(1)),
        )
        .unwrap();
    let c = Client::connect(&server.url).await.unwrap();
    c.authenticate(&token, None).await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, c.close_code()).await.unwrap(),
        Some(4004)
    );
}

/// `titan-server token USER` prints a token the server (same config) accepts, with the device
/// and lifetime asked for; `check-config` prints the effective config without the secret.
#[tokio::test]
async fn token_command_mints_usable_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("titan.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\njwt_secret = \"{}\"\n[store]\npath = \"{}\"\n",
            common::SECRET,
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_titan-server"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let token = run(&["token", "alice", "--device", "tablet", "--ttl", "1h"]);
    let shown = run(&["check-config"]);
    assert!(
        !shown.contains(common::SECRET) && shown.contains("<hidden>"),
        "{shown}"
    );

    let server = TestServer::start();
    let auth =
        titan_session::Authenticator::hs256(common::SECRET.as_bytes(), Duration::from_secs(60))
            .unwrap();
    let identity = auth.verify(token.trim()).unwrap();
    assert_eq!(identity.user.as_str(), "alice");
    assert_eq!(identity.device.unwrap().as_str(), "tablet");
    let left = identity
        .expires_at
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left <= Duration::from_secs(3600) && left > Duration::from_secs(3500),
        "{left:?}"
    );
    let c = Client::connect(&server.url).await.unwrap();
    c.authenticate(token.trim(), None).await.unwrap();
    assert_eq!(c.echo(json!(["ok"])).await.unwrap(), json!(["ok"]));
}
