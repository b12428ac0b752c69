//! `RedisOptions::wait_replicas`: an append is answered only once a replica has it, against a
//! real primary and replica started by the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod redis_server;

use std::time::Duration;

use redis_server::{RedisServer, ServerConfig, fresh_prefix};
use titan_store::conformance::{append_stored, message, message_with_client_id, user};
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
