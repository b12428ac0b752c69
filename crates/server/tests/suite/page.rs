//! The chat page's HTTP side: the page and its scripts, and the dev token endpoint.

use crate::common;

use common::{TestServer, http_exchange, http_get};
use serde_json::Value;
use std::net::SocketAddr;

/// Sends one HTTP/1.1 POST and returns (status line, body).
async fn http_post(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &str,
) -> (String, String) {
    http_post_with(addr, path, "", content_type, body).await
}

/// [`http_post`] with `extra` header lines (each ending in CRLF).
async fn http_post_with(
    addr: SocketAddr,
    path: &str,
    extra: &str,
    content_type: &str,
    body: &str,
) -> (String, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{extra}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = http_exchange(addr, &request).await;
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The page, titan.js, chat.js and style.css are served with their content types; a WebSocket
/// upgrade on / still starts a session.
#[tokio::test]
async fn page_and_assets_are_served() {
    let server = TestServer::start();
    let page = http_get(server.addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("content-type: text/html; charset=utf-8"),
        "{page}"
    );
    assert!(page.contains("src=\"/chat.js\""), "{page}");
    // The page's own scripts, styles and connections only, and no framing (a browser test,
    // tests/browser, runs the page under this policy).
    let policy = page
        .lines()
        .find_map(|l| l.strip_prefix("content-security-policy: "))
        .unwrap_or_else(|| panic!("no content-security-policy: {page}"));
    for directive in [
        "default-src 'self'",
        "object-src 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(page.contains("x-frame-options: DENY"), "{page}");
    for (path, content_type, marker) in [
        ("/titan.js", "text/javascript", "export class TitanClient"),
        ("/chat.js", "text/javascript", "from \"/titan.js\""),
        ("/style.css", "text/css", "#log"),
    ] {
        let response = http_get(server.addr, path).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
        assert!(
            response.contains(&format!("content-type: {content_type}")),
            "{path}: {response}"
        );
        assert!(response.contains(marker), "{path} lacks {marker:?}");
    }
    let client = titan_client::Client::connect(&format!("ws://{}/", server.addr))
        .await
        .unwrap();
    client
        .authenticate(&server.token("alice"), None)
        .await
        .unwrap();
}

/// With auth.dev_tokens off (the default), POST /dev/token does not exist: 404 whatever the body.
#[tokio::test]
async fn dev_tokens_are_off_by_default() {
    let server = TestServer::start();
    assert!(!server.config.auth.dev_tokens);
    let (status, _) = http_post(
        server.addr,
        "/dev/token",
        "application/json",
        r#"{"user":"alice"}"#,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let (status, _) = http_post(server.addr, "/dev/token", "text/plain", "junk").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
}

/// With auth.dev_tokens on, a loopback client gets a token that authenticates as the user it
/// asked for; bad names, bad bodies and non-JSON content types get clear 4xx errors.
#[tokio::test]
async fn dev_token_authenticates_as_the_named_user() {
    let server = TestServer::start_with(|c| c.auth.dev_tokens = true);
    let (status, body) = http_post(
        server.addr,
        "/dev/token",
        "application/json",
        r#"{"user":"carol"}"#,
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status} {body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["user"], "carol");
    let token = answer["token"].as_str().unwrap();

    let carol = titan_client::Client::connect(&server.url).await.unwrap();
    carol.authenticate(token, None).await.unwrap();
    let dave = server.client("dave", None).await;
    dave.send("carol", "hi carol").await.unwrap();
    let delivery = common::next(&carol).await;
    assert_eq!(delivery.messages[0].to.as_str(), "carol");
    delivery.ack().await.unwrap();

    for (content_type, body, expected) in [
        ("application/json", r#"{"user":""}"#, "400"),
        ("application/json", r#"{"user":"a\u0001b"}"#, "400"),
        ("application/json", r#"{"name":"carol"}"#, "400"),
        ("application/json", "not json", "400"),
        ("text/plain", r#"{"user":"carol"}"#, "415"),
        ("application/x-www-form-urlencoded", "user=carol", "415"),
    ] {
        let (status, answer) = http_post(server.addr, "/dev/token", content_type, body).await;
        assert!(
            status.starts_with(&format!("HTTP/1.1 {expected}")),
            "{content_type} {body}: {status} {answer}"
        );
        let error: Value = serde_json::from_str(&answer).unwrap();
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
}

/// Behind a proxy on this machine that is listed in `server.trusted_proxies`, a request the
/// proxy forwards for a remote client is that client's, so it gets no dev token; a request the
/// proxy makes for itself (no X-Forwarded-For) or for a loopback client still does. An
/// X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
#[tokio::test]
async fn dev_tokens_see_the_client_behind_a_trusted_proxy() {
    let user = r#"{"user":"carol"}"#;
    let json = "application/json";
    let remote = "X-Forwarded-For: 203.0.113.9\r\n";
    let server = TestServer::start_with(|c| {
        c.auth.dev_tokens = true;
        c.server.trusted_proxies = vec!["127.0.0.1".into()];
    });
    let (status, _) = http_post_with(server.addr, "/dev/token", remote, json, user).await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let local = "X-Forwarded-For: 127.0.0.1\r\n";
    for extra in ["", local] {
        let (status, body) = http_post_with(server.addr, "/dev/token", extra, json, user).await;
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "{extra:?}: {status} {body}"
        );
    }

    let untrusted = TestServer::start_with(|c| {
        c.auth.dev_tokens = true;
        c.server.trusted_proxies = vec!["10.0.0.1".into()];
    });
    let (status, body) = http_post_with(untrusted.addr, "/dev/token", remote, json, user).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status} {body}");
}
