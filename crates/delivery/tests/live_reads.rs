//! A send to a device that is online and waiting reads the device's feed in the append's own
//! store call (`Inbox::append_and_read`) instead of a separate `read_new` after it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod collector;

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
