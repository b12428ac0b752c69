//! The Router actor: who is online on this instance. It enforces "one live session per (user,
//! device)": when a device connects again, the newer session wins and the older one is kicked
//! with [`CloseCode::Replaced`]. It tells the [`Dispatcher`] about every change so the dispatcher
//! feeds exactly the live sessions.

use actix::prelude::*;
use std::collections::HashMap;
use titan_protocol::{CloseCode, DeviceId, UserId};
use tracing::debug;

use crate::dispatcher::{DeviceOffline, DeviceOnline, Dispatcher};
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
}

impl Router {
    pub fn new(dispatcher: Addr<Dispatcher>) -> Self {
        Self {
            dispatcher,
            online: HashMap::new(),
        }
    }
}

impl Actor for Router {
    type Context = Context<Self>;
}

impl Handler<Attach> for Router {
    type Result = ();

    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) {
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

    fn handle(&mut self, msg: Detach, _: &mut Context<Self>) {
        let Some(devices) = self.online.get_mut(&msg.user) else {
            return;
        };
        if devices.get(&msg.device).is_none_or(|live| live.conn != msg.conn) {
            return;
        }
        devices.remove(&msg.device);
        if devices.is_empty() {
            self.online.remove(&msg.user);
        }
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
