//! Titan on a Redis Cluster: two real `titan-server` processes share a 3-primary Cluster (started
//! by the test, nodes found from a comma-separated `store.redis_url`) and behave as one server,
//! with users whose keys live on different Cluster nodes.

use crate::common;
use crate::redis_server;

use std::collections::HashSet;

use common::process::{ServerProcess, redis_config};
use redis_server::cluster::RedisCluster;
use redis_server::fresh_prefix;
use titan_client::{Client, Outgoing};

/// The close code of a session replaced by a newer one of the same (user, device).
const REPLACED: u16 = 4002;

async fn client(instance: &ServerProcess, user: &str, device: &str) -> Client {
    let client = Client::connect(&instance.url).await.unwrap();
    client
        .authenticate(&common::token(user, None), Some(device))
        .await
        .unwrap();
    client
}

/// Receives (acking each delivery) until every body of `wanted` was seen; returns what was
/// seen, duplicates included. Each wait is bounded by [`common::WAIT`].
async fn receive_all(client: &Client, wanted: &[&str]) -> Vec<String> {
    let mut got = Vec::new();
    let mut missing: HashSet<&str> = wanted.iter().copied().collect();
    while !missing.is_empty() {
        let delivery = common::next(client).await;
        for m in &delivery.messages {
            missing.remove(m.message.as_str());
            got.push(m.message.clone());
        }
        delivery.ack().await.unwrap();
    }
    got
}

/// One `msg.send` to users whose keys live on different Cluster nodes (alice's slot is on the
/// first primary, bob's and carol's on the second) is stored and delivered across instances; an
/// unacked
/// message follows its device to the other instance with the same id; the newest session of a
/// device wins across instances; a client id retried stores nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_a_redis_cluster_behave_as_one_server() {
    let redis = RedisCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let prefix = fresh_prefix();
    let instances: Vec<ServerProcess> = (0..2)
        .map(|i| {
            let config = redis_config(dir.path(), &format!("titan-{i}"), &redis.url(), &prefix, "");
            ServerProcess::start(&config)
        })
        .collect();

    let alice = client(&instances[0], "alice", "phone").await;
    let bob = client(&instances[1], "bob", "phone").await;
    let carol = client(&instances[1], "carol", "phone").await;
    let batch = [
        Outgoing::new("bob", "to bob").with_id("b1"),
        Outgoing::new("carol", "to carol").with_id("c1"),
        Outgoing::new("alice", "to myself").with_id("a1"),
    ];
    alice.send_many(&batch).await.unwrap();
    alice.send_many(&batch).await.unwrap();
    assert_eq!(receive_all(&bob, &["to bob"]).await, ["to bob"]);
    assert_eq!(receive_all(&carol, &["to carol"]).await, ["to carol"]);
    assert_eq!(receive_all(&alice, &["to myself"]).await, ["to myself"]);

    // Delivered to bob on instance 1 but not acked: it follows bob's phone to instance 0.
    alice.send("bob", "unacked").await.unwrap();
    let first = common::next(&bob).await;
    let id = first.messages[0].id.clone();
    let moved = client(&instances[0], "bob", "phone").await;
    let closed = bob.closed().await;
    assert_eq!(
        closed.map(|c| c.0),
        Some(REPLACED),
        "the older session must be closed"
    );
    let again = common::next(&moved).await;
    assert_eq!(again.messages[0].id, id, "redelivered with the same id");
    again.ack().await.unwrap();
    drop(instances);
}
