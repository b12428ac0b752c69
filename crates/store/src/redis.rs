//! The Redis backend (`store.backend = "redis"`): the [`Inbox`] trait mapped one to one onto
//! Redis Streams, for deployments that run several Titan nodes on one shared store.
//!
//! # Mapping
//! - Each recipient's inbox is a stream `{prefix}:{<user>}:inbox`; an entry's field `m` holds
//!   the message JSON and its stream id `<ms>-<seq>` is the [`Position`]. Redis assigns the id
//!   (`*`), so an inbox's order is the order Redis accepted the appends in; the later messages
//!   of one batch to the same inbox take the next sequence numbers of the same millisecond.
//! - Each device is a consumer group named after the device, created at id `0` (MKSTREAM) on
//!   its first read, so a new device catches up on every retained message. One fixed consumer
//!   (`c`) per group: one (user, device) has one live session, and the group's pending list is
//!   the device's pending set. There is no separate device list: the groups are the devices.
//! - append = one Lua script (`lua/append.lua`) per call: client-id lookups, the `max_pending`
//!   check and every XADD run atomically, all or nothing across recipients. Client-id keys
//!   `{prefix}:{<recipient>}:cid:<sender>:<client id>` hold the message id and expire after the
//!   retention. append_and_read runs its reads (XREADGROUP, as read_new) in the same script
//!   call, after the appends, when every key is in one slot and no `WAIT` follows writes.
//! - read_new = XREADGROUP `>`; claim_pending = XPENDING IDLE + XCLAIM (see `lua/claim.lua` for
//!   why not XAUTOCLAIM); ack = XACK; depth = max over groups of lag + pending (XINFO GROUPS), or
//!   XLEN without groups; trim = XTRIM MINID on the inboxes listed in the registry sorted set
//!   `{prefix}:inboxes` (scored by oldest entry, so only inboxes with expired messages are read),
//!   which also acks the pending entries of trimmed messages.
//!
//! # Time
//! Positions, delivery times and the retention all use the Redis server's clock; only
//! `claim_pending`'s cutoff comes from the caller, so Titan nodes and Redis need synchronised
//! clocks (NTP) for the ack timeout to be exact.
//!
//! # Durability
//! An append is durable when it returns only if Redis runs with `appendonly yes` and
//! `appendfsync always`; the script's writes reach the AOF as one transaction. A timed-out
//! append may or may not have been applied: client ids make the retry safe.
//!
//! # Redis Cluster
//! `connect` detects a Cluster node and then routes through a Cluster connection
//! (`connection`). Every key of one user shares a slot (hash tag), and client-id keys live in
//! the recipient's slot, so each script touches one slot, except where noted: `append` runs one
//! script per recipient slot (a dry run per slot first when there are several), the trim
//! registry is kept per slot, `wake` runs per slot, and `is_online` is two commands.
//!
//! - `keys`: the key layout and stream ids. `scripts`: the Lua scripts.
//! - `users`: the [`crate::Users`] keys (sign-ins, revocations).
//! - `push_tokens`: the [`crate::PushRegistry`] (push hash per user, token owner keys).
//! - `append`: `append`, `append_and_read`. `cursor`: `read_new`, `claim_pending`, `ack`. `trim`: `trim`, `depth`.

mod append;
mod bus;
mod connection;
mod cursor;
mod keys;
mod push_tokens;
mod scripts;
mod trim;
mod users;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::redis::{Client, ErrorKind, RedisError};
use async_trait::async_trait;
use titan_protocol::{DeviceId, UserId};

use crate::error::StoreError;
use crate::inbox::{
    Appended, AppendedAndRead, Delivered, Inbox, InboxLimits, LiveRead, NewMessage, Position,
};
use connection::Connection;
use keys::Keys;
use scripts::Scripts;

pub use bus::RedisBus;

/// Oldest Redis with every command used here (6.2 brought XPENDING IDLE, XTRIM MINID and
/// exclusive range ids). On 6.2, depth counts unread entries itself (no `lag` before 7.0).
const MIN_REDIS_VERSION: (u32, u32) = (6, 2);

/// Retries of a failed connection attempt (with back-off) per reconnect; kept small because
/// operations wait for the reconnect, and a later operation starts a new one anyway.
const RECONNECT_RETRIES: u32 = 2;

/// How to talk to Redis. The defaults suit a Redis on the same network.
#[derive(Clone)]
pub struct RedisOptions {
    /// Bound on one connection attempt (TCP, TLS and AUTH).
    pub connect_timeout: Duration,
    /// Bound on one whole store operation, waiting for a reconnection included: past it the
    /// operation fails with [`StoreError::Unavailable`] instead of hanging on a dead Redis.
    pub operation_timeout: Duration,
    /// PEM root certificates to trust for `rediss://` instead of the system's (a private CA).
    pub tls_root_certificates: Option<Vec<u8>>,
    /// An append is answered only once this many replicas of the node that stored it have
    /// acknowledged it (Redis `WAIT`), so that a failover to a replica cannot lose a message
    /// the sender was told is stored; 0 (the default): once the primary has it.
    pub wait_replicas: u32,
    /// How long an append waits for `wait_replicas` replicas before it fails as temporary
    /// ([`StoreError::Unavailable`]; the messages are on the primary, and a resend with the same
    /// client ids stores nothing twice).
    pub wait_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(2),
            tls_root_certificates: None,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
        }
    }
}

impl fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field(
                "tls_root_certificates",
                &self.tls_root_certificates.is_some(),
            )
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .finish()
    }
}

/// The Redis-backed [`Inbox`]. Cheap to clone: clones share one multiplexed connection that
/// reconnects by itself.
#[derive(Clone)]
pub struct RedisStore {
    conn: Connection,
    shared: Arc<Shared>,
}

/// What every clone shares.
struct Shared {
    /// Kept to open the bus's dedicated pub/sub connection (one per configured node).
    pubsub: Vec<Client>,
    keys: Keys,
    scripts: Scripts,
    limits: InboxLimits,
    options: RedisOptions,
}

impl fmt::Debug for RedisStore {
    /// Hides the URL, which may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.shared.keys)
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Starts this instance's cluster bus (presence and wake-ups) on the same Redis.
    pub async fn bus(&self) -> Result<RedisBus, StoreError> {
        RedisBus::start(
            self.shared.pubsub.clone(),
            self.conn.clone(),
            self.shared.keys.clone(),
            self.shared.options.operation_timeout,
        )
        .await
    }

    /// Connects with [`RedisOptions::default`]. See [`RedisStore::connect_with`].
    pub async fn connect(
        url: &str,
        key_prefix: &str,
        limits: InboxLimits,
    ) -> Result<Self, StoreError> {
        Self::connect_with(url, key_prefix, limits, RedisOptions::default()).await
    }

    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, or `rediss://` for TLS)
    /// and checks the server version. Every key starts with `key_prefix` (no braces).
    /// Fails with [`StoreError::Unavailable`] when Redis cannot be reached in time.
    pub async fn connect_with(
        url: &str,
        key_prefix: &str,
        limits: InboxLimits,
        options: RedisOptions,
    ) -> Result<Self, StoreError> {
        let keys = Keys::new(key_prefix)?;
        let connection::Opened { conn, pubsub } = connection::open(url, &options).await?;
        let store = Self {
            conn,
            shared: Arc::new(Shared {
                pubsub,
                keys,
                scripts: Scripts::new(),
                limits,
                options,
            }),
        };
        let version = store.server_version().await?;
        if version < MIN_REDIS_VERSION {
            return Err(StoreError::unavailable(format!(
                "redis {}.{} is too old: Titan needs {}.{} or later",
                version.0, version.1, MIN_REDIS_VERSION.0, MIN_REDIS_VERSION.1
            )));
        }
        tracing::info!(
            prefix = key_prefix,
            ?version,
            cluster = store.conn.is_cluster(),
            "redis store connected"
        );
        store.check_replicas().await;
        Ok(store)
    }

    /// With `wait_replicas`, says at start when a standalone primary has fewer replicas than
    /// that: every append will fail (-32006) until it has them. Not an error: replicas may be
    /// on their way. (On a Cluster, each primary's replicas are its own business.)
    async fn check_replicas(&self) {
        let wanted = self.shared.options.wait_replicas;
        if wanted == 0 || self.conn.is_cluster() {
            return;
        }
        let info: Result<String, StoreError> = self
            .run("read the replication state", |mut conn| async move {
                ::redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
            })
            .await;
        let connected = info.ok().and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("connected_slaves:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        });
        match connected {
            Some(n) if n >= wanted => {}
            Some(n) => tracing::warn!(
                replicas = n,
                wanted,
                "store.redis_wait_replicas: the primary has fewer replicas than required; every \
                 msg.send fails (-32006) until it has them"
            ),
            None => tracing::warn!("cannot read the primary's replicas (INFO replication)"),
        }
    }

    /// The Cluster hash slot of `user`'s keys; 0 for every user on a standalone Redis, where
    /// any set of keys can be used together.
    fn shard(&self, user: &str) -> u16 {
        if self.conn.is_cluster() {
            connection::slot(&self.shared.keys.inbox(user))
        } else {
            0
        }
    }

    /// Whether `batch`'s recipients live in more than one hash slot (on a Cluster only).
    fn spans_slots(&self, batch: &[NewMessage]) -> bool {
        let mut shards = batch.iter().map(|new| self.shard(new.message.to.as_str()));
        shards
            .next()
            .is_some_and(|first| shards.any(|other| other != first))
    }

    /// The inbox registry that `shard`'s inboxes are listed in (see [`Keys::slot_registry`]).
    fn registry(&self, shard: u16) -> String {
        if self.conn.is_cluster() {
            self.shared.keys.slot_registry(shard)
        } else {
            self.shared.keys.registry()
        }
    }

    /// Runs `op` on a handle to the shared connection, within the operation timeout.
    async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        bounded(
            self.shared.options.operation_timeout,
            what,
            op(self.conn.clone()),
        )
        .await
    }

    /// (major, minor) of the server, from `INFO server`.
    /// On a Redis Cluster, INFO goes to every primary and the oldest version counts.
    async fn server_version(&self) -> Result<(u32, u32), StoreError> {
        let info: ::redis::Value = self
            .run("read the server version", |mut conn| async move {
                ::redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let texts: Vec<String> = match info {
            ::redis::Value::Map(nodes) => nodes
                .into_iter()
                .map(|(_, text)| ::redis::from_redis_value(text))
                .collect::<Result<_, _>>(),
            single => ::redis::from_redis_value(single).map(|text| vec![text]),
        }
        .map_err(|e| StoreError::Corrupt {
            reason: format!("unreadable INFO server reply: {e}"),
        })?;
        let versions = texts.iter().map(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("redis_version:"))
                .and_then(|v| {
                    let mut parts = v.trim().split('.').map(str::parse::<u32>);
                    Some((parts.next()?.ok()?, parts.next()?.ok()?))
                })
        });
        versions
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().min())
            .ok_or_else(|| StoreError::Corrupt {
                reason: "INFO server has no readable redis_version".to_owned(),
            })
    }
}

/// Awaits `op` for at most `limit`, mapping both failures to [`StoreError`].
async fn bounded<T>(
    limit: Duration,
    what: &'static str,
    op: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(redis_error(what, e)),
        Err(_) => Err(StoreError::unavailable(format!(
            "redis did not {what} within {limit:?}"
        ))),
    }
}

/// Replies Titan cannot read (or keys of the wrong type) are corrupt data; everything else
/// (connection, timeout, auth, out of memory, loading, read-only replica) is temporary.
fn redis_error(what: &str, e: RedisError) -> StoreError {
    let corrupt = matches!(e.kind(), ErrorKind::Parse | ErrorKind::UnexpectedReturnType)
        || e.code() == Some("WRONGTYPE");
    if corrupt {
        StoreError::Corrupt {
            reason: format!("redis could not {what}: {e}"),
        }
    } else {
        StoreError::unavailable(format!("redis could not {what}: {e}"))
    }
}

#[async_trait]
impl Inbox for RedisStore {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
        self.append_batch(batch).await
    }

    /// The appends in one script call when they share a slot (always on a standalone Redis,
    /// see `append_together`), then every read at once: the reads share the connection's
    /// pipeline (and go to their own nodes on a Cluster) instead of waiting for each other. On a
    /// Cluster, batches in different slots are appended at once when each is single-slot (one
    /// connection per node runs its commands in the order sent, so the batches keep their order
    /// per inbox), and one after another when one spans several slots (its two passes could be
    /// overtaken by a later batch).
    async fn append_and_read(
        &self,
        batches: Vec<Vec<NewMessage>>,
        reads: Vec<LiveRead>,
    ) -> Result<AppendedAndRead, StoreError> {
        if batches.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        if !reads.is_empty()
            && let Some(together) = self.append_and_read_together(&batches, &reads).await
        {
            return together;
        }
        let appended = match self.append_together(&batches).await {
            Some(appended) => appended?,
            None if batches.iter().any(|batch| self.spans_slots(batch)) => {
                let mut appended = Vec::with_capacity(batches.len());
                for batch in batches {
                    appended.push(self.append_batch(batch).await);
                }
                appended
            }
            None => {
                let appends = batches.into_iter().map(|batch| self.append_batch(batch));
                futures_util::future::join_all(appends).await
            }
        };
        if !appended.iter().any(Result::is_ok) {
            return Ok((appended, Vec::new()));
        }
        let read = reads
            .iter()
            .map(|r| self.read_new_entries(&r.user, &r.device, r.limit));
        Ok((appended, futures_util::future::join_all(read).await))
    }

    async fn read_new(
        &self,
        user: &UserId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        self.read_new_entries(user, device, limit).await
    }

    async fn claim_pending(
        &self,
        user: &UserId,
        device: &DeviceId,
        delivered_before: Option<SystemTime>,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        self.claim_pending_entries(user, device, delivered_before, after, limit)
            .await
    }

    async fn ack(
        &self,
        user: &UserId,
        device: &DeviceId,
        positions: &[Position],
    ) -> Result<u64, StoreError> {
        self.ack_entries(user, device, positions).await
    }

    async fn depth(&self, user: &UserId) -> Result<u64, StoreError> {
        self.inbox_depth(user).await
    }

    async fn trim(&self) -> Result<u64, StoreError> {
        self.trim_expired().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run("answer PING", |mut conn| async move {
            ::redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }
}
