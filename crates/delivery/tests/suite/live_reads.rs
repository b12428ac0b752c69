//! A send to a device that is online and waiting reads the device's feed in the append's own
//! store call (`Inbox::append_and_read`) instead of a separate `read_new` after it.

use crate::collector;

use actix::Actor;
use collector::observed::ObservedStore;
use collector::{Probe, online, submit};
use std::sync::Arc;
use std::time::Duration;
use titan_delivery::{Dispatcher, DispatcherConfig};

/// One message at a time to a device that has acked everything and whose feed is idle: the
/// message reaches it through the append's read. Between rounds the test waits for the separate
/// reads the dispatcher may still run (the end of the connect-time catch-up, a re-check after a
/// wake-up) to end; their answer can still be on its way to the dispatcher when the next message
/// arrives, which then takes the separate path (also correct), so the check is over many rounds:
/// nearly all must be read with the append, where a dispatcher without the fused read reads
/// none of them that way.
#[actix_rt::test]
async fn a_waiting_device_is_read_with_the_append() {
    const ROUNDS: usize = 20;
    let store = Arc::new(ObservedStore::new());
    let mut reads_running = store.reads_running.subscribe();
    let config = DispatcherConfig {
        ack_timeout: Duration::from_secs(30),
        ..DispatcherConfig::default()
    };
    let d = Dispatcher::new(store.clone(), config).start();
    let mut bob = Probe::start();
    online(&d, &bob, "bob", "phone");
    let mut fused = 0;
    for round in 0..ROUNDS {
        let body = format!("r{round}");
        submit(&d, "alice", "bob", std::slice::from_ref(&body)).await;
        let got = bob.next_delivery().await;
        assert_eq!(got.len(), 1, "round {round}");
        assert_eq!(got[0].message.decode().unwrap().message, body);
        if store
            .read_with_append
            .lock()
            .unwrap()
            .contains(&got[0].position)
        {
            fused += 1;
        }
        collector::ack(&d, &bob, "bob", "phone", vec![got[0].position]);
        let idle = reads_running.wait_for(|n| *n == 0);
        tokio::time::timeout(collector::WAIT, idle)
            .await
            .expect("separate reads never ended")
            .unwrap();
    }
    assert!(
        fused >= ROUNDS - 5,
        "only {fused} of {ROUNDS} read with the append"
    );
}

/// A send refused by the store (a full inbox) also drops the reads that went with it; the
/// device's feed is not left waiting for them, and the next accepted message reaches it.
#[actix_rt::test]
async fn a_refused_send_leaves_the_waiting_device_usable() {
    let store = Arc::new(ObservedStore::with_limits(titan_store::InboxLimits {
        max_pending: 3,
        ..titan_store::InboxLimits::default()
    }));
    let mut reads_running = store.reads_running.subscribe();
    let d = Dispatcher::new(store.clone(), DispatcherConfig::default()).start();
    let mut bob = Probe::start();
    online(&d, &bob, "bob", "phone");
    submit(&d, "alice", "bob", &["first".to_owned()]).await;
    let first = bob.next_delivery().await;
    // The feed is live and idle once its separate reads are over.
    let idle = reads_running.wait_for(|n| *n == 0);
    tokio::time::timeout(collector::WAIT, idle)
        .await
        .expect("separate reads never ended")
        .unwrap();

    // One unacked plus three new is over max_pending 3: refused whole.
    let messages = (0..3)
        .map(|i| titan_protocol::OutgoingMessage {
            to: collector::user("bob"),
            message: format!("over{i}"),
            id: None,
        })
        .collect();
    let refused = d
        .send(titan_delivery::Submit {
            from: collector::user("alice"),
            messages,
        })
        .await
        .unwrap();
    assert!(refused.is_err(), "{refused:?}");

    collector::ack(&d, &bob, "bob", "phone", collector::positions(&first));
    submit(&d, "alice", "bob", &["after".to_owned()]).await;
    let got = bob.next_delivery().await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.decode().unwrap().message, "after");
}

/// Waits until `counter` reaches `n`.
async fn reached(counter: &tokio::sync::watch::Sender<usize>, n: usize) {
    let mut seen = counter.subscribe();
    tokio::time::timeout(collector::WAIT, seen.wait_for(|c| *c >= n))
        .await
        .expect("the store was not called")
        .unwrap();
}

/// A live device whose previous message is still being stored and read (a message every
/// couple of milliseconds against a store round trip of several, at a steady rate) gets the
/// next one read with its own append too, instead of a read of its own after the first ends;
/// and when the answers come back in the other order, the session still gets the messages in
/// the order they were stored.
#[actix_rt::test]
async fn reads_with_appends_overlap_and_keep_their_order() {
    let store = Arc::new(ObservedStore::new());
    let d = Dispatcher::new(store.clone(), DispatcherConfig::default()).start();
    let mut bob = Probe::start();
    online(&d, &bob, "bob", "phone");
    // Live, and the connect-time reads over.
    submit(&d, "alice", "bob", &["first".to_owned()]).await;
    let first = bob.next_delivery().await;
    collector::ack(&d, &bob, "bob", "phone", collector::positions(&first));
    let mut reads_running = store.reads_running.subscribe();
    tokio::time::timeout(collector::WAIT, reads_running.wait_for(|n| *n == 0))
        .await
        .expect("separate reads never ended")
        .unwrap();
    let separate_before = *store.separate_reads.borrow();
    let calls_before = *store.append_calls.borrow();

    let (open_first, first_gate) = tokio::sync::oneshot::channel();
    let (open_second, second_gate) = tokio::sync::oneshot::channel();
    store
        .held_answers
        .lock()
        .unwrap()
        .extend([first_gate, second_gate]);
    let send = |body: &str| {
        d.send(titan_delivery::Submit {
            from: collector::user("alice"),
            messages: vec![titan_protocol::OutgoingMessage {
                to: collector::user("bob"),
                message: body.to_owned(),
                id: None,
            }],
        })
    };
    let one = send("one");
    reached(&store.append_calls, calls_before + 1).await;
    // The first append and its read are running (held) when the second arrives.
    let two = send("two");
    reached(&store.append_calls, calls_before + 2).await;
    open_second.send(()).unwrap();
    two.await.unwrap().unwrap();
    open_first.send(()).unwrap();
    one.await.unwrap().unwrap();

    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(bob.next_delivery().await);
    }
    let bodies: Vec<String> = got
        .iter()
        .map(|d| d.message.decode().unwrap().message)
        .collect();
    assert_eq!(bodies, ["one", "two"]);
    let with_append = store.read_with_append.lock().unwrap().clone();
    assert!(
        got.iter().all(|d| with_append.contains(&d.position)),
        "not every message was read with its append"
    );
    assert_eq!(*store.separate_reads.borrow(), separate_before);
}

/// Reads that overlap share the device's window: six messages sent one turn after another while
/// the first answers are held never put more than the window in flight, and all six arrive,
/// in order, as the device acks.
#[actix_rt::test]
async fn overlapping_reads_stay_inside_the_window() {
    const WINDOW: usize = 3;
    let store = Arc::new(ObservedStore::new());
    let config = DispatcherConfig {
        window: WINDOW,
        ..DispatcherConfig::default()
    };
    let d = Dispatcher::new(store.clone(), config).start();
    let mut bob = Probe::start();
    online(&d, &bob, "bob", "phone");
    submit(&d, "alice", "bob", &["first".to_owned()]).await;
    let first = bob.next_delivery().await;
    collector::ack(&d, &bob, "bob", "phone", collector::positions(&first));

    let mut gates = Vec::new();
    let mut sends = Vec::new();
    for i in 0..6 {
        let (open, gate) = tokio::sync::oneshot::channel();
        store.held_answers.lock().unwrap().push_back(gate);
        gates.push(open);
        let calls = *store.append_calls.borrow();
        sends.push(d.send(titan_delivery::Submit {
            from: collector::user("alice"),
            messages: vec![titan_protocol::OutgoingMessage {
                to: collector::user("bob"),
                message: format!("m{i}"),
                id: None,
            }],
        }));
        reached(&store.append_calls, calls + 1).await;
    }
    for open in gates {
        open.send(()).unwrap();
    }
    for send in sends {
        send.await.unwrap().unwrap();
    }

    let mut got = Vec::new();
    while got.len() < 6 {
        // Everything the dispatcher sends before the device acks.
        let burst = bob.burst().await;
        assert!(!burst.is_empty(), "nothing delivered");
        assert!(burst.len() <= WINDOW, "{} in flight", burst.len());
        got.extend(burst.iter().map(|m| m.message.decode().unwrap().message));
        collector::ack(&d, &bob, "bob", "phone", collector::positions(&burst));
    }
    assert_eq!(got, (0..6).map(|i| format!("m{i}")).collect::<Vec<_>>());
}
