//! `auth.google` against a loopback mock OpenID provider: sign-up, sign-in, every refusal with
//! its precise message, key rotation, and a provider that is down.

use crate::common;

use common::keys::{RsaKey, unix_now};
use common::mock_oidc::{CLIENT_ID, MockOidc};
use common::{TestServer, WAIT};
use serde_json::{Value, json};
use std::time::Duration;
use titan_client::Client;

const BAD_TOKEN: i64 = -32002;
const UNAVAILABLE: i64 = -32006;

/// A server whose `auth.google` trusts `oidc`.
fn server(oidc: &MockOidc, tweak: impl FnOnce(&mut titan_server::Config)) -> TestServer {
    let issuer = oidc.issuer.clone();
    TestServer::start_with(move |c| {
        c.auth.google.issuer = issuer;
        c.auth.google.client_ids = vec!["other-platform-id".to_owned(), CLIENT_ID.to_owned()];
        c.auth.google.http_timeout = Duration::from_secs(2);
        tweak(c);
    })
}

async fn sign_in(c: &Client, token: &str, device: Option<&str>) -> Result<Value, i64> {
    let mut params = json!({ "token": token });
    if let Some(d) = device {
        params["device"] = json!(d);
    }
    c.call("auth.google", params).await.map_err(|e| {
        e.rpc_code()
            .unwrap_or_else(|| panic!("not an rpc error: {e:?}"))
    })
}

async fn sign_in_error(c: &Client, token: &str) -> (i64, String) {
    let err = c
        .call("auth.google", json!({ "token": token }))
        .await
        .unwrap_err();
    (err.rpc_code().unwrap(), err.to_string())
}

/// A first sign-in creates a user with an opaque id (not the subject, not the email), answers
/// Titan's token and the profile, and authenticates the connection at once; the token works on
/// a new connection.
#[tokio::test]
async fn new_user_is_created_and_authenticated_at_once() {
    let key = RsaKey::generate("k1");
    let oidc = MockOidc::start(&[&key]);
    let server = server(&oidc, |_| {});
    let c = Client::connect(&server.url).await.unwrap();
    let id_token = key.sign(&oidc.claims("g-123", json!({})));
    let r = sign_in(&c, &id_token, Some("phone")).await.unwrap();
    let id = r["id"].as_str().unwrap().to_owned();
    assert!(!id.contains("g-123") && !id.contains('@'), "{id}");
    assert_eq!(r["email"], "g-123@example.com");
    assert_eq!(r["name"], "User g-123");
    assert_eq!(r["picture"], "https://pictures.example/g-123.png");
    // Authenticated without auth.jwt: a message to the echo bot comes back to this user.
    c.send("echo", "hi").await.unwrap();
    assert_eq!(common::next(&c).await.messages[0].to.as_str(), id);
    // The token is bound to the device signed in with.
    let other = Client::connect(&server.url).await.unwrap();
    let token = r["token"].as_str().unwrap();
    let err = other.authenticate(token, Some("tablet")).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(BAD_TOKEN));
    other.authenticate(token, None).await.unwrap();
}

/// A returning user (same subject) gets the same id, its refreshed profile and a fresh token,
/// and is authenticated at once (the old server forgot that for returning users).
#[tokio::test]
async fn returning_user_gets_same_id_and_fresh_token() {
    let key = RsaKey::generate("k1");
    let oidc = MockOidc::start(&[&key]);
    let server = server(&oidc, |_| {});
    let first = Client::connect(&server.url).await.unwrap();
    let r1 = sign_in(
        &first,
        &key.sign(&oidc.claims("g-7", json!({}))),
        Some("phone"),
    )
    .await
    .unwrap();
    let second = Client::connect(&server.url).await.unwrap();
    let renamed = oidc.claims(
        "g-7",
        json!({"name": "New Name", "email": "new@example.com"}),
    );
    let r2 = sign_in(&second, &key.sign(&renamed), Some("laptop"))
        .await
        .unwrap();
    assert_eq!(r1["id"], r2["id"]);
    assert_eq!(r2["name"], "New Name");
    assert_eq!(r2["email"], "new@example.com");
    assert_ne!(r1["token"], r2["token"]);
    assert_eq!(
        second.echo(json!(["authenticated"])).await.unwrap(),
        json!(["authenticated"])
    );
}

/// Expired, wrong audience, wrong issuer, unverified email, unknown key and bad signature are
/// each refused with -32002 and a message naming the problem; the connection stays open and a
/// valid token then signs in on it.
#[tokio::test]
async fn refusals_say_what_was_wrong_and_keep_the_connection() {
    let key = RsaKey::generate("k1");
    let stranger = RsaKey::generate("unpublished");
    let oidc = MockOidc::start(&[&key]);
    let server = server(&oidc, |c| {
        c.limits.max_auth_failures = 10;
        c.auth.google.jwks_min_refresh = Duration::ZERO;
    });
    let c = Client::connect(&server.url).await.unwrap();
    let impostor = RsaKey::generate("k1");
    let cases = [
        (
            key.sign(&oidc.claims("s", json!({"exp": unix_now(-3600), "iat": unix_now(-7200)}))),
            "expired",
        ),
        (
            key.sign(&oidc.claims("s", json!({"aud": "someone-else"}))),
            "another application",
        ),
        (
            key.sign(&oidc.claims("s", json!({"iss": "https://evil.example"}))),
            "another issuer",
        ),
        (
            key.sign(&oidc.claims("s", json!({"email_verified": false}))),
            "email is not verified",
        ),
        (
            stranger.sign(&oidc.claims("s", json!({}))),
            "unknown signing key",
        ),
        (impostor.sign(&oidc.claims("s", json!({}))), "bad signature"),
        ("not-a-jwt".to_owned(), "malformed"),
    ];
    for (token, expected) in &cases {
        let (code, message) = sign_in_error(&c, token).await;
        assert_eq!(code, BAD_TOKEN, "{expected}: {message}");
        assert!(message.contains(expected), "{expected}: {message}");
    }
    let r = sign_in(&c, &key.sign(&oidc.claims("s", json!({}))), None).await;
    assert!(r.is_ok(), "{r:?}");
}

/// Repeated failed sign-ins on one connection close it with 4005.
#[tokio::test]
async fn repeated_failures_close_4005() {
    let key = RsaKey::generate("k1");
    let oidc = MockOidc::start(&[&key]);
    let server = server(&oidc, |c| c.limits.max_auth_failures = 3);
    let c = Client::connect(&server.url).await.unwrap();
    let bad = key.sign(&oidc.claims("s", json!({"aud": "nope"})));
    for _ in 0..3 {
        let _ = c.call("auth.google", json!({ "token": bad })).await;
    }
    assert_eq!(
        tokio::time::timeout(WAIT, c.close_code()).await.unwrap(),
        Some(4005)
    );
}

/// After the provider rotates its keys, a token with the new `kid` makes Titan fetch the JWKS
/// again, and it is accepted.
#[tokio::test]
async fn key_rotation_fetches_the_new_key() {
    let old = RsaKey::generate("old");
    let new = RsaKey::generate("new");
    let oidc = MockOidc::start(&[&old]);
    let server = server(&oidc, |c| c.auth.google.jwks_min_refresh = Duration::ZERO);
    let c = Client::connect(&server.url).await.unwrap();
    let a = sign_in(&c, &old.sign(&oidc.claims("rot", json!({}))), None)
        .await
        .unwrap();
    assert_eq!(oidc.jwks_fetches(), 1);
    oidc.set_keys(&[&new]);
    let c2 = Client::connect(&server.url).await.unwrap();
    let b = sign_in(
        &c2,
        &new.sign(&oidc.claims("rot", json!({}))),
        Some("second"),
    )
    .await
    .unwrap();
    assert_eq!(oidc.jwks_fetches(), 2);
    assert_eq!(a["id"], b["id"]);
}

/// Unknown key ids fetch the JWKS at most once per `auth.google.jwks_min_refresh`.
#[tokio::test]
async fn unknown_keys_do_not_flood_the_provider() {
    let key = RsaKey::generate("k1");
    let oidc = MockOidc::start(&[&key]);
    let server = server(&oidc, |c| {
        c.auth.google.jwks_min_refresh = Duration::from_secs(3600);
        c.limits.max_auth_failures = 10;
    });
    let c = Client::connect(&server.url).await.unwrap();
    sign_in(&c, &key.sign(&oidc.claims("a", json!({}))), None)
        .await
        .unwrap();
    let c = Client::connect(&server.url).await.unwrap();
    for i in 0..5 {
        let stranger = RsaKey::generate(&format!("made-up-{i}"));
        let (code, message) = sign_in_error(&c, &stranger.sign(&oidc.claims("a", json!({})))).await;
        assert_eq!(code, BAD_TOKEN, "{message}");
    }
    assert_eq!(oidc.jwks_fetches(), 1);
}

/// With the provider down, sign-in fails with the temporary -32006 (not counted as a failed
/// authentication); once it is back, the same connection signs in.
#[tokio::test]
async fn provider_down_is_a_temporary_error() {
    let key = RsaKey::generate("k1");
    let oidc = MockOidc::start(&[&key]);
    let server = server(&oidc, |c| c.limits.max_auth_failures = 1);
    oidc.set_down(true);
    let c = Client::connect(&server.url).await.unwrap();
    let token = key.sign(&oidc.claims("d", json!({})));
    let (code, message) = sign_in_error(&c, &token).await;
    assert_eq!(code, UNAVAILABLE, "{message}");
    assert!(
        message.contains("Identity provider unavailable"),
        "{message}"
    );
    oidc.set_down(false);
    sign_in(&c, &token, None).await.unwrap();
}

/// Without `auth.google.client_ids`, auth.google is not offered.
#[tokio::test]
async fn disabled_without_client_ids() {
    let server = TestServer::start();
    let c = Client::connect(&server.url).await.unwrap();
    let (code, message) = sign_in_error(&c, "whatever").await;
    assert_eq!(code, -32601, "{message}");
}
