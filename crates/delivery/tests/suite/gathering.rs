//! What reaches the dispatcher in one turn (the messages in its mailbox when it wakes up) goes
//! to the store together: every sender's `msg.send` requests in one append call, every device's
//! acks in one ack call.

use crate::collector;

use actix::Actor;
use collector::observed::ObservedStore;
use collector::{Probe, device, online, positions, submit, user};
use std::sync::Arc;
use titan_delivery::{DeliveryError, Dispatcher, DispatcherConfig, SubmitMany};
use titan_protocol::OutgoingMessage;
use titan_store::{InboxLimits, StoreError};

fn to(recipient: &str, body: &str) -> OutgoingMessage {
    OutgoingMessage {
        to: user(recipient),
        message: body.to_owned(),
        id: None,
    }
}

/// Three senders' requests, queued before the dispatcher runs, are stored in one call, and each
/// sender is answered with its own requests' results in order: a request refused for a full
/// inbox fails alone, whoever sent it.
#[actix_rt::test]
async fn requests_of_one_turn_share_one_append() {
    let store = Arc::new(ObservedStore::with_limits(InboxLimits {
        max_pending: 2,
        ..InboxLimits::default()
    }));
    let d = Dispatcher::new(store.clone(), DispatcherConfig::default()).start();
    let send = |from: &str, requests: Vec<Vec<OutgoingMessage>>| {
        d.send(SubmitMany {
            from: user(from),
            requests,
        })
    };
    // `send` queues at once; the dispatcher runs when this task waits.
    let alice = send(
        "alice",
        vec![vec![to("bob", "a1")], vec![to("carol", "a2")]],
    );
    let dave = send("dave", vec![vec![to("bob", "d1"), to("bob", "d2")]]);
    let erin = send("erin", vec![vec![to("carol", "e1")]]);
    let (alice, dave, erin) = tokio::join!(alice, dave, erin);

    let (alice, dave, erin) = (alice.unwrap(), dave.unwrap(), erin.unwrap());
    assert_eq!(alice.len(), 2);
    assert!(alice.iter().all(Result::is_ok), "{alice:?}");
    // Bob's inbox holds a1 when dave's two arrive: three would pass max_pending.
    assert!(
        matches!(
            dave[..],
            [Err(DeliveryError::Store(StoreError::InboxFull { .. }))]
        ),
        "{dave:?}"
    );
    assert!(matches!(erin[..], [Ok(())]), "{erin:?}");
    let senders = ["alice", "alice", "dave", "erin"].map(user).to_vec();
    assert_eq!(*store.appends.lock().unwrap(), [senders]);
}

/// Two devices' acks that reach the dispatcher together are one ack call to the store, and
/// they ack what they name.
#[actix_rt::test]
async fn acks_of_one_turn_share_one_ack_call() {
    let store = Arc::new(ObservedStore::new());
    let d = Dispatcher::new(store.clone(), DispatcherConfig::default()).start();
    let (mut bob, mut carol) = (Probe::start(), Probe::start());
    online(&d, &bob, "bob", "phone");
    online(&d, &carol, "carol", "phone");
    submit(&d, "alice", "bob", &["to bob".to_owned()]).await;
    submit(&d, "alice", "carol", &["to carol".to_owned()]).await;
    let to_bob = positions(&bob.next_delivery().await);
    let to_carol = positions(&carol.next_delivery().await);

    let mut acks = store.acks.subscribe();
    collector::ack(&d, &bob, "bob", "phone", to_bob);
    collector::ack(&d, &carol, "carol", "phone", to_carol);
    let calls = tokio::time::timeout(collector::WAIT, acks.wait_for(|c| !c.is_empty()))
        .await
        .expect("no ack reached the store")
        .unwrap()
        .clone();
    let both = vec![
        (user("bob"), device("phone")),
        (user("carol"), device("phone")),
    ];
    assert_eq!(calls, [both]);
}
