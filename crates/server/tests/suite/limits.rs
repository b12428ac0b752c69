//! Instance-wide limits, each with its documented answer: connections per instance (HTTP 503)
//! and per user (-32004, then close 4008), new connections per IP (HTTP 429), messages per
//! minute per user (-32004 with a retry hint), and browser origins (HTTP 403). (Frame and
//! message sizes and requests per second per connection are in bad_input.rs.)

use crate::common;

use common::scrape::{UPGRADE, request};
use common::{TestServer, WAIT};
use std::time::Duration;
use titan_client::{Client, ClientError, Outgoing};

const RATE_LIMITED: i64 = -32004;
const TOO_MANY_CONNECTIONS: u16 = 4008;

fn retry_after(response: &str) -> Option<u64> {
    response.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after")
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// Past `limits.max_connections`, an upgrade is refused with 503 and Retry-After; once a
/// connection closes there is room again.
#[tokio::test]
async fn max_connections_per_instance_is_503() {
    let server = TestServer::start_with(|c| c.limits.max_connections = 2);
    let first = Client::connect(&server.url).await.unwrap();
    let _second = Client::connect(&server.url).await.unwrap();
    let (status, response) = request(server.addr, "/ws", UPGRADE).await;
    assert_eq!(status, 503, "{response}");
    assert!(retry_after(&response).is_some(), "{response}");
    first.close().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, response) = request(server.addr, "/ws", UPGRADE).await;
        if status == 101 {
            break;
        }
        assert_eq!(status, 503, "{response}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room after a close"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Past `limits.max_connections_per_user`, the user's next authentication gets -32004, then
/// close 4008; other users still connect.
#[tokio::test]
async fn max_connections_per_user_is_4008() {
    let server = TestServer::start_with(|c| c.limits.max_connections_per_user = 2);
    let _a = server.client("alice", Some("a")).await;
    let _b = server.client("alice", Some("b")).await;
    let third = Client::connect(&server.url).await.unwrap();
    let err = third
        .authenticate(&server.token("alice"), Some("c"))
        .await
        .unwrap_err();
    assert_eq!(err.rpc_code(), Some(RATE_LIMITED), "{err:?}");
    let closed = tokio::time::timeout(WAIT, third.close_code())
        .await
        .unwrap();
    assert_eq!(closed, Some(TOO_MANY_CONNECTIONS));
    let bob = server.client("bob", None).await;
    assert_eq!(
        bob.echo(serde_json::json!([1])).await.unwrap(),
        serde_json::json!([1])
    );
}

/// New connections from one address past `limits.connections_per_ip_per_second` (with its
/// burst) are refused with 429 and Retry-After.
#[tokio::test]
async fn connection_rate_per_ip_is_429() {
    let server = TestServer::start_with(|c| {
        c.limits.connections_per_ip_per_second = 1;
        c.limits.connection_burst = 2;
    });
    // The bucket refills one per second: a few dozen immediate attempts must run dry even on a
    // slow machine.
    let response = first_429(&server, (0..40).map(|_| UPGRADE.to_vec()))
        .await
        .expect("never rate limited");
    assert!(retry_after(&response).is_some_and(|s| s >= 1), "{response}");
}

/// Behind a trusted proxy (`server.trusted_proxies`) the per-IP connection rate counts each
/// client the proxy names in X-Forwarded-For, not the proxy; from a peer that is not a trusted
/// proxy the header is ignored, so a client cannot choose the address it is counted as.
#[tokio::test]
async fn connection_rate_counts_the_client_behind_a_trusted_proxy() {
    let limited = |trusted: &str| {
        let trusted = trusted.to_owned();
        TestServer::start_with(move |c| {
            c.limits.connections_per_ip_per_second = 1;
            c.limits.connection_burst = 1;
            c.server.trusted_proxies = vec![trusted];
        })
    };
    let clients: Vec<String> = (1..=40).map(|i| format!("203.0.113.{i}")).collect();

    // Trusted: each client has its own bucket (one connection each, however slow the machine),
    // and one client's repeated attempts run dry.
    let server = limited("127.0.0.0/8");
    for client in &clients {
        let (status, response) = request(server.addr, "/ws", &upgrade_for(client)).await;
        assert_eq!(status, 101, "{client}: {response}");
    }
    let again = (0..40).map(|_| upgrade_for(&clients[0]));
    assert!(
        first_429(&server, again).await.is_some(),
        "one client behind the proxy was never rate limited"
    );

    // Not trusted: every attempt is the peer's, whatever the header names.
    let server = limited("10.0.0.1");
    let spoofed = clients.iter().map(|client| upgrade_for(client));
    assert!(
        first_429(&server, spoofed).await.is_some(),
        "a spoofed X-Forwarded-For escaped the per-IP rate"
    );
}

/// Sends one upgrade request with each set of headers in turn until one is refused with 429:
/// that response; `None` when every one was accepted (101).
async fn first_429<'a>(
    server: &TestServer,
    attempts: impl IntoIterator<Item = Vec<(&'a str, &'a str)>>,
) -> Option<String> {
    for headers in attempts {
        match request(server.addr, "/ws", &headers).await {
            (101, _) => continue,
            (429, response) => return Some(response),
            (other, response) => panic!("unexpected {other}: {response}"),
        }
    }
    None
}

/// The upgrade headers of a request a proxy forwards for `client`.
fn upgrade_for(client: &str) -> Vec<(&str, &str)> {
    let mut headers = UPGRADE.to_vec();
    headers.push(("X-Forwarded-For", client));
    headers
}

/// Past `limits.messages_per_minute`, msg.send gets -32004 with data.retry_after_ms and stores
/// nothing; the quota is the user's across connections; other users are unaffected.
#[tokio::test]
async fn messages_per_minute_per_user_is_32004() {
    let server = TestServer::start_with(|c| c.limits.messages_per_minute = 5);
    let alice = server.client("alice", Some("phone")).await;
    let batch: Vec<Outgoing> = (0..5)
        .map(|i| Outgoing::new("bob", format!("m{i}")))
        .collect();
    alice.send_many(&batch).await.unwrap();
    let refused = |err: ClientError| match err {
        ClientError::Rpc(e) => {
            assert_eq!(e.code, RATE_LIMITED, "{e:?}");
            let wait = e.data.as_ref().and_then(|d| d["retry_after_ms"].as_u64());
            assert!(wait.is_some_and(|ms| ms > 0), "{e:?}");
        }
        other => panic!("expected -32004, got {other:?}"),
    };
    refused(alice.send("bob", "one too many").await.unwrap_err());
    let laptop = server.client("alice", Some("laptop")).await;
    refused(
        laptop
            .send("bob", "from another connection")
            .await
            .unwrap_err(),
    );
    let carol = server.client("carol", None).await;
    carol.send("bob", "carol has her own quota").await.unwrap();
    let bob = server.client("bob", None).await;
    let mut got = Vec::new();
    while got.len() < 6 {
        let d = common::next(&bob).await;
        got.extend(d.messages.iter().map(|m| m.message.clone()));
        d.ack().await.unwrap();
    }
    assert!(
        !got.iter()
            .any(|m| m.contains("too many") || m.contains("another"))
    );
    let extra = bob
        .next_delivery_timeout(Duration::from_millis(200))
        .await
        .unwrap();
    assert!(extra.is_none(), "a refused message was stored");
}

/// With `server.allowed_origins` set, a browser Origin not in it is refused with 403 before the
/// upgrade; a listed origin (any letter case) and a request without Origin are accepted.
#[tokio::test]
async fn disallowed_origin_is_403() {
    let server = TestServer::start_with(|c| {
        c.server.allowed_origins = vec!["https://chat.example.com".to_owned()];
    });
    let with_origin = |origin: &'static str| {
        let mut headers = UPGRADE.to_vec();
        headers.push(("Origin", origin));
        headers
    };
    let (status, response) =
        request(server.addr, "/ws", &with_origin("https://evil.example.com")).await;
    assert_eq!(status, 403, "{response}");
    let (status, response) =
        request(server.addr, "/ws", &with_origin("https://CHAT.example.com")).await;
    assert_eq!(status, 101, "{response}");
    let (status, response) = request(server.addr, "/", UPGRADE).await;
    assert_eq!(status, 101, "{response}");
}
