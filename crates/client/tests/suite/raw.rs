//! `RawSocket`: frame-level access for tests of bad input.

use crate::script;

use script::{Peer, Scripted, within};
use serde_json::json;
use titan_client::{RawEvent, RawSocket};
use tokio_tungstenite::tungstenite::Message;

/// RawSocket sends and receives 1 MiB text frames.
#[tokio::test]
async fn one_mib_frames_both_ways() {
    let big = "x".repeat(1 << 20);
    let expected = big.clone();
    let server = Scripted::start(|mut peer: Peer| async move {
        match peer.next().await {
            Some(Message::Text(text)) => {
                assert_eq!(text.len(), expected.len());
                within(futures_util::SinkExt::send(
                    &mut peer.ws,
                    Message::Text(text),
                ))
                .await
                .unwrap();
            }
            other => panic!("expected text, got {other:?}"),
        }
        peer.drain().await;
    })
    .await;
    let mut raw = within(RawSocket::connect(&server.url)).await.unwrap();
    within(raw.send_text(big.clone())).await.unwrap();
    let echoed = within(raw.next_text()).await.unwrap().unwrap();
    assert_eq!(echoed.len(), big.len());
    within(raw.close()).await.unwrap();
    server.finish().await;
}

/// next_event reports text, binary, the close frame with its code, then the end.
#[tokio::test]
async fn events_in_order_with_close_code() {
    let server = Scripted::start(|mut peer: Peer| async move {
        let request = peer.recv().await;
        assert_eq!(request["method"], "echo");
        peer.reply(&request, json!("pong")).await;
        within(futures_util::SinkExt::send(
            &mut peer.ws,
            Message::binary(vec![1, 2]),
        ))
        .await
        .unwrap();
        peer.close(1009, "frame too large").await;
    })
    .await;
    let mut raw = within(RawSocket::connect(&server.url)).await.unwrap();
    within(raw.send_json(&json!({"jsonrpc": "2.0", "method": "echo", "id": 1})))
        .await
        .unwrap();
    let answer = within(raw.next_json()).await.unwrap().unwrap();
    assert_eq!(answer["result"], "pong");
    assert_eq!(
        within(raw.next_event()).await.unwrap(),
        RawEvent::Binary(vec![1, 2])
    );
    assert_eq!(raw.close_frame(), None);
    assert_eq!(
        within(raw.next_event()).await.unwrap(),
        RawEvent::Close(1009, "frame too large".to_owned())
    );
    assert_eq!(
        raw.close_frame(),
        Some((1009, "frame too large".to_owned()))
    );
    assert_eq!(within(raw.next_event()).await.unwrap(), RawEvent::End);
    server.finish().await;
}

/// Malformed text, binary frames and pings go out exactly as written.
#[tokio::test]
async fn bad_input_is_sent_verbatim() {
    let server = Scripted::start(|mut peer: Peer| async move {
        assert_eq!(peer.next().await, Some(Message::text("{not json")));
        assert_eq!(peer.next().await, Some(Message::binary(vec![0xff])));
        assert_eq!(peer.next().await, Some(Message::Ping(b"p".to_vec().into())));
        peer.close(4001, "authentication timeout").await;
    })
    .await;
    let mut raw = within(RawSocket::connect(&server.url)).await.unwrap();
    within(raw.send_text("{not json")).await.unwrap();
    within(raw.send_binary(vec![0xff])).await.unwrap();
    within(raw.send_ping(b"p".to_vec())).await.unwrap();
    // The pong the server's library sends back is skipped.
    assert_eq!(within(raw.next_text()).await.unwrap(), None);
    assert_eq!(raw.close_frame().map(|(code, _)| code), Some(4001));
    server.finish().await;
}
