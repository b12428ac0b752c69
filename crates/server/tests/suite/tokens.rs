//! Titan's token lifecycle: `auth.refresh`, public-key mode (RS256 and ES256 PEM, verify only),
//! issuer/audience checks, and the refusal of `none` and of algorithm confusion.

use crate::common;

use common::keys::{EcKey, RsaKey, sign_hs256, unix_now, unsigned};
use common::{TestServer, WAIT};
use serde_json::{Value, json};
use std::time::Duration;
use titan_client::Client;
use titan_protocol::{DeviceId, UserId};

const BAD_TOKEN: i64 = -32002;

fn claims(user: &str, extra: Value) -> Value {
    let mut c = json!({"sub": user, "iat": unix_now(0), "exp": unix_now(600)});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

async fn refused(server: &TestServer, token: &str) -> String {
    let c = Client::connect(&server.url).await.unwrap();
    let err = c.authenticate(token, None).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(BAD_TOKEN), "{err:?}");
    err.to_string()
}

/// `auth.refresh` answers a new token with a fresh expiry, and the connection follows it: it
/// outlives the expiry of the token it authenticated with.
#[tokio::test]
async fn refresh_gives_a_fresh_token_and_moves_the_expiry() {
    let server = TestServer::start_with(|c| c.auth.token_ttl = Duration::from_secs(3600));
    let auth =
        titan_session::Authenticator::hs256(common::SECRET.as_bytes(), Duration::from_secs(60))
            .unwrap();
    let short = auth
        .mint(
            &UserId::new("alice").unwrap(),
            Some(&DeviceId::new("phone").unwrap()),
            Some(Duration::from_secs(2)),
        )
        .unwrap();
    let c = Client::connect(&server.url).await.unwrap();
    let err = c.call("auth.refresh", json!({})).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32001), "refresh needs authentication");
    c.authenticate(&short, None).await.unwrap();
    let r = c.call("auth.refresh", Value::Null).await.unwrap();
    let fresh = r["token"].as_str().unwrap();
    let identity = auth.verify(fresh).unwrap();
    assert_eq!(identity.user.as_str(), "alice");
    assert_eq!(identity.device.unwrap().as_str(), "phone");
    let exp = r["expires_at"].as_i64().unwrap();
    assert!(exp >= unix_now(3590) && exp <= unix_now(3600), "{exp}");
    // The old token's expiry (2 s) passes without the 4004 close.
    let closed = tokio::time::timeout(Duration::from_secs(4), c.close_code()).await;
    assert!(closed.is_err(), "closed: {closed:?}");
    assert_eq!(c.echo(json!(["alive"])).await.unwrap(), json!(["alive"]));
}

/// RS256 public-key mode: the app backend's RS256 tokens are accepted; `none`, HS256 signed
/// with the public key (algorithm confusion), other keys and ES256 are refused; Titan cannot
/// mint, so auth.refresh is not offered.
#[tokio::test]
async fn rs256_public_key_mode() {
    let backend = RsaKey::generate("backend");
    let pem = backend.public_pem();
    let key_for_server = pem.clone();
    let server = TestServer::start_with(move |c| {
        c.auth.jwt_secret = String::new();
        c.auth.jwt_public_key = key_for_server;
    });
    let c = Client::connect(&server.url).await.unwrap();
    c.authenticate(&backend.sign(&claims("alice", json!({}))), Some("phone"))
        .await
        .unwrap();
    let err = c.call("auth.refresh", json!({})).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32601), "{err}");

    let confused = sign_hs256(pem.as_bytes(), &claims("mallory", json!({})));
    assert!(
        refused(&server, &confused)
            .await
            .contains("\"HS256\" not accepted, only RS256")
    );
    let none = unsigned(&claims("mallory", json!({})));
    assert!(
        refused(&server, &none)
            .await
            .contains("\"none\" not accepted")
    );
    let other = RsaKey::generate("backend").sign(&claims("mallory", json!({})));
    assert!(refused(&server, &other).await.contains("signature"));
    let es = EcKey::generate().sign(&claims("mallory", json!({})));
    assert!(refused(&server, &es).await.contains("ES256"));
    let expired = backend.sign(&claims("alice", json!({"exp": unix_now(-60)})));
    assert!(refused(&server, &expired).await.contains("expired"));
}

/// ES256 public-key mode (key given as a file path), with issuer and audience required.
#[tokio::test]
async fn es256_public_key_mode_with_issuer_and_audience() {
    let backend = EcKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backend.pem");
    std::fs::write(&path, backend.public_pem()).unwrap();
    let path = path.display().to_string();
    let server = TestServer::start_with(move |c| {
        c.auth.jwt_secret = String::new();
        c.auth.jwt_public_key = path;
        c.auth.issuer = "https://backend.example".to_owned();
        c.auth.audience = "titan".to_owned();
    });
    let good = json!({"iss": "https://backend.example", "aud": "titan"});
    let c = Client::connect(&server.url).await.unwrap();
    c.authenticate(&backend.sign(&claims("alice", good)), None)
        .await
        .unwrap();
    let wrong_aud = json!({"iss": "https://backend.example", "aud": "other"});
    let msg = refused(&server, &backend.sign(&claims("bob", wrong_aud))).await;
    assert!(msg.contains("audience"), "{msg}");
    let wrong_iss = json!({"iss": "https://evil.example", "aud": "titan"});
    let msg = refused(&server, &backend.sign(&claims("bob", wrong_iss))).await;
    assert!(msg.contains("issuer"), "{msg}");
    let msg = refused(&server, &backend.sign(&claims("bob", json!({})))).await;
    assert!(
        msg.contains("Malformed") || msg.contains("malformed"),
        "{msg}"
    );
    let none = unsigned(&claims(
        "bob",
        json!({"iss": "https://backend.example", "aud": "titan"}),
    ));
    assert!(
        refused(&server, &none)
            .await
            .contains("\"none\" not accepted")
    );
}

/// HS256 mode refuses RS256 tokens, and `none` tokens, whatever they claim.
#[tokio::test]
async fn hs256_mode_refuses_other_algorithms() {
    let server = TestServer::start();
    let rs = RsaKey::generate("k").sign(&claims("alice", json!({})));
    assert!(refused(&server, &rs).await.contains("only HS256"));
    assert!(
        refused(&server, &unsigned(&claims("alice", json!({}))))
            .await
            .contains("none")
    );
    let c = server.client("alice", None).await;
    assert!(tokio::time::timeout(WAIT, c.echo(json!([1]))).await.is_ok());
}

/// JWKS mode: the backend's key set is fetched by key id (also after a rotation); `none` and
/// HS256 signed with the public key are refused; an unknown key id is -32002, and -32006 while
/// the key server is down.
#[tokio::test]
async fn jwks_mode_fetches_keys_by_id() {
    use common::mock_oidc::MockOidc;
    let k1 = RsaKey::generate("k1");
    let k2 = RsaKey::generate("k2");
    let keys = MockOidc::start(&[&k1]);
    let url = format!("{}/jwks", keys.issuer);
    let server = TestServer::start_with(move |c| {
        c.auth.jwt_secret = String::new();
        c.auth.jwks_url = url;
        c.auth.jwks_min_refresh = Duration::ZERO;
        c.limits.max_auth_failures = 20;
    });
    let c = Client::connect(&server.url).await.unwrap();
    c.authenticate(&k1.sign(&claims("alice", json!({}))), Some("phone"))
        .await
        .unwrap();
    assert_eq!(keys.jwks_fetches(), 1);
    let err = c.call("auth.refresh", json!({})).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32601), "{err}");

    keys.set_keys(&[&k1, &k2]);
    let c2 = Client::connect(&server.url).await.unwrap();
    c2.authenticate(&k2.sign(&claims("bob", json!({}))), None)
        .await
        .unwrap();
    assert_eq!(keys.jwks_fetches(), 2);

    let confused = sign_hs256(k1.public_pem().as_bytes(), &claims("mallory", json!({})));
    assert!(refused(&server, &confused).await.contains("not accepted"));
    assert!(
        refused(&server, &unsigned(&claims("mallory", json!({}))))
            .await
            .contains("\"none\" not accepted")
    );
    let stranger = RsaKey::generate("k3");
    let msg = refused(&server, &stranger.sign(&claims("mallory", json!({})))).await;
    assert!(msg.contains("unknown signing key"), "{msg}");

    keys.set_down(true);
    let c3 = Client::connect(&server.url).await.unwrap();
    let err = c3
        .authenticate(&stranger.sign(&claims("carol", json!({}))), None)
        .await
        .unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32006), "{err}");
    // Cached keys keep working while the key server is down.
    c3.authenticate(&k1.sign(&claims("carol", json!({}))), None)
        .await
        .unwrap();
}
