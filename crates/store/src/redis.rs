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
//!   `{prefix}:{<sender>}:cid:<client id>` hold the message id and expire after the retention.
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
//! Every key of one user shares a slot (hash tag), but the append script touches the inboxes of
//! all recipients, the senders' client-id keys and the registry: a Cluster refuses that with
//! CROSSSLOT. This backend targets a single Redis primary (with replicas or Sentinel for
//! failover). A Cluster version would run one script per recipient slot, with a two-phase
//! reservation for all-or-nothing across slots, and keep one registry per slot.
//!
//! - `keys`: the key layout and stream ids. `scripts`: the Lua scripts.
//! - `push_tokens`: the [`crate::PushRegistry`] (push hash per user, token owner keys).
//! - `append`: `append`. `cursor`: `read_new`, `claim_pending`, `ack`. `trim`: `trim`, `depth`.

mod append;
mod bus;
mod cursor;
mod keys;
mod push_tokens;
mod scripts;
mod trim;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ConnectionAddr, ErrorKind, IntoConnectionInfo, RedisError, TlsCertificates};
use async_trait::async_trait;
use titan_protocol::{DeviceId, UserId};

use crate::error::StoreError;
use crate::inbox::{Appended, Delivered, Inbox, InboxLimits, NewMessage, Position};
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
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(2),
            tls_root_certificates: None,
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
            .finish()
    }
}

/// The Redis-backed [`Inbox`]. Cheap to clone: clones share one multiplexed connection that
/// reconnects by itself.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    shared: Arc<Shared>,
}

/// What every clone shares.
struct Shared {
    /// Kept to open the bus's dedicated pub/sub connection.
    client: Client,
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
            self.shared.client.clone(),
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
        // The parse error never echoes the URL, so it cannot leak the password.
        let info = url
            .into_connection_info()
            .map_err(|e| StoreError::unavailable(format!("invalid redis url: {e}")))?;
        if matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
            // rustls needs a process-wide crypto provider; an already installed one is kept.
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        }
        let client = match &options.tls_root_certificates {
            Some(pem) => Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(info),
        }
        .map_err(|e| redis_error("configure the client", e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.operation_timeout))
            .set_number_of_retries(RECONNECT_RETRIES as usize)
            .set_max_delay(options.connect_timeout);
        // Every attempt and every back-off pause takes at most `connect_timeout`.
        let bound = options.connect_timeout * (2 * RECONNECT_RETRIES + 1);
        let conn = bounded(
            bound,
            "connect",
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await?;
        let store = Self {
            conn,
            shared: Arc::new(Shared {
                client,
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
        tracing::info!(prefix = key_prefix, ?version, "redis store connected");
        Ok(store)
    }

    /// Runs `op` on a handle to the shared connection, within the operation timeout.
    async fn run<T, F, Fut>(&self, what: &'static str, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
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
    async fn server_version(&self) -> Result<(u32, u32), StoreError> {
        let info: String = self
            .run("read the server version", |mut conn| async move {
                ::redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .and_then(|v| {
                let mut parts = v.trim().split('.').map(str::parse::<u32>);
                Some((parts.next()?.ok()?, parts.next()?.ok()?))
            });
        version.ok_or_else(|| StoreError::Corrupt {
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
