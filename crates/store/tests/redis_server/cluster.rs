//! A throw-away Redis Cluster: several [`RedisServer`]s in cluster mode, joined with
//! `redis-cli --cluster create` (no replicas) and waited for until every node reports
//! `cluster_state:ok`. Stopped with its nodes on drop.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{RedisServer, ServerConfig, find_on_path};

/// How long the nodes may take to agree on the slot map after `--cluster create`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Redis Cluster of primaries only.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` (at least 3, the Cluster minimum) nodes and joins them; panics with the
    /// reason if it cannot.
    pub fn start(n: usize) -> Self {
        assert!(n >= 3, "a Redis Cluster needs at least 3 primaries");
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
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        let deadline = Instant::now() + JOIN_TIMEOUT;
        while !cluster.nodes.iter().all(|n| cluster_ok(n.port())) {
            assert!(
                Instant::now() < deadline,
                "the cluster never reached cluster_state:ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
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
    Command::new(find_on_path("redis-cli"))
        .args(["-p", &port.to_string(), "cluster", "info"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
}
