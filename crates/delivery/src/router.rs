//! The Router actor: who is online on this instance. It enforces "one live session per (user,
//! device)": when a device connects again, the newer session wins and the older one is kicked
//! with [`CloseCode::Replaced`]. It tells the [`Dispatcher`] about every change so the dispatcher
//! feeds exactly the live sessions.
//!
//! With a cluster bus (several instances on one Redis) the Router also claims each device in
//! Redis when its session starts; the instance that held it before gets a kick event and closes
//! its session the same way, so at most one instance considers itself the live session of a
//! (user, device). Wake-ups from other instances pass through here to the dispatcher.

use actix::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;
use titan_protocol::{CloseCode, DeviceId, UserId};
use titan_store::{Bus, BusEvent};
use tracing::{debug, info, warn};

use crate::dispatcher::{DeviceOffline, DeviceOnline, Dispatcher, WakeAll, WakeUser};
use crate::session_link::{ConnId, Deliver, Kick};

/// A session authenticated as (user, device) and is ready to receive messages.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach {
    pub user: UserId,
    pub device: DeviceId,
    pub conn: ConnId,
    pub deliver: Recipient<Deliver>,
    pub kick: Recipient<Kick>,
}

/// A session ended. Ignored unless `conn` is still the live session of (user, device).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub user: UserId,
    pub device: DeviceId,
    pub conn: ConnId,
}

/// How many devices and users are online here (for metrics and tests).
#[derive(Message)]
#[rtype(result = "Presence")]
pub struct GetPresence;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Presence {
    pub users: usize,
    pub devices: usize,
}

struct Live {
    conn: ConnId,
    kick: Recipient<Kick>,
}

/// See the module docs.
pub struct Router {
    dispatcher: Addr<Dispatcher>,
    online: HashMap<UserId, HashMap<DeviceId, Live>>,
    bus: Option<Arc<dyn Bus>>,
}

impl Router {
    pub fn new(dispatcher: Addr<Dispatcher>) -> Self {
        Self {
            dispatcher,
            online: HashMap::new(),
            bus: None,
        }
    }
}

impl Router {
    /// Coordinates sessions with other instances through `bus`.
    pub fn with_bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Runs a bus call off the mailbox; failures are logged (the bus is a hint, see the module).
    fn on_bus<F>(&self, what: &'static str, ctx: &mut Context<Self>, call: F)
    where
        F: FnOnce(
            Arc<dyn Bus>,
        )
            -> futures_util::future::BoxFuture<'static, Result<(), titan_store::StoreError>>,
    {
        if let Some(bus) = self.bus.clone() {
            let call = call(bus);
            ctx.spawn(
                async move {
                    if let Err(e) = call.await {
                        warn!(error = %e, what, "cluster bus call failed");
                    }
                }
                .into_actor(self),
            );
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(events) = self.bus.as_ref().and_then(|b| b.take_events()) {
            ctx.add_stream(futures_util::stream::unfold(events, |mut rx| async move {
                rx.recv().await.map(|event| (event, rx))
            }));
        }
    }
}

impl StreamHandler<BusEvent> for Router {
    fn handle(&mut self, event: BusEvent, _: &mut Context<Self>) {
        match event {
            BusEvent::Wake { user } => self.dispatcher.do_send(WakeUser { user }),
            BusEvent::Resync => self.dispatcher.do_send(WakeAll),
            BusEvent::Kick { user, device, conn } => {
                let live = self.online.get(&user).and_then(|d| d.get(&device));
                if let Some(live) = live.filter(|l| l.conn == ConnId(conn)) {
                    info!(%user, %device, conn, "session replaced on another instance");
                    live.kick.do_send(Kick {
                        code: CloseCode::Replaced,
                    });
                }
            }
        }
    }

    /// The bus's event stream ended (the bus was dropped): keep routing locally.
    fn finished(&mut self, _: &mut Context<Self>) {}
}

impl Handler<Attach> for Router {
    type Result = ();

    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) {
        let (user, device, conn) = (msg.user.clone(), msg.device.clone(), msg.conn.0);
        self.on_bus("claim", ctx, move |bus| {
            Box::pin(async move { bus.claim(&user, &device, conn).await })
        });
        let devices = self.online.entry(msg.user.clone()).or_default();
        let previous = devices.insert(
            msg.device.clone(),
            Live {
                conn: msg.conn,
                kick: msg.kick,
            },
        );
        if let Some(old) = previous {
            debug!(user = %msg.user, device = %msg.device, old = old.conn.0, new = msg.conn.0, "session replaced");
            old.kick.do_send(Kick {
                code: CloseCode::Replaced,
            });
        }
        self.dispatcher.do_send(DeviceOnline {
            user: msg.user,
            device: msg.device,
            conn: msg.conn,
            deliver: msg.deliver,
        });
    }
}

impl Handler<Detach> for Router {
    type Result = ();

    fn handle(&mut self, msg: Detach, ctx: &mut Context<Self>) {
        let Some(devices) = self.online.get_mut(&msg.user) else {
            return;
        };
        if devices
            .get(&msg.device)
            .is_none_or(|live| live.conn != msg.conn)
        {
            return;
        }
        devices.remove(&msg.device);
        if devices.is_empty() {
            self.online.remove(&msg.user);
        }
        let (user, device, conn) = (msg.user.clone(), msg.device.clone(), msg.conn.0);
        self.on_bus("release", ctx, move |bus| {
            Box::pin(async move { bus.release(&user, &device, conn).await })
        });
        self.dispatcher.do_send(DeviceOffline {
            user: msg.user,
            device: msg.device,
            conn: msg.conn,
        });
    }
}

impl Handler<GetPresence> for Router {
    type Result = MessageResult<GetPresence>;

    fn handle(&mut self, _: GetPresence, _: &mut Context<Self>) -> Self::Result {
        MessageResult(Presence {
            users: self.online.len(),
            devices: self.online.values().map(HashMap::len).sum(),
        })
    }
}
