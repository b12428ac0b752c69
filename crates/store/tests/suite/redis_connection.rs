//! How the Redis backend behaves around its connection, against real `redis-server`s started
//! by the tests: outages, crash and restart with AOF, passwords in URLs, TLS.
use crate::redis_server;

use std::time::{Duration, Instant};

use redis_server::{RedisServer, ServerConfig, fresh_prefix};
use titan_store::conformance::{
    append_stored, device, message, message_with_client_id, positions, texts, user,
};
use titan_store::{Appended, Bus, Inbox, InboxLimits, RedisOptions, RedisStore, StoreError};

/// Far above the 500 ms operation timeout these tests configure: an operation still running
/// after this is hung, not slow (a liveness bound, not a speed target).
const HANG: Duration = Duration::from_secs(10);

/// A store whose operations give up after 500 ms, so outage tests finish quickly.
async fn connect_fast_failing(url: &str) -> RedisStore {
    let timeout = Duration::from_millis(500);
    let options = RedisOptions {
        connect_timeout: timeout,
        operation_timeout: timeout,
        ..RedisOptions::default()
    };
    RedisStore::connect_with(url, &fresh_prefix(), InboxLimits::default(), options)
        .await
        .unwrap()
}

async fn connect(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url, prefix, InboxLimits::default())
        .await
        .unwrap()
}

/// With Redis gone, an append fails with `Unavailable` within the operation timeout, never hangs.
#[tokio::test]
async fn append_to_a_stopped_redis_is_unavailable_quickly() {
    let mut server = RedisServer::start(ServerConfig::default());
    let store = connect_fast_failing(&server.url()).await;
    let (alice, bob) = (user("alice"), user("bob"));
    append_stored(&store, vec![message(&alice, &bob, "before")]).await;

    server.stop();
    for attempt in 0..3 {
        let result = tokio::time::timeout(HANG, store.append(vec![message(&alice, &bob, "after")]))
            .await
            .unwrap_or_else(|_| panic!("attempt {attempt} hung"));
        assert!(
            matches!(result, Err(StoreError::Unavailable { .. })),
            "attempt {attempt}: {result:?}"
        );
    }
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable { .. })
    ));
}

/// Messages, client-id keys and cursors written with AOF (`appendfsync always`) survive a crash
/// and restart on the same port and directory; the same store reconnects by itself.
#[tokio::test]
async fn appends_survive_a_redis_restart_with_aof() {
    let mut server = RedisServer::start(ServerConfig {
        durable: true,
        ..ServerConfig::default()
    });
    let prefix = fresh_prefix();
    let store = connect(&server.url(), &prefix).await;
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let keyed = message_with_client_id(&alice, &bob, "m0", "k");
    let stored = append_stored(
        &store,
        vec![
            keyed.clone(),
            message(&alice, &bob, "m1"),
            message(&alice, &bob, "m2"),
        ],
    )
    .await;
    let first = store.read_new(&bob, &phone, 1).await.unwrap();
    assert_eq!(positions(&first), stored[..1]);

    server.restart();
    // The first operations after the restart may still see the old, broken connection.
    let mut unread = None;
    for _ in 0..50 {
        match store.read_new(&bob, &phone, 10).await {
            Ok(got) => {
                unread = Some(got);
                break;
            }
            Err(StoreError::Unavailable { .. }) => tokio::task::yield_now().await,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(texts(&unread.expect("store reconnected")), ["m1", "m2"]);
    let retry = store.append(vec![keyed.clone()]).await.unwrap();
    assert_eq!(
        retry,
        [Appended::Duplicate {
            existing: keyed.message.id
        }]
    );

    let fresh = connect(&server.url(), &prefix).await;
    let tablet = fresh.read_new(&bob, &device("tablet"), 10).await.unwrap();
    assert_eq!(positions(&tablet), stored);
}

/// A password in the URL authenticates; a wrong one is refused as `Unavailable`.
#[tokio::test]
async fn password_in_the_url_authenticates() {
    let server = RedisServer::start(ServerConfig {
        password: Some("s3cret".to_owned()),
        ..ServerConfig::default()
    });
    let store = connect(&server.url(), &fresh_prefix()).await;
    store.ping().await.unwrap();
    let wrong = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let refused = RedisStore::connect(&wrong, &fresh_prefix(), InboxLimits::default()).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable { .. })),
        "{refused:?}"
    );
}

/// `rediss://` connects over TLS (rustls), trusting a private CA given in the options.
#[tokio::test]
async fn rediss_url_connects_over_tls() {
    let server = RedisServer::start(ServerConfig {
        tls: true,
        ..ServerConfig::default()
    });
    let options = RedisOptions {
        tls_root_certificates: Some(server.tls_ca_pem()),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect_with(
        &server.tls_url(),
        &fresh_prefix(),
        InboxLimits::default(),
        options,
    )
    .await
    .unwrap();
    let (alice, bob) = (user("alice"), user("bob"));
    let stored = append_stored(&store, vec![message(&alice, &bob, "secret")]).await;
    let got = store.read_new(&bob, &device("phone"), 10).await.unwrap();
    assert_eq!(positions(&got), stored);

    // Without the CA, the server's certificate is not trusted.
    let untrusted =
        RedisStore::connect(&server.tls_url(), &fresh_prefix(), InboxLimits::default()).await;
    assert!(
        matches!(untrusted, Err(StoreError::Unavailable { .. })),
        "{untrusted:?}"
    );
}

/// A key prefix with braces would break the users' hash tags, so it is refused.
#[tokio::test]
async fn prefix_with_braces_is_refused() {
    let result =
        RedisStore::connect("redis://127.0.0.1:1", "ti{tan}", InboxLimits::default()).await;
    assert!(result.is_err(), "{result:?}");
}

/// Connecting to a port nobody listens on fails with `Unavailable`, within a bounded time.
#[tokio::test]
async fn connect_to_nothing_is_unavailable_quickly() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let options = RedisOptions {
        connect_timeout: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    let started = Instant::now();
    let url = format!("redis://127.0.0.1:{port}");
    let result =
        RedisStore::connect_with(&url, &fresh_prefix(), InboxLimits::default(), options).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A Redis that stops answering (SIGSTOP: the connection stays open, nothing comes back, as in
/// a partition) makes every inbox and bus operation fail with `Unavailable` instead of hanging;
/// once it answers again the same store and bus work without being rebuilt.
#[tokio::test]
async fn every_operation_on_an_unresponsive_redis_is_unavailable() {
    let server = RedisServer::start(ServerConfig::default());
    let store = connect_fast_failing(&server.url()).await;
    let bus = store.bus().await.unwrap();
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    append_stored(&store, vec![message(&alice, &bob, "before")]).await;
    let read = store.read_new(&bob, &phone, 10).await.unwrap();

    server.freeze();
    let unavailable = |what: &str, result: Result<(), StoreError>| {
        assert!(
            matches!(result, Err(StoreError::Unavailable { .. })),
            "{what}: {result:?}"
        );
    };
    macro_rules! check {
        ($what:literal, $op:expr) => {
            let result = tokio::time::timeout(HANG, $op)
                .await
                .unwrap_or_else(|_| panic!("{} hung", $what));
            unavailable($what, result.map(|_| ()));
        };
    }
    check!(
        "append",
        store.append(vec![message(&alice, &bob, "during")])
    );
    check!("read_new", store.read_new(&bob, &phone, 10));
    check!(
        "claim_pending",
        store.claim_pending(&bob, &phone, None, None, 10)
    );
    check!("ack", store.ack(&bob, &phone, &positions(&read)));
    check!("depth", store.depth(&bob));
    check!("trim", store.trim());
    check!("ping", store.ping());
    check!("claim", bus.claim(&bob, &phone, 1));
    check!("reclaim", bus.reclaim(&bob, &phone, 1));
    check!("release", bus.release(&bob, &phone, 1));
    check!("wake", bus.wake(std::slice::from_ref(&bob)));
    check!("is_online", bus.is_online(&bob, &phone));
    server.thaw();

    // The commands that timed out were still queued in Redis, so they may have run when it
    // resumed (the "during" append, the ack of "before"); either way the store answers again and
    // bob's inbox stays consistent: in order, nothing twice, the new message last.
    let deadline = Instant::now() + HANG;
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store never answered again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    append_stored(&store, vec![message(&alice, &bob, "after")]).await;
    let pending = store
        .claim_pending(&bob, &phone, None, None, 10)
        .await
        .unwrap();
    let mut seen = texts(&pending);
    seen.extend(texts(&store.read_new(&bob, &phone, 10).await.unwrap()));
    let allowed = [
        vec!["before", "during", "after"],
        vec!["before", "after"],
        vec!["during", "after"],
        vec!["after"],
    ];
    assert!(
        allowed.contains(&seen.iter().map(String::as_str).collect()),
        "{seen:?}"
    );
    bus.claim(&bob, &phone, 2).await.unwrap();
    assert!(bus.is_online(&bob, &phone).await.unwrap());
}
