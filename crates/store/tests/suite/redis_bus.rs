//! The cluster bus on a real `redis-server`: presence (claims and instance liveness), kicks and
//! wake-ups between two instances. End-to-end behaviour with real titan-server processes is in
//! `crates/server/tests/cluster.rs`; this file pins the bus's own contract.
use crate::redis_server;

use std::time::Duration;

use redis::AsyncCommands;
use redis_server::{RedisServer, ServerConfig, fresh_prefix};
use titan_store::conformance::{device, user};
use titan_store::{Bus, BusEvent, InboxLimits, RedisBus, RedisStore};
use tokio::sync::mpsc::Receiver;

/// Upper bound for any awaited event.
const WAIT: Duration = Duration::from_secs(10);

async fn bus(url: &str, prefix: &str) -> RedisBus {
    let store = RedisStore::connect(url, prefix, InboxLimits::default())
        .await
        .unwrap();
    store.bus().await.unwrap()
}

async fn next_event(events: &mut Receiver<BusEvent>) -> BusEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("no bus event in time")
        .expect("bus event stream ended")
}

/// Waits (bounded) until `is_online` reports `want`; the heartbeat writes the liveness key
/// from a task of its own, so the first answer may come a moment after the claim.
async fn await_online(bus: &RedisBus, want: bool) {
    let (alice, phone) = (user("alice"), device("phone"));
    let deadline = tokio::time::Instant::now() + WAIT;
    while bus.is_online(&alice, &phone).await.unwrap() != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "is_online never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A device is online while a live instance holds its claim: not after its release, and not
/// once its instance's liveness key is gone (what the TTL does to an instance that died).
#[tokio::test]
async fn presence_follows_claims_and_instance_liveness() {
    let server = RedisServer::start(ServerConfig::default());
    let prefix = fresh_prefix();
    let bus = bus(&server.url(), &prefix).await;
    let (alice, phone) = (user("alice"), device("phone"));
    assert!(!bus.is_online(&alice, &phone).await.unwrap());
    bus.claim(&alice, &phone, 1).await.unwrap();
    await_online(&bus, true).await;
    bus.release(&alice, &phone, 1).await.unwrap();
    assert!(!bus.is_online(&alice, &phone).await.unwrap());

    bus.claim(&alice, &phone, 2).await.unwrap();
    await_online(&bus, true).await;
    let mut raw = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let alive = format!("{prefix}:instance:{}", bus.instance());
    let removed: i64 = raw.del(&alive).await.unwrap();
    assert_eq!(removed, 1, "the liveness key is {alive}");
    assert!(!bus.is_online(&alice, &phone).await.unwrap());
}

/// A release by an older session does not remove a newer session's claim.
#[tokio::test]
async fn stale_release_keeps_the_newer_claim() {
    let server = RedisServer::start(ServerConfig::default());
    let bus = bus(&server.url(), &fresh_prefix()).await;
    let (alice, phone) = (user("alice"), device("phone"));
    bus.claim(&alice, &phone, 1).await.unwrap();
    bus.claim(&alice, &phone, 2).await.unwrap();
    bus.release(&alice, &phone, 1).await.unwrap();
    await_online(&bus, true).await;
}

/// A claim on a second instance kicks exactly the first instance's session of that device, and
/// a wake-up reaches the instance holding the recipient, not the one that sent it.
#[tokio::test]
async fn kick_and_wake_cross_instances() {
    let server = RedisServer::start(ServerConfig::default());
    let prefix = fresh_prefix();
    let first = bus(&server.url(), &prefix).await;
    let second = bus(&server.url(), &prefix).await;
    let mut first_events = first.take_events().unwrap();
    let mut second_events = second.take_events().unwrap();
    assert!(first.take_events().is_none(), "events are given out once");
    let (alice, phone) = (user("alice"), device("phone"));

    first.claim(&alice, &phone, 7).await.unwrap();
    second.wake(std::slice::from_ref(&alice)).await.unwrap();
    assert_eq!(
        next_event(&mut first_events).await,
        BusEvent::Wake {
            user: alice.clone()
        }
    );

    second.claim(&alice, &phone, 9).await.unwrap();
    assert_eq!(
        next_event(&mut first_events).await,
        BusEvent::Kick {
            user: alice.clone(),
            device: phone.clone(),
            conn: 7
        }
    );
    // The second instance now holds the device: waking from the first reaches it, and the
    // second got no event before (no kick of itself, no wake of its own append).
    first.wake(std::slice::from_ref(&alice)).await.unwrap();
    assert_eq!(
        next_event(&mut second_events).await,
        BusEvent::Wake { user: alice }
    );
}

/// A broadcast reaches every instance of the prefix, the sender included, and no instance of
/// another prefix.
#[tokio::test]
async fn broadcast_reaches_every_instance() {
    let server = RedisServer::start(ServerConfig::default());
    let prefix = fresh_prefix();
    let a = bus(&server.url(), &prefix).await;
    let b = bus(&server.url(), &prefix).await;
    let other = bus(&server.url(), &fresh_prefix()).await;
    let (mut a_events, mut b_events) = (a.take_events().unwrap(), b.take_events().unwrap());
    let mut other_events = other.take_events().unwrap();
    let event = BusEvent::Revoked {
        user: user("alice"),
        at_ms: 1_800_000_000_000,
    };
    a.broadcast(&event).await.unwrap();
    assert_eq!(next_event(&mut a_events).await, event);
    assert_eq!(next_event(&mut b_events).await, event);
    // A marker through the other prefix's own channel: had the broadcast leaked there, it
    // would arrive first.
    other
        .broadcast(&BusEvent::Wake {
            user: user("marker"),
        })
        .await
        .unwrap();
    assert_eq!(
        next_event(&mut other_events).await,
        BusEvent::Wake {
            user: user("marker")
        }
    );
}
