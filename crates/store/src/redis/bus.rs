//! [`RedisBus`]: the [`Bus`] on Redis, for several instances sharing one Redis store.
//!
//! - Presence: a hash per user, `{prefix}:{<user>}:presence`, device -> `"<instance> <conn>"`.
//!   Each instance keeps `{prefix}:instance:<id>` alive with a short TTL, so a device whose
//!   instance died without cleaning up counts as offline within seconds.
//! - Events: each instance subscribes to its own channel, `{prefix}:events:<id>`, and to the
//!   broadcast channel `{prefix}:broadcast` (revocations), on a dedicated
//!   pub/sub connection that is re-established on failure (then a [`BusEvent::Resync`] tells the
//!   dispatcher to re-read every feed, covering anything missed meanwhile).
//! - claim/reclaim/release/wake are Lua scripts (`lua/bus_*.lua`; `lua/claim.lua` is the
//!   store's `claim_pending`): one round trip each (wake: one per hash slot on a Redis Cluster),
//!   atomic. `is_online` reads the presence hash, then the owner's liveness key: two keys in
//!   different slots, so two commands.
//! - On a Redis Cluster, PUBLISH reaches subscribers on every node, so the subscription is held
//!   on any configured node, moving to the next one in `store.redis_url` when it fails.

use ::redis::{AsyncCommands, Client, Script, ScriptInvocation};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use titan_protocol::{DeviceId, UserId};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::connection::{Connection, slot};
use super::keys::Keys;
use crate::bus::{Bus, BusEvent};
use crate::error::StoreError;

/// How long an instance counts as alive after its last heartbeat.
const ALIVE_TTL: Duration = Duration::from_secs(10);
/// How often the heartbeat renews it.
const HEARTBEAT: Duration = Duration::from_secs(3);
/// Pause before re-subscribing after the pub/sub connection failed.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);
/// Events buffered for the Router before the subscriber waits for it.
const EVENT_BUFFER: usize = 4096;
/// Payload prefix of a canary (not JSON, so it can never be taken for an event).
const CANARY_PREFIX: &str = "canary:";

/// Canaries on their way through this instance's channel, and the nudge that makes the
/// subscriber start over when one was published but never came back (a silently dead
/// subscription).
#[derive(Default)]
struct Canaries {
    waiting: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next: AtomicU64,
    suspect: Notify,
}

impl Canaries {
    /// Hands a canary that came back to its waiter; false when `payload` is not a canary.
    fn arrived(&self, payload: &str) -> bool {
        let Some(n) = payload.strip_prefix(CANARY_PREFIX) else {
            return false;
        };
        if let Ok(n) = n.parse::<u64>()
            && let Some(tx) = self.waiting.lock().ok().and_then(|mut w| w.remove(&n))
        {
            let _ = tx.send(());
        }
        true
    }
}

/// See the module docs. Dropping it stops the heartbeat and the subscriber.
pub struct RedisBus {
    instance: String,
    conn: Connection,
    keys: Keys,
    timeout: Duration,
    scripts: BusScripts,
    events: Mutex<Option<mpsc::Receiver<BusEvent>>>,
    tasks: Vec<JoinHandle<()>>,
    canaries: Arc<Canaries>,
    channel: String,
}

struct BusScripts {
    claim: Script,
    reclaim: Script,
    release: Script,
    wake: Script,
}

impl RedisBus {
    pub(super) async fn start(
        clients: Vec<Client>,
        conn: Connection,
        keys: Keys,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let instance = uuid::Uuid::now_v7().simple().to_string();
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let channel = keys.events_channel(&instance);
        let channels = vec![channel.clone(), keys.broadcast_channel()];
        // Subscribe before returning, so no event meant for us is published before we listen.
        let first = subscribe(&clients, 0, &channels, timeout).await?;
        let canaries = Arc::new(Canaries::default());
        let subscriber = tokio::spawn(listen(
            clients,
            channels,
            timeout,
            first,
            tx,
            canaries.clone(),
        ));
        let heartbeat = tokio::spawn(heartbeat(conn.clone(), keys.instance_alive(&instance)));
        info!(%instance, "cluster bus started");
        Ok(Self {
            instance,
            conn,
            keys,
            timeout,
            scripts: BusScripts {
                claim: Script::new(include_str!("lua/bus_claim.lua")),
                reclaim: Script::new(include_str!("lua/bus_reclaim.lua")),
                release: Script::new(include_str!("lua/bus_release.lua")),
                wake: Script::new(include_str!("lua/bus_wake.lua")),
            },
            events: Mutex::new(Some(rx)),
            tasks: vec![subscriber, heartbeat],
            canaries,
            channel,
        })
    }

    fn owner(&self, conn: u64) -> String {
        format!("{} {conn}", self.instance)
    }

    /// Runs a script within the timeout. The first command after Redis went away (a restart)
    /// finds the shared connection dead and only starts its reconnection; every bus script is
    /// idempotent, so it runs once more instead of failing a claim for that reason alone.
    async fn invoke(&self, what: &str, call: &ScriptInvocation<'_>) -> Result<i64, StoreError> {
        let mut c = self.conn.clone();
        let attempts = async {
            match call.invoke_async::<i64>(&mut c).await {
                Err(e) if e.is_connection_dropped() => call.invoke_async::<i64>(&mut c).await,
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::unavailable(format!("redis bus {what}: {e}"))),
            Err(_) => Err(StoreError::unavailable(format!(
                "redis bus {what}: timed out"
            ))),
        }
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn instance(&self) -> &str {
        &self.instance
    }

    async fn claim(&self, user: &UserId, device: &DeviceId, conn: u64) -> Result<(), StoreError> {
        let mut call = self.scripts.claim.key(self.keys.presence(user.as_str()));
        call.arg(device.as_str())
            .arg(self.owner(conn))
            .arg(self.keys.events_channel(""))
            .arg(&self.instance)
            .arg(user.as_str());
        self.invoke("claim", &call).await?;
        Ok(())
    }

    async fn release(&self, user: &UserId, device: &DeviceId, conn: u64) -> Result<(), StoreError> {
        let mut call = self.scripts.release.key(self.keys.presence(user.as_str()));
        call.arg(device.as_str()).arg(self.owner(conn));
        self.invoke("release", &call).await?;
        Ok(())
    }

    async fn reclaim(
        &self,
        user: &UserId,
        device: &DeviceId,
        conn: u64,
    ) -> Result<bool, StoreError> {
        let mut call = self.scripts.reclaim.key(self.keys.presence(user.as_str()));
        call.arg(device.as_str()).arg(self.owner(conn));
        let held = self.invoke("reclaim", &call).await?;
        Ok(held == 1)
    }

    async fn wake(&self, users: &[UserId]) -> Result<(), StoreError> {
        // One script per hash slot among the users (one in all on a standalone Redis).
        let mut groups: Vec<(u16, Vec<&UserId>)> = Vec::new();
        for user in users {
            let shard = if self.conn.is_cluster() {
                slot(&self.keys.presence(user.as_str()))
            } else {
                0
            };
            match groups.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, members)) => members.push(user),
                None => groups.push((shard, vec![user])),
            }
        }
        let mut calls = Vec::with_capacity(groups.len());
        for (_, members) in &groups {
            let mut call = self.scripts.wake.prepare_invoke();
            for user in members {
                call.key(self.keys.presence(user.as_str()));
            }
            call.arg(self.keys.events_channel("")).arg(&self.instance);
            for user in members {
                let event = BusEvent::Wake {
                    user: (*user).clone(),
                };
                call.arg(serde_json::to_string(&event).map_err(StoreError::unavailable)?);
            }
            calls.push(call);
        }
        let woken = calls.iter().map(|call| self.invoke("wake", call));
        for result in futures_util::future::join_all(woken).await {
            result?;
        }
        Ok(())
    }

    async fn is_online(&self, user: &UserId, device: &DeviceId) -> Result<bool, StoreError> {
        let presence = self.keys.presence(user.as_str());
        let mut conn = self.conn.clone();
        let lookup = async {
            let owner: Option<String> = conn.hget(&presence, device.as_str()).await?;
            let Some(instance) = owner
                .as_deref()
                .and_then(|o| o.split_once(' '))
                .map(|o| o.0)
            else {
                return Ok(false);
            };
            conn.exists(self.keys.instance_alive(instance)).await
        };
        match tokio::time::timeout(self.timeout, lookup).await {
            Ok(Ok(online)) => Ok(online),
            Ok(Err(e)) => Err(StoreError::unavailable(format!("redis bus online: {e}"))),
            Err(_) => Err(StoreError::unavailable("redis bus online: timed out")),
        }
    }

    async fn broadcast(&self, event: &BusEvent) -> Result<(), StoreError> {
        let payload = serde_json::to_string(event).map_err(StoreError::unavailable)?;
        let channel = self.keys.broadcast_channel();
        let mut c = self.conn.clone();
        let publish = c.publish::<_, _, i64>(channel, payload);
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(StoreError::unavailable(format!("redis bus broadcast: {e}"))),
            Err(_) => Err(StoreError::unavailable("redis bus broadcast: timed out")),
        }
    }

    fn take_events(&self) -> Option<mpsc::Receiver<BusEvent>> {
        self.events.lock().ok()?.take()
    }

    async fn canary(&self, within: Duration) -> Result<(), StoreError> {
        let n = self.canaries.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut waiting) = self.canaries.waiting.lock() {
            waiting.insert(n, tx);
        }
        let mut c = self.conn.clone();
        let trip = async {
            let receivers: i64 = c
                .publish(&self.channel, format!("{CANARY_PREFIX}{n}"))
                .await
                .map_err(|e| StoreError::unavailable(format!("redis bus canary: {e}")))?;
            if receivers == 0 {
                return Err(StoreError::unavailable(
                    "redis bus canary: this instance is not subscribed",
                ));
            }
            rx.await
                .map_err(|_| StoreError::unavailable("redis bus canary: subscriber stopped"))
        };
        let result = match tokio::time::timeout(within, trip).await {
            Ok(r) => r,
            Err(_) => {
                // Published (or Redis is slow) but not heard: if the subscription is dead without
                // the connection noticing, only starting over repairs it.
                self.canaries.suspect.notify_waiters();
                Err(StoreError::unavailable(
                    "redis bus canary: did not come back in time",
                ))
            }
        };
        if let Ok(mut waiting) = self.canaries.waiting.lock() {
            waiting.remove(&n);
        }
        result
    }
}

/// A live subscription: the sink is kept because dropping it would end the subscription.
type Subscription = (::redis::aio::PubSubSink, ::redis::aio::PubSubStream);

/// Opens a pub/sub connection to node `node` (modulo the number of clients) subscribed to
/// `channels`, within `timeout` (an unreachable Redis must not stall the re-subscribe loop for
/// the operating system's connect timeout).
async fn subscribe(
    clients: &[Client],
    node: usize,
    channels: &[String],
    timeout: Duration,
) -> Result<Subscription, StoreError> {
    let Some(client) = clients.get(node % clients.len().max(1)) else {
        return Err(StoreError::unavailable("redis pub/sub: no node configured"));
    };
    let connect = async {
        let pubsub = client
            .get_async_pubsub()
            .await
            .map_err(|e| StoreError::unavailable(format!("redis pub/sub connect: {e}")))?;
        let (mut sink, stream) = pubsub.split();
        sink.subscribe(channels)
            .await
            .map_err(|e| StoreError::unavailable(format!("redis pub/sub subscribe: {e}")))?;
        Ok((sink, stream))
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| StoreError::unavailable("redis pub/sub: subscribe timed out"))?
}

/// Forwards events until the receiver is gone; re-subscribes whenever the connection drops.
async fn listen(
    clients: Vec<Client>,
    channels: Vec<String>,
    timeout: Duration,
    first: Subscription,
    tx: mpsc::Sender<BusEvent>,
    canaries: Arc<Canaries>,
) {
    let mut stream = Some(first);
    // The node to subscribe through next; it moves on after each failure, so a dead Cluster
    // node is left for another one.
    let mut node = 0;
    loop {
        if let Some((_sink, mut messages)) = stream.take() {
            loop {
                let msg = tokio::select! {
                    msg = messages.next() => msg,
                    () = canaries.suspect.notified() => {
                        warn!("redis pub/sub subscription silent (canary lost)");
                        break;
                    }
                };
                let Some(msg) = msg else { break };
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                if canaries.arrived(&payload) {
                    continue;
                }
                match serde_json::from_str::<BusEvent>(&payload) {
                    Ok(event) => {
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => debug!(error = %e, "ignoring malformed bus event"),
                }
            }
            warn!("redis pub/sub connection lost; re-subscribing");
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
        match subscribe(&clients, node, &channels, timeout).await {
            Ok(s) => {
                info!("redis pub/sub re-subscribed");
                stream = Some(s);
                if tx.send(BusEvent::Resync).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                debug!(error = %e, "re-subscribe failed; retrying");
                node = node.wrapping_add(1);
            }
        }
    }
}

/// Keeps this instance's liveness key alive.
async fn heartbeat(mut conn: Connection, key: String) {
    let ttl = u64::try_from(ALIVE_TTL.as_millis()).unwrap_or(u64::MAX);
    let mut tick = tokio::time::interval(HEARTBEAT);
    loop {
        tick.tick().await;
        let set: ::redis::RedisResult<()> = conn.pset_ex(&key, 1, ttl).await;
        if let Err(e) = set {
            debug!(error = %e, "instance heartbeat failed");
        }
    }
}
