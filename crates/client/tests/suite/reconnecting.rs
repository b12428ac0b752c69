//! `ReconnectingClient` against scripted servers: re-authentication, resend under the same client
//! id, acks, dedupe across connections, and the ends that must not reconnect.

use crate::script;

use script::{Peer, within};
use serde_json::json;
use std::time::Duration;
use titan_client::{Backoff, ConnectionState, ReconnectOptions, ReconnectingClient};
use tokio::net::TcpListener;

fn options() -> ReconnectOptions {
    ReconnectOptions {
        device: Some("phone".to_owned()),
        backoff: Backoff {
            min: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        ..ReconnectOptions::default()
    }
}

/// Accepts the next WebSocket on `listener`.
async fn accept(listener: &TcpListener) -> Peer {
    let (tcp, _) = within(listener.accept()).await.unwrap();
    Peer {
        ws: within(tokio_tungstenite::accept_async(tcp)).await.unwrap(),
    }
}

/// Reads `auth.jwt`, checks token and device, answers "ACK".
async fn expect_auth(peer: &mut Peer) {
    let auth = peer.expect_request("auth.jwt").await;
    assert_eq!(auth["params"], json!({"token": "tok", "device": "phone"}));
    peer.reply(&auth, json!("ACK")).await;
}

async fn expect_ack(peer: &mut Peer, id: u64) {
    let response = peer.recv().await;
    assert_eq!(
        response,
        json!({"jsonrpc": "2.0", "result": "ACK", "id": id})
    );
}

/// After a dropped connection the client re-authenticates, resends the unacked message with the
/// same client id, acks every delivery once its messages were taken, hands each message id to the
/// application once, and stops for good on close code 4002.
#[tokio::test]
async fn reconnects_resends_and_dedupes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let client = ReconnectingClient::start(url, "tok", options());

    let mut first = accept(&listener).await;
    expect_auth(&mut first).await;
    within(client.online()).await.unwrap();
    first.deliver(1, &[("m1", "one")]).await;
    let got = within(client.next_message()).await.unwrap();
    assert_eq!((got.id.as_str(), got.message.as_str()), ("m1", "one"));
    // Acknowledged once the application took it.
    expect_ack(&mut first, 1).await;

    let sending = tokio::spawn({
        let client = std::sync::Arc::new(client);
        let sender = client.clone();
        async move {
            let id = sender.send("alice", "hello").await;
            (id, client)
        }
    });
    let send = first.expect_request("msg.send").await;
    let client_id = send["params"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(send["params"][0]["to"], "alice");
    // The server drops the connection before answering.
    first.close(1011, "internal error").await;

    let mut second = accept(&listener).await;
    expect_auth(&mut second).await;
    let resend = second.expect_request("msg.send").await;
    assert_eq!(
        resend["params"][0]["id"],
        client_id.as_str(),
        "same client id"
    );
    assert_eq!(resend["params"][0]["message"], "hello");
    second.reply(&resend, json!("ACK")).await;
    let (sent, client) = within(sending).await.unwrap();
    assert_eq!(sent.unwrap(), client_id);

    // m1 again (its ack was lost, say) together with m2: both acked, only m2 handed over.
    second.deliver(7, &[("m1", "one"), ("m2", "two")]).await;
    let got = within(client.next_message()).await.unwrap();
    assert_eq!(got.id.as_str(), "m2");
    expect_ack(&mut second, 7).await;
    // A delivery of nothing new is acknowledged at once.
    second.deliver(8, &[("m2", "two")]).await;
    expect_ack(&mut second, 8).await;

    second.close(4002, "replaced by a newer session").await;
    assert_eq!(within(client.next_message()).await, None, "stream ends");
    match client.state() {
        ConnectionState::Stopped { reason } => assert!(reason.contains("4002"), "{reason}"),
        other => panic!("expected Stopped, got {other:?}"),
    }
    let err = within(client.send("alice", "late")).await.unwrap_err();
    assert!(err.to_string().contains("4002"), "{err}");
}

/// A refused token (-32002) stops the client instead of retrying with the same token.
#[tokio::test]
async fn refused_token_stops() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let client = ReconnectingClient::start(url, "tok", options());
    let mut peer = accept(&listener).await;
    let auth = peer.expect_request("auth.jwt").await;
    peer.send(json!({"jsonrpc": "2.0", "id": auth["id"],
        "error": {"code": -32002, "message": "token expired"}}))
        .await;
    let err = within(client.online()).await.unwrap_err();
    assert!(err.to_string().contains("token expired"), "{err}");
    assert!(matches!(client.state(), ConnectionState::Stopped { .. }));
}
