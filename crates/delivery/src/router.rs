//! The Router actor: who is online on this instance. It enforces "one live session per (user,
//! device)": when a device connects again, the newer session wins and the older one is kicked
//! with [`CloseCode::Replaced`]. It tells the [`Dispatcher`] about every change so the dispatcher
//! feeds exactly the live sessions.
//!
//! With a cluster bus (several instances on one Redis) the Router also claims each device in
//! Redis when its session starts; the instance that held it before gets a kick event and closes
//! its session the same way, so at most one instance considers itself the live session of a
//! (user, device). The device's feed starts once the claim is answered, so wake-ups for anything
//! stored after its first read reach this instance. Wake-ups from other instances pass through
//! here to the dispatcher. When the bus reconnects ([`BusEvent::Resync`]) every live device's
//! claim is checked (re-made if Redis lost it; the session closed if a newer one took the device
//! meanwhile) and its feed restarted.

use crate::hashing::HashMap;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use titan_protocol::{CloseCode, DeviceId, UserId};
use titan_store::{Bus, BusEvent, RevocationList};
use tracing::{debug, info, warn};

use crate::dispatcher::{DeviceOffline, DeviceOnline, Dispatcher, WakeUser};
use crate::metrics::Metrics;
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

/// `user`'s tokens issued before `at_ms` are revoked (on this instance or, through
/// [`BusEvent::Revoked`], on another): record it in the revocation list and close every live
/// session of the user with [`CloseCode::Revoked`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct RevokeUser {
    pub user: UserId,
    pub at_ms: u64,
}

/// Sent by a session right after its [`Attach`]: close it with [`CloseCode::Revoked`] if its
/// token (issued at `issued_at`, seconds) is revoked. The session checked before attaching, but a
/// revocation handled here between that check and the [`Attach`] would have missed it; the
/// Router handles both in order, so one of the two closes it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CheckRevoked {
    pub user: UserId,
    pub issued_at: u64,
    pub kick: Recipient<Kick>,
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

/// How often claims that failed (Redis unreachable) are tried again.
const CLAIM_RETRY: Duration = Duration::from_secs(1);

/// Where a live session's claim in the cluster bus stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// A bus call about it is running; its answer settles the state (and starts the feed if
    /// one is due, see [`Live::feed_due`]).
    Pending,
    /// Recorded in the bus.
    Held,
    /// The call failed (it may or may not have been applied); tried again every
    /// [`CLAIM_RETRY`].
    Failed,
}

/// Which bus call asserts a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Assert {
    /// Take the device, kicking any other holder (a new session; a failed claim retried).
    Claim,
    /// Keep it if it is ours or unclaimed; lose it to another holder (after a resync).
    Reclaim,
}

struct Live {
    conn: ConnId,
    kick: Recipient<Kick>,
    /// Kept to (re)start the device's feed.
    deliver: Recipient<Deliver>,
    claim: Claim,
    /// The feed must be (re)started once the pending claim is answered: a new session, or a
    /// resync.
    feed_due: bool,
}

/// See the module docs.
pub struct Router {
    dispatcher: Addr<Dispatcher>,
    online: HashMap<UserId, HashMap<DeviceId, Live>>,
    bus: Option<Arc<dyn Bus>>,
    metrics: Metrics,
    /// Where revocations are recorded for the sessions' token checks.
    revocations: Option<Arc<RevocationList>>,
}

impl Router {
    pub fn new(dispatcher: Addr<Dispatcher>) -> Self {
        Self {
            dispatcher,
            online: HashMap::default(),
            bus: None,
            metrics: Metrics::default(),
            revocations: None,
        }
    }

    /// Records revocations (from [`RevokeUser`] and the bus) in `list`.
    pub fn with_revocations(mut self, list: Arc<RevocationList>) -> Self {
        self.revocations = Some(list);
        self
    }

    /// See [`RevokeUser`].
    fn revoke(&mut self, user: &UserId, at_ms: u64) {
        if let Some(list) = &self.revocations {
            list.record(user, at_ms);
        }
        for (device, live) in self.online.get(user).into_iter().flatten() {
            info!(%user, %device, conn = live.conn.0, "closing session: tokens revoked");
            live.kick.do_send(Kick {
                code: CloseCode::Revoked,
            });
        }
    }

    /// Records online users and devices into `metrics` (a private registry otherwise).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Coordinates sessions with other instances through `bus`.
    pub fn with_bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    fn live_mut(&mut self, user: &UserId, device: &DeviceId, conn: ConnId) -> Option<&mut Live> {
        self.online
            .get_mut(user)
            .and_then(|d| d.get_mut(device))
            .filter(|live| live.conn == conn)
    }

    /// Starts (or restarts: a fresh catch-up of everything pending) the live device's feed.
    fn start_feed(&self, user: UserId, device: DeviceId) {
        if let Some(live) = self.online.get(&user).and_then(|d| d.get(&device)) {
            self.dispatcher.do_send(DeviceOnline {
                conn: live.conn,
                deliver: live.deliver.clone(),
                user,
                device,
            });
        }
    }

    /// Asserts the claim of a live session in the bus, then settles it: starts its feed if one
    /// is due, closes the session if another one holds the device, releases the claim if the
    /// session ended meanwhile (after the claim, so the release cannot overtake it). A new
    /// session's feed starts only once its claim is answered: from its first read on, every
    /// append on another instance finds the claim and wakes us, so nothing waits for the
    /// periodic re-read.
    fn assert_claim(
        &self,
        bus: Arc<dyn Bus>,
        user: UserId,
        device: DeviceId,
        conn: ConnId,
        how: Assert,
        ctx: &mut Context<Self>,
    ) {
        let call = {
            let (bus, user, device) = (bus.clone(), user.clone(), device.clone());
            async move {
                match how {
                    Assert::Claim => bus.claim(&user, &device, conn.0).await.map(|()| true),
                    Assert::Reclaim => bus.reclaim(&user, &device, conn.0).await,
                }
            }
        };
        ctx.spawn(call.into_actor(self).map(move |result, act, ctx| {
            let Some(live) = act.live_mut(&user, &device, conn) else {
                // Ended meanwhile; its Detach left the release to us.
                act.release(bus, user, device, conn, ctx);
                return;
            };
            match result {
                Ok(true) => live.claim = Claim::Held,
                Ok(false) => {
                    info!(%user, %device, conn = conn.0, "session replaced on another instance (seen on resync)");
                    live.claim = Claim::Held;
                    live.kick.do_send(Kick {
                        code: CloseCode::Replaced,
                    });
                    return;
                }
                Err(e) => {
                    warn!(error = %e, %user, %device, ?how, "cluster bus claim failed; retrying");
                    live.claim = Claim::Failed;
                }
            }
            // Delivery does not wait for the bus: without the claim, other instances' appends
            // reach this device through the periodic re-read.
            if std::mem::take(&mut live.feed_due) {
                act.start_feed(user, device);
            }
        }));
    }

    /// Forgets the claim of `conn` (a no-op in the bus if a newer session claimed since).
    fn release(
        &self,
        bus: Arc<dyn Bus>,
        user: UserId,
        device: DeviceId,
        conn: ConnId,
        ctx: &mut Context<Self>,
    ) {
        ctx.spawn(
            async move {
                if let Err(e) = bus.release(&user, &device, conn.0).await {
                    // Harmless: a stale claim only sends wake-ups to an instance that ignores them.
                    warn!(error = %e, %user, %device, "cluster bus release failed");
                }
            }
            .into_actor(self),
        );
    }

    /// Asserts the claims of live devices again: on a resync every one of them (re-made if
    /// Redis lost it, the session closed if a newer one took the device meanwhile, whose kick
    /// may be lost) and then their feeds restarted, since Redis may also have lost the replies
    /// of reads (messages then pending in the store but never delivered), which a restarted
    /// feed's catch-up re-sends; otherwise only the claims that failed.
    fn reassert_claims(&mut self, resync: bool, ctx: &mut Context<Self>) {
        let Some(bus) = self.bus.clone() else { return };
        let mut calls = Vec::new();
        for (user, devices) in &mut self.online {
            for (device, live) in devices.iter_mut() {
                live.feed_due |= resync;
                let how = match live.claim {
                    // Its answer starts the feed if due.
                    Claim::Pending => continue,
                    Claim::Held if resync => Assert::Reclaim,
                    Claim::Held => continue,
                    Claim::Failed => Assert::Claim,
                };
                live.claim = Claim::Pending;
                calls.push((user.clone(), device.clone(), live.conn, how));
            }
        }
        for (user, device, conn, how) in calls {
            self.assert_claim(bus.clone(), user, device, conn, how, ctx);
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
        if self.bus.is_some() {
            ctx.run_interval(CLAIM_RETRY, |act, ctx| act.reassert_claims(false, ctx));
        }
    }
}

impl StreamHandler<BusEvent> for Router {
    fn handle(&mut self, event: BusEvent, ctx: &mut Context<Self>) {
        match event {
            BusEvent::Wake { user } => self.dispatcher.do_send(WakeUser { user }),
            BusEvent::Resync => self.reassert_claims(true, ctx),
            BusEvent::Revoked { user, at_ms } => self.revoke(&user, at_ms),
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
        let live = Live {
            conn: msg.conn,
            kick: msg.kick,
            deliver: msg.deliver,
            claim: Claim::Pending,
            feed_due: true,
        };
        let devices = self.online.entry(msg.user.clone()).or_default();
        if let Some(old) = devices.insert(msg.device.clone(), live) {
            debug!(user = %msg.user, device = %msg.device, old = old.conn.0, new = msg.conn.0, "session replaced");
            old.kick.do_send(Kick {
                code: CloseCode::Replaced,
            });
        } else {
            self.metrics.online_devices.inc();
        }
        self.metrics.online_users.set(self.online.len() as i64);
        match self.bus.clone() {
            Some(bus) => {
                self.assert_claim(bus, msg.user, msg.device, msg.conn, Assert::Claim, ctx);
            }
            None => self.start_feed(msg.user, msg.device),
        }
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
        let live = devices.remove(&msg.device);
        if devices.is_empty() {
            self.online.remove(&msg.user);
        }
        self.metrics.online_devices.dec();
        self.metrics.online_users.set(self.online.len() as i64);
        // A pending claim is released by its own completion, so the release follows it.
        if let Some(bus) = self.bus.clone()
            && live.is_some_and(|l| l.claim != Claim::Pending)
        {
            self.release(bus, msg.user.clone(), msg.device.clone(), msg.conn, ctx);
        }
        self.dispatcher.do_send(DeviceOffline {
            user: msg.user,
            device: msg.device,
            conn: msg.conn,
        });
    }
}

impl Handler<RevokeUser> for Router {
    type Result = ();

    fn handle(&mut self, msg: RevokeUser, _: &mut Context<Self>) {
        self.revoke(&msg.user, msg.at_ms);
    }
}

impl Handler<CheckRevoked> for Router {
    type Result = ();

    fn handle(&mut self, msg: CheckRevoked, _: &mut Context<Self>) {
        if let Some(list) = &self.revocations
            && list.is_revoked(&msg.user, msg.issued_at)
        {
            info!(user = %msg.user, "closing a session revoked while it attached");
            msg.kick.do_send(Kick {
                code: CloseCode::Revoked,
            });
        }
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
