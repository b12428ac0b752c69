//! Several `titan-server` processes sharing one Redis behave as one server: messages cross
//! instances, a device moves between instances with its pending messages, the newest session of
//! a device wins across instances, and neither a killed instance nor a Redis outage or restart
//! loses an ACKed message. Real child processes and a real (throw-away) `redis-server`.

use crate::common;
use crate::redis_server;

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use common::process::ServerProcess;
use redis_server::{RedisServer, ServerConfig, fresh_prefix};
use titan_client::{Client, ClientError, Outgoing};

/// The close code of a session replaced by a newer one of the same (user, device).
const REPLACED: u16 = 4002;
/// The JSON-RPC error code of "store unavailable".
const STORE_UNAVAILABLE: i64 = -32006;
/// Pause between retries of a `msg.send` while Titan reconnects to a restarted Redis (pacing a
/// retry loop that is itself bounded by [`common::WAIT`], not a synchronisation sleep).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// One Redis and the Titan instances sharing it (one key prefix). Instances are killed before
/// Redis is.
struct Cluster {
    instances: Vec<ServerProcess>,
    redis: RedisServer,
    prefix: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A Redis (`durable`: AOF with `appendfsync always`) and `n` instances whose
    /// `[delivery]` section holds `delivery` (TOML lines) on top of the defaults.
    fn start(n: usize, durable: bool, delivery: &str) -> Self {
        let mut cluster = Self {
            instances: Vec::new(),
            redis: RedisServer::start(ServerConfig {
                durable,
                ..ServerConfig::default()
            }),
            prefix: fresh_prefix(),
            dir: tempfile::tempdir().unwrap(),
        };
        for i in 0..n {
            let config = cluster.write_config(i, delivery);
            cluster.instances.push(ServerProcess::start(&config));
        }
        cluster
    }

    fn write_config(&self, i: usize, delivery: &str) -> PathBuf {
        common::process::redis_config(
            self.dir.path(),
            &format!("titan-{i}"),
            &self.redis.url(),
            &self.prefix,
            delivery,
        )
    }

    fn url(&self, i: usize) -> &str {
        &self.instances[i].url
    }

    /// A client of instance `i`, authenticated as (user, device).
    /// Instance `i`'s HTTP address.
    fn addr(&self, i: usize) -> std::net::SocketAddr {
        let url = &self.instances[i].url;
        url.trim_start_matches("ws://")
            .trim_end_matches("/ws")
            .parse()
            .unwrap()
    }

    async fn client(&self, i: usize, user: &str, device: &str) -> Client {
        let client = Client::connect(self.url(i)).await.unwrap();
        client
            .authenticate(&common::token(user, None), Some(device))
            .await
            .unwrap();
        client
    }
}

/// Receives (acking each delivery) until every message of `wanted` has been seen; returns the
/// bodies seen, duplicates included. Each wait is bounded by [`common::WAIT`].
async fn receive_all(client: &Client, wanted: &[String]) -> Vec<String> {
    let mut got = Vec::new();
    let mut missing: HashSet<&String> = wanted.iter().collect();
    while !missing.is_empty() {
        let delivery = common::next(client).await;
        for m in &delivery.messages {
            missing.remove(&m.message);
            got.push(m.message.clone());
        }
        delivery.ack().await.unwrap();
    }
    got
}

/// Sends `body` from `client`, retrying while the store is unavailable (Redis coming back);
/// bounded by [`common::WAIT`]. The body doubles as client id, so a retry of a send that was
/// stored but not answered stores nothing twice.
async fn send_when_store_is_back(client: &Client, to: &str, body: &str) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let message = [Outgoing::new(to, body).with_id(body)];
    loop {
        match client.send_many(&message).await {
            Ok(()) => return,
            Err(e) if e.rpc_code() == Some(STORE_UNAVAILABLE) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the store did not come back: {e}"
                );
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(e) => panic!("msg.send failed: {e}"),
        }
    }
}

/// A message sent on one instance reaches its recipient on another through the bus wake-up
/// alone (the periodic re-read is pushed out of the test's reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_crosses_instances_via_the_wake_up() {
    let cluster = Cluster::start(2, false, r#"poll_interval = "1h""#);
    let bob = cluster.client(1, "bob", "phone").await;
    let alice = cluster.client(0, "alice", "phone").await;

    for i in 0..3 {
        alice.send("bob", &format!("hi bob {i}")).await.unwrap();
        let delivery = common::next(&bob).await;
        assert_eq!(delivery.messages.len(), 1);
        assert_eq!(delivery.messages[0].from.as_str(), "alice");
        assert_eq!(delivery.messages[0].message, format!("hi bob {i}"));
        delivery.ack().await.unwrap();
    }
}

/// Messages a device received but did not ack on one instance come again, with the same ids,
/// when it reconnects to another instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_follow_the_device_to_another_instance() {
    let cluster = Cluster::start(3, false, "");
    let alice = cluster.client(0, "alice", "phone").await;
    let bob = cluster.client(1, "bob", "phone").await;
    let sent: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    for body in &sent {
        alice.send("bob", body).await.unwrap();
    }

    let mut first = Vec::new();
    while first.len() < sent.len() {
        let delivery = common::next(&bob).await;
        first.extend(
            delivery
                .messages
                .iter()
                .map(|m| (m.id.clone(), m.message.clone())),
        );
        // Not acked: the messages stay pending for bob's phone.
    }
    assert_eq!(
        first.iter().map(|(_, body)| body).collect::<Vec<_>>(),
        sent.iter().collect::<Vec<_>>()
    );
    bob.close().await.unwrap();

    let bob = cluster.client(2, "bob", "phone").await;
    let mut again = Vec::new();
    while again.len() < sent.len() {
        let delivery = common::next(&bob).await;
        again.extend(
            delivery
                .messages
                .iter()
                .map(|m| (m.id.clone(), m.message.clone())),
        );
        delivery.ack().await.unwrap();
    }
    assert_eq!(again, first, "same messages, same ids, same order");
}

/// A device connecting on a second instance closes its session on the first with 4002; the new
/// session gets the messages sent afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_session_wins_across_instances() {
    let cluster = Cluster::start(2, false, "");
    let alice = cluster.client(0, "alice", "phone").await;
    let old = cluster.client(0, "bob", "phone").await;
    // A delivery proves the old session is live (attached and claimed) before the new one comes.
    alice.send("bob", "first").await.unwrap();
    receive_all(&old, &["first".to_owned()]).await;

    let new = cluster.client(1, "bob", "phone").await;
    let code = tokio::time::timeout(common::WAIT, old.close_code())
        .await
        .expect("the replaced session was not closed");
    assert_eq!(code, Some(REPLACED));

    alice.send("bob", "second").await.unwrap();
    let got = receive_all(&new, &["second".to_owned()]).await;
    assert!(got.iter().all(|m| m == "first" || m == "second"), "{got:?}");
    assert_eq!(
        new.echo(serde_json::json!(["still here"])).await.unwrap(),
        serde_json::json!(["still here"])
    );
}

/// `kill -9` of the recipient's instance in the middle of a stream loses nothing: on another
/// instance the device gets every message its sender got an ACK for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_an_instance_loses_no_acked_message() {
    const TOTAL: usize = 300;
    const KILL_AFTER: usize = 100;
    let mut cluster = Cluster::start(2, false, "");
    let alice = cluster.client(0, "alice", "phone").await;
    let bob = cluster.client(1, "bob", "phone").await;

    let sender = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..TOTAL {
            let body = format!("stream {i}");
            alice.send("bob", &body).await.unwrap();
            acked.push(body);
        }
        acked
    });

    let mut got = Vec::new();
    let mut unacked = Vec::new();
    let mut deliveries = 0;
    while got.len() < KILL_AFTER {
        let delivery = common::next(&bob).await;
        got.extend(delivery.messages.iter().map(|m| m.message.clone()));
        // Ack every other delivery: the rest stay pending when the instance dies.
        if deliveries % 2 == 0 {
            delivery.ack().await.unwrap();
        } else {
            unacked.extend(delivery.messages.iter().map(|m| m.message.clone()));
        }
        deliveries += 1;
    }
    cluster.instances.remove(1).kill();
    drop(bob);

    let bob = cluster.client(0, "bob", "phone").await;
    let acked = sender.await.unwrap();
    // What bob never saw, and what he saw but did not ack, must come (again); what he acked on
    // the killed instance may.
    let mut wanted: Vec<String> = acked.iter().filter(|m| !got.contains(m)).cloned().collect();
    wanted.extend(unacked);
    got.extend(receive_all(&bob, &wanted).await);
    let got: HashSet<&String> = got.iter().collect();
    let lost: Vec<&String> = acked.iter().filter(|m| !got.contains(m)).collect();
    assert!(lost.is_empty(), "lost after kill -9: {lost:?}");
}

/// With Redis down `msg.send` fails with -32006 (bounded) while sessions stay open; once Redis
/// is back (same AOF), sending works again without restarting Titan, and the recipient gets
/// every message ACKed before the outage and after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_sends_then_recovers() {
    let mut cluster = Cluster::start(2, true, "");
    let alice = cluster.client(0, "alice", "phone").await;
    let bob = cluster.client(1, "bob", "phone").await;
    let mut acked = Vec::new();
    for i in 0..5 {
        let body = format!("before {i}");
        alice.send("bob", &body).await.unwrap();
        acked.push(body);
    }

    let ready = common::http_get(cluster.addr(0), "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    cluster.redis.stop();
    let unready = common::http_get(cluster.addr(0), "/readyz").await;
    assert!(unready.starts_with("HTTP/1.1 503"), "{unready}");
    let failed = tokio::time::timeout(common::WAIT, alice.send("bob", "during"))
        .await
        .expect("msg.send hung while Redis was down");
    match failed {
        Err(ClientError::Rpc(e)) => assert_eq!(e.code, STORE_UNAVAILABLE, "{e:?}"),
        other => panic!("expected -32006, got {other:?}"),
    }
    for (who, client) in [("alice", &alice), ("bob", &bob)] {
        let echoed = client.echo(serde_json::json!([who])).await.unwrap();
        assert_eq!(
            echoed,
            serde_json::json!([who]),
            "{who}'s session must stay usable"
        );
    }

    cluster.redis.restart();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !common::http_get(cluster.addr(0), "/readyz")
        .await
        .starts_with("HTTP/1.1 200")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never became ready again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for i in 0..5 {
        let body = format!("after {i}");
        send_when_store_is_back(&alice, "bob", &body).await;
        acked.push(body);
    }
    receive_all(&bob, &acked).await;
}

/// Redis killed and restarted on its AOF (`appendfsync always`): every message ACKed before,
/// whether already delivered and unacked or not yet read, is delivered after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_aof_keeps_acked_messages() {
    let mut cluster = Cluster::start(2, true, "");
    let alice = cluster.client(0, "alice", "phone").await;
    let bob = cluster.client(1, "bob", "phone").await;
    let mut acked = Vec::new();
    for i in 0..20 {
        let body = format!("read {i}");
        alice.send("bob", &body).await.unwrap();
        acked.push(body);
    }
    // Delivered but never acked: pending in Redis when it dies.
    let mut delivered = 0;
    while delivered < acked.len() {
        delivered += common::next(&bob).await.messages.len();
    }
    bob.close().await.unwrap();
    for i in 0..20 {
        let body = format!("unread {i}");
        alice.send("bob", &body).await.unwrap();
        acked.push(body);
    }

    cluster.redis.restart();
    let bob = cluster.client(0, "bob", "phone").await;
    receive_all(&bob, &acked).await;
}

/// Redis restarted empty (no persistence) loses the claims: the instances make them again when
/// their bus reconnects, so wake-ups reach the recipient's instance again (the periodic re-read
/// is pushed out of the test's reach).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_restored_after_redis_loses_them() {
    let mut cluster = Cluster::start(2, false, r#"poll_interval = "1h""#);
    let alice = cluster.client(0, "alice", "phone").await;
    let bob = cluster.client(1, "bob", "phone").await;
    alice.send("bob", "before").await.unwrap();
    receive_all(&bob, &["before".to_owned()]).await;

    cluster.redis.restart();
    // Without the periodic re-read, bob's instance reads his inbox only when woken or on its
    // resync (after the bus reconnects), and a wake-up needs the restored claim: either way this
    // arrives only after the resync...
    send_when_store_is_back(&alice, "bob", "after 0").await;
    receive_all(&bob, &["after 0".to_owned()]).await;
    // ... so this one can only come through the restored claim.
    alice.send("bob", "after 1").await.unwrap();
    receive_all(&bob, &["after 1".to_owned()]).await;
}

/// A Redis that stops answering (frozen with SIGSTOP: connections stay open and commands go
/// unanswered, as in a partition) fails `msg.send` with -32006 within the bound while sessions
/// and `/readyz` keep answering; once Redis answers again, the send retried with its client id
/// is stored once (the timed-out attempt may have been applied late), and new sessions and
/// cross-instance delivery work without a restart: no actor is left wedged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_redis_times_out_then_recovers() {
    let cluster = Cluster::start(2, false, "");
    let alice = cluster.client(0, "alice", "phone").await;
    let bob = cluster.client(1, "bob", "phone").await;
    alice.send("bob", "before").await.unwrap();

    cluster.redis.freeze();
    let during = [Outgoing::new("bob", "during").with_id("during")];
    let failed = tokio::time::timeout(common::WAIT, alice.send_many(&during))
        .await
        .expect("msg.send hung on an unresponsive Redis");
    match failed {
        Err(ClientError::Rpc(e)) => assert_eq!(e.code, STORE_UNAVAILABLE, "{e:?}"),
        other => panic!("expected -32006, got {other:?}"),
    }
    let unready = tokio::time::timeout(common::WAIT, common::http_get(cluster.addr(0), "/readyz"))
        .await
        .expect("/readyz hung on an unresponsive Redis");
    assert!(unready.starts_with("HTTP/1.1 503"), "{unready}");
    for (who, client) in [("alice", &alice), ("bob", &bob)] {
        let echoed = tokio::time::timeout(common::WAIT, client.echo(serde_json::json!([who])))
            .await
            .expect("a session hung while Redis was unresponsive")
            .unwrap();
        assert_eq!(echoed, serde_json::json!([who]));
    }
    cluster.redis.thaw();

    send_when_store_is_back(&alice, "bob", "during").await;
    send_when_store_is_back(&alice, "bob", "after").await;
    let wanted = ["before", "during", "after"].map(String::from);
    let got = receive_all(&bob, &wanted).await;
    let copies = got.iter().filter(|m| *m == "during").count();
    assert_eq!(copies, 1, "the retried send was stored twice: {got:?}");

    let carol = cluster.client(1, "carol", "phone").await;
    alice.send("carol", "hello carol").await.unwrap();
    receive_all(&carol, &["hello carol".to_owned()]).await;
}
