//! The Dispatcher actor (the design's "Delivery actor"): persists what clients send, then gets
//! every stored message to every online device of its recipient, at least once.
//!
//! A `msg.send` is acknowledged only after the store's append returns (durable). Delivery is
//! pull-based per device: an append, a connect, an ack or a timer "pumps" the device's
//! [`Feed`], which runs one store operation (catch up on pending, redeliver stale, or read new),
//! hands the result to the session as [`Deliver`], and tracks it as in flight until
//! [`Acked`]. The in-flight window per device bounds what a session may be asked to buffer.
//! What one turn of the actor gathers (every sender's requests, every device's acks: all the
//! messages it found in its mailbox at one wake-up) goes to the store as one append and one ack
//! call when the turn ends (`Gathered`, `EndTurn`).
//! The store operations of the feeds (`pump`, `finish`) live in the child module `reads`; storing
//! what clients send (`Submit`, `SubmitMany`, and what follows an append) in `submit`; pushing
//! what a connected device does not ack (`push.after_unacked`) in `unacked`.

use actix::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use titan_protocol::{DeviceId, OutgoingMessage, UserId};
use titan_store::{Bus, Delivered, DeviceAcks, Inbox, Position, StoreError};
use tracing::{debug, warn};

mod reads;
mod submit;
mod unacked;
use reads::FusedRead;
use submit::GatheredSubmit;

use crate::envelope::stamp;
use crate::error::DeliveryError;
use crate::feed::{Feed, Phase, Step};
use crate::hashing::{HashMap, HashSet};
use crate::metrics::Metrics;
use crate::push::{PushStored, PushUnacked, Pusher};
use crate::resume::{Resume, run_then};
use crate::session_link::{ConnId, Deliver};

/// Store a client's messages; resolves once they are durable (the `"ACK"` of `msg.send`).
#[derive(Message)]
#[rtype(result = "Result<(), DeliveryError>")]
pub struct Submit {
    pub from: UserId,
    pub messages: Vec<OutgoingMessage>,
}

/// Several `msg.send` requests of one sender that arrived together (one read of its
/// connection): stored in one store call, each all or nothing on its own, and answered together
/// (one result per request, in order), so the session writes their answers in one go.
#[derive(Message)]
#[rtype(result = "Vec<Result<(), DeliveryError>>")]
pub struct SubmitMany {
    pub from: UserId,
    pub requests: Vec<Vec<OutgoingMessage>>,
}

/// A device went live on this instance (sent by the Router).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeviceOnline {
    pub user: UserId,
    pub device: DeviceId,
    pub conn: ConnId,
    pub deliver: Recipient<Deliver>,
}

/// A device's live session ended (sent by the Router).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeviceOffline {
    pub user: UserId,
    pub device: DeviceId,
    pub conn: ConnId,
}

/// The device acknowledged these messages (a success response to `msg.recv`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Acked {
    pub user: UserId,
    pub device: DeviceId,
    pub conn: ConnId,
    pub positions: Vec<Position>,
}

/// New messages were stored for `user` on another instance (a cluster bus wake-up).
#[derive(Message)]
#[rtype(result = "()")]
pub struct WakeUser {
    pub user: UserId,
}

/// Sent by the actor to itself when it first gathers something in a turn (nothing gathered is
/// waiting: the `EndTurn` before took it all): handled once the
/// mailbox is empty (actix runs its own notifications after the mailbox), it stores what the
/// turn gathered.
#[derive(Message)]
#[rtype(result = "()")]
struct EndTurn;

/// What one turn of the actor (the messages it found in its mailbox at one wake-up) gathered
/// for the store: every sender's `msg.send` requests go to the store in one call at the end of
/// the turn, every device's acks in another, instead of a store call, a task and a reply each.
/// Under load the mailbox holds several senders' requests and receivers' acks at each wake-up.
#[derive(Default)]
struct Gathered {
    submits: Vec<GatheredSubmit>,
    acks: Vec<DeviceAcks>,
}

impl Gathered {
    fn is_empty(&self) -> bool {
        self.submits.is_empty() && self.acks.is_empty()
    }
}

/// Tuning of delivery; see `config/titan.toml` for each value's meaning.
#[derive(Debug, Clone)]
pub struct DispatcherConfig {
    /// Unacked messages are redelivered after this long.
    pub ack_timeout: Duration,
    /// Most messages in flight (sent, unacked) per device.
    pub window: usize,
    /// Most messages in one `msg.recv`.
    pub recv_batch: usize,
    /// Soft cap on the message bytes in one `msg.recv` (one message always fits).
    pub recv_bytes: usize,
    /// How often retention trimming runs.
    pub trim_interval: Duration,
    /// With a cluster bus: how often every feed is re-read anyway, bounding the delay a lost
    /// wake-up can cause.
    pub poll_interval: Duration,
    /// `push.after_unacked`: a message a connected device was given and has not acked this
    /// long after is pushed to it (once); `None` (the default): connected devices are not
    /// pushed. Needs push (`with_push`).
    pub push_after_unacked: Option<Duration>,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        Self {
            ack_timeout: Duration::from_secs(30),
            window: 256,
            recv_batch: 32,
            recv_bytes: 48 * 1024,
            trim_interval: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            push_after_unacked: None,
        }
    }
}

/// Stores keep delivery times in whole milliseconds (truncated), so a message this feed finds
/// overdue can share its millisecond with `now - ack_timeout` and not count as delivered before
/// it. The redelivery claim therefore reaches one millisecond further: without it, the store
/// returns nothing, `finish` drops the message from in flight, and it is not redelivered until
/// the device reconnects.
const STORE_TIME_GRANULARITY: Duration = Duration::from_millis(1);

type FeedKey = (UserId, DeviceId);

/// The store operations of one device that are running (`Dispatcher::running`): one of any
/// kind, or several reads of new messages that went with appends (`reads`).
#[derive(Debug, Default)]
struct Running {
    ops: usize,
    /// The operation is a catch-up or a redelivery, which nothing may overlap.
    exclusive: bool,
}

/// See the module docs.
pub struct Dispatcher {
    store: Arc<dyn Inbox>,
    config: DispatcherConfig,
    feeds: HashMap<FeedKey, Feed>,
    /// Devices online per user, so an append wakes only its recipient's feeds.
    devices: HashMap<UserId, Vec<DeviceId>>,
    /// Devices with store operations running. Kept apart from `feeds` because an operation
    /// outlives the feed it was started for when the device goes offline and comes back before
    /// it ends; the new feed must still wait for it, or two catch-ups overlap and the device gets
    /// its pending messages twice.
    running: HashMap<FeedKey, Running>,
    /// The store runs calls in the order they are made ([`Inbox::runs_calls_in_order`]): a
    /// device's reads that go with appends may then overlap (`reads`).
    pipelined: bool,
    trimming: bool,
    /// Other instances sharing the store, when there are any.
    bus: Option<Arc<dyn Bus>>,
    /// Recipients whose other instances still need a wake-up, and whether one is on its way:
    /// while a wake-up call runs, the recipients of later appends gather here and go out in
    /// the next call, so concurrent senders share round trips instead of one each.
    wake_queue: HashSet<UserId>,
    waking: bool,
    last_poll: Instant,
    metrics: Metrics,
    /// Where freshly stored messages go for offline devices, when push is enabled.
    push: Option<Recipient<PushStored>>,
    /// Where messages a connected device did not ack go, with `push_after_unacked`.
    push_unacked: Option<Recipient<PushUnacked>>,
    /// With `push_after_unacked`: what devices whose session ended had not acked, waiting for
    /// its delay (`unacked`).
    gone: HashMap<FeedKey, unacked::Pending>,
    gathered: Gathered,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Inbox>, config: DispatcherConfig) -> Self {
        Self {
            pipelined: store.runs_calls_in_order(),
            store,
            config,
            feeds: HashMap::default(),
            devices: HashMap::default(),
            running: HashMap::default(),
            trimming: false,
            bus: None,
            wake_queue: HashSet::default(),
            waking: false,
            last_poll: Instant::now(),
            metrics: Metrics::default(),
            push: None,
            push_unacked: None,
            gone: HashMap::default(),
            gathered: Gathered::default(),
        }
    }

    /// Records into `metrics` (a private registry otherwise).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Hands every newly stored message to the pusher, with the recipients' devices online
    /// here (the pusher skips those). Only appends reach it, never redeliveries; with
    /// `push_after_unacked`, also what a connected device does not ack in time (`unacked`).
    pub fn with_push(mut self, pusher: Addr<Pusher>) -> Self {
        if self.config.push_after_unacked.is_some() {
            self.push_unacked = Some(pusher.clone().recipient());
        }
        self.push = Some(pusher.recipient());
        self
    }

    /// Shares deliveries with other instances: wakes them after appends, and re-reads every feed
    /// each `poll_interval` in case a wake-up was lost.
    pub fn with_bus(mut self, bus: Arc<dyn Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// How often feeds are checked for overdue acks and retried after store errors.
    fn tick_interval(&self) -> Duration {
        (self.config.ack_timeout / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }

    /// Marks the user's feeds here as having new messages and pumps them, except those in
    /// `skip` (their read already saw the new messages).
    fn wake_user(&mut self, user: &UserId, skip: &[FusedRead], ctx: &mut Context<Self>) {
        let Some(devices) = self.devices.get(user) else {
            return;
        };
        for device in devices.clone() {
            let key = (user.clone(), device);
            if skip.iter().any(|f| f.key == key) {
                continue;
            }
            if let Some(feed) = self.feeds.get_mut(&key) {
                feed.dirty = true;
            }
            self.pump(key, ctx);
        }
    }

    /// Makes sure what this turn gathers is stored when the turn ends: called before the first
    /// thing is gathered (an `EndTurn` is on its way whenever something is).
    fn end_turn_later(&mut self, ctx: &mut Context<Self>) {
        if self.gathered.is_empty() {
            ctx.notify(EndTurn);
        }
    }

    /// Periodic: redeliver overdue messages, retry feeds whose last store operation failed.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if self.bus.is_some() && now.duration_since(self.last_poll) >= self.config.poll_interval {
            self.last_poll = now;
            for feed in self.feeds.values_mut() {
                feed.dirty = true;
            }
        }
        let due: Vec<FeedKey> = self
            .feeds
            .iter()
            .filter(|(k, f)| {
                !self.running.contains_key(*k)
                    && (f.dirty || f.redelivery_due(now, self.config.ack_timeout))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.pump(key, ctx);
        }
        self.push_overdue(now);
    }

    fn trim(&mut self, ctx: &mut Context<Self>) {
        if self.trimming {
            return;
        }
        self.trimming = true;
        let store = self.store.clone();
        run_then(ctx, async move { store.trim().await }, |result, act, _| {
            act.trimming = false;
            match result {
                Ok(0) => {}
                Ok(n) => debug!(dropped = n, "trimmed messages past retention"),
                Err(err) => warn!(error = %err, "retention trim failed"),
            }
        });
    }
}

impl Actor for Dispatcher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.tick_interval(), |act, ctx| act.tick(ctx));
        ctx.run_interval(self.config.trim_interval, |act, ctx| act.trim(ctx));
        ctx.run_interval(crate::metrics::SAMPLE_INTERVAL, |act, ctx| {
            // Gauges that need a walk over every feed are sampled rather than tracked per change.
            let in_flight: usize = act.feeds.values().map(|f| f.inflight.len()).sum();
            act.metrics.messages_in_flight.set(in_flight as i64);
            let users = act.devices.keys().cloned().collect();
            let sample = crate::metrics::sample_depth(act.store.clone(), users);
            run_then(ctx, sample, |depth, act, _| {
                act.metrics.inbox_depth.set(depth)
            });
        });
    }
}

impl Handler<Resume<Dispatcher>> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Resume<Dispatcher>, ctx: &mut Context<Self>) {
        msg.run(self, ctx);
    }
}

impl Handler<WakeUser> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: WakeUser, ctx: &mut Context<Self>) {
        self.wake_user(&msg.user, &[], ctx);
    }
}

impl Handler<DeviceOnline> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: DeviceOnline, ctx: &mut Context<Self>) {
        let key = (msg.user.clone(), msg.device.clone());
        self.device_back(&key);
        match self.feeds.get_mut(&key) {
            // A running operation (see `running`) finishes before the catch-up starts.
            Some(feed) => *feed = Feed::new(msg.conn, msg.deliver),
            None => {
                self.feeds
                    .insert(key.clone(), Feed::new(msg.conn, msg.deliver));
                self.devices.entry(msg.user).or_default().push(msg.device);
            }
        }
        self.pump(key, ctx);
    }
}

impl Handler<DeviceOffline> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: DeviceOffline, _: &mut Context<Self>) {
        let key = (msg.user, msg.device);
        if self.feeds.get(&key).is_none_or(|f| f.conn != msg.conn) {
            return;
        }
        if let Some(feed) = self.feeds.remove(&key) {
            self.keep_unacked(key.clone(), feed);
        }
        if let Some(devices) = self.devices.get_mut(&key.0) {
            devices.retain(|d| *d != key.1);
            if devices.is_empty() {
                self.devices.remove(&key.0);
            }
        }
    }
}

impl Handler<Acked> for Dispatcher {
    type Result = ();

    fn handle(&mut self, msg: Acked, ctx: &mut Context<Self>) {
        let key = (msg.user, msg.device);
        if let Some(feed) = self.feeds.get_mut(&key)
            && feed.conn == msg.conn
        {
            // Freeing window space lets a deferred read (dirty) go ahead.
            for pos in &msg.positions {
                if let Some(sent) = feed.inflight.remove(pos) {
                    self.metrics
                        .deliver_to_ack
                        .observe(sent.elapsed().as_secs_f64());
                }
            }
            unacked::forget(feed, &msg.positions);
        }
        self.metrics
            .messages_acked
            .inc_by(msg.positions.len() as u64);
        // A late ack from a replaced session still acks the device's messages.
        self.end_turn_later(ctx);
        let (user, device) = key.clone();
        self.gathered.acks.push(DeviceAcks {
            user,
            device,
            positions: msg.positions,
        });
        // A running operation's end pumps the feed: messages that wait for window space have
        // marked it dirty already (`wake_user`, or a read that filled its limit).
        self.pump_when_idle(key, ctx);
    }
}

impl Handler<EndTurn> for Dispatcher {
    type Result = ();

    fn handle(&mut self, _: EndTurn, ctx: &mut Context<Self>) {
        let gathered = std::mem::take(&mut self.gathered);
        if !gathered.submits.is_empty() {
            self.store_gathered(gathered.submits, ctx);
        }
        if !gathered.acks.is_empty() {
            let store = self.store.clone();
            actix::spawn(async move {
                if let Err(err) = store.ack_many(gathered.acks).await {
                    warn!(error = %err, "ack failed; the messages will be redelivered");
                }
            });
        }
    }
}
