//! Connection-level limits and timeouts (auth timeout, idle peers, slow consumers) and bad
//! tokens: each gets its documented error or close code, and the server keeps serving others.

use crate::common;

use common::{TestServer, WAIT, next};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use titan_client::{Client, ClientOptions, Outgoing, RawEvent, RawSocket};

use common::raw::*;
use common::silent_peer::SilentPeer;

/// A connection that does not authenticate within `limits.auth_timeout` is closed with 4001;
/// one that did stays open.
#[tokio::test]
async fn auth_timeout_closes_4001() {
    let server = TestServer::start_with(|c| c.limits.auth_timeout = Duration::from_millis(300));
    let mut authed_in_time = authed(&server, "alice").await;
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    expect_close(&mut raw, 4001).await;
    assert_echo(&mut authed_in_time).await;
    assert_still_serves(&server).await;
}

/// A peer that answers nothing, not even pings, is closed with 4000 after `limits.idle_timeout`.
#[tokio::test]
async fn silent_peer_is_closed_4000() {
    let server = TestServer::start_with(|c| {
        c.limits.ping_interval = Duration::from_millis(100);
        c.limits.idle_timeout = Duration::from_millis(400);
    });
    let mut peer = SilentPeer::connect(server.addr).await;
    let auth = json!({"jsonrpc": "2.0", "method": "auth.jwt", "params": {"token": server.token("alice")}, "id": 1});
    peer.send_text(&auth.to_string()).await;
    let mut pings = 0;
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match peer
                .next_frame()
                .await
                .expect("socket ended without a close frame")
            {
                (0x1, text) => {
                    let r: Value = serde_json::from_slice(&text).unwrap();
                    assert_eq!(r, json!({"jsonrpc": "2.0", "result": "ACK", "id": 1}));
                }
                (0x9, _) => pings += 1,
                (0x8, payload) => break u16::from_be_bytes([payload[0], payload[1]]),
                (opcode, _) => panic!("unexpected opcode {opcode}"),
            }
        }
    })
    .await
    .expect("not closed within the upper bound");
    assert_eq!(close, 4000);
    assert!(pings >= 1, "the server pinged before giving up");
    assert_still_serves(&server).await;
}

/// A client that answers pings (tungstenite does so while reading) outlives several idle
/// timeouts without sending anything itself. The idle timeout is ten pings long, so that a busy
/// machine delaying a pong or two (a test run with other tests on the same cores) is not what
/// the test measures.
#[tokio::test]
async fn peer_answering_pings_is_not_idle() {
    let server = TestServer::start_with(|c| {
        c.limits.ping_interval = Duration::from_millis(100);
        c.limits.idle_timeout = Duration::from_secs(1);
    });
    let mut raw = authed(&server, "alice").await;
    let quiet = raw
        .next_event_timeout(Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(quiet, None);
    assert_echo(&mut raw).await;
}

/// A client that stops reading is closed with 4003 once its outbound queue is full (its close
/// frame comes after the backlog, once it reads again); the thousands of 10 KiB messages another
/// client sent it are all delivered to its next session, and other clients are unaffected.
#[tokio::test]
async fn slow_consumer_is_closed_4003_and_gets_redelivery() {
    const MESSAGES: usize = 2000;
    const PER_CALL: usize = 5;
    const FLOOD: usize = 2000;
    let server = TestServer::start_with(|c| {
        c.limits.outbound_queue = 100;
        c.limits.requests_per_second = 1_000_000;
        c.limits.request_burst = 1_000_000;
    });
    let mut stalled = authed(&server, "slow").await;
    let sender = server.client("fast", None).await;
    let body = "z".repeat(10 * 1024);
    for call in 0..MESSAGES / PER_CALL {
        let batch: Vec<_> = (0..PER_CALL)
            .map(|i| Outgoing::new("slow", format!("{:05} {body}", call * PER_CALL + i)))
            .collect();
        sender.send_many(&batch).await.unwrap();
    }
    // Deliveries alone never overflow the queue: at most `delivery.window` messages are in
    // flight. So the stalled client also sends big echo requests and reads none of the answers.
    // The server reads requests only as fast as it answers them, so once these ~94 MiB are
    // written (far more than the kernel buffers in both directions plus the queue can hold),
    // the queue has overflowed: nothing depends on when the test starts reading.
    let echo =
        json!({"jsonrpc": "2.0", "method": "echo", "params": ["e".repeat(48 * 1024)], "id": 0})
            .to_string();
    for _ in 0..FLOOD {
        stalled.send_text(echo.clone()).await.unwrap();
    }
    let (mut echoes, mut deliveries) = (0, 0);
    let close = loop {
        match event(&mut stalled).await {
            RawEvent::Text(text) => {
                let frame: Value = serde_json::from_str(&text).unwrap();
                match frame.get("method") {
                    Some(method) => {
                        assert_eq!(method, "msg.recv");
                        deliveries += 1;
                    }
                    None => {
                        assert_eq!(frame["id"], 0);
                        echoes += 1;
                    }
                }
            }
            RawEvent::Close(code, _) => break code,
            other => panic!("expected text or close, got {other:?}"),
        }
    };
    assert_eq!(
        close, 4003,
        "after {echoes} echo answers and {deliveries} msg.recv"
    );
    assert!(
        echoes < FLOOD,
        "the server gave up before answering everything"
    );
    assert_still_serves(&server).await;

    // The same device comes back and gets every message, in order, none lost.
    let options = ClientOptions {
        auto_ack: true,
        ..ClientOptions::default()
    };
    let again = Client::connect_with(&server.url, options).await.unwrap();
    again
        .authenticate(&server.token("slow"), None)
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < MESSAGES {
        let d = next(&again).await;
        got.extend(
            d.messages
                .iter()
                .map(|m| m.message[..5].parse::<usize>().unwrap()),
        );
    }
    assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>());
}

/// When a burst of deliveries overflows the outbound queue before the writer drains any of it,
/// the close still carries 4003 (the close frame cannot be queued behind a full queue; it once
/// went out as a code-less 1005).
#[tokio::test]
async fn queue_overflow_by_burst_closes_4003() {
    let server = TestServer::start_with(|c| {
        c.limits.outbound_queue = 4;
        c.limits.max_frame_bytes = 1 << 20;
        c.delivery.recv_batch = 1;
    });
    let mut raw = authed(&server, "slow").await;
    let sender = server.client("fast", None).await;
    let batch: Vec<_> = (0..100)
        .map(|i| Outgoing::new("slow", format!("burst {i}")))
        .collect();
    sender.send_many(&batch).await.unwrap();
    let close = loop {
        match event(&mut raw).await {
            RawEvent::Text(text) => assert!(text.contains("msg.recv"), "{text}"),
            RawEvent::Close(code, _) => break code,
            other => panic!("expected msg.recv or close, got {other:?}"),
        }
    };
    assert_eq!(close, 4003);
    assert_still_serves(&server).await;
}

/// Base64url without padding, for hand-made tokens.
fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A validly signed token whose `exp` has passed gets -32002 saying it expired.
#[tokio::test]
async fn expired_token_is_bad_token() {
    let server = TestServer::start();
    // Signed with the server's secret, expired a second ago (exp is checked without leeway).
    let past = unix_now() - 1;
    let claims = json!({"sub": "alice", "userid": "alice", "iat": past - 60, "exp": past});
    let key = jsonwebtoken::EncodingKey::from_secret(common::SECRET.as_bytes()).unwrap();
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    let error = authenticate(&mut raw, &token).await.unwrap_err();
    assert_eq!(error["code"], -32002, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("expired"),
        "{error}"
    );
    // Still unauthenticated.
    raw.send_text(r#"{"jsonrpc":"2.0","method":"echo","id":2}"#)
        .await
        .unwrap();
    assert_eq!(json_frame(&mut raw).await["error"]["code"], -32001);
    assert_still_serves(&server).await;
}

/// Unsigned (`alg: none`) tokens, and other algorithms, get -32002 naming the algorithm.
#[tokio::test]
async fn unsigned_and_foreign_algorithm_tokens_are_bad_tokens() {
    let server = TestServer::start();
    let claims = b64url(
        json!({"sub": "alice", "userid": "alice", "iat": unix_now(), "exp": unix_now() + 3600})
            .to_string()
            .as_bytes(),
    );
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    for alg in ["none", "None", "NONE", "HS512", "RS256"] {
        let header = b64url(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        for signature in ["", "c2ln"] {
            let token = format!("{header}.{claims}.{signature}");
            let error = authenticate(&mut raw, &token).await.unwrap_err();
            assert_eq!(error["code"], -32002, "{alg}: {error}");
            assert!(
                error["message"].as_str().unwrap().contains("algorithm"),
                "{alg}: {error}"
            );
            // Fresh connections, so the failures do not add up to 4005.
            raw = RawSocket::connect(&server.url).await.unwrap();
        }
    }
    raw.send_text(r#"{"jsonrpc":"2.0","method":"echo","id":2}"#)
        .await
        .unwrap();
    assert_eq!(json_frame(&mut raw).await["error"]["code"], -32001);
    assert_still_serves(&server).await;
}
