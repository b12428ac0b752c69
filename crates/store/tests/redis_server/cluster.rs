//! A throw-away Redis Cluster: several [`RedisServer`]s in cluster mode, joined with
//! `redis-cli --cluster create` (primaries only, or each with replicas) and waited for until
//! every node reports `cluster_state:ok` (and every replica has synced). Stopped with its nodes
//! on drop.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{RedisServer, ServerConfig, find_on_path};

/// How long the nodes may take to agree on the slot map after `--cluster create`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Redis Cluster.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` (at least 3, the Cluster minimum) primaries and joins them; panics with the
    /// reason if it cannot.
    pub fn start(n: usize) -> Self {
        Self::start_with_replicas(n, 0)
    }

    /// Starts `primaries` primaries with `replicas` replicas each and joins them.
    pub fn start_with_replicas(primaries: usize, replicas: usize) -> Self {
        assert!(primaries >= 3, "a Redis Cluster needs at least 3 primaries");
        let n = primaries * (replicas + 1);
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                RedisServer::start(ServerConfig {
                    cluster: true,
                    ..ServerConfig::default()
                })
            })
            .collect();
        let mut create = Command::new(find_on_path("redis-cli"));
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok(|_| true);
        let deadline = Instant::now() + JOIN_TIMEOUT;
        while !cluster.nodes.iter().all(|n| {
            let info = n.info("replication");
            info.contains("role:master") || info.contains("master_link_status:up")
        }) {
            assert!(Instant::now() < deadline, "the replicas never synced");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// Waits until every running node for which `include` holds reports `cluster_state:ok`.
    pub fn wait_until_ok(&self, include: impl Fn(&RedisServer) -> bool) {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        while !self
            .nodes
            .iter()
            .filter(|n| include(n))
            .all(|n| cluster_ok(n.port()))
        {
            assert!(
                Instant::now() < deadline,
                "the cluster never reached cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The primary holding the keys whose hash tag is `tag` (`CLUSTER KEYSLOT`, then the node
    /// that serves that slot as a primary).
    pub fn primary_of(&mut self, tag: &str) -> &mut RedisServer {
        let port = self.nodes[0].port();
        let slot: u16 = redis_cli(port, &["cluster", "keyslot", tag])
            .trim()
            .parse()
            .expect("a slot number");
        let index = self
            .nodes
            .iter()
            .position(|n| {
                n.info("replication").contains("role:master")
                    && redis_cli(n.port(), &["cluster", "countkeysinslot", &slot.to_string()])
                        .trim()
                        .parse::<u64>()
                        .is_ok_and(|keys| keys > 0)
            })
            .expect("a primary holds the slot's keys");
        &mut self.nodes[index]
    }

    /// The replica of the primary on `primary_port`.
    pub fn replica_of(&self, primary_port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| {
                let info = n.info("replication");
                info.contains("role:slave")
                    && info.contains(&format!("master_port:{primary_port}\r\n"))
            })
            .expect("the primary has a replica")
    }

    /// Whether the keys whose hash tags are `a` and `b` live on the same node.
    pub fn same_node(&self, a: &str, b: &str) -> bool {
        let port = self.nodes[0].port();
        let slot = |tag: &str| -> u16 {
            redis_cli(port, &["cluster", "keyslot", tag])
                .trim()
                .parse()
                .expect("a slot number")
        };
        // `CLUSTER NODES`: one line per node, its id first, a primary's slot ranges from the
        // ninth field on.
        let owner = |slot: u16| {
            redis_cli(port, &["cluster", "nodes"])
                .lines()
                .filter(|line| line.contains("master"))
                .find(|line| {
                    line.split_whitespace().skip(8).any(|range| {
                        let mut ends = range.split('-').filter_map(|n| n.parse::<u16>().ok());
                        match (ends.next(), ends.next()) {
                            (Some(lo), Some(hi)) => (lo..=hi).contains(&slot),
                            (Some(only), None) => only == slot,
                            _ => false,
                        }
                    })
                })
                .and_then(|line| line.split_whitespace().next().map(str::to_owned))
        };
        owner(slot(a)) == owner(slot(b))
    }

    /// Every node's `redis://` URL, comma-separated (what `store.redis_url` accepts).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// True when the node at `port` sees every slot served.
fn cluster_ok(port: u16) -> bool {
    redis_cli(port, &["cluster", "info"]).contains("cluster_state:ok")
}

/// What `redis-cli -p port args...` printed (empty when it could not run).
fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new(find_on_path("redis-cli"))
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}
