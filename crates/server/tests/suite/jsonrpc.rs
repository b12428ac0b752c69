//! The JSON-RPC 2.0 specification's examples (and the rules behind them), spoken frame by frame
//! over a real WebSocket to the real server. Titan's methods stand in for the spec's: `echo` for
//! `sum`/`subtract`/`get_data`, unknown names for `foobar`.

use crate::common;

use common::rpc::{assert_nothing_pending, authed, by_id, call_text, error_code, recv};
use common::{TestServer, WAIT, next};
use serde_json::{Value, json};
use std::collections::HashMap;
use titan_client::RawSocket;

/// Spec: "rpc call with invalid JSON" gets -32700 with id null.
#[tokio::test]
async fn invalid_json_is_parse_error_with_null_id() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    let r = call_text(
        &mut raw,
        r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#,
    )
    .await;
    assert_eq!(error_code(&r), -32700);
    assert_eq!(r["id"], Value::Null);
    assert_nothing_pending(&mut raw).await;
}

/// Spec: "rpc call with invalid Request object" (and other non-requests) get -32600, with the
/// id echoed when it is readable and null otherwise.
#[tokio::test]
async fn invalid_request_objects_get_invalid_request() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    for (text, id) in [
        (
            r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#,
            Value::Null,
        ),
        (
            r#"{"jsonrpc": "2.0", "method": "echo", "params": "bar", "id": 3}"#,
            json!(3),
        ),
        (
            r#"{"jsonrpc": "1.0", "method": "echo", "id": "v1"}"#,
            json!("v1"),
        ),
        (r#"{"jsonrpc": 2.0, "method": "echo", "id": 4}"#, json!(4)),
        (
            r#"{"jsonrpc": "2.0", "method": "echo", "id": {"a": 1}}"#,
            Value::Null,
        ),
        (
            r#"{"jsonrpc": "2.0", "method": "echo", "id": [1]}"#,
            Value::Null,
        ),
        (r#"{"jsonrpc": "2.0", "id": 5}"#, json!(5)),
        ("{}", Value::Null),
        (r#""echo""#, Value::Null),
        ("42", Value::Null),
        ("null", Value::Null),
        ("true", Value::Null),
    ] {
        let r = call_text(&mut raw, text).await;
        assert_eq!(error_code(&r), -32600, "{text} -> {r}");
        assert_eq!(r["id"], id, "{text} -> {r}");
    }
    assert_nothing_pending(&mut raw).await;
}

/// Spec: "rpc call Batch, invalid JSON" is a single -32700 error, not an array.
#[tokio::test]
async fn batch_with_invalid_json_is_one_parse_error() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    let text = r#"[
        {"jsonrpc": "2.0", "method": "echo", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method"
    ]"#;
    let r = call_text(&mut raw, text).await;
    assert_eq!(error_code(&r), -32700);
    assert_eq!(r["id"], Value::Null);
}

/// Spec: "rpc call with an empty Array" is a single -32600 object, not an array.
#[tokio::test]
async fn empty_batch_is_one_invalid_request() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    let r = call_text(&mut raw, "[]").await;
    assert_eq!(error_code(&r), -32600);
    assert_eq!(r["id"], Value::Null);
    assert_nothing_pending(&mut raw).await;
}

/// Spec: "rpc call with an invalid Batch (but not empty)" `[1]` is an array of one -32600.
#[tokio::test]
async fn batch_of_one_non_object_is_array_of_one_error() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    raw.send_text("[1]").await.unwrap();
    let r = recv(&mut raw).await;
    let items = r.as_array().unwrap_or_else(|| panic!("not an array: {r}"));
    assert_eq!(items.len(), 1, "{r}");
    assert_eq!(error_code(&items[0]), -32600);
    assert_eq!(items[0]["id"], Value::Null);
}

/// Spec: "rpc call with invalid Batch" `[1,2,3]` is an array of three -32600 errors.
#[tokio::test]
async fn batch_of_three_non_objects_is_array_of_three_errors() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    raw.send_text("[1,2,3]").await.unwrap();
    let r = recv(&mut raw).await;
    let items = r.as_array().unwrap_or_else(|| panic!("not an array: {r}"));
    assert_eq!(items.len(), 3, "{r}");
    for item in items {
        assert_eq!(error_code(item), -32600);
        assert_eq!(item["id"], Value::Null);
    }
}

/// Spec: "rpc call Batch" mixing valid calls, a notification, an invalid object and an unknown
/// method gets one array with an answer for every item but the notification.
#[tokio::test]
async fn mixed_batch_answers_everything_but_notifications() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    let batch = json!([
        {"jsonrpc": "2.0", "method": "echo", "params": [1, 2, 4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "echo", "params": [42, 23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "echo", "id": "9"},
        {"jsonrpc": "2.0", "method": "echo", "params": ["quiet"]},
    ]);
    raw.send_text(batch.to_string()).await.unwrap();
    let r = recv(&mut raw).await;
    assert_eq!(r.as_array().map(Vec::len), Some(5), "{r}");
    let answers = by_id(&r);
    assert_eq!(
        answers[r#""1""#],
        vec![json!({"jsonrpc": "2.0", "result": [1, 2, 4], "id": "1"})]
    );
    assert_eq!(
        answers[r#""2""#],
        vec![json!({"jsonrpc": "2.0", "result": [42, 23], "id": "2"})]
    );
    assert_eq!(error_code(&answers["null"][0]), -32600);
    assert_eq!(error_code(&answers[r#""5""#][0]), -32601);
    assert_eq!(
        answers[r#""9""#],
        vec![json!({"jsonrpc": "2.0", "result": null, "id": "9"})]
    );
    assert_nothing_pending(&mut raw).await;
}

/// Spec: "rpc call Batch (all notifications)" gets no response at all; so does a batch of only
/// responses.
#[tokio::test]
async fn all_notification_batch_gets_nothing() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    let batch = json!([
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1, 2, 4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "echo", "params": [1]},
    ]);
    raw.send_text(batch.to_string()).await.unwrap();
    assert_nothing_pending(&mut raw).await;
    let responses = json!([
        {"jsonrpc": "2.0", "result": "ACK", "id": 1000},
        {"jsonrpc": "2.0", "error": {"code": -1, "message": "no"}, "id": 1001},
    ]);
    raw.send_text(responses.to_string()).await.unwrap();
    assert_nothing_pending(&mut raw).await;
}

/// Spec: notifications are never answered, whether they succeed, name an unknown method or
/// carry invalid params.
#[tokio::test]
async fn notifications_get_no_response() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    for notification in [
        json!({"jsonrpc": "2.0", "method": "update", "params": [1, 2, 3, 4, 5]}),
        json!({"jsonrpc": "2.0", "method": "foobar"}),
        json!({"jsonrpc": "2.0", "method": "echo", "params": {"a": 1}}),
        json!({"jsonrpc": "2.0", "method": "msg.send", "params": []}),
        json!({"jsonrpc": "2.0", "method": "auth.jwt", "params": {}}),
        json!({"method": "echo"}),
    ] {
        raw.send_text(notification.to_string()).await.unwrap();
        assert_nothing_pending(&mut raw).await;
    }
}

/// Before authentication a notification is refused silently too (no -32001 without an id).
#[tokio::test]
async fn unauthenticated_notification_gets_no_response() {
    let server = TestServer::start();
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    raw.send_text(json!({"jsonrpc": "2.0", "method": "echo", "params": [1]}).to_string())
        .await
        .unwrap();
    let r = call_text(&mut raw, r#"{"jsonrpc": "2.0", "method": "echo", "id": 1}"#).await;
    assert_eq!(error_code(&r), -32001);
    assert_eq!(r["id"], json!(1));
}

/// A `msg.send` notification still stores and delivers its messages.
#[tokio::test]
async fn msg_send_notification_is_delivered() {
    let server = TestServer::start();
    let bob = server.client("bob", None).await;
    let mut raw = authed(&server, "alice").await;
    let send = json!({"jsonrpc": "2.0", "method": "msg.send", "params": [{"to": "bob", "message": "quiet hi"}]});
    raw.send_text(send.to_string()).await.unwrap();
    assert_nothing_pending(&mut raw).await;
    let d = next(&bob).await;
    assert_eq!(d.messages.len(), 1);
    assert_eq!(
        (d.messages[0].from.as_str(), d.messages[0].message.as_str()),
        ("alice", "quiet hi")
    );
    d.ack().await.unwrap();
}

/// Ids come back verbatim: strings (escapes, unicode, empty), integers up to u64::MAX and down to
/// i64::MIN, floats, and null.
#[tokio::test]
async fn ids_are_echoed_verbatim() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    for id in [
        json!("abc"),
        json!(""),
        json!("ünï \"quoted\" \\ \n tab\t"),
        json!("1"),
        json!(0),
        json!(-7),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1.5),
        json!(-0.25),
        json!(1e300),
        Value::Null,
    ] {
        let request =
            json!({"jsonrpc": "2.0", "method": "echo", "params": [id.clone()], "id": id.clone()});
        let r = call_text(&mut raw, &request.to_string()).await;
        assert_eq!(r["id"], id, "{r}");
        assert_eq!(r["result"], json!([id]), "{r}");
    }
    // Large integers are not rounded through a float on the way.
    raw.send_text(r#"{"jsonrpc":"2.0","method":"echo","id":18446744073709551615}"#)
        .await
        .unwrap();
    let text = tokio::time::timeout(WAIT, raw.next_text())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(text.contains(r#""id":18446744073709551615"#), "{text}");
    // Errors echo the id too.
    let r = call_text(&mut raw, r#"{"jsonrpc":"2.0","method":"nope","id":"x-1"}"#).await;
    assert_eq!((error_code(&r), &r["id"]), (-32601, &json!("x-1")));
}

/// Frames without a `jsonrpc` member (the old Go clients) are served, and the answer still
/// carries `"jsonrpc":"2.0"`.
#[tokio::test]
async fn frames_without_jsonrpc_member_are_accepted() {
    let server = TestServer::start();
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    let auth = json!({"method": "auth.jwt", "params": {"token": server.token("alice")}, "id": 1});
    let r = call_text(&mut raw, &auth.to_string()).await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "result": "ACK", "id": 1}));
    let r = call_text(&mut raw, r#"{"method":"echo","params":{"k":"v"},"id":2}"#).await;
    assert_eq!(r, json!({"jsonrpc": "2.0", "result": {"k": "v"}, "id": 2}));
    raw.send_text(r#"[{"method":"echo","params":[1],"id":3},{"method":"nope","id":4}]"#)
        .await
        .unwrap();
    let answers = by_id(&recv(&mut raw).await);
    assert_eq!(
        answers["3"],
        vec![json!({"jsonrpc": "2.0", "result": [1], "id": 3})]
    );
    assert_eq!(error_code(&answers["4"][0]), -32601);
}

/// Spec: "rpc call of non-existent method" gets -32601 with the request's id.
#[tokio::test]
async fn unknown_method_is_method_not_found() {
    let server = TestServer::start();
    let mut raw = authed(&server, "alice").await;
    for method in ["foobar", "msg.sendx", "Echo", "", "auth"] {
        let request = json!({"jsonrpc": "2.0", "method": method, "id": "1"});
        let r = call_text(&mut raw, &request.to_string()).await;
        assert_eq!(error_code(&r), -32601, "{method}: {r}");
        assert_eq!(r["id"], json!("1"));
    }
}

/// Wrong params get -32602 and store nothing: msg.send with 0 or 101 messages, a missing or
/// empty `to`, a missing or non-string `message`, no params; auth.jwt without a token.
#[tokio::test]
async fn invalid_params() {
    let server = TestServer::start();
    let bob = server.client("bob", None).await;
    let mut raw = authed(&server, "alice").await;
    let one = json!({"to": "bob", "message": "x"});
    for (method, params) in [
        ("msg.send", Some(json!([]))),
        ("msg.send", Some(Value::Array(vec![one.clone(); 101]))),
        ("msg.send", Some(json!([{"message": "no to"}]))),
        ("msg.send", Some(json!([{"to": "", "message": "empty to"}]))),
        (
            "msg.send",
            Some(json!([{"to": 5, "message": "numeric to"}])),
        ),
        ("msg.send", Some(json!([{"to": "bob"}]))),
        ("msg.send", Some(json!([{"to": "bob", "message": 5}]))),
        ("msg.send", Some(json!([one.clone(), {"to": "bob"}]))),
        ("msg.send", Some(json!([1]))),
        ("msg.send", None),
        ("auth.jwt", None),
        ("auth.jwt", Some(json!({}))),
        ("auth.jwt", Some(json!({"token": 5}))),
    ] {
        let mut request = json!({"jsonrpc": "2.0", "method": method, "id": 7});
        if let Some(params) = &params {
            request["params"] = params.clone();
        }
        let r = call_text(&mut raw, &request.to_string()).await;
        assert_eq!(error_code(&r), -32602, "{method} {params:?}: {r}");
        assert_eq!(r["id"], json!(7));
    }
    // 100 messages is the most one call may carry.
    let hundred = Value::Array(vec![json!({"to": "carol", "message": "x"}); 100]);
    let request = json!({"jsonrpc": "2.0", "method": "msg.send", "params": hundred, "id": 8});
    assert_eq!(
        call_text(&mut raw, &request.to_string()).await["result"],
        "ACK"
    );
    // None of the refused calls stored anything for bob: his first delivery is this message.
    let request = json!({"jsonrpc": "2.0", "method": "msg.send", "params": [{"to": "bob", "message": "valid"}], "id": 9});
    assert_eq!(
        call_text(&mut raw, &request.to_string()).await["result"],
        "ACK"
    );
    let d = next(&bob).await;
    let bodies: Vec<_> = d.messages.iter().map(|m| m.message.as_str()).collect();
    assert_eq!(bodies, ["valid"]);
    d.ack().await.unwrap();
}

/// `auth.jwt` early in a batch authenticates the connection for the `msg.send` after it.
#[tokio::test]
async fn auth_inside_batch_before_send() {
    let server = TestServer::start();
    let bob = server.client("bob", None).await;
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    let batch = json!([
        {"jsonrpc": "2.0", "method": "auth.jwt", "params": {"token": server.token("alice"), "device": "tablet"}, "id": "a"},
        {"jsonrpc": "2.0", "method": "msg.send", "params": [{"to": "bob", "message": "batched"}], "id": "s"},
        {"jsonrpc": "2.0", "method": "echo", "params": ["after auth"], "id": "e"},
    ]);
    raw.send_text(batch.to_string()).await.unwrap();
    let answers = by_id(&recv(&mut raw).await);
    assert_eq!(
        answers[r#""a""#],
        vec![json!({"jsonrpc": "2.0", "result": "ACK", "id": "a"})]
    );
    assert_eq!(
        answers[r#""s""#],
        vec![json!({"jsonrpc": "2.0", "result": "ACK", "id": "s"})]
    );
    assert_eq!(
        answers[r#""e""#],
        vec![json!({"jsonrpc": "2.0", "result": ["after auth"], "id": "e"})]
    );
    let d = next(&bob).await;
    assert_eq!(
        (d.messages[0].from.as_str(), d.messages[0].message.as_str()),
        ("alice", "batched")
    );
    d.ack().await.unwrap();
}

/// A batch whose `msg.send` comes before its `auth.jwt` gets -32001 for the send (items run in
/// order), and the auth still succeeds.
#[tokio::test]
async fn send_before_auth_in_batch_is_refused() {
    let server = TestServer::start();
    let mut raw = RawSocket::connect(&server.url).await.unwrap();
    let batch = json!([
        {"jsonrpc": "2.0", "method": "msg.send", "params": [{"to": "bob", "message": "too early"}], "id": "s"},
        {"jsonrpc": "2.0", "method": "auth.jwt", "params": {"token": server.token("alice")}, "id": "a"},
    ]);
    raw.send_text(batch.to_string()).await.unwrap();
    let answers = by_id(&recv(&mut raw).await);
    assert_eq!(error_code(&answers[r#""s""#][0]), -32001);
    assert_eq!(answers[r#""a""#][0]["result"], "ACK");
    assert_nothing_pending(&mut raw).await;
}

/// A `msg.send` request of one message.
fn send_request(id: u32, to: &str, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "msg.send", "id": id,
           "params": [{"to": to, "message": text}]})
}

/// `msg.send` requests that arrive in one read are stored with one store call, yet each is
/// still its own all-or-nothing append with its own answer: with bob's inbox full after two,
/// the third request to him is refused (-32005) while the ones before it and the one to carol
/// after it are stored, and delivered.
#[tokio::test]
async fn sends_arriving_together_are_each_stored_or_refused_alone() {
    let server = TestServer::start_with(|c| c.delivery.max_pending = 2);
    let mut raw = authed(&server, "alice").await;
    let send = |id: u32, to: &str, text: &str| send_request(id, to, text).to_string();
    raw.send_texts_together(vec![
        send(1, "bob", "b1"),
        send(2, "bob", "b2"),
        send(3, "bob", "b3"),
        send(4, "carol", "c1"),
    ])
    .await
    .unwrap();
    let mut answers = HashMap::new();
    while answers.len() < 4 {
        let response = recv(&mut raw).await;
        answers.insert(response["id"].as_i64().unwrap(), response);
    }
    for id in [1, 2, 4] {
        assert_eq!(answers[&id]["result"], json!("ACK"), "{}", answers[&id]);
    }
    assert_eq!(error_code(&answers[&3]), -32005, "{}", answers[&3]);

    let bob = server.client("bob", None).await;
    let carol = server.client("carol", None).await;
    let texts = |d: titan_client::Delivery| -> Vec<String> {
        d.messages.iter().map(|m| m.message.clone()).collect()
    };
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(texts(next(&bob).await));
    }
    assert_eq!(got, ["b1", "b2"]);
    assert_eq!(texts(next(&carol).await), ["c1"]);
}

/// Lone `msg.send` frames (answered straight from the store's results) and a batch holding
/// `msg.send` requests (answered through the batch's array) in one read go to the store
/// together, and every answer finds its own request: with bob's inbox full after two, the
/// refusal of the batch's second request lands in the batch's array and the refusal of the lone
/// frame after it in that frame's answer, while the lone sends before and after are stored.
#[tokio::test]
async fn lone_and_batched_sends_in_one_read_get_their_own_answers() {
    let server = TestServer::start_with(|c| c.delivery.max_pending = 2);
    let mut raw = authed(&server, "alice").await;
    let batch = json!([send_request(2, "bob", "b2"), send_request(3, "bob", "b3")]);
    raw.send_texts_together(vec![
        send_request(1, "bob", "b1").to_string(),
        batch.to_string(),
        send_request(4, "bob", "b4").to_string(),
        send_request(5, "carol", "c1").to_string(),
    ])
    .await
    .unwrap();
    let mut lone = HashMap::new();
    let mut batched = None;
    while lone.len() < 3 || batched.is_none() {
        let frame = recv(&mut raw).await;
        if frame.is_array() {
            batched = Some(by_id(&frame));
        } else {
            lone.insert(frame["id"].as_i64().unwrap(), frame);
        }
    }
    let batched = batched.unwrap();
    assert_eq!(lone[&1]["result"], json!("ACK"), "{}", lone[&1]);
    assert_eq!(batched["2"][0]["result"], json!("ACK"), "{batched:?}");
    assert_eq!(error_code(&batched["3"][0]), -32005, "{batched:?}");
    assert_eq!(error_code(&lone[&4]), -32005, "{}", lone[&4]);
    assert_eq!(lone[&5]["result"], json!("ACK"), "{}", lone[&5]);
    assert_nothing_pending(&mut raw).await;
}
