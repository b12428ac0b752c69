//! Actor tests of the Dispatcher, with a collector actor standing in for the session.

use crate::collector;

use collector::{Event, Probe, ack, bodies, dispatcher, online, positions, submit};
use std::collections::BTreeSet;
use std::time::Duration;
use titan_delivery::DispatcherConfig;

fn config(ack_timeout: Duration, window: usize, recv_batch: usize) -> DispatcherConfig {
    DispatcherConfig {
        ack_timeout,
        window,
        recv_batch,
        ..DispatcherConfig::default()
    }
}

/// An unacked message is handed to the session again after the ack timeout, every time, with the
/// same id and position; once acked it is not redelivered.
#[actix_rt::test]
async fn redelivers_after_ack_timeout() {
    let ack_timeout = Duration::from_millis(20);
    let d = dispatcher(config(ack_timeout, 8, 8));
    let mut bob = Probe::start();
    online(&d, &bob, "bob", "phone");
    submit(&d, "alice", "bob", &bodies(2)).await;
    let first = bob.next_delivery().await;
    assert_eq!(first.len(), 2);
    // Many rounds, so a redelivery lost to timer or clock granularity shows up.
    for round in 0..40 {
        let again = bob.next_delivery().await;
        assert_eq!(again, first, "round {round}");
    }
    ack(&d, &bob, "bob", "phone", positions(&first));
    // A redelivery already on its way when the ack arrived may still come; after that, silence.
    while let Some(event) = bob.within(ack_timeout * 10).await {
        match event {
            Event::Deliver(again) => assert_eq!(again, first),
            Event::Kick(code) => panic!("unexpected kick {code:?}"),
        }
    }
}

/// With a small window, the session never holds more than `window` unacked messages, and acking
/// lets the rest through, in inbox order.
#[actix_rt::test]
async fn window_is_respected() {
    let window = 3;
    let d = dispatcher(config(Duration::from_secs(30), window, 1));
    let mut bob = Probe::start();
    submit(&d, "alice", "bob", &bodies(10)).await;
    online(&d, &bob, "bob", "phone");
    let mut got = Vec::new();
    let mut unacked = Vec::new();
    while got.len() < 10 {
        // Everything the dispatcher is willing to send now.
        let burst = bob.burst().await;
        got.extend(burst.iter().map(|m| m.message.decode().unwrap().message));
        unacked.extend(positions(&burst));
        assert!(
            unacked.len() <= window,
            "{} unacked, window {window}",
            unacked.len()
        );
        if got.len() < 10 {
            assert_eq!(unacked.len(), window, "a free window slot was left unused");
        }
        // Ack one at a time, so the window refills a slot at a time.
        let first = unacked.remove(0);
        ack(&d, &bob, "bob", "phone", vec![first]);
    }
    assert_eq!(got, bodies(10));
}

/// A reconnect (a new connection for the same device) gets the unacked messages again, same
/// positions and ids, before anything new.
#[actix_rt::test]
async fn reconnect_catches_up_on_unacked() {
    let d = dispatcher(config(Duration::from_secs(30), 16, 16));
    let mut old = Probe::start();
    online(&d, &old, "bob", "phone");
    submit(&d, "alice", "bob", &bodies(3)).await;
    let first = old.next_delivery().await;
    assert_eq!(first.len(), 3);
    let mut new = Probe::start();
    online(&d, &new, "bob", "phone");
    assert_eq!(new.next_delivery().await, first);
    submit(&d, "alice", "bob", &["later".to_owned()]).await;
    let later = new.next_delivery().await;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].message.decode().unwrap().message, "later");
    // The replaced connection is not fed any more.
    assert!(old.within(Duration::from_millis(200)).await.is_none());
}

/// Two devices of one user each get every message; an ack by one does not ack the other.
#[actix_rt::test]
async fn devices_ack_independently() {
    let ack_timeout = Duration::from_millis(50);
    let d = dispatcher(config(ack_timeout, 16, 16));
    let mut phone = Probe::start();
    let mut laptop = Probe::start();
    online(&d, &phone, "bob", "phone");
    online(&d, &laptop, "bob", "laptop");
    submit(&d, "alice", "bob", &bodies(2)).await;
    let on_phone = phone.next_delivery().await;
    let on_laptop = laptop.next_delivery().await;
    let ids = |v: &[titan_store::Delivered]| -> BTreeSet<String> {
        v.iter()
            .map(|m| m.message.decode().unwrap().id.as_str().to_owned())
            .collect()
    };
    assert_eq!(ids(&on_phone), ids(&on_laptop));
    ack(&d, &phone, "bob", "phone", positions(&on_phone));
    assert_eq!(
        laptop.next_delivery().await,
        on_laptop,
        "the laptop never acked"
    );
    while let Some(event) = phone.within(ack_timeout * 10).await {
        // Only a redelivery that raced with the ack may come.
        assert!(
            matches!(event, Event::Deliver(ref again) if *again == on_phone),
            "{event:?}"
        );
    }
}

/// A device that goes offline and comes back while a store operation of its previous connection
/// is still running gets its pending messages once, not once per overlapping catch-up.
#[actix_rt::test]
async fn quick_reconnect_does_not_duplicate() {
    let d = dispatcher(config(Duration::from_secs(30), 16, 16));
    let mut first = Probe::start();
    online(&d, &first, "bob", "phone");
    submit(&d, "alice", "bob", &bodies(3)).await;
    let pending = first.next_delivery().await;
    // Queued back to back, so the dispatcher handles all three before any catch-up it starts
    // has finished.
    let second = Probe::start();
    let mut third = Probe::start();
    online(&d, &second, "bob", "phone");
    d.do_send(titan_delivery::DeviceOffline {
        user: collector::user("bob"),
        device: collector::device("phone"),
        conn: second.conn,
    });
    online(&d, &third, "bob", "phone");
    assert_eq!(third.next_delivery().await, pending);
    assert!(
        third.within(Duration::from_millis(300)).await.is_none(),
        "pending messages delivered twice on one connection within the ack timeout"
    );
}

/// Catch-up after a reconnect respects the window too, even when the device has more pending
/// than the window (here: the server restarted with a smaller `delivery.window`).
#[actix_rt::test]
async fn catch_up_respects_window() {
    let store = std::sync::Arc::new(
        titan_store::EmbeddedStore::memory(titan_store::InboxLimits::default()).unwrap(),
    );
    let start = |window| {
        let config = config(Duration::from_secs(30), window, 1);
        actix::Actor::start(titan_delivery::Dispatcher::new(store.clone(), config))
    };
    let before = start(10);
    let mut old = Probe::start();
    online(&before, &old, "bob", "phone");
    submit(&before, "alice", "bob", &bodies(10)).await;
    for _ in 0..10 {
        old.next_delivery().await;
    }
    let window = 3;
    let after = start(window);
    let mut bob = Probe::start();
    online(&after, &bob, "bob", "phone");
    let mut got = Vec::new();
    while got.len() < 10 {
        let burst = bob.burst().await;
        assert!(!burst.is_empty(), "catch-up stalled");
        assert!(
            burst.len() <= window,
            "{} unacked, window {window}",
            burst.len()
        );
        got.extend(burst.iter().map(|m| m.message.decode().unwrap().message));
        ack(&after, &bob, "bob", "phone", positions(&burst));
    }
    assert_eq!(got, bodies(10));
}
