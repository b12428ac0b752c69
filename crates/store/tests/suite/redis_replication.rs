//! `RedisOptions::wait_replicas`: an append is answered only once a replica has it, against a
//! real primary and replica started by the test; and what was answered survives a Redis Cluster
//! failover (a primary killed, its replica promoted).
use crate::redis_server;

use std::time::{Duration, Instant};

use redis_server::cluster::RedisCluster;
use redis_server::{RedisServer, ServerConfig, fresh_prefix};
use titan_store::conformance::{
    append_stored, device, message, message_with_client_id, texts, user,
};
use titan_store::{Appended, Inbox, InboxLimits, RedisOptions, RedisStore, StoreError};

async fn connect(url: &str, replicas: u32) -> RedisStore {
    let options = RedisOptions {
        wait_replicas: replicas,
        wait_timeout: Duration::from_millis(300),
        operation_timeout: Duration::from_secs(2),
        ..RedisOptions::default()
    };
    RedisStore::connect_with(url, &fresh_prefix(), InboxLimits::default(), options)
        .await
        .unwrap()
}

/// With a replica required, an append is answered once the replica has it; while the replica
/// does not answer, appends fail as temporary (and a resend with the same client id stores
/// nothing twice once it is back); asking for more replicas than there are always fails.
#[tokio::test]
async fn appends_wait_for_a_replica() {
    let primary = RedisServer::start(ServerConfig::default());
    let replica = RedisServer::start(ServerConfig {
        replica_of: Some(primary.port()),
        ..ServerConfig::default()
    });
    replica.wait_until_replicating();
    let store = connect(&primary.url(), 1).await;
    let (alice, bob) = (user("alice"), user("bob"));
    append_stored(&store, vec![message(&alice, &bob, "replicated")]).await;
    assert!(
        replica
            .info("keyspace")
            .lines()
            .any(|l| l.starts_with("db0:keys=")),
        "the replica holds the inbox: {}",
        replica.info("keyspace")
    );

    replica.freeze();
    let unreplicated = message_with_client_id(&alice, &bob, "while frozen", "c-1");
    let refused = store.append(vec![unreplicated.clone()]).await;
    match &refused {
        Err(StoreError::Unavailable { reason }) => {
            assert!(reason.contains("0 of 1 replicas"), "{reason}");
        }
        other => panic!("answered without a replica: {other:?}"),
    }
    replica.thaw();
    let resent = store.append(vec![unreplicated]).await.unwrap();
    assert!(
        matches!(resent.as_slice(), [Appended::Duplicate { .. }]),
        "the message was on the primary already: {resent:?}"
    );
    append_stored(&store, vec![message(&alice, &bob, "after")]).await;

    let greedy = connect(&primary.url(), 2).await;
    let refused = greedy
        .append(vec![message(&alice, &bob, "two replicas")])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable { .. })),
        "{refused:?}"
    );
}

/// Messages answered with a replica required are all read back after their primary crashes
/// (killed) and the Cluster promotes its replica; the promoted primary has no replica left, so
/// further appends that require one are refused, and accepted when none is required.
#[tokio::test]
async fn answered_messages_survive_a_cluster_failover() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let store = connect(&cluster.url(), 1).await;
    let (alice, bob) = (user("alice"), user("bob"));
    let sent: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for text in &sent {
        append_stored(&store, vec![message(&alice, &bob, text)]).await;
    }

    let primary = cluster.primary_of("bob");
    let killed = primary.port();
    primary.stop();
    cluster.wait_until_ok(|node| node.port() != killed);

    // The client finds the new primary by itself; until it has, reads fail as temporary.
    let phone = device("phone");
    let read = until_ok("read after the failover", || {
        store.read_new(&bob, &phone, 100)
    })
    .await;
    assert_eq!(texts(&read), sent, "every answered message, in order");

    let refused = store
        .append(vec![message(&alice, &bob, "no replica")])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable { .. })),
        "{refused:?}"
    );
    let relaxed = connect(&cluster.url(), 0).await;
    until_ok("append after the failover", || {
        relaxed.append(vec![message(&alice, &bob, "after")])
    })
    .await;
}

/// Retries `op` until it succeeds, failing the test (naming `what`) after 30 s.
async fn until_ok<T, F, Fut>(what: &str, op: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) => {
                assert!(Instant::now() < deadline, "no {what}: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// On a Cluster the replicas waited for are those of the node that stored the message: with
/// the replica of bob's primary frozen, appends to bob are refused while appends to a user on
/// another primary are answered (a `WAIT` sent to every primary would refuse both).
#[tokio::test]
async fn a_cluster_waits_for_the_replica_of_the_node_that_stored() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let store = connect(&cluster.url(), 1).await;
    let (alice, bob) = (user("alice"), user("bob"));
    append_stored(&store, vec![message(&alice, &bob, "first")]).await;
    let elsewhere = (0..100)
        .map(|i| format!("carol{i}"))
        .find(|name| !cluster.same_node(name, "bob"))
        .expect("a user on another primary");
    let carol = user(&elsewhere);

    let primary = cluster.primary_of("bob").port();
    let replica = cluster.replica_of(primary);
    replica.freeze();
    let refused = store
        .append(vec![message(&alice, &bob, "unreplicated")])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable { .. })),
        "{refused:?}"
    );
    append_stored(
        &store,
        vec![message(&alice, &carol, "replicated elsewhere")],
    )
    .await;
    replica.thaw();
}
