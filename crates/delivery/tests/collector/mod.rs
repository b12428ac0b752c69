//! A collector actor standing in for the session in actor tests: it implements the handlers a
//! session implements ([`Deliver`], [`Kick`]) and forwards what it gets to the test, which awaits
//! it with upper-bound timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

pub mod observed;

use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use titan_delivery::{
    Acked, ConnId, Deliver, DeviceOnline, Dispatcher, DispatcherConfig, Kick, Submit,
};
use titan_protocol::{CloseCode, DeviceId, OutgoingMessage, UserId};
use titan_store::{Delivered, EmbeddedStore, InboxLimits, Position};
use tokio::sync::mpsc;

/// Upper bound for any single awaited event (never a synchronisation sleep).
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a burst of deliveries may pause before it counts as over ([`Probe::burst`]).
pub const QUIET: Duration = Duration::from_millis(150);

/// What the stand-in session was told.
#[derive(Debug)]
pub enum Event {
    Deliver(Vec<Delivered>),
    Kick(CloseCode),
}

/// The stand-in session actor.
pub struct Collector {
    tx: mpsc::UnboundedSender<Event>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<Deliver> for Collector {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) {
        let _ = self.tx.send(Event::Deliver(msg.messages));
    }
}

impl Handler<Kick> for Collector {
    type Result = ();

    fn handle(&mut self, msg: Kick, _: &mut Context<Self>) {
        let _ = self.tx.send(Event::Kick(msg.code));
    }
}

/// One stand-in session: its connection id, its recipients and what it received.
pub struct Probe {
    pub conn: ConnId,
    pub addr: Addr<Collector>,
    rx: mpsc::UnboundedReceiver<Event>,
}

impl Probe {
    pub fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            conn: ConnId::next(),
            addr: Collector { tx }.start(),
            rx,
        }
    }

    pub fn deliver(&self) -> Recipient<Deliver> {
        self.addr.clone().recipient()
    }

    pub fn kick(&self) -> Recipient<Kick> {
        self.addr.clone().recipient()
    }

    /// The next event, failing the test after [`WAIT`].
    pub async fn next(&mut self) -> Event {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("timed out waiting for an event")
            .expect("collector gone")
    }

    /// The next event, which must be a delivery.
    pub async fn next_delivery(&mut self) -> Vec<Delivered> {
        match self.next().await {
            Event::Deliver(messages) => messages,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    /// Every message the dispatcher sends now: waits up to [`WAIT`] for a first delivery, then
    /// takes deliveries until none comes for [`QUIET`] (it has sent what it will send until
    /// something changes, an ack say). A kick fails the test.
    pub async fn burst(&mut self) -> Vec<Delivered> {
        let mut got = Vec::new();
        loop {
            let wait = if got.is_empty() { WAIT } else { QUIET };
            match self.within(wait).await {
                Some(Event::Deliver(batch)) => got.extend(batch),
                Some(Event::Kick(code)) => panic!("unexpected kick {code:?}"),
                None => return got,
            }
        }
    }

    /// The next event within `wait`, or `None` on silence.
    pub async fn within(&mut self, wait: Duration) -> Option<Event> {
        tokio::time::timeout(wait, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

pub fn user(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

pub fn device(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

/// A dispatcher on a fresh memory store.
pub fn dispatcher(config: DispatcherConfig) -> Addr<Dispatcher> {
    let store = EmbeddedStore::memory(InboxLimits::default()).unwrap();
    Dispatcher::new(Arc::new(store), config).start()
}

/// Stores `bodies` as messages from `from` to `to`, in one call.
pub async fn submit(dispatcher: &Addr<Dispatcher>, from: &str, to: &str, bodies: &[String]) {
    let messages = bodies
        .iter()
        .map(|body| OutgoingMessage {
            to: user(to),
            message: body.clone(),
            id: None,
        })
        .collect();
    dispatcher
        .send(Submit {
            from: user(from),
            messages,
        })
        .await
        .unwrap()
        .unwrap();
}

/// Tells the dispatcher that `probe` is the live session of (user, device), as the Router does.
pub fn online(dispatcher: &Addr<Dispatcher>, probe: &Probe, u: &str, d: &str) {
    dispatcher.do_send(DeviceOnline {
        user: user(u),
        device: device(d),
        conn: probe.conn,
        deliver: probe.deliver(),
    });
}

/// Acks `positions` on behalf of `probe`'s session.
pub fn ack(
    dispatcher: &Addr<Dispatcher>,
    probe: &Probe,
    u: &str,
    d: &str,
    positions: Vec<Position>,
) {
    dispatcher.do_send(Acked {
        user: user(u),
        device: device(d),
        conn: probe.conn,
        positions,
    });
}

pub fn positions(messages: &[Delivered]) -> Vec<Position> {
    messages.iter().map(|d| d.position).collect()
}

pub fn bodies(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}
