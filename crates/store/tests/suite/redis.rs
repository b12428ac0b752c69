//! The Redis backend against a real `redis-server` started by the test: the conformance suite,
//! then what only Redis has (key layout, round trips, depth without lag, paging with `after`).
//! Connection behaviour (outages, restarts, passwords, TLS) is in `redis_connection.rs`.
use crate::redis_server;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use redis_server::cluster::RedisCluster;
use redis_server::{RedisServer, ServerConfig, fresh_prefix};
use titan_protocol::{DeviceId, UserId};
use titan_store::conformance::{
    self, append_stored, device, live_read, message, message_with_client_id, positions, texts, user,
};
use titan_store::{Inbox, InboxLimits, PushRegistry, RedisStore};

async fn connect(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url, prefix, InboxLimits::default())
        .await
        .unwrap()
}

/// A plain connection for inspecting what the store wrote.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(server.url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Runs the inbox conformance checks on the Redis at `url`, each under its own key prefix.
async fn inbox_conforms(url: String) {
    conformance::run_all(|limits| {
        let url = url.clone();
        async move {
            let store = RedisStore::connect(&url, &fresh_prefix(), limits)
                .await
                .unwrap();
            Arc::new(store) as Arc<dyn Inbox>
        }
    })
    .await;
}

/// The Redis backend passes every conformance check, each under its own key prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_backend_conforms() {
    let server = RedisServer::start(ServerConfig::default());
    inbox_conforms(server.url()).await;
}

/// Over RESP3 (`?protocol=resp3` in `store.redis_url`), where Redis answers with maps and sets
/// where RESP2 has arrays, the backend passes the same checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_backend_conforms_over_resp3() {
    let server = RedisServer::start(ServerConfig::default());
    inbox_conforms(format!("{}/?protocol=resp3", server.url())).await;
}

/// Users and revocations on Redis pass the users checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_backend_users_conform() {
    let server = RedisServer::start(ServerConfig::default());
    let store = connect(&server.url(), &fresh_prefix()).await;
    conformance::run_users(Arc::new(store) as Arc<dyn titan_store::Users>).await;
}

/// The Redis backend passes every push registry check, each under its own key prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_push_registry_conforms() {
    let server = RedisServer::start(ServerConfig::default());
    let url = server.url();
    conformance::run_push_all(|| {
        let url = url.clone();
        async move { Arc::new(connect(&url, &fresh_prefix()).await) as Arc<dyn PushRegistry> }
    })
    .await;
}

/// Every key of one user carries that user, and only that user, as its Cluster hash tag.
#[tokio::test]
async fn keys_are_hash_tagged_per_user() {
    let server = RedisServer::start(ServerConfig::default());
    let prefix = fresh_prefix();
    let store = connect(&server.url(), &prefix).await;
    let (alice, bob, odd) = (user("alice"), user("bob"), user("x}{y"));
    append_stored(
        &store,
        vec![
            message_with_client_id(&alice, &bob, "hi", "c1"),
            message_with_client_id(&bob, &alice, "hey", "c2"),
            message(&alice, &odd, "braces"),
        ],
    )
    .await;
    store.read_new(&bob, &device("phone"), 10).await.unwrap();

    let mut conn = raw(&server).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    let expected = [
        format!("{prefix}:inboxes"),
        format!("{prefix}:{{alice}}:cid:bob:c2"),
        format!("{prefix}:{{alice}}:inbox"),
        format!("{prefix}:{{bob}}:cid:alice:c1"),
        format!("{prefix}:{{bob}}:inbox"),
        format!("{prefix}:{{x%7D%7By}}:inbox"),
    ];
    assert_eq!(keys, expected);
    // Redis hashes the text between the first `{` and the next `}`: exactly the (escaped) user.
    let tags: BTreeMap<&str, &str> = keys[1..]
        .iter()
        .map(|k| {
            let open = k.find('{').unwrap();
            let close = open + k[open..].find('}').unwrap();
            (k.as_str(), &k[open + 1..close])
        })
        .collect();
    assert_eq!(
        tags.values().copied().collect::<Vec<_>>(),
        ["alice", "alice", "bob", "bob", "x%7D%7By"]
    );
}

/// One `append` of several messages, client ids included, is one script call (one round trip),
/// and a read plus an ack of a known device is one XREADGROUP plus one XACK, with no script.
#[tokio::test]
async fn append_and_delivery_cost_one_round_trip_each() {
    let server = RedisServer::start(ServerConfig::default());
    let store = connect(&server.url(), &fresh_prefix()).await;
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    warm_up(&store, &alice, &bob, &phone).await;
    let mut conn = raw(&server).await;

    reset_stats(&mut conn).await;
    let batch = vec![
        message_with_client_id(&alice, &bob, "one", "k1"),
        message(&alice, &user("carol"), "two"),
        message(&alice, &bob, "three"),
    ];
    append_stored(&store, batch).await;
    let append = command_stats(&mut conn).await;
    assert_eq!(append.get("evalsha"), Some(&1), "{append:?}");

    reset_stats(&mut conn).await;
    let read = store.read_new(&bob, &phone, 10).await.unwrap();
    assert_eq!(texts(&read), ["one", "three"]);
    assert_eq!(store.ack(&bob, &phone, &positions(&read)).await.unwrap(), 2);
    let delivery = command_stats(&mut conn).await;
    assert_eq!(delivery.get("evalsha"), None, "{delivery:?}");
    assert_eq!(delivery.get("xreadgroup"), Some(&1), "{delivery:?}");
    assert_eq!(delivery.get("xack"), Some(&1), "{delivery:?}");
}

/// `append_and_read` is one script call, its reads included: a device with a group and one
/// seen for the first time (whose group the script creates at the start of the stream, as
/// `read_new` would) get what was just stored without a second round trip.
#[tokio::test]
async fn append_and_read_is_one_script_call() {
    let server = RedisServer::start(ServerConfig::default());
    let store = connect(&server.url(), &fresh_prefix()).await;
    let (alice, bob, phone, laptop) = (
        user("alice"),
        user("bob"),
        device("phone"),
        device("laptop"),
    );
    warm_up(&store, &alice, &bob, &phone).await;
    let mut conn = raw(&server).await;

    reset_stats(&mut conn).await;
    let live = |device: &DeviceId| live_read(&bob, device, 10);
    let (appended, read) = store
        .append_and_read(
            vec![vec![message(&alice, &bob, "new")]],
            vec![live(&phone), live(&laptop)],
        )
        .await
        .unwrap();
    assert!(appended[0].is_ok(), "{appended:?}");
    let read: Vec<_> = read.into_iter().map(Result::unwrap).collect();
    assert_eq!(texts(&read[0]), ["new"]);
    assert_eq!(
        texts(&read[1]),
        ["warm-up", "new"],
        "a new device starts at the beginning"
    );
    let calls = command_stats(&mut conn).await;
    assert_eq!(calls.get("evalsha"), Some(&1), "{calls:?}");

    // What was read is pending for each device, not read again.
    assert!(store.read_new(&bob, &phone, 10).await.unwrap().is_empty());
    assert!(store.read_new(&bob, &laptop, 10).await.unwrap().is_empty());
    assert_eq!(
        store
            .ack(&bob, &laptop, &positions(&read[1]))
            .await
            .unwrap(),
        2
    );
}

/// A read that fails inside the appending call fails alone: the append is stored and the other
/// device's read delivers, while the failed one is an error (here: a reader whose inbox key was
/// overwritten with a string, so `XREADGROUP` answers WRONGTYPE).
#[tokio::test]
async fn a_read_failing_inside_the_appending_call_fails_alone() {
    let server = RedisServer::start(ServerConfig::default());
    let prefix = fresh_prefix();
    let store = connect(&server.url(), &prefix).await;
    let (alice, bob, carol, phone) = (user("alice"), user("bob"), user("carol"), device("phone"));
    let mut conn = raw(&server).await;
    let _: () = redis::cmd("SET")
        .arg(format!("{prefix}:{{carol}}:inbox"))
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let live = |user: &UserId| live_read(user, &phone, 10);
    let (appended, read) = store
        .append_and_read(
            vec![vec![message(&alice, &bob, "hi")]],
            vec![live(&carol), live(&bob)],
        )
        .await
        .unwrap();
    assert!(appended[0].is_ok(), "{appended:?}");
    assert_eq!(read.len(), 2, "one result per read");
    assert!(read[0].is_err(), "{:?}", read[0]);
    assert_eq!(texts(read[1].as_ref().unwrap()), ["hi"]);
}

/// An append to an inbox whose length leaves room under `max_pending` asks for no group state
/// (`XINFO`) and does not register the inbox again (`ZADD`); one that leaves no room asks, and
/// refuses what the slowest device has no room for. An inbox emptied by trimming is registered
/// again by its next append, so trimming still finds it.
#[tokio::test]
async fn appends_check_depth_and_registry_only_when_needed() {
    let server = RedisServer::start(ServerConfig::default());
    let prefix = fresh_prefix();
    let limits = InboxLimits {
        max_pending: 3,
        retention: std::time::Duration::from_millis(50),
    };
    let store = RedisStore::connect(&server.url(), &prefix, limits)
        .await
        .unwrap();
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let mut conn = raw(&server).await;
    let registry = format!("{prefix}:inboxes");
    append_stored(&store, vec![message(&alice, &bob, "m0")]).await;
    let read = store.read_new(&bob, &phone, 10).await.unwrap();
    store.ack(&bob, &phone, &positions(&read)).await.unwrap();

    reset_stats(&mut conn).await;
    append_stored(&store, vec![message(&alice, &bob, "m1")]).await;
    let cheap = command_stats(&mut conn).await;
    assert_eq!(cheap.get("xinfo|groups"), None, "{cheap:?}");
    assert_eq!(cheap.get("zadd"), None, "{cheap:?}");
    let listed = registered(&mut conn, &registry, "bob").await;
    assert!(listed.is_some(), "bob's inbox is registered");

    // Length 2, so two more would reach 4: the exact depth (1 unread) is asked for and has room.
    append_stored(
        &store,
        vec![message(&alice, &bob, "m2"), message(&alice, &bob, "m3")],
    )
    .await;
    let asked = command_stats(&mut conn).await;
    assert_eq!(asked.get("xinfo|groups"), Some(&1), "{asked:?}");
    let full = store.append(vec![message(&alice, &bob, "over")]).await;
    assert!(
        matches!(full, Err(titan_store::StoreError::InboxFull { .. })),
        "{full:?}"
    );

    // Trimming empties and unregisters the inbox; the next append registers it again.
    assert_eq!(conformance::trim_until_dropped(&store, 4).await, 4);
    let gone = registered(&mut conn, &registry, "bob").await;
    assert_eq!(gone, None, "an empty inbox leaves the registry");
    append_stored(&store, vec![message(&alice, &bob, "again")]).await;
    let again = registered(&mut conn, &registry, "bob").await;
    assert!(again.is_some(), "the next append registers the inbox again");
}

/// `user`'s score in the inbox registry `registry` (the time of its oldest entry), if listed.
async fn registered(
    conn: &mut redis::aio::MultiplexedConnection,
    registry: &str,
    user: &str,
) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(registry)
        .arg(user)
        .query_async(conn)
        .await
        .unwrap()
}

/// Loads the scripts (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA the first time) and gives
/// `device` its group, with nothing left pending: what a later count of commands should not see.
async fn warm_up(store: &RedisStore, from: &UserId, to: &UserId, device: &DeviceId) {
    append_stored(store, vec![message(from, to, "warm-up")]).await;
    let read = store.read_new(to, device, 10).await.unwrap();
    store.ack(to, device, &positions(&read)).await.unwrap();
}

/// Starts a new count of commands (see [`command_stats`]).
async fn reset_stats(conn: &mut redis::aio::MultiplexedConnection) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}

/// Calls per command since the last CONFIG RESETSTAT (commands run by scripts included), less
/// the INFO and CONFIG of this inspection itself.
async fn command_stats(conn: &mut redis::aio::MultiplexedConnection) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "config|resetstat" && name != "info")
        .collect()
}

/// When Redis cannot tell a group's lag (a deleted entry after its cursor), depth counts the
/// entries after the cursor instead.
#[tokio::test]
async fn depth_without_lag_counts_entries_after_the_cursor() {
    let server = RedisServer::start(ServerConfig::default());
    let prefix = fresh_prefix();
    let store = connect(&server.url(), &prefix).await;
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let stored = append_stored(
        &store,
        (0..4)
            .map(|i| message(&alice, &bob, &format!("m{i}")))
            .collect(),
    )
    .await;
    store.read_new(&bob, &phone, 1).await.unwrap();
    let mut conn = raw(&server).await;
    let key = format!("{prefix}:{{bob}}:inbox");
    let deleted: u64 = redis::cmd("XDEL")
        .arg(&key)
        .arg(format!("{}-{}", stored[2].ms, stored[2].seq))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(groups[0]["lag"], redis::Value::Nil, "{groups:?}");
    assert_eq!(store.depth(&bob).await.unwrap(), 3, "1 pending + 2 unread");
}

/// `claim_pending` pages with `after`: each page starts after the given position.
#[tokio::test]
async fn claim_pending_pages_after_a_position() {
    let server = RedisServer::start(ServerConfig::default());
    let store = connect(&server.url(), &fresh_prefix()).await;
    let (alice, bob, phone) = (user("alice"), user("bob"), device("phone"));
    let stored = append_stored(
        &store,
        (0..5)
            .map(|i| message(&alice, &bob, &format!("m{i}")))
            .collect(),
    )
    .await;
    store.read_new(&bob, &phone, 10).await.unwrap();
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .claim_pending(&bob, &phone, None, after, 2)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.position);
        pages.push(positions(&page));
    }
    assert_eq!(pages, [&stored[0..2], &stored[2..4], &stored[4..5]]);
}

/// On a Redis Cluster (3 primaries) the backend passes the same conformance checks: batches to
/// users in different slots, client ids and trimming included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_backend_conforms() {
    let cluster = RedisCluster::start(3);
    inbox_conforms(cluster.url()).await;
}

/// Users and revocations on a Redis Cluster pass the users checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_backend_users_conform() {
    let cluster = RedisCluster::start(3);
    let store = RedisStore::connect(&cluster.url(), &fresh_prefix(), InboxLimits::default())
        .await
        .unwrap();
    conformance::run_users(Arc::new(store) as Arc<dyn titan_store::Users>).await;
}

/// On a Redis Cluster the push registry passes the same checks (tokens moving between users
/// whose keys live on different nodes included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_push_registry_conforms() {
    let cluster = RedisCluster::start(3);
    let url = cluster.url();
    conformance::run_push_all(|| {
        let url = url.clone();
        async move { Arc::new(connect(&url, &fresh_prefix()).await) as Arc<dyn PushRegistry> }
    })
    .await;
}
