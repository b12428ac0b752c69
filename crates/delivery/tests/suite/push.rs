//! The dispatcher's push hand-off and the Pusher's logic, end to end over a memory store with a
//! recording provider standing in for FCM/APNs.

use crate::collector;

use actix::prelude::*;
use async_trait::async_trait;
use collector::{Probe, ack, device, online, positions, user};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use titan_delivery::push::{
    Notification, PushConfig, PushError, PushOutcome, PushProvider, PushStats, Pusher, Sent,
};
use titan_delivery::{DeviceOffline, Dispatcher, DispatcherConfig, Submit};
use titan_protocol::{DeviceId, OutgoingMessage, PushPlatform, PushToken, UserId};
use titan_store::{Bus, BusEvent, EmbeddedStore, InboxLimits, PushRegistry, StoreError};
use tokio::sync::mpsc;

/// Long enough that a push that should not happen would have happened.
const SILENCE: Duration = Duration::from_millis(300);

/// Records every notification and answers from a script (then success).
struct Recording {
    sent: mpsc::UnboundedSender<Notification>,
    script: Mutex<VecDeque<Result<Sent, PushError>>>,
}

#[async_trait]
impl PushProvider for Recording {
    fn platform(&self) -> PushPlatform {
        PushPlatform::Fcm
    }

    async fn send(&self, n: &Notification) -> Result<Sent, PushError> {
        let _ = self.sent.send(n.clone());
        let scripted = self.script.lock().unwrap().pop_front();
        scripted.unwrap_or(Ok(if n.content.is_some() {
            Sent::Content
        } else {
            Sent::ContentFree
        }))
    }
}

struct Setup {
    dispatcher: Addr<Dispatcher>,
    store: EmbeddedStore,
    pushes: mpsc::UnboundedReceiver<Notification>,
    stats: Arc<PushStats>,
}

fn setup(config: PushConfig, script: Vec<Result<Sent, PushError>>) -> Setup {
    setup_with_bus(config, script, None)
}

fn setup_with_bus(
    config: PushConfig,
    script: Vec<Result<Sent, PushError>>,
    bus: Option<Arc<dyn Bus>>,
) -> Setup {
    setup_with(config, script, bus, DispatcherConfig::default())
}

fn setup_with(
    config: PushConfig,
    script: Vec<Result<Sent, PushError>>,
    bus: Option<Arc<dyn Bus>>,
    dispatcher_config: DispatcherConfig,
) -> Setup {
    let store = EmbeddedStore::memory(InboxLimits::default()).unwrap();
    let (tx, pushes) = mpsc::unbounded_channel();
    let provider = Arc::new(Recording {
        sent: tx,
        script: Mutex::new(script.into()),
    });
    let mut pusher = Pusher::new(Arc::new(store.clone()), vec![provider], config);
    if let Some(bus) = bus {
        pusher = pusher.with_bus(bus);
    }
    let stats = pusher.stats();
    let pusher = pusher.start();
    let dispatcher = Dispatcher::new(Arc::new(store.clone()), dispatcher_config)
        .with_push(pusher)
        .start();
    Setup {
        dispatcher,
        store,
        pushes,
        stats,
    }
}

fn token(s: &str) -> PushToken {
    PushToken::new(s).unwrap()
}

async fn register(store: &EmbeddedStore, u: &str, d: &str, t: &str) {
    store
        .register_push(
            &user(u),
            &device(d),
            PushPlatform::Fcm,
            &token(t),
            SystemTime::now(),
        )
        .await
        .unwrap();
}

async fn send(d: &Addr<Dispatcher>, to: &str, body: &str, client_id: Option<&str>) {
    d.send(Submit {
        from: user("alice"),
        messages: vec![OutgoingMessage {
            to: user(to),
            message: body.to_owned(),
            id: client_id.map(|c| titan_protocol::MessageId::new(c).unwrap()),
        }],
    })
    .await
    .unwrap()
    .unwrap();
}

async fn next_push(rx: &mut mpsc::UnboundedReceiver<Notification>) -> Notification {
    tokio::time::timeout(collector::WAIT, rx.recv())
        .await
        .expect("no push in time")
        .expect("provider gone")
}

async fn assert_no_push(rx: &mut mpsc::UnboundedReceiver<Notification>) {
    if let Ok(Some(n)) = tokio::time::timeout(SILENCE, rx.recv()).await {
        panic!("unexpected push to {:?}", n.token);
    }
}

/// Only the offline device with a token is pushed, once, with the message; the device online
/// here and the device without a token are not.
#[actix_rt::test]
async fn pushes_only_offline_devices_with_tokens() {
    let mut s = setup(PushConfig::default(), vec![]);
    register(&s.store, "bob", "phone", "phone-token").await;
    register(&s.store, "bob", "tablet", "tablet-token").await;
    let phone = Probe::start();
    online(&s.dispatcher, &phone, "bob", "phone");
    send(&s.dispatcher, "bob", "hello", None).await;
    let n = next_push(&mut s.pushes).await;
    assert_eq!(n.token.as_str(), "tablet-token");
    let m = n.content.unwrap();
    assert_eq!((m.from.as_str(), m.message.as_str()), ("alice", "hello"));
    assert_no_push(&mut s.pushes).await;
    assert_eq!(s.stats.get(PushPlatform::Fcm, PushOutcome::SentContent), 1);
}

/// A resend with the same client id stores nothing new and pushes nothing new.
#[actix_rt::test]
async fn duplicate_sends_do_not_push_again() {
    let mut s = setup(PushConfig::default(), vec![]);
    register(&s.store, "bob", "phone", "t").await;
    send(&s.dispatcher, "bob", "once", Some("c-1")).await;
    next_push(&mut s.pushes).await;
    send(&s.dispatcher, "bob", "once", Some("c-1")).await;
    assert_no_push(&mut s.pushes).await;
}

/// With `include_content = false` the provider is never given the message.
#[actix_rt::test]
async fn private_mode_sends_no_content() {
    let config = PushConfig {
        include_content: false,
        ..PushConfig::default()
    };
    let mut s = setup(config, vec![]);
    register(&s.store, "bob", "phone", "t").await;
    send(&s.dispatcher, "bob", "secret", None).await;
    assert!(next_push(&mut s.pushes).await.content.is_none());
}

/// A temporary failure is retried after the backoff, then counted as sent.
#[actix_rt::test]
async fn temporary_failures_are_retried() {
    let config = PushConfig {
        initial_backoff: Duration::from_millis(10),
        ..PushConfig::default()
    };
    let retry = PushError::Retry {
        after: None,
        reason: "503".into(),
    };
    let mut s = setup(config, vec![Err(retry)]);
    register(&s.store, "bob", "phone", "t").await;
    send(&s.dispatcher, "bob", "hi", None).await;
    let first = next_push(&mut s.pushes).await;
    let second = next_push(&mut s.pushes).await;
    assert_eq!(first.content, second.content);
    assert_no_push(&mut s.pushes).await;
    assert_eq!(s.stats.get(PushPlatform::Fcm, PushOutcome::Retried), 1);
    assert_eq!(s.stats.get(PushPlatform::Fcm, PushOutcome::SentContent), 1);
}

/// Retries stop after `max_attempts`.
#[actix_rt::test]
async fn retries_are_bounded() {
    let config = PushConfig {
        initial_backoff: Duration::from_millis(1),
        max_attempts: 3,
        ..PushConfig::default()
    };
    let retry = || {
        Err(PushError::Retry {
            after: Some(Duration::from_millis(1)),
            reason: "429".into(),
        })
    };
    let mut s = setup(config, vec![retry(), retry(), retry(), retry()]);
    register(&s.store, "bob", "phone", "t").await;
    send(&s.dispatcher, "bob", "hi", None).await;
    for _ in 0..3 {
        next_push(&mut s.pushes).await;
    }
    assert_no_push(&mut s.pushes).await;
    assert_eq!(s.stats.get(PushPlatform::Fcm, PushOutcome::GaveUp), 1);
}

/// An unregistered token is removed, so the next message is not pushed; an invalid request is
/// neither retried nor removes the token.
#[actix_rt::test]
async fn dead_tokens_are_forgotten() {
    let invalid = PushError::Invalid {
        reason: "400".into(),
    };
    let mut s = setup(
        PushConfig::default(),
        vec![Err(invalid), Err(PushError::Unregistered { at: None })],
    );
    register(&s.store, "bob", "phone", "t").await;
    send(&s.dispatcher, "bob", "one", None).await;
    next_push(&mut s.pushes).await;
    assert_no_push(&mut s.pushes).await;
    assert_eq!(s.store.push_devices(&user("bob")).await.unwrap().len(), 1);

    send(&s.dispatcher, "bob", "two", None).await;
    next_push(&mut s.pushes).await;
    for _ in 0..100 {
        if s.store.push_devices(&user("bob")).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(s.store.push_devices(&user("bob")).await.unwrap().is_empty());
    send(&s.dispatcher, "bob", "three", None).await;
    assert_no_push(&mut s.pushes).await;
    assert_eq!(s.stats.get(PushPlatform::Fcm, PushOutcome::Unregistered), 1);
    assert_eq!(s.stats.get(PushPlatform::Fcm, PushOutcome::Invalid), 1);
}

/// A cluster bus on which bob's phone is live on another instance.
struct PhoneElsewhere;

#[async_trait]
impl Bus for PhoneElsewhere {
    fn instance(&self) -> &str {
        "this"
    }
    async fn claim(&self, _: &UserId, _: &DeviceId, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    async fn reclaim(&self, _: &UserId, _: &DeviceId, _: u64) -> Result<bool, StoreError> {
        Ok(true)
    }
    async fn release(&self, _: &UserId, _: &DeviceId, _: u64) -> Result<(), StoreError> {
        Ok(())
    }
    async fn wake(&self, _: &[UserId]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn is_online(&self, user: &UserId, device: &DeviceId) -> Result<bool, StoreError> {
        Ok(user.as_str() == "bob" && device.as_str() == "phone")
    }
    async fn broadcast(&self, _: &BusEvent) -> Result<(), StoreError> {
        Ok(())
    }
    fn take_events(&self) -> Option<mpsc::Receiver<BusEvent>> {
        None
    }
    async fn canary(&self, _: std::time::Duration) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A device live on another instance (per the bus) is not pushed; an offline one is.
#[actix_rt::test]
async fn devices_online_on_other_instances_are_not_pushed() {
    let mut s = setup_with_bus(
        PushConfig::default(),
        vec![],
        Some(Arc::new(PhoneElsewhere)),
    );
    register(&s.store, "bob", "phone", "phone-token").await;
    register(&s.store, "bob", "tablet", "tablet-token").await;
    send(&s.dispatcher, "bob", "hi", None).await;
    assert_eq!(
        next_push(&mut s.pushes).await.token.as_str(),
        "tablet-token"
    );
    assert_no_push(&mut s.pushes).await;
}

/// `push_after_unacked = after`, with a tick every 100 ms (a 400 ms ack timeout, so
/// redeliveries come soon too).
fn unacked_config(after: Duration) -> DispatcherConfig {
    DispatcherConfig {
        push_after_unacked: Some(after),
        ack_timeout: Duration::from_millis(400),
        ..DispatcherConfig::default()
    }
}

fn unacked_setup(after: Duration) -> Setup {
    setup_with(PushConfig::default(), vec![], None, unacked_config(after))
}

/// bob's phone, with a push token, connected (a stand-in session), is given `text`.
async fn given_to_phone(s: &Setup, text: &str) -> (Probe, Vec<titan_store::Delivered>) {
    register(&s.store, "bob", "phone", "phone-token").await;
    let mut phone = Probe::start();
    online(&s.dispatcher, &phone, "bob", "phone");
    send(&s.dispatcher, "bob", text, None).await;
    let given = phone.next_delivery().await;
    (phone, given)
}

async fn silence_for(rx: &mut mpsc::UnboundedReceiver<Notification>, wait: Duration) {
    if let Ok(Some(n)) = tokio::time::timeout(wait, rx.recv()).await {
        panic!("unexpected push: {:?}", n.content);
    }
}

fn offline(d: &Addr<Dispatcher>, probe: &Probe, u: &str, dev: &str) {
    d.do_send(DeviceOffline {
        user: user(u),
        device: device(dev),
        conn: probe.conn,
    });
}

/// `push_after_unacked`: a connected device that is given a message and does not ack it is
/// pushed that message once, with its content; the redelivery that follows pushes nothing.
#[actix_rt::test]
async fn a_connected_device_that_does_not_ack_is_pushed_once() {
    let mut s = unacked_setup(Duration::from_millis(150));
    let (mut phone, given) = given_to_phone(&s, "hello").await;
    let n = next_push(&mut s.pushes).await;
    assert_eq!(n.token.as_str(), "phone-token");
    assert_eq!(n.content.unwrap().message, "hello");
    let again = phone.next_delivery().await;
    assert_eq!(positions(&again), positions(&given), "redelivered");
    silence_for(&mut s.pushes, Duration::from_millis(600)).await;
    assert_eq!(s.stats.get(PushPlatform::Fcm, PushOutcome::SentContent), 1);
}

/// A device that acks in time is not pushed.
#[actix_rt::test]
async fn a_device_that_acks_in_time_is_not_pushed() {
    let mut s = unacked_setup(Duration::from_millis(150));
    let (phone, given) = given_to_phone(&s, "hello").await;
    ack(&s.dispatcher, &phone, "bob", "phone", positions(&given));
    silence_for(&mut s.pushes, Duration::from_millis(600)).await;
}

/// Messages a session had not acked when it ended are pushed when their delay is up; unless
/// the device comes back first, whose catch-up gives them again (and it acks them).
#[actix_rt::test]
async fn unacked_messages_of_an_ended_session_are_pushed_unless_the_device_comes_back() {
    let mut s = unacked_setup(Duration::from_millis(150));
    let (phone, _) = given_to_phone(&s, "left unread").await;
    offline(&s.dispatcher, &phone, "bob", "phone");
    assert_eq!(
        next_push(&mut s.pushes).await.content.unwrap().message,
        "left unread"
    );

    let mut s = unacked_setup(Duration::from_millis(300));
    let (phone, _) = given_to_phone(&s, "read later").await;
    offline(&s.dispatcher, &phone, "bob", "phone");
    let mut back = Probe::start();
    online(&s.dispatcher, &back, "bob", "phone");
    let again = back.next_delivery().await;
    ack(&s.dispatcher, &back, "bob", "phone", positions(&again));
    silence_for(&mut s.pushes, Duration::from_millis(800)).await;
}

/// With a cluster bus: the unacked messages of an ended session are not pushed when the device
/// is live on another instance by then; a device with a live session here is pushed whatever
/// the bus says.
#[actix_rt::test]
async fn unacked_messages_are_not_pushed_to_a_device_live_on_another_instance() {
    let mut s = setup_with(
        PushConfig::default(),
        vec![],
        Some(Arc::new(PhoneElsewhere)),
        unacked_config(Duration::from_millis(150)),
    );
    let (mut phone, _) = given_to_phone(&s, "live here").await;
    assert_eq!(
        next_push(&mut s.pushes).await.content.unwrap().message,
        "live here"
    );
    send(&s.dispatcher, "bob", "gone from here", None).await;
    let given = phone.next_delivery().await;
    assert_eq!(given.len(), 1);
    offline(&s.dispatcher, &phone, "bob", "phone");
    silence_for(&mut s.pushes, Duration::from_millis(800)).await;
}
