//! Bad input at every layer (frames, JSON, JSON-RPC, params, tokens, pacing): each gets its
//! documented error or close code, and the server keeps serving other clients afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestServer, WAIT, next};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use titan_client::tungstenite::Message;
use titan_client::tungstenite::protocol::frame::Frame;
use titan_client::tungstenite::protocol::frame::coding::{Data, OpCode};
use titan_client::{Client, ClientOptions, Outgoing, RawEvent, RawSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Two fresh clients prove the server still works: an echo round trip and a delivered message.
async fn assert_still_serves(server: &TestServer) {
    let sender = server.client("check-sender", None).await;
    let receiver = server.client("check-receiver", None).await;
    assert_eq!(
        sender.echo(json!(["still here"])).await.unwrap(),
        json!(["still here"])
    );
    sender
        .send("check-receiver", "still delivering")
        .await
        .unwrap();
    let d = next(&receiver).await;
    assert_eq!(d.messages[0].message, "still delivering");
    d.ack().await.unwrap();
}

/// The next event, failing the test after [`WAIT`].
async fn event(raw: &mut RawSocket) -> RawEvent {
    tokio::time::timeout(WAIT, raw.next_event())
        .await
        .expect("timed out waiting for a frame")
        .unwrap()
}

/// The next frame as JSON; fails on anything else.
async fn json_frame(raw: &mut RawSocket) -> Value {
    match event(raw).await {
        RawEvent::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Asserts the next frame is a single error response with `code` and id null.
async fn expect_null_id_error(raw: &mut RawSocket, code: i64) -> Value {
    let r = json_frame(raw).await;
    assert_eq!(r["jsonrpc"], "2.0", "{r}");
    assert_eq!(r["error"]["code"], code, "{r}");
    assert_eq!(r["id"], Value::Null, "{r}");
    r
}

/// Asserts the server closes with `code` next.
async fn expect_close(raw: &mut RawSocket, code: u16) {
    match event(raw).await {
        RawEvent::Close(got, reason) => assert_eq!(got, code, "closed with {got} {reason:?}"),
        other => panic!("expected close {code}, got {other:?}"),
    }
}

/// An echo round trip on a raw socket: its answer must be the next frame.
async fn assert_echo(raw: &mut RawSocket) {
    raw.send_text(r#"{"jsonrpc":"2.0","method":"echo","params":["alive"],"id":"alive"}"#)
        .await
        .unwrap();
    assert_eq!(
        json_frame(raw).await,
        json!({"jsonrpc": "2.0", "result": ["alive"], "id": "alive"})
    );
}

async fn authed(server: &TestServer, user: &str) -> RawSocket {
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    authenticate(&mut raw, &server.token(user)).await.unwrap();
    raw
}

/// Sends `auth.jwt`; `Err` carries the error object of a refusal.
async fn authenticate(raw: &mut RawSocket, token: &str) -> Result<(), Value> {
    let request =
        json!({"jsonrpc": "2.0", "method": "auth.jwt", "params": {"token": token}, "id": "auth"});
    raw.send_text(request.to_string()).await.unwrap();
    let r = json_frame(raw).await;
    assert_eq!(r["id"], "auth", "{r}");
    match r.get("error") {
        None => {
            assert_eq!(r["result"], "ACK");
            Ok(())
        }
        Some(error) => Err(error.clone()),
    }
}

/// Malformed JSON gets -32700 (id null) and the connection stays usable.
#[tokio::test]
async fn malformed_json_is_parse_error() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    for text in [
        "",
        " ",
        "not json",
        r#"{"jsonrpc":"2.0","method":"echo","id":1"#,
        r#"{"jsonrpc":"2.0","method":"echo","id":1}}"#,
        r#"{"jsonrpc":"2.0","method":"echo","id":1} {"id":2}"#,
        r#"{'method':'echo'}"#,
        r#"{"method":"echo","id":01}"#,
        "[1,]",
        "\u{feff}{}",
        "NaN",
    ] {
        raw.send_text(text).await.unwrap();
        let r = expect_null_id_error(&mut raw, -32700).await;
        assert!(r["error"]["message"].is_string());
    }
    assert_echo(&mut raw).await;
    assert_still_serves(&server).await;
}

/// Members of the wrong JSON type: envelope problems get -32600, param problems -32602; the
/// connection stays usable.
#[tokio::test]
async fn wrong_types() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    for (text, code, id) in [
        (
            r#"{"jsonrpc":"2.0","method":["echo"],"id":1}"#,
            -32600,
            json!(1),
        ),
        (
            r#"{"jsonrpc":"2.0","method":null,"id":2}"#,
            -32600,
            json!(2),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"echo","params":7,"id":3}"#,
            -32600,
            json!(3),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"echo","params":"x","id":4}"#,
            -32600,
            json!(4),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"echo","params":null,"id":5}"#,
            -32600,
            json!(5),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"echo","id":true}"#,
            -32600,
            Value::Null,
        ),
        (
            r#"{"jsonrpc":["2.0"],"method":"echo","id":6}"#,
            -32600,
            json!(6),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"msg.send","params":{"to":["bob"],"message":"x"},"id":7}"#,
            -32602,
            json!(7),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"msg.send","params":[{"to":"bob","message":{"t":1}}],"id":8}"#,
            -32602,
            json!(8),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"msg.send","params":[{"to":"bob","message":"x","id":9}],"id":9}"#,
            -32602,
            json!(9),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"msg.send","params":[["bob","x"]],"id":10}"#,
            -32602,
            json!(10),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"auth.jwt","params":{"token":["t"]},"id":11}"#,
            -32602,
            json!(11),
        ),
        (
            r#"{"jsonrpc":"2.0","method":"auth.jwt","params":{"token":"t","device":7},"id":12}"#,
            -32602,
            json!(12),
        ),
    ] {
        raw.send_text(text).await.unwrap();
        let r = json_frame(&mut raw).await;
        assert_eq!(
            (&r["error"]["code"], &r["id"]),
            (&json!(code), &id),
            "{text} -> {r}"
        );
    }
    assert_echo(&mut raw).await;
    assert_still_serves(&server).await;
}

/// A binary frame gets -32600 (id null) and the connection stays open.
#[tokio::test]
async fn binary_frame_is_invalid_request() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    raw.send_binary(br#"{"jsonrpc":"2.0","method":"echo","id":1}"#.to_vec())
        .await
        .unwrap();
    expect_null_id_error(&mut raw, -32600).await;
    raw.send_binary(vec![0xff, 0x00, 0x80]).await.unwrap();
    expect_null_id_error(&mut raw, -32600).await;
    assert_echo(&mut raw).await;
    assert_still_serves(&server).await;
}

/// A text frame that is not UTF-8 gets -32700, then close 1007.
#[tokio::test]
async fn invalid_utf8_text_frame_is_parse_error_then_1007() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    let payload =
        b"{\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[\"\xff\xfe\"],\"id\":1}".to_vec();
    let frame = Frame::message(payload, OpCode::Data(Data::Text), true);
    raw.send_message(Message::Frame(frame)).await.unwrap();
    expect_null_id_error(&mut raw, -32700).await;
    expect_close(&mut raw, 1007).await;
    assert_still_serves(&server).await;
}

/// A frame over `limits.max_frame_bytes` gets -32003, then close 1009.
#[tokio::test]
async fn oversized_frame_is_too_large_then_1009() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"echo","params":["{}"],"id":1}}"#,
        "x".repeat(server.config.limits.max_frame_bytes)
    );
    // The server may close while the frame is still being written; its answer is still readable.
    let _ = raw.send_text(big).await;
    expect_null_id_error(&mut raw, -32003).await;
    expect_close(&mut raw, 1009).await;
    assert_still_serves(&server).await;
}

/// A fragmented message is reassembled and answered; one whose fragments together exceed
/// `limits.max_frame_bytes` (each fragment under it) gets -32003, then close 1009.
#[tokio::test]
async fn fragmented_messages_count_as_a_whole() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    let parts = [
        r#"{"jsonrpc":"2.0","#,
        r#""method":"echo","params":["frag"],"#,
        r#""id":"frag"}"#,
    ];
    raw.send_message(Message::Frame(Frame::message(
        parts[0],
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    raw.send_message(Message::Frame(Frame::message(
        parts[1],
        OpCode::Data(Data::Continue),
        false,
    )))
    .await
    .unwrap();
    raw.send_message(Message::Frame(Frame::message(
        parts[2],
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(
        json_frame(&mut raw).await,
        json!({"jsonrpc": "2.0", "result": ["frag"], "id": "frag"})
    );

    let chunk = "x".repeat(server.config.limits.max_frame_bytes / 2);
    let start = format!(r#"{{"jsonrpc":"2.0","method":"echo","params":["{chunk}"#);
    raw.send_message(Message::Frame(Frame::message(
        start,
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    for _ in 0..3 {
        let fragment = Frame::message(chunk.clone(), OpCode::Data(Data::Continue), false);
        // The server may close before the last fragments are written.
        let _ = raw.send_message(Message::Frame(fragment)).await;
    }
    let end = Frame::message(r#""],"id":1}"#, OpCode::Data(Data::Continue), true);
    let _ = raw.send_message(Message::Frame(end)).await;
    expect_null_id_error(&mut raw, -32003).await;
    expect_close(&mut raw, 1009).await;
    assert_still_serves(&server).await;
}

/// A msg.send body over `limits.max_message_bytes` gets -32003, keeps the connection open and
/// stores nothing (not even the valid message of the same call); the next message arrives alone.
#[tokio::test]
async fn oversized_message_body_is_too_large_and_not_stored() {
    let server = TestServer::start();
    let bob = server.client("bob", None).await;
    let mut raw = authed(&server, "alice").await;
    let limit = server.config.limits.max_message_bytes;
    for messages in [
        json!([{"to": "bob", "message": "y".repeat(limit + 1)}]),
        json!([{"to": "bob", "message": "fits"}, {"to": "bob", "message": "é".repeat(limit / 2 + 1)}]),
    ] {
        let request =
            json!({"jsonrpc": "2.0", "method": "msg.send", "params": messages, "id": "big"});
        raw.send_text(request.to_string()).await.unwrap();
        let r = json_frame(&mut raw).await;
        assert_eq!(
            (&r["error"]["code"], &r["id"]),
            (&json!(-32003), &json!("big")),
            "{r}"
        );
    }
    let request = json!({"jsonrpc": "2.0", "method": "msg.send", "params": [{"to": "bob", "message": "y".repeat(limit)}], "id": "ok"});
    raw.send_text(request.to_string()).await.unwrap();
    assert_eq!(
        json_frame(&mut raw).await,
        json!({"jsonrpc": "2.0", "result": "ACK", "id": "ok"})
    );
    let d = next(&bob).await;
    assert_eq!(d.messages.len(), 1);
    assert_eq!(d.messages[0].message.len(), limit);
    d.ack().await.unwrap();
    assert_still_serves(&server).await;
}

/// 100 000 nested arrays (in a frame the limit allows) get -32700 instead of exhausting the
/// stack; the connection stays usable.
#[tokio::test]
async fn deep_nesting_is_parse_error() {
    let server = TestServer::start_with(|c| c.limits.max_frame_bytes = 1 << 20);
    let mut raw = authed(&server, "alice").await;
    let depth = 100_000;
    raw.send_text(format!("{}{}", "[".repeat(depth), "]".repeat(depth)))
        .await
        .unwrap();
    expect_null_id_error(&mut raw, -32700).await;
    raw.send_text("[".repeat(depth)).await.unwrap();
    expect_null_id_error(&mut raw, -32700).await;
    let nested_params = format!(
        r#"{{"jsonrpc":"2.0","method":"echo","params":{}{},"id":1}}"#,
        "{\"a\":".repeat(depth),
        "}".repeat(depth)
    );
    raw.send_text(nested_params).await.unwrap();
    expect_null_id_error(&mut raw, -32700).await;
    assert_echo(&mut raw).await;
    assert_still_serves(&server).await;
}

/// A batch longer than `limits.max_batch` is one -32600 error (nothing in it runs); a batch of
/// exactly `max_batch` is served.
#[tokio::test]
async fn oversized_batch_is_invalid_request() {
    let server = TestServer::start();
    let bob = server.client("bob", None).await;
    let mut raw = authed(&server, "alice").await;
    let max = server.config.limits.max_batch;
    let send = json!({"jsonrpc": "2.0", "method": "msg.send", "params": [{"to": "bob", "message": "from a huge batch"}]});
    let huge = Value::Array(vec![send; max + 1]);
    raw.send_text(huge.to_string()).await.unwrap();
    expect_null_id_error(&mut raw, -32600).await;
    let full: Vec<Value> = (0..max)
        .map(|i| json!({"jsonrpc": "2.0", "method": "echo", "params": [i], "id": i}))
        .collect();
    raw.send_text(Value::Array(full).to_string()).await.unwrap();
    let answers = json_frame(&mut raw).await;
    assert_eq!(answers.as_array().map(Vec::len), Some(max), "{answers}");
    // Nothing of the refused batch was stored: bob's first delivery is a later message.
    let after = json!({"jsonrpc": "2.0", "method": "msg.send", "params": [{"to": "bob", "message": "after"}], "id": "after"});
    raw.send_text(after.to_string()).await.unwrap();
    assert_eq!(json_frame(&mut raw).await["result"], "ACK");
    let d = next(&bob).await;
    let bodies: Vec<_> = d.messages.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(bodies, ["after"]);
    d.ack().await.unwrap();
    assert_still_serves(&server).await;
}

/// Responses to requests the server never sent (unknown, string, null ids; errors; malformed)
/// are ignored without a reply and the connection carries on.
#[tokio::test]
async fn responses_with_unknown_ids_are_ignored() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    for text in [
        r#"{"jsonrpc":"2.0","result":"ACK","id":999}"#,
        r#"{"jsonrpc":"2.0","result":"ACK","id":"999"}"#,
        r#"{"jsonrpc":"2.0","result":null,"id":null}"#,
        r#"{"jsonrpc":"2.0","result":"ACK","id":-1}"#,
        r#"{"jsonrpc":"2.0","result":"ACK","id":1.5}"#,
        r#"{"jsonrpc":"2.0","error":{"code":-32000,"message":"nope"},"id":12}"#,
        r#"{"jsonrpc":"2.0","error":"malformed","id":13}"#,
        r#"{"jsonrpc":"2.0","result":1,"error":{"code":1,"message":"both"},"id":14}"#,
        r#"[{"jsonrpc":"2.0","result":"ACK","id":15},{"jsonrpc":"2.0","result":"ACK","id":16}]"#,
    ] {
        raw.send_text(text).await.unwrap();
        assert_echo(&mut raw).await;
    }
    assert_still_serves(&server).await;
}

/// A flood of requests past `requests_per_second`/`request_burst` gets -32004 with
/// `data.retry_after_ms` for the excess, every request is answered, and after waiting as told
/// the connection is served again.
#[tokio::test]
async fn request_flood_is_rate_limited() {
    let server = TestServer::start_with(|c| {
        c.limits.requests_per_second = 5;
        c.limits.request_burst = 5;
    });
    let mut raw = authed(&server, "alice").await;
    let total = 200;
    for i in 0..total {
        raw.send_text(
            json!({"jsonrpc": "2.0", "method": "echo", "params": [i], "id": i}).to_string(),
        )
        .await
        .unwrap();
    }
    let (mut ok, mut limited, mut retry_after) = (0, 0, 0);
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..total {
        let r = json_frame(&mut raw).await;
        let id = r["id"].as_u64().unwrap_or_else(|| panic!("{r}"));
        assert!(answered.insert(id), "answered twice: {r}");
        if r.get("result").is_some() {
            assert_eq!(r["result"], json!([id]));
            ok += 1;
        } else {
            assert_eq!(r["error"]["code"], -32004, "{r}");
            retry_after = r["error"]["data"]["retry_after_ms"]
                .as_u64()
                .unwrap_or_else(|| panic!("no data.retry_after_ms: {r}"));
            assert!(retry_after > 0, "{r}");
            limited += 1;
        }
    }
    assert_eq!(answered.len(), total);
    // The burst of 5 minus the auth.jwt call that already took one token.
    assert!(ok >= 4, "the burst is served: {ok} ok");
    assert!(limited > 0 && limited < total, "{ok} ok, {limited} limited");
    // A well-behaved client waits as told, then is served.
    tokio::time::sleep(Duration::from_millis(retry_after)).await;
    assert_echo(&mut raw).await;
    assert_still_serves(&server).await;
}

/// `limits.max_auth_failures` failed attempts: each gets -32002, the last one's error arrives,
/// then close 4005.
#[tokio::test]
async fn too_many_failed_auths_close_4005() {
    let server = TestServer::start();
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    let attempts = server.config.limits.max_auth_failures;
    for _ in 0..attempts {
        let error = authenticate(&mut raw, "not-a-jwt").await.unwrap_err();
        assert_eq!(error["code"], -32002, "{error}");
    }
    expect_close(&mut raw, 4005).await;
    assert_still_serves(&server).await;
}

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

/// A hand-written WebSocket client over TCP. Unlike tungstenite it never answers pings, so it
/// is a truly silent peer.
struct SilentPeer {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl SilentPeer {
    async fn connect(addr: SocketAddr) -> Self {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut peer = Self {
            tcp,
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(end) = peer.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(
                peer.read_more().await,
                "connection closed during the handshake"
            );
        };
        let head = String::from_utf8_lossy(&peer.buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        peer.buf.drain(..end);
        peer
    }

    async fn read_more(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = self.tcp.read(&mut chunk).await.unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Sends one masked text frame (with a zero mask, so the payload goes as is).
    async fn send_text(&mut self, text: &str) {
        let mut frame = vec![0x81];
        let len = text.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(text.as_bytes());
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// The next (opcode, payload) from the server; `None` when the socket ends.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (opcode, short) = (self.buf[0] & 0x0f, usize::from(self.buf[1] & 0x7f));
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (header, len) = match short {
                    126 if self.buf.len() >= 4 => (
                        4,
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                    ),
                    127 if self.buf.len() >= 10 => (
                        10,
                        usize::try_from(u64::from_be_bytes(self.buf[2..10].try_into().unwrap()))
                            .unwrap(),
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (2, n),
                };
                if header != usize::MAX && self.buf.len() >= header + len {
                    let payload = self.buf[header..header + len].to_vec();
                    self.buf.drain(..header + len);
                    return Some((opcode, payload));
                }
            }
            if !self.read_more().await {
                return None;
            }
        }
    }
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
/// timeouts without sending anything itself.
#[tokio::test]
async fn peer_answering_pings_is_not_idle() {
    let server = TestServer::start_with(|c| {
        c.limits.ping_interval = Duration::from_millis(100);
        c.limits.idle_timeout = Duration::from_millis(400);
    });
    let mut raw = authed(&server, "alice").await;
    let quiet = raw
        .next_event_timeout(Duration::from_millis(1500))
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
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
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
    let auth =
        titan_session::Authenticator::hs256(common::SECRET.as_bytes(), Duration::from_secs(60))
            .unwrap();
    let user = titan_protocol::UserId::new("alice").unwrap();
    // `exp` is whole seconds and checked without leeway: a zero-lifetime token is expired once
    // the clock reaches the next second. Waiting for the clock is the point here.
    let token = auth.mint(&user, None, Some(Duration::ZERO)).unwrap();
    let exp = unix_now();
    while unix_now() <= exp {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
