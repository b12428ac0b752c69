//! Golden tests: the JSON-RPC 2.0 specification's examples, parsed and answered as the
//! specification says.

use super::*;
use serde_json::json;

fn single(text: &str) -> Incoming {
    match parse_frame(text, 100).unwrap() {
        Frame::Single(i) => i,
        other => panic!("not single: {other:?}"),
    }
}

/// A request with positional params parses with its id and method.
#[test]
fn request_positional() {
    assert_eq!(
        single(r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#),
        Incoming::Request {
            id: Id::from(1),
            method: "subtract".into(),
            params: Some(json!([42, 23]))
        }
    );
}

/// Without an id member a call is a notification.
#[test]
fn notification() {
    assert_eq!(
        single(r#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#),
        Incoming::Notification {
            method: "update".into(),
            params: Some(json!([1, 2, 3, 4, 5]))
        }
    );
}

/// Old clients omit "jsonrpc"; string ids echo verbatim.
#[test]
fn missing_jsonrpc_member_is_accepted() {
    assert_eq!(
        single(r#"{"method": "echo", "params": {"a": 1}, "id": "x-1"}"#),
        Incoming::Request {
            id: Id::String("x-1".into()),
            method: "echo".into(),
            params: Some(json!({"a": 1}))
        }
    );
}

/// Invalid JSON is a parse error for the whole frame.
#[test]
fn parse_error() {
    let err = parse_frame(
        r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#,
        100,
    )
    .unwrap_err();
    assert_eq!(err.code, -32700);
    let err = parse_frame(
        r#"[{"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},{"jsonrpc": "2.0", "method""#,
        100,
    )
    .unwrap_err();
    assert_eq!(err.code, -32700);
}

/// A non-string method is an invalid request answered with the request's id.
#[test]
fn invalid_request_object() {
    let i = single(r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#);
    assert!(matches!(i, Incoming::Invalid { id: Id::Null, ref error } if error.code == -32600));
}

/// An empty batch is one invalid request; `[1]` and `[1,2,3]` give one error per element.
#[test]
fn batch_examples() {
    assert_eq!(parse_frame("[]", 100).unwrap_err().code, -32600);
    let Frame::Batch(items) = parse_frame("[1]", 100).unwrap() else {
        panic!()
    };
    assert_eq!(items.len(), 1);
    let Frame::Batch(items) = parse_frame("[1,2,3]", 100).unwrap() else {
        panic!()
    };
    assert_eq!(items.len(), 3);
    assert!(
        items.iter().all(
            |i| matches!(i, Incoming::Invalid { id: Id::Null, error } if error.code == -32600)
        )
    );
}

/// The mixed batch of the specification classifies each element.
#[test]
fn mixed_batch() {
    let text = r#"[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]"#;
    let Frame::Batch(items) = parse_frame(text, 100).unwrap() else {
        panic!()
    };
    assert!(matches!(items[0], Incoming::Request { .. }));
    assert!(matches!(items[1], Incoming::Notification { .. }));
    assert!(matches!(items[3], Incoming::Invalid { id: Id::Null, .. }));
    assert!(matches!(items[5], Incoming::Request { params: None, .. }));
}

/// A batch over the limit is refused whole.
#[test]
fn batch_limit() {
    let text = format!("[{}]", ["1"; 11].join(","));
    assert_eq!(parse_frame(&text, 10).unwrap_err().code, -32600);
}

/// Responses from the client are recognised; a malformed one is an error outcome, never a reply.
#[test]
fn responses() {
    assert_eq!(
        single(r#"{"jsonrpc":"2.0","result":"ok","id":7}"#),
        Incoming::Response {
            id: Id::from(7),
            outcome: Ok(json!("ok"))
        }
    );
    assert!(matches!(
        single(r#"{"error":{"code":-1,"message":"no"},"id":7}"#),
        Incoming::Response { outcome: Err(e), .. } if e.code == -1
    ));
    assert!(matches!(
        single(r#"{"result":1,"error":{"code":-1,"message":"no"},"id":7}"#),
        Incoming::Response {
            outcome: Err(_),
            ..
        }
    ));
}

/// Deeply nested JSON is refused as a parse error rather than overflowing the stack.
#[test]
fn deep_nesting_is_a_parse_error() {
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(parse_frame(&text, 100).unwrap_err().code, -32700);
}

/// Responses always carry "jsonrpc":"2.0" and exactly one of result/error.
#[test]
fn response_serialisation() {
    assert_eq!(
        Response::ok(Id::from(1), json!(19)).to_text(),
        r#"{"jsonrpc":"2.0","result":19,"id":1}"#
    );
    assert_eq!(
        Response::error(Id::Null, RpcError::new(ErrorCode::ParseError)).to_text(),
        r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}"#
    );
    let req = ServerRequest::new(Some(Id::from(3)), "msg.recv", json!([])).to_text();
    assert_eq!(
        req,
        r#"{"jsonrpc":"2.0","method":"msg.recv","params":[],"id":3}"#
    );
}

/// A `msg.recv` built from stored JSON text is the frame built from the messages themselves,
/// byte for byte (escapes included); text that is not one JSON value is refused.
#[test]
fn stored_message_text_goes_into_msg_recv_as_it_is() {
    use crate::{Message, MessageId, MessageJson, UserId};
    let message = Message {
        id: MessageId::new("m-1").unwrap(),
        from: UserId::new("alice").unwrap(),
        to: UserId::new("bob").unwrap(),
        time: "2026-11-29T14:00:00.000Z".to_owned(),
        message: "say \"hi\" \u{e9}\n".to_owned(),
    };
    let stored = serde_json::to_string(&message).unwrap();
    let json = MessageJson::from_stored(stored.clone()).unwrap();
    assert_eq!(json.as_str(), stored);
    assert_eq!(json.decode().unwrap(), message);
    let from_text = ServerRequest::new(Some(Id::from(7)), "msg.recv", [&json, &json]).to_text();
    let from_message =
        ServerRequest::new(Some(Id::from(7)), "msg.recv", [&message, &message]).to_text();
    assert_eq!(from_text, from_message);
    for bad in ["", "{\"id\":", "{} {}", "\u{0}"] {
        assert!(MessageJson::from_stored(bad.to_owned()).is_err(), "{bad:?}");
    }
}

/// The fast path of `parse_frame` (one object read straight into its members) must give what
/// the general path (`classify` of the parsed value) gives, for every shape: valid calls and
/// responses, members that are null, of the wrong type, repeated (the last wins), or unknown.
#[test]
fn fast_path_agrees_with_the_general_path() {
    let frames = [
        r#"{"jsonrpc":"2.0","id":7,"method":"msg.send","params":[{"to":"bob","message":"hi"}]}"#,
        r#"{"id":"a","method":"echo","params":{"x":1}}"#,
        r#"{"jsonrpc":"2.0","method":"echo"}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"echo"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"echo","params":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"echo","params":3}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"echo"}"#,
        r#"{"jsonrpc":"2\u002e0","id":1,"method":"echo"}"#,
        r#"{"jsonrpc":2,"id":1,"method":"echo"}"#,
        r#"{"jsonrpc":null,"id":1,"method":"echo"}"#,
        r#"{"jsonrpc":"2.0","id":[1],"method":"echo"}"#,
        r#"{"jsonrpc":"2.0","id":1.5,"method":"echo"}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":"ACK"}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":null}"#,
        r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}"#,
        r#"{"jsonrpc":"2.0","id":3,"error":"bad"}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":1,"error":{"code":1,"message":"x"}}"#,
        r#"{"jsonrpc":"2.0","id":3}"#,
        r#"{"id":1,"id":2,"method":"echo"}"#,
        r#"{"id":1,"method":"a","method":"echo"}"#,
        r#"{"id":1,"method":"echo","extra":{"deep":[1,2]},"extra":0}"#,
        r#"{}"#,
        r#"  {"id":1,"method":"echo"}  "#,
    ];
    for text in frames {
        let general = classify(serde_json::from_str(text).unwrap());
        assert_eq!(single(text), general, "{text}");
    }
}

/// Every frame one edit away from an ordinary one (a request, a notification, a response, an
/// error response) that the fast path of `parse_frame` takes is parsed as the general path
/// parses it. The count makes sure the edits do reach the fast path.
#[test]
fn frames_one_edit_away_agree_with_the_general_path() {
    let seeds = [
        r#"{"jsonrpc":"2.0","id":7,"method":"msg.send","params":[{"to":"bob","message":"hi"}]}"#,
        r#"{"id":"a","method":"echo","params":{"x":null}}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":"ACK"}"#,
        r#"{"jsonrpc":"2.0","id":-3,"error":{"code":-32601,"message":"no","data":[1.5]}}"#,
    ];
    let mut taken = 0;
    for seed in seeds {
        for text in crate::one_edit::one_edit_away(seed) {
            if text.trim_start().starts_with('[') || serde_json::from_str::<Members>(&text).is_err()
            {
                continue;
            }
            taken += 1;
            let value: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("the fast path took what is not JSON ({e}): {text}"));
            assert_eq!(single(&text), classify(value), "{text}");
        }
    }
    assert!(
        taken > 1_000,
        "only {taken} edited frames took the fast path"
    );
}

/// What the fast path refuses still gets its answer from the general path.
#[test]
fn fast_path_leaves_non_objects_to_the_general_path() {
    assert_eq!(single("5"), classify(json!(5)));
    assert_eq!(single(r#""x""#), classify(json!("x")));
    assert!(matches!(
        parse_frame(r#" [{"id":1,"method":"echo"}]"#, 100),
        Ok(Frame::Batch(items)) if items.len() == 1
    ));
    assert_eq!(
        parse_frame(r#"{"id":1,"method":"echo"} x"#, 100)
            .unwrap_err()
            .code,
        ErrorCode::ParseError.code()
    );
}
