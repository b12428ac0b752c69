//! Frame-level helpers for tests that send bad input with a [`RawSocket`].

use super::{TestServer, WAIT, next};
use serde_json::{Value, json};
use titan_client::{RawEvent, RawSocket};

/// Two fresh clients prove the server still works: an echo round trip and a delivered message.
pub async fn assert_still_serves(server: &TestServer) {
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
pub async fn event(raw: &mut RawSocket) -> RawEvent {
    tokio::time::timeout(WAIT, raw.next_event())
        .await
        .expect("timed out waiting for a frame")
        .unwrap()
}

/// The next frame as JSON; fails on anything else.
pub async fn json_frame(raw: &mut RawSocket) -> Value {
    match event(raw).await {
        RawEvent::Text(text) => serde_json::from_str(&text).unwrap(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Asserts the next frame is a single error response with `code` and id null.
pub async fn expect_null_id_error(raw: &mut RawSocket, code: i64) -> Value {
    let r = json_frame(raw).await;
    assert_eq!(r["jsonrpc"], "2.0", "{r}");
    assert_eq!(r["error"]["code"], code, "{r}");
    assert_eq!(r["id"], Value::Null, "{r}");
    r
}

/// Asserts the server closes with `code` next.
pub async fn expect_close(raw: &mut RawSocket, code: u16) {
    match event(raw).await {
        RawEvent::Close(got, reason) => assert_eq!(got, code, "closed with {got} {reason:?}"),
        other => panic!("expected close {code}, got {other:?}"),
    }
}

/// An echo round trip on a raw socket: its answer must be the next frame.
pub async fn assert_echo(raw: &mut RawSocket) {
    raw.send_text(r#"{"jsonrpc":"2.0","method":"echo","params":["alive"],"id":"alive"}"#)
        .await
        .unwrap();
    assert_eq!(
        json_frame(raw).await,
        json!({"jsonrpc": "2.0", "result": ["alive"], "id": "alive"})
    );
}

pub async fn authed(server: &TestServer, user: &str) -> RawSocket {
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    authenticate(&mut raw, &server.token(user)).await.unwrap();
    raw
}

/// Sends `auth.jwt`; `Err` carries the error object of a refusal.
pub async fn authenticate(raw: &mut RawSocket, token: &str) -> Result<(), Value> {
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
