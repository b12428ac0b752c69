//! The connection to Redis: one standalone server (a [`ConnectionManager`]) or a Redis Cluster
//! (a [`ClusterConnection`], which routes each command to the node holding its key's slot).
//!
//! Which one is decided once at connect time by asking the first node (`INFO cluster`), so a
//! deployment only points `store.redis_url` at its Redis, whatever its topology. Both kinds are
//! cheap to clone and reconnect by themselves; the rest of the backend sees one type.

use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use ::redis::io::tcp::TcpSettings;
use ::redis::{
    Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture,
    TlsCertificates, Value,
};

use super::{RECONNECT_RETRIES, RedisOptions, bounded, redis_error};
use crate::error::StoreError;

/// A handle to the shared connection; clones share it.
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    /// True on a Redis Cluster: keys of different users may then live on different nodes.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// `WAIT replicas timeout` on the node holding `slot` (the only node on a standalone
    /// server): how many of its replicas have acknowledged every write this connection sent it
    /// so far. Writes and the `WAIT` share that node's one connection, so the count covers the
    /// writes the caller has just had answered.
    pub(crate) async fn wait_replicas(
        &mut self,
        slot: u16,
        replicas: u32,
        timeout: Duration,
    ) -> Result<u64, ::redis::RedisError> {
        let mut wait = ::redis::cmd("WAIT");
        wait.arg(replicas).arg(
            u64::try_from(timeout.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        );
        match self {
            Self::Single(c) => wait.query_async(c).await,
            Self::Cluster(c) => {
                // Routed by slot: by default a keyless WAIT goes to every primary.
                let route = Route::new(slot, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let reply = c.route_command(wait, routing).await?;
                Ok(::redis::from_redis_value(reply)?)
            }
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Number of Redis Cluster hash slots.
pub(crate) const SLOTS: u16 = 16384;

/// The Cluster hash slot of `key` (0 to 16383), which decides the node that holds it: CRC16
/// (XMODEM) of the hash tag (the text between the first `{` and the next `}`, when not empty)
/// or of the whole key, modulo 16384, as the Cluster specification defines it.
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key.find('{').and_then(|open| {
        let close = key[open + 1..].find('}')? + open + 1;
        (close > open + 1).then(|| &bytes[open + 1..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(bytes)) % SLOTS
}

/// What [`open`] connected to.
pub(crate) struct Opened {
    pub(crate) conn: Connection,
    /// One plain client per configured node, for the bus's dedicated pub/sub connection: on a
    /// Cluster a PUBLISH reaches subscribers on every node, so any node will do, and the bus
    /// moves to the next one when its node fails.
    pub(crate) pubsub: Vec<Client>,
}

/// Connects to `urls` (comma-separated; more than one only makes sense for a Cluster, as seed
/// nodes), detecting whether the first node is part of a Redis Cluster.
pub(crate) async fn open(urls: &str, options: &RedisOptions) -> Result<Opened, StoreError> {
    let infos = node_infos(urls)?;
    let Some(first) = infos.first() else {
        return Err(StoreError::unavailable(
            "store.redis_url names no redis node",
        ));
    };
    if infos
        .iter()
        .any(|i| matches!(i.addr(), ConnectionAddr::TcpTls { .. }))
    {
        // rustls needs a process-wide crypto provider; an already installed one is kept.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
    let pubsub = infos
        .iter()
        .map(|info| client(info.clone(), options))
        .collect::<Result<Vec<_>, _>>()?;
    let conn = if is_cluster_node(&pubsub[0], options).await? {
        Connection::Cluster(cluster(infos, options).await?)
    } else {
        if infos.len() > 1 {
            return Err(StoreError::unavailable(format!(
                "store.redis_url lists {} nodes but {} is not part of a Redis Cluster",
                infos.len(),
                first.addr()
            )));
        }
        Connection::Single(single(pubsub[0].clone(), options).await?)
    };
    Ok(Opened { conn, pubsub })
}

/// The nodes of `urls` (comma-separated), each with [`tcp_settings`].
fn node_infos(urls: &str) -> Result<Vec<ConnectionInfo>, StoreError> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        // The parse error never echoes the URL, so it cannot leak the password.
        .map(|u| {
            u.into_connection_info()
                .map(|info| info.set_tcp_settings(tcp_settings()))
                .map_err(|e| StoreError::unavailable(format!("invalid redis url: {e}")))
        })
        .collect()
}

/// Every connection to Redis has Nagle's algorithm off. The redis crate leaves it on by
/// default, and the store writes small pipelined commands whose replies it waits for: with
/// Nagle on, a command written while the previous one is unacknowledged waits for the server's
/// delayed ACK (40 to 200 ms on Linux). That was the Redis store's p99 at 10,000 msg/s: 110-122
/// ms, p99.9 190-202 ms (docs/benchmarks.md, twenty-fourth set).
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

fn client(info: ConnectionInfo, options: &RedisOptions) -> Result<Client, StoreError> {
    match &options.tls_root_certificates {
        Some(pem) => Client::build_with_tls(info, certificates(pem)),
        None => Client::open(info),
    }
    .map_err(|e| redis_error("configure the client", e))
}

fn certificates(pem: &[u8]) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// Asks the node whether it runs in cluster mode (`cluster_enabled:1` in `INFO cluster`).
async fn is_cluster_node(client: &Client, options: &RedisOptions) -> Result<bool, StoreError> {
    let info: String = bounded(options.connect_timeout * 2, "answer INFO cluster", async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        ::redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut conn)
            .await
    })
    .await?;
    Ok(info.lines().any(|line| line.trim() == "cluster_enabled:1"))
}

async fn single(client: Client, options: &RedisOptions) -> Result<ConnectionManager, StoreError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.operation_timeout))
        .set_number_of_retries(RECONNECT_RETRIES as usize)
        .set_max_delay(options.connect_timeout);
    // Every attempt and every back-off pause takes at most `connect_timeout`.
    let bound = options.connect_timeout * (2 * RECONNECT_RETRIES + 1);
    bounded(
        bound,
        "connect",
        ConnectionManager::new_with_config(client, config),
    )
    .await
}

async fn cluster(
    nodes: Vec<ConnectionInfo>,
    options: &RedisOptions,
) -> Result<ClusterConnection, StoreError> {
    let mut builder = ClusterClientBuilder::new(nodes)
        .connection_timeout(options.connect_timeout)
        .response_timeout(options.operation_timeout)
        .retries(RECONNECT_RETRIES)
        .max_retry_wait(duration_ms(options.connect_timeout))
        // The builder takes no TCP settings from the nodes' URLs.
        .tcp_settings(tcp_settings());
    if let Some(pem) = &options.tls_root_certificates {
        builder = builder.certs(certificates(pem));
    }
    let client = builder
        .build()
        .map_err(|e| redis_error("configure the cluster client", e))?;
    let bound = options.connect_timeout * (2 * RECONNECT_RETRIES + 1);
    bounded(
        bound,
        "connect to the cluster",
        client.get_async_connection(),
    )
    .await
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::{node_infos, slot};

    /// Nagle's algorithm is off on every node's connection (see `tcp_settings`).
    #[test]
    fn every_node_connection_has_nagle_off() {
        let infos = node_infos("redis://127.0.0.1:6390, rediss://user:pw@10.0.0.2:7000/0,")
            .expect("valid urls");
        assert_eq!(infos.len(), 2);
        for info in &infos {
            assert!(info.tcp_settings().nodelay(), "{:?}", info.addr());
        }
        assert!(node_infos("redis://[::1").is_err());
    }

    /// Known slots from the Cluster specification and `CLUSTER KEYSLOT`.
    #[test]
    fn slots_follow_the_cluster_specification() {
        assert_eq!(slot("123456789"), 0x31C3, "CRC16-XMODEM check value");
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_ne!(
            slot("foo{}{bar}"),
            slot("bar"),
            "an empty first tag hashes the whole key"
        );
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"));
    }
}
