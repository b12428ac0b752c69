//! [`RedisBus`]: the [`Bus`] on Redis, for several instances sharing one Redis store.
//!
//! - Presence: a hash per user, `{prefix}:{<user>}:presence`, device -> `"<instance> <conn>"`.
//!   Each instance keeps `{prefix}:instance:<id>` alive with a short TTL, so a device whose
//!   instance died without cleaning up counts as offline within seconds.
//! - Events: each instance subscribes to its own channel, `{prefix}:events:<id>`, and to the
//!   broadcast channel `{prefix}:broadcast` (revocations), on a dedicated
//!   pub/sub connection that is re-established on failure (then a [`BusEvent::Resync`] tells the
//!   dispatcher to re-read every feed, covering anything missed meanwhile).
//! - claim/reclaim/release/wake/online are Lua scripts (`lua/bus_*.lua`; `lua/claim.lua` is the
//!   store's `claim_pending`): one round trip each, atomic.

use ::redis::aio::ConnectionManager;
use ::redis::{AsyncCommands, Client, Script, ScriptInvocation};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::sync::Mutex;
use std::time::Duration;
use titan_protocol::{DeviceId, UserId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

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

/// See the module docs. Dropping it stops the heartbeat and the subscriber.
pub struct RedisBus {
    instance: String,
    conn: ConnectionManager,
    keys: Keys,
    timeout: Duration,
    scripts: BusScripts,
    events: Mutex<Option<mpsc::Receiver<BusEvent>>>,
    tasks: Vec<JoinHandle<()>>,
}

struct BusScripts {
    claim: Script,
    reclaim: Script,
    release: Script,
    wake: Script,
    online: Script,
}

impl RedisBus {
    pub(super) async fn start(
        client: Client,
        conn: ConnectionManager,
        keys: Keys,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let instance = uuid::Uuid::now_v7().simple().to_string();
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let channels = vec![keys.events_channel(&instance), keys.broadcast_channel()];
        // Subscribe before returning, so no event meant for us is published before we listen.
        let first = subscribe(&client, &channels, timeout).await?;
        let subscriber = tokio::spawn(listen(client, channels, timeout, first, tx));
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
                online: Script::new(include_str!("lua/bus_online.lua")),
            },
            events: Mutex::new(Some(rx)),
            tasks: vec![subscriber, heartbeat],
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
        if users.is_empty() {
            return Ok(());
        }
        let mut call = self.scripts.wake.prepare_invoke();
        for user in users {
            call.key(self.keys.presence(user.as_str()));
        }
        call.arg(self.keys.events_channel("")).arg(&self.instance);
        for user in users {
            let event = BusEvent::Wake { user: user.clone() };
            call.arg(serde_json::to_string(&event).map_err(StoreError::unavailable)?);
        }
        self.invoke("wake", &call).await?;
        Ok(())
    }

    async fn is_online(&self, user: &UserId, device: &DeviceId) -> Result<bool, StoreError> {
        let mut call = self.scripts.online.key(self.keys.presence(user.as_str()));
        call.arg(device.as_str()).arg(self.keys.instance_alive(""));
        let n = self.invoke("online", &call).await?;
        Ok(n == 1)
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
}

/// A live subscription: the sink is kept because dropping it would end the subscription.
type Subscription = (::redis::aio::PubSubSink, ::redis::aio::PubSubStream);

/// Opens a pub/sub connection subscribed to `channels`, within `timeout` (an unreachable Redis
/// must not stall the re-subscribe loop for the operating system's connect timeout).
async fn subscribe(
    client: &Client,
    channels: &[String],
    timeout: Duration,
) -> Result<Subscription, StoreError> {
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
    client: Client,
    channels: Vec<String>,
    timeout: Duration,
    first: Subscription,
    tx: mpsc::Sender<BusEvent>,
) {
    let mut stream = Some(first);
    loop {
        if let Some((_sink, mut messages)) = stream.take() {
            while let Some(msg) = messages.next().await {
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
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
        match subscribe(&client, &channels, timeout).await {
            Ok(s) => {
                info!("redis pub/sub re-subscribed");
                stream = Some(s);
                if tx.send(BusEvent::Resync).await.is_err() {
                    return;
                }
            }
            Err(e) => debug!(error = %e, "re-subscribe failed; retrying"),
        }
    }
}

/// Keeps this instance's liveness key alive.
async fn heartbeat(mut conn: ConnectionManager, key: String) {
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
