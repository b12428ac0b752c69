//! JSON-RPC helpers for tests that speak frame by frame ([`RawSocket`]) and check what the
//! server answers: every response's shape, single answers, batches by id.

use super::{TestServer, WAIT};
use serde_json::{Value, json};
use std::collections::HashMap;
use titan_client::RawSocket;

/// Checks the shape of every response object the server writes: `"jsonrpc":"2.0"`, an `id`
/// member, and exactly one of `result` and `error` (with an integer code and a string message).
pub fn assert_response_shape(response: &Value) {
    let obj = response
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {response}"));
    assert_eq!(obj.get("jsonrpc"), Some(&json!("2.0")), "{response}");
    assert!(obj.contains_key("id"), "no id: {response}");
    assert!(
        !obj.contains_key("method"),
        "a request, not a response: {response}"
    );
    match (obj.get("result"), obj.get("error")) {
        (Some(_), None) => {}
        (None, Some(error)) => {
            assert!(error["code"].is_i64(), "{response}");
            assert!(error["message"].is_string(), "{response}");
        }
        _ => panic!("not exactly one of result and error: {response}"),
    }
}

/// The next frame, parsed, with every response in it shape-checked.
pub async fn recv(raw: &mut RawSocket) -> Value {
    let frame = tokio::time::timeout(WAIT, raw.next_json())
        .await
        .expect("timed out waiting for a frame")
        .unwrap()
        .expect("connection closed");
    match &frame {
        Value::Array(items) => items.iter().for_each(assert_response_shape),
        single => assert_response_shape(single),
    }
    frame
}

/// Sends `text` as one frame and returns the single (non-batch) response.
pub async fn call_text(raw: &mut RawSocket, text: &str) -> Value {
    raw.send_text(text).await.unwrap();
    let response = recv(raw).await;
    assert!(
        response.is_object(),
        "expected one response object, got {response}"
    );
    response
}

/// A raw socket authenticated as `user` (device "default").
pub async fn authed(server: &TestServer, user: &str) -> RawSocket {
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    let auth = json!({"jsonrpc": "2.0", "method": "auth.jwt", "params": {"token": server.token(user)}, "id": "auth"});
    let response = call_text(&mut raw, &auth.to_string()).await;
    assert_eq!(
        response,
        json!({"jsonrpc": "2.0", "result": "ACK", "id": "auth"})
    );
    raw
}

/// Proves nothing was written for what was sent before: a fresh request's response must be the
/// very next frame.
pub async fn assert_nothing_pending(raw: &mut RawSocket) {
    let probe = json!({"jsonrpc": "2.0", "method": "echo", "params": ["probe"], "id": "probe"});
    let response = call_text(raw, &probe.to_string()).await;
    assert_eq!(
        response,
        json!({"jsonrpc": "2.0", "result": ["probe"], "id": "probe"})
    );
}

pub fn error_code(response: &Value) -> i64 {
    response["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("not an error: {response}"))
}

/// Responses of a batch keyed by their id's JSON text (several null ids collect in one entry).
pub fn by_id(batch: &Value) -> HashMap<String, Vec<Value>> {
    let mut map: HashMap<String, Vec<Value>> = HashMap::new();
    for response in batch
        .as_array()
        .unwrap_or_else(|| panic!("not a batch: {batch}"))
    {
        map.entry(response["id"].to_string())
            .or_default()
            .push(response.clone());
    }
    map
}
