//! `Client` against a scripted server: calls, deliveries and every way a connection ends.

use crate::script;

use script::{Peer, Scripted, within};
use serde_json::json;
use std::time::Duration;
use titan_client::{Client, ClientError, ClientOptions, Outgoing};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

/// auth.jwt carries the token and device and succeeds on "ACK".
#[tokio::test]
async fn authenticate_sends_token_and_device() {
    let server = Scripted::start(|mut peer: Peer| async move {
        let request = peer.expect_request("auth.jwt").await;
        assert_eq!(
            request["params"],
            json!({"token": "t0k", "device": "phone"})
        );
        peer.reply(&request, json!("ACK")).await;
        let request = peer.expect_request("auth.jwt").await;
        assert_eq!(request["params"], json!({"token": "t1k"}));
        peer.reply(&request, json!("NOPE")).await;
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    within(client.authenticate("t0k", Some("phone")))
        .await
        .unwrap();
    let err = within(client.authenticate("t1k", None)).await.unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    server.finish().await;
}

/// echo returns the server's result; null params are left out of the request.
#[tokio::test]
async fn echo_round_trips_and_omits_null_params() {
    let server = Scripted::start(|mut peer: Peer| async move {
        for _ in 0..2 {
            let request = peer.expect_request("echo").await;
            let params = request.get("params").cloned().unwrap_or_default();
            peer.reply(&request, params).await;
        }
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    let echoed = within(client.echo(json!({"a": [1, 2]}))).await.unwrap();
    assert_eq!(echoed, json!({"a": [1, 2]}));
    assert_eq!(within(client.echo(json!(null))).await.unwrap(), json!(null));
    server.finish().await;
}

/// A JSON-RPC error response becomes ClientError::Rpc with its code.
#[tokio::test]
async fn error_response_is_rpc_error() {
    let server = Scripted::start(|mut peer: Peer| async move {
        let request = peer.expect_request("msg.send").await;
        let error = json!({"code": -32001, "message": "Not authenticated"});
        peer.send(json!({"jsonrpc": "2.0", "error": error, "id": request["id"]}))
            .await;
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    let err = within(client.send("bob", "hi")).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32001), "{err:?}");
    server.finish().await;
}

/// Concurrent calls get their own responses even when the server answers out of order.
#[tokio::test]
async fn concurrent_calls_are_routed_by_id() {
    let server = Scripted::start(|mut peer: Peer| async move {
        let first = peer.expect_request("echo").await;
        let second = peer.expect_request("echo").await;
        peer.reply(&second, second["params"].clone()).await;
        peer.reply(&first, first["params"].clone()).await;
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    let (a, b) =
        within(async { tokio::join!(client.echo(json!(["a"])), client.echo(json!(["b"]))) }).await;
    assert_eq!(a.unwrap(), json!(["a"]));
    assert_eq!(b.unwrap(), json!(["b"]));
    server.finish().await;
}

/// send_many puts every message, with its optional id, into one msg.send.
#[tokio::test]
async fn send_many_sends_one_batch() {
    let server = Scripted::start(|mut peer: Peer| async move {
        let request = peer.expect_request("msg.send").await;
        let expected = json!([
            {"to": "bob", "message": "one"},
            {"to": "carol", "message": "two", "id": "c-1"},
        ]);
        assert_eq!(request["params"], expected);
        peer.reply(&request, json!("ACK")).await;
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    let batch = [
        Outgoing::new("bob", "one"),
        Outgoing::new("carol", "two").with_id("c-1"),
    ];
    within(client.send_many(&batch)).await.unwrap();
    server.finish().await;
}

/// A msg.recv request becomes a Delivery; ack answers "ACK" with the request's id.
#[tokio::test]
async fn delivery_ack_carries_request_id() {
    let server = Scripted::start(|mut peer: Peer| async move {
        peer.deliver(7, &[("m1", "hello"), ("m2", "again")]).await;
        let answer = peer.recv().await;
        assert_eq!(answer, json!({"jsonrpc": "2.0", "result": "ACK", "id": 7}));
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    let delivery = within(client.next_delivery()).await.unwrap();
    assert_eq!(delivery.request_id.as_u64(), Some(7));
    assert_eq!(delivery.message_ids(), ["m1", "m2"]);
    assert_eq!(delivery.messages[0].message, "hello");
    assert_eq!(delivery.messages[1].from.as_str(), "alice");
    assert!(!delivery.is_answered());
    within(delivery.ack()).await.unwrap();
    assert!(delivery.is_answered());
    server.finish().await;
}

/// reject answers the request with an error, so the server keeps the messages pending.
#[tokio::test]
async fn delivery_reject_sends_error() {
    let server = Scripted::start(|mut peer: Peer| async move {
        peer.deliver(3, &[("m1", "x")]).await;
        let answer = peer.recv().await;
        assert_eq!(answer["id"], 3);
        assert!(answer.get("result").is_none(), "{answer}");
        assert!(answer["error"]["code"].is_i64(), "{answer}");
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    let delivery = within(client.next_delivery()).await.unwrap();
    within(delivery.reject()).await.unwrap();
    // A delivery is answered once: a later ack sends nothing.
    within(delivery.ack()).await.unwrap();
    server.finish().await;
}

/// With auto_ack the client answers "ACK" before the application looks at the delivery.
#[tokio::test]
async fn auto_ack_answers_on_arrival() {
    let server = Scripted::start(|mut peer: Peer| async move {
        peer.deliver(11, &[("m1", "x")]).await;
        let answer = peer.recv().await;
        assert_eq!(answer, json!({"jsonrpc": "2.0", "result": "ACK", "id": 11}));
    })
    .await;
    let options = ClientOptions {
        auto_ack: true,
        ..ClientOptions::default()
    };
    let client = within(Client::connect_with(&server.url, options))
        .await
        .unwrap();
    server.finish().await;
    let delivery = within(client.next_delivery()).await.unwrap();
    assert!(delivery.is_answered());
    assert_eq!(delivery.message_ids(), ["m1"]);
}

/// A server request with an unknown method is answered with -32601.
#[tokio::test]
async fn unknown_server_method_is_method_not_found() {
    let server = Scripted::start(|mut peer: Peer| async move {
        peer.send(json!({"jsonrpc": "2.0", "method": "msg.nope", "params": [], "id": 5}))
            .await;
        let answer = peer.recv().await;
        assert_eq!(answer["id"], 5);
        assert_eq!(answer["error"]["code"], -32601);
    })
    .await;
    let _client = within(Client::connect(&server.url)).await.unwrap();
    server.finish().await;
}

/// msg.recv with malformed params is answered with -32602 and yields no delivery.
#[tokio::test]
async fn malformed_msg_recv_is_invalid_params() {
    let server = Scripted::start(|mut peer: Peer| async move {
        peer.send(json!({"jsonrpc": "2.0", "method": "msg.recv", "params": [{"id": 1}], "id": 9}))
            .await;
        let answer = peer.recv().await;
        assert_eq!(answer["id"], 9);
        assert_eq!(answer["error"]["code"], -32602);
        peer.close(1000, "done").await;
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    server.finish().await;
    assert!(within(client.next_delivery()).await.is_none());
}

/// Deliveries beyond delivery_buffer are refused with an error, so the server keeps them pending.
#[tokio::test]
async fn full_delivery_buffer_refuses_msg_recv() {
    let server = Scripted::start(|mut peer: Peer| async move {
        peer.deliver(1, &[("m1", "x")]).await;
        peer.deliver(2, &[("m2", "y")]).await;
        let answer = peer.recv().await;
        assert_eq!(answer["id"], 2);
        assert!(answer["error"]["code"].is_i64(), "{answer}");
    })
    .await;
    let options = ClientOptions {
        delivery_buffer: 1,
        ..ClientOptions::default()
    };
    let client = within(Client::connect_with(&server.url, options))
        .await
        .unwrap();
    server.finish().await;
    let delivery = within(client.next_delivery()).await.unwrap();
    assert_eq!(delivery.message_ids(), ["m1"]);
}

/// next_delivery_timeout returns Ok(None) when nothing arrives in time.
#[tokio::test]
async fn next_delivery_timeout_reports_silence() {
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let server = Scripted::start(|mut peer: Peer| async move {
        let _ = done_rx.await;
        peer.close(1000, "done").await;
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    let quiet = client
        .next_delivery_timeout(Duration::from_millis(50))
        .await;
    assert!(matches!(quiet, Ok(None)), "{quiet:?}");
    done_tx.send(()).unwrap();
    server.finish().await;
    let over = within(client.next_delivery_timeout(Duration::from_secs(5))).await;
    assert!(
        matches!(
            over,
            Err(ClientError::Closed {
                code: Some(1000),
                ..
            })
        ),
        "{over:?}"
    );
}

/// A server ping is answered with a pong while the client is idle.
#[tokio::test]
async fn server_ping_gets_pong() {
    let server = Scripted::start(|mut peer: Peer| async move {
        within(futures_util::SinkExt::send(
            &mut peer.ws,
            Message::Ping(b"hi".to_vec().into()),
        ))
        .await
        .unwrap();
        match peer.next().await {
            Some(Message::Pong(payload)) => assert_eq!(&payload[..], b"hi"),
            other => panic!("expected a pong, got {other:?}"),
        }
    })
    .await;
    let _client = within(Client::connect(&server.url)).await.unwrap();
    server.finish().await;
}

/// A server that never answers fails the call with Timeout after call_timeout.
#[tokio::test]
async fn silent_server_times_out() {
    let server = Scripted::start(|mut peer: Peer| async move {
        peer.expect_request("echo").await;
        assert_eq!(peer.expect_client_close().await, 1000);
    })
    .await;
    let options = ClientOptions {
        call_timeout: Duration::from_millis(100),
        ..ClientOptions::default()
    };
    let client = within(Client::connect_with(&server.url, options))
        .await
        .unwrap();
    let err = within(client.echo(json!([1]))).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout), "{err:?}");
    within(client.close()).await.unwrap();
    server.finish().await;
}
