//! How a `Client` connection ends: server close codes, lost sockets, client close and drop.

use crate::script;

use script::{Peer, Scripted, within};
use serde_json::json;
use titan_client::{Client, ClientError};
use tokio::sync::oneshot;

/// After a 4002 close frame, a call fails with Closed { code: Some(4002) } and closed() reports it.
#[tokio::test]
async fn server_close_code_fails_later_calls() {
    let (sent_tx, sent_rx) = oneshot::channel();
    let server = Scripted::start(|mut peer: Peer| async move {
        let request = peer.expect_request("auth.jwt").await;
        peer.reply(&request, json!("ACK")).await;
        let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 4002.into(),
            reason: "replaced by a newer session".into(),
        };
        within(peer.ws.close(Some(frame))).await.unwrap();
        sent_tx.send(()).unwrap();
        peer.drain().await;
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    within(client.authenticate("t", None)).await.unwrap();
    within(sent_rx).await.unwrap();
    // Whether the call is written before or after the close frame is read, it fails with 4002.
    let err = within(client.echo(json!([1]))).await.unwrap_err();
    assert!(
        matches!(
            &err,
            ClientError::Closed {
                code: Some(4002),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        within(client.closed()).await,
        Some((4002, "replaced by a newer session".to_owned()))
    );
    assert!(client.is_closed());
    server.finish().await;
    assert!(within(client.next_delivery()).await.is_none());
}

/// A call in flight when the server closes fails promptly with the close code.
#[tokio::test]
async fn pending_call_fails_on_close() {
    let server = Scripted::start(|mut peer: Peer| async move {
        peer.expect_request("msg.send").await;
        peer.close(4003, "slow consumer").await;
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    let err = within(client.send("bob", "hi")).await.unwrap_err();
    assert_eq!(err.close_code(), Some(4003), "{err:?}");
    assert_eq!(within(client.close_code()).await, Some(4003));
    server.finish().await;
}

/// A socket that ends without a close frame fails calls with Closed { code: None } and ends
/// the deliveries.
#[tokio::test]
async fn lost_socket_fails_calls_without_code() {
    let server = Scripted::start(|mut peer: Peer| async move {
        peer.expect_request("echo").await;
        drop(peer);
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    let err = within(client.echo(json!([1]))).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Closed { code: None, .. }),
        "{err:?}"
    );
    assert_eq!(within(client.closed()).await, None);
    assert!(within(client.next_delivery()).await.is_none());
    let err = within(client.echo(json!([2]))).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Closed { code: None, .. }),
        "{err:?}"
    );
    server.finish().await;
}

/// close() sends a 1000 close frame and returns once the server answered it.
#[tokio::test]
async fn close_performs_handshake() {
    let server = Scripted::start(|mut peer: Peer| async move {
        assert_eq!(peer.expect_client_close().await, 1000);
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    within(client.close()).await.unwrap();
    assert_eq!(within(client.close_code()).await, Some(1000));
    let err = within(client.echo(json!([1]))).await.unwrap_err();
    assert_eq!(err.close_code(), Some(1000), "{err:?}");
    server.finish().await;
}

/// Dropping the client closes the connection with code 1000, after the frames written before.
#[tokio::test]
async fn drop_closes_with_1000() {
    let server = Scripted::start(|mut peer: Peer| async move {
        peer.deliver(4, &[("m1", "x")]).await;
        let answer = peer.recv().await;
        assert_eq!(answer["result"], "ACK");
        assert_eq!(peer.expect_client_close().await, 1000);
    })
    .await;
    let client = within(Client::connect(&server.url)).await.unwrap();
    let delivery = within(client.next_delivery()).await.unwrap();
    within(delivery.ack()).await.unwrap();
    drop(client);
    server.finish().await;
    // The delivery outlives the client; answering it now reports the closed connection.
    let err = within(delivery.reject()).await;
    assert!(err.is_ok(), "already answered, so nothing is sent: {err:?}");
}

/// Client, Delivery and the futures of their methods can move across threads.
#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    fn check(client: &Client, delivery: &titan_client::Delivery) {
        send_sync(client);
        send_sync(delivery);
        send(client.call("echo", json!([])));
        send(client.next_delivery());
        send(delivery.ack());
    }
    let _ = check;
}

/// Connecting to a port nobody listens on fails with a WebSocket error instead of hanging.
#[tokio::test]
async fn connect_refused_is_an_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    drop(listener);
    let err = within(Client::connect(&url)).await.unwrap_err();
    assert!(matches!(err, ClientError::WebSocket(_)), "{err:?}");
}
