//! The dispatcher when the store fails: a read that the store applied but whose answer was lost
//! (a Redis timeout or dropped connection) must not strand the messages it moved to pending.

use crate::collector;

use actix::Actor;
use collector::observed::ObservedStore;
use collector::{Probe, bodies, online, submit};
use std::sync::Arc;
use std::time::Duration;
use titan_delivery::{Dispatcher, DispatcherConfig};

/// Messages a failed-but-applied read moved to pending still reach the connected device, long
/// before the ack timeout (an hour here) or a reconnect could bring them.
#[actix_rt::test]
async fn lost_read_reply_does_not_strand_messages() {
    // Its first read_new is applied but answered with an error.
    let store = ObservedStore::losing_first_read();
    let config = DispatcherConfig {
        ack_timeout: Duration::from_secs(3600),
        ..DispatcherConfig::default()
    };
    let d = Dispatcher::new(Arc::new(store), config).start();
    let mut bob = Probe::start();
    online(&d, &bob, "bob", "phone");
    submit(&d, "alice", "bob", &bodies(3)).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        got.extend(bob.next_delivery().await);
    }
    let texts: Vec<_> = got
        .iter()
        .map(|d| d.message.decode().unwrap().message.clone())
        .collect();
    assert_eq!(texts, bodies(3));
}
