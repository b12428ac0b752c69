//! At-least-once delivery, end to end: redelivery with the same ids, acks, devices, catch-up,
//! order, idempotent sends, full inboxes, replaced sessions and the in-flight window.

use crate::common;

use common::{TestServer, next};
use serde_json::json;
use std::time::Duration;
use titan_client::{Client, ClientError, Delivery, Outgoing};
use titan_protocol::Message;

/// A short ack timeout, so redelivery tests run quickly.
const ACK_TIMEOUT: Duration = Duration::from_millis(200);

/// How long silence must last to count as "nothing (more) is delivered": a bounded multiple of
/// [`ACK_TIMEOUT`], so a redelivery that should not happen would have happened.
const SILENCE: Duration = Duration::from_secs(1);

fn short_ack_timeout() -> TestServer {
    TestServer::start_with(|c| c.delivery.ack_timeout = ACK_TIMEOUT)
}

fn ids(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.id.as_str().to_owned()).collect()
}

fn bodies(messages: &[Message]) -> Vec<String> {
    messages.iter().map(|m| m.message.clone()).collect()
}

fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Receives until `n` messages arrived, acking each delivery when `ack` is set.
async fn receive(c: &Client, n: usize, ack: bool) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < n {
        let d = next(c).await;
        got.extend(d.messages.iter().cloned());
        if ack {
            d.ack().await.unwrap();
        }
    }
    assert_eq!(
        got.len(),
        n,
        "more messages than expected: {:?}",
        bodies(&got)
    );
    got
}

/// Fails if anything is delivered to `c` within [`SILENCE`].
async fn assert_silent(c: &Client, who: &str) {
    if let Some(d) = c.next_delivery_timeout(SILENCE).await.unwrap() {
        panic!(
            "{who} got an unexpected delivery: {:?}",
            bodies(&d.messages)
        );
    }
}

/// Sends each body as its own msg.send, in order.
async fn send_each(from: &Client, to: &str, bodies: &[String]) {
    for body in bodies {
        from.send(to, body).await.unwrap();
    }
}

/// Sends the bodies as msg.send batches of `size`, in order.
async fn send_batches(from: &Client, to: &str, bodies: &[String], size: usize) {
    for chunk in bodies.chunks(size) {
        let batch: Vec<Outgoing> = chunk
            .iter()
            .map(|b| Outgoing::new(to, b.as_str()))
            .collect();
        from.send_many(&batch).await.unwrap();
    }
}

/// Messages received but not acked are sent again, with the same ids, when the device reconnects.
#[tokio::test]
async fn unacked_redelivered_with_same_ids_after_reconnect() {
    let server = TestServer::start();
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", Some("phone")).await;
    send_each(&alice, "bob", &numbered("m", 3)).await;
    let first = receive(&bob, 3, false).await;
    bob.close().await.unwrap();
    let bob = server.client("bob", Some("phone")).await;
    let again = receive(&bob, 3, true).await;
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(bodies(&again), numbered("m", 3));
}

/// On one connection, a msg.recv not answered within the ack timeout is sent again with the same
/// ids, again and again until acked.
#[tokio::test]
async fn unacked_redelivered_after_ack_timeout() {
    let server = short_ack_timeout();
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", None).await;
    alice.send("bob", "hi").await.unwrap();
    let first = next(&bob).await;
    for _ in 0..3 {
        let again = next(&bob).await;
        assert_eq!(ids(&again.messages), ids(&first.messages));
    }
    next(&bob).await.ack().await.unwrap();
    assert_silent(&bob, "bob").await;
}

/// An error response to msg.recv leaves the messages pending; they come again, same ids.
#[tokio::test]
async fn rejected_recv_is_redelivered() {
    let server = short_ack_timeout();
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", None).await;
    alice.send("bob", "hi").await.unwrap();
    let first = next(&bob).await;
    first.reject().await.unwrap();
    let again = next(&bob).await;
    assert_eq!(ids(&again.messages), ids(&first.messages));
    assert_eq!(again.messages[0].message, "hi");
    again.ack().await.unwrap();
    assert_silent(&bob, "bob").await;
}

/// Acked messages are never sent again, even long past the ack timeout.
#[tokio::test]
async fn acked_messages_are_not_redelivered() {
    let server = short_ack_timeout();
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", None).await;
    send_each(&alice, "bob", &numbered("m", 3)).await;
    receive(&bob, 3, true).await;
    assert_silent(&bob, "bob").await;
}

/// Each device of a user gets every message, and each acks on its own: the device that did not
/// ack gets them again, the one that did does not.
#[tokio::test]
async fn devices_receive_and_ack_independently() {
    let server = short_ack_timeout();
    let alice = server.client("alice", None).await;
    let phone = server.client("bob", Some("phone")).await;
    let laptop = server.client("bob", Some("laptop")).await;
    send_batches(&alice, "bob", &numbered("m", 3), 3).await;
    let on_phone = receive(&phone, 3, true).await;
    let on_laptop = receive(&laptop, 3, false).await;
    assert_eq!(ids(&on_phone), ids(&on_laptop));
    assert_eq!(bodies(&on_laptop), numbered("m", 3));
    let again = receive(&laptop, 3, true).await;
    assert_eq!(ids(&again), ids(&on_laptop));
    assert_silent(&phone, "phone").await;
    assert_silent(&laptop, "laptop").await;
}

/// A device that was offline gets exactly what it missed when it reconnects; a device that
/// connects for the first time gets everything retained.
#[tokio::test]
async fn offline_device_catches_up_and_new_device_gets_retained() {
    let server = TestServer::start();
    let alice = server.client("alice", None).await;
    let phone = server.client("bob", Some("phone")).await;
    let laptop = server.client("bob", Some("laptop")).await;
    alice.send("bob", "m0").await.unwrap();
    receive(&phone, 1, true).await;
    receive(&laptop, 1, true).await;
    laptop.close().await.unwrap();
    send_each(&alice, "bob", &["m1".to_owned(), "m2".to_owned()]).await;
    assert_eq!(bodies(&receive(&phone, 2, true).await), ["m1", "m2"]);

    let laptop = server.client("bob", Some("laptop")).await;
    assert_eq!(bodies(&receive(&laptop, 2, true).await), ["m1", "m2"]);
    let tablet = server.client("bob", Some("tablet")).await;
    assert_eq!(bodies(&receive(&tablet, 3, true).await), ["m0", "m1", "m2"]);
    assert_silent(&laptop, "laptop").await;
}

/// 100 messages sent one per msg.send reach the recipient in the order they were accepted,
/// while sender and receiver run concurrently.
#[tokio::test]
async fn order_preserved_single_sends() {
    let server = TestServer::start_with(|c| {
        c.delivery.window = 8;
        c.delivery.recv_batch = 3;
    });
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", None).await;
    let expected = numbered("m", 100);
    let (_, got) = tokio::join!(
        send_each(&alice, "bob", &expected),
        receive(&bob, 100, true)
    );
    assert_eq!(bodies(&got), expected);
}

/// 100 messages sent as msg.send batches of 10 reach the recipient in order.
#[tokio::test]
async fn order_preserved_batches() {
    let server = TestServer::start_with(|c| {
        c.delivery.window = 8;
        c.delivery.recv_batch = 3;
    });
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", None).await;
    let expected = numbered("m", 100);
    let (_, got) = tokio::join!(
        send_batches(&alice, "bob", &expected, 10),
        receive(&bob, 100, true)
    );
    assert_eq!(bodies(&got), expected);
}

/// Order holds across a reconnect mid-way: after it, the device gets the unacked messages again
/// and then the rest, exactly in order.
#[tokio::test]
async fn order_preserved_across_reconnect() {
    let server = TestServer::start_with(|c| c.delivery.recv_batch = 10);
    let alice = server.client("alice", None).await;
    let expected = numbered("m", 100);
    send_each(&alice, "bob", &expected[..30]).await;
    send_batches(&alice, "bob", &expected[30..], 7).await;

    let bob = server.client("bob", Some("phone")).await;
    let mut acked = 0;
    // Ack four deliveries, take a fifth without acking, then drop the connection.
    for _ in 0..4 {
        let d = next(&bob).await;
        assert_eq!(
            bodies(&d.messages),
            expected[acked..acked + d.messages.len()]
        );
        acked += d.messages.len();
        d.ack().await.unwrap();
    }
    let unacked = next(&bob).await;
    assert_eq!(unacked.messages[0].message, expected[acked]);
    bob.close().await.unwrap();

    let bob = server.client("bob", Some("phone")).await;
    let rest = receive(&bob, expected.len() - acked, true).await;
    assert_eq!(bodies(&rest), expected[acked..]);
    assert_eq!(ids(&rest[..unacked.messages.len()]), ids(&unacked.messages));
}

/// A client id makes msg.send idempotent per sender: the same id again (in a later call or in the
/// same batch) stores nothing new but is ACKed; another sender's same client id is another
/// message; recipients see server ids, not client ids.
#[tokio::test]
async fn idempotent_send_with_client_id() {
    let server = TestServer::start();
    let alice = server.client("alice", None).await;
    let carol = server.client("carol", None).await;
    let bob = server.client("bob", None).await;
    let once = [Outgoing::new("bob", "hello").with_id("c-1")];
    alice.send_many(&once).await.unwrap();
    alice.send_many(&once).await.unwrap();
    let twice = [
        Outgoing::new("bob", "first").with_id("c-2"),
        Outgoing::new("bob", "second").with_id("c-2"),
    ];
    alice.send_many(&twice).await.unwrap();
    carol
        .send_many(&[Outgoing::new("bob", "from carol").with_id("c-1")])
        .await
        .unwrap();

    let got = receive(&bob, 3, true).await;
    let seen: Vec<(&str, &str)> = got
        .iter()
        .map(|m| (m.from.as_str(), m.message.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("alice", "hello"),
            ("alice", "first"),
            ("carol", "from carol")
        ]
    );
    let server_ids = ids(&got);
    assert!(
        server_ids.iter().all(|id| id != "c-1" && id != "c-2"),
        "{server_ids:?}"
    );
    assert_silent(&bob, "bob").await;
}

/// A recipient at `max_pending` makes the whole msg.send fail with -32005 (naming the user) and
/// stores nothing of it, not even for other recipients; once the recipient acks, sending works.
#[tokio::test]
async fn full_inbox_refuses_whole_send_until_acked() {
    let server = TestServer::start_with(|c| c.delivery.max_pending = 3);
    let alice = server.client("alice", None).await;
    let carol = server.client("carol", None).await;
    let bob = server.client("bob", None).await;
    send_each(&alice, "bob", &numbered("m", 3)).await;
    let mut held = Vec::new();
    while held
        .iter()
        .map(|d: &Delivery| d.messages.len())
        .sum::<usize>()
        < 3
    {
        held.push(next(&bob).await);
    }

    let batch = [
        Outgoing::new("carol", "lost"),
        Outgoing::new("bob", "overflow"),
    ];
    match alice.send_many(&batch).await.unwrap_err() {
        ClientError::Rpc(e) => {
            assert_eq!(e.code, -32005, "{e:?}");
            assert_eq!(
                e.data.as_ref().and_then(|d| d.get("user")),
                Some(&json!("bob")),
                "{e:?}"
            );
        }
        other => panic!("expected -32005, got {other:?}"),
    }
    assert_silent(&carol, "carol").await;

    for d in held {
        d.ack().await.unwrap();
    }
    // The ack is a response, which the server does not answer. bob's own msg.send reaches the
    // dispatcher after it, so once that is ACKed the ack has been applied.
    bob.send("dave", "barrier").await.unwrap();

    alice
        .send_many(&[Outgoing::new("carol", "x"), Outgoing::new("bob", "m3")])
        .await
        .unwrap();
    assert_eq!(bodies(&receive(&carol, 1, true).await), ["x"]);
    assert_eq!(bodies(&receive(&bob, 1, true).await), ["m3"]);
}

/// A second connection of the same (user, device) replaces the first, which is closed with 4002;
/// the new one receives the messages the old one had not acked, same ids.
#[tokio::test]
async fn replaced_session_closed_and_successor_gets_unacked() {
    let server = TestServer::start();
    let alice = server.client("alice", None).await;
    let old = server.client("bob", Some("phone")).await;
    send_each(&alice, "bob", &numbered("m", 2)).await;
    let unacked = receive(&old, 2, false).await;
    let new = server.client("bob", Some("phone")).await;
    assert_eq!(
        tokio::time::timeout(common::WAIT, old.close_code())
            .await
            .unwrap(),
        Some(4002)
    );
    let again = receive(&new, 2, true).await;
    assert_eq!(ids(&again), ids(&unacked));
    alice.send("bob", "after").await.unwrap();
    assert_eq!(bodies(&receive(&new, 1, true).await), ["after"]);
}

/// With a small window, every message arrives, in order, and the device never holds more than
/// `window` unacked messages.
#[tokio::test]
async fn window_bounds_unacked_messages() {
    let window = 4;
    let server = TestServer::start_with(|c| {
        c.delivery.window = window;
        c.delivery.recv_batch = 3;
    });
    let alice = server.client("alice", None).await;
    let bob = server.client("bob", None).await;
    let expected = numbered("m", 40);
    send_batches(&alice, "bob", &expected, 20).await;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        // Take all the server is willing to send now, then ack it all.
        let mut held: Vec<Delivery> = vec![next(&bob).await];
        while let Some(d) = bob
            .next_delivery_timeout(Duration::from_millis(200))
            .await
            .unwrap()
        {
            held.push(d);
        }
        let unacked: usize = held.iter().map(|d| d.messages.len()).sum();
        assert!(
            unacked <= window,
            "{unacked} unacked messages, window {window}"
        );
        for d in held {
            got.extend(bodies(&d.messages));
            d.ack().await.unwrap();
        }
    }
    assert_eq!(got, expected);
}

/// A client that sends and closes at once (the requests and the close frame in one write, so
/// the session reads the close before it has handed the requests to the dispatcher) still has
/// every message it sent stored and delivered: a `msg.send` the server has read is not dropped
/// because its answer can no longer be written.
#[tokio::test]
async fn messages_sent_just_before_a_close_are_delivered() {
    let server = TestServer::start();
    let mut alice = common::rpc::authed(&server, "alice").await;
    let sends = numbered("bye", 3)
        .into_iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"jsonrpc": "2.0", "method": "msg.send", "params": [{"to": "bob", "message": body}], "id": i})
                .to_string()
        })
        .collect();
    alice
        .send_texts_then_close(sends, 1000, "bye")
        .await
        .unwrap();
    let bob = server.client("bob", None).await;
    let got = receive(&bob, 3, true).await;
    assert_eq!(bodies(&got), numbered("bye", 3));
}
