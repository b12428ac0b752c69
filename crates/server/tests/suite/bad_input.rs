//! Bad input at every layer (frames, JSON, JSON-RPC, params, tokens, pacing): each gets its
//! documented error or close code, and the server keeps serving other clients afterwards.

use crate::common;

use common::{TestServer, next};
use serde_json::{Value, json};
use std::time::Duration;
use titan_client::RawSocket;
use titan_client::tungstenite::Message;
use titan_client::tungstenite::protocol::frame::Frame;
use titan_client::tungstenite::protocol::frame::coding::{Data, OpCode};

use common::raw::*;

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
    // A well-behaved client waits as told, then is served. A request answered after the last
    // refusal may have taken the token that refusal's wait counted on (the bucket refills during
    // the flood), so the client may be told to wait once more; it is served within a few waits,
    // each as long as it was told (too short a wait would be refused every time).
    let mut wait = retry_after;
    for attempt in 0.. {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        raw.send_text(r#"{"jsonrpc":"2.0","method":"echo","params":["alive"],"id":"alive"}"#)
            .await
            .unwrap();
        let r = json_frame(&mut raw).await;
        if r.get("result").is_some() {
            assert_eq!(
                r,
                json!({"jsonrpc": "2.0", "result": ["alive"], "id": "alive"})
            );
            break;
        }
        assert_eq!(r["error"]["code"], -32004, "{r}");
        assert!(
            attempt < 3,
            "refused after waiting as told {attempt} times: {r}"
        );
        wait = r["error"]["data"]["retry_after_ms"]
            .as_u64()
            .unwrap_or_else(|| panic!("no data.retry_after_ms: {r}"));
    }
    assert_still_serves(&server).await;
}

/// The same for `msg.send`, which a signed-in session reads by a fast path of its own (fails if
/// that path skips the rate limit): the excess gets -32004, every request is answered, and the
/// messages acknowledged, and only those, reach the recipient.
#[tokio::test]
async fn send_flood_is_rate_limited() {
    let server = TestServer::start_with(|c| {
        c.limits.requests_per_second = 5;
        c.limits.request_burst = 5;
    });
    let bob = server.client("bob", None).await;
    let mut raw = authed(&server, "alice").await;
    let total = 50;
    for i in 0..total {
        let message = format!("m{i}");
        raw.send_text(
            json!({"jsonrpc": "2.0", "method": "msg.send", "params": [{"to": "bob", "message": message}], "id": i})
                .to_string(),
        )
        .await
        .unwrap();
    }
    let (mut acked, mut limited) = (std::collections::BTreeSet::new(), 0);
    for _ in 0..total {
        let r = json_frame(&mut raw).await;
        let id = r["id"].as_u64().unwrap_or_else(|| panic!("{r}"));
        if r.get("result").is_some() {
            assert_eq!(r["result"], "ACK", "{r}");
            assert!(acked.insert(format!("m{id}")), "answered twice: {r}");
        } else {
            assert_eq!(r["error"]["code"], -32004, "{r}");
            limited += 1;
        }
    }
    assert_eq!(acked.len() + limited, total);
    assert!(
        !acked.is_empty() && limited > 0,
        "{acked:?}, {limited} limited"
    );
    let mut received = std::collections::BTreeSet::new();
    while received.len() < acked.len() {
        for m in next(&bob).await.messages {
            assert!(received.insert(m.message.clone()), "received twice: {m:?}");
        }
    }
    assert_eq!(received, acked);
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
