//! The old Go server's test scenarios, run against the real server through the client crate.

use crate::common;

use common::{TestServer, next};
use serde_json::json;
use titan_client::{Client, Outgoing};

/// A valid token authenticates, then echo returns its params.
#[tokio::test]
async fn valid_token_then_echo() {
    let server = TestServer::start();
    let c = server.client("alice", None).await;
    assert_eq!(
        c.echo(json!({"hello": [1, 2]})).await.unwrap(),
        json!({"hello": [1, 2]})
    );
}

/// An invalid token gets a -32002 error reply (not a dropped socket) and the connection stays
/// usable for another attempt.
#[tokio::test]
async fn invalid_token_is_an_error_reply() {
    let server = TestServer::start();
    let c = Client::connect(&server.url).await.unwrap();
    let err = c.authenticate("not-a-jwt", None).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32002));
    let other =
        titan_session::Authenticator::hs256(b"wrong", std::time::Duration::from_secs(60)).unwrap();
    let forged = other
        .mint(&titan_protocol::UserId::new("alice").unwrap(), None, None)
        .unwrap();
    assert_eq!(
        c.authenticate(&forged, None).await.unwrap_err().rpc_code(),
        Some(-32002)
    );
    c.authenticate(&server.token("alice"), None).await.unwrap();
    assert_eq!(c.echo(json!([1])).await.unwrap(), json!([1]));
}

/// Before authentication, anything but auth.* is refused with -32001.
#[tokio::test]
async fn unauthenticated_requests_are_refused() {
    let server = TestServer::start();
    let c = Client::connect(&server.url).await.unwrap();
    assert_eq!(
        c.echo(json!([1])).await.unwrap_err().rpc_code(),
        Some(-32001)
    );
    assert_eq!(
        c.send("bob", "hi").await.unwrap_err().rpc_code(),
        Some(-32001)
    );
}

/// A message to the echo bot comes back to the sender from "echo".
#[tokio::test]
async fn echo_bot() {
    let server = TestServer::start();
    let c = server.client("alice", None).await;
    c.send("echo", "ping").await.unwrap();
    let d = next(&c).await;
    assert_eq!(d.messages.len(), 1);
    let m = &d.messages[0];
    assert_eq!(
        (m.from.as_str(), m.to.as_str(), m.message.as_str()),
        ("echo", "alice", "ping")
    );
    d.ack().await.unwrap();
}

/// The echo recipient matches in any letter case.
#[tokio::test]
async fn echo_recipient_is_case_insensitive() {
    let server = TestServer::start();
    let c = server.client("alice", None).await;
    for to in ["ECHO", "Echo", "eChO"] {
        c.send(to, to).await.unwrap();
        let d = next(&c).await;
        assert_eq!(d.messages[0].from.as_str(), "echo");
        assert_eq!(d.messages[0].message, to);
        d.ack().await.unwrap();
    }
}

/// Old clients put the token inside a request's params; that authenticates first.
#[tokio::test]
async fn echo_with_token_in_params() {
    let server = TestServer::start();
    let c = Client::connect(&server.url).await.unwrap();
    let params = json!({"token": server.token("alice"), "x": 1});
    assert_eq!(c.echo(params.clone()).await.unwrap(), params);
    // The connection is now authenticated.
    assert_eq!(c.echo(json!([2])).await.unwrap(), json!([2]));
    let bad = json!({"token": "nope"});
    let c2 = Client::connect(&server.url).await.unwrap();
    assert_eq!(c2.echo(bad).await.unwrap_err().rpc_code(), Some(-32002));
}

/// An old client's `msg.send` with the token among its params (a lone message object, as the Go
/// clients sent it) authenticates first and is stored: a signed-out session never takes the
/// fast path of `msg.send`, which knows nothing of tokens (fails if it does).
#[tokio::test]
async fn send_with_token_in_params() {
    let server = TestServer::start();
    let bob = server.client("bob", None).await;
    let old = Client::connect(&server.url).await.unwrap();
    let params =
        json!({"to": "bob", "message": "from an old client", "token": server.token("alice")});
    assert_eq!(old.call("msg.send", params).await.unwrap(), json!("ACK"));
    let m = &next(&bob).await.messages[0];
    assert_eq!(
        (m.from.as_str(), m.message.as_str()),
        ("alice", "from an old client")
    );
}

/// Two online users send to each other; each gets the other's message with server-set fields.
#[tokio::test]
async fn online_send_both_ways() {
    let server = TestServer::start();
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", None).await;
    alice.send("bob", "hi bob").await.unwrap();
    let d = next(&bob).await;
    let m = &d.messages[0];
    assert_eq!(
        (m.from.as_str(), m.to.as_str(), m.message.as_str()),
        ("alice", "bob", "hi bob")
    );
    assert!(m.time.ends_with('Z'), "{}", m.time);
    d.ack().await.unwrap();
    bob.send("alice", "hi alice").await.unwrap();
    let d = next(&alice).await;
    assert_eq!(d.messages[0].from.as_str(), "bob");
    d.ack().await.unwrap();
}

/// `from` is the authenticated user whatever the client wrote.
#[tokio::test]
async fn sender_cannot_be_forged() {
    let server = TestServer::start();
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", None).await;
    alice
        .call(
            "msg.send",
            json!([{"to": "bob", "message": "x", "from": "mallory"}]),
        )
        .await
        .unwrap();
    assert_eq!(next(&bob).await.messages[0].from.as_str(), "alice");
}

/// A message sent while the recipient is offline is delivered when it connects.
#[tokio::test]
async fn offline_send_delivered_on_connect() {
    let server = TestServer::start();
    let alice = server.client("alice", None).await;
    alice.send("bob", "while you were out").await.unwrap();
    let bob = server.client("bob", None).await;
    let d = next(&bob).await;
    assert_eq!(d.messages[0].message, "while you were out");
}

/// Several messages in one msg.send all arrive, in order.
#[tokio::test]
async fn several_messages_in_one_send() {
    let server = TestServer::start();
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", None).await;
    let batch: Vec<Outgoing> = (0..5)
        .map(|i| Outgoing::new("bob", format!("m{i}")))
        .collect();
    alice.send_many(&batch).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let d = next(&bob).await;
        got.extend(d.messages.iter().map(|m| m.message.clone()));
        d.ack().await.unwrap();
    }
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
}

/// The client closes first: the server stays up and serves the next client.
#[tokio::test]
async fn client_first_disconnect() {
    let server = TestServer::start();
    let c = server.client("alice", None).await;
    c.close().await.unwrap();
    let c = server.client("alice", None).await;
    assert_eq!(c.echo(json!([1])).await.unwrap(), json!([1]));
}

/// The server closes first (here: a second session of the same device replaces the first,
/// which is closed with 4002); the newer session keeps working.
#[tokio::test]
async fn server_first_disconnect() {
    let server = TestServer::start();
    let old = server.client("alice", Some("phone")).await;
    let new = server.client("alice", Some("phone")).await;
    assert_eq!(
        tokio::time::timeout(common::WAIT, old.close_code())
            .await
            .unwrap(),
        Some(4002)
    );
    assert_eq!(
        old.echo(json!([1])).await.unwrap_err().close_code(),
        Some(4002)
    );
    assert_eq!(new.echo(json!([2])).await.unwrap(), json!([2]));
}
