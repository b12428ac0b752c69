//! `/readyz` with Redis: ready only while the store answers AND a canary published on this
//! instance's own pub/sub channel comes back, so a dead subscription is seen, not just a dead
//! Redis.

use crate::common;
use crate::redis_server;

use common::scrape::request;
use common::{TestServer, WAIT};
use redis_server::{RedisServer, ServerConfig, fresh_prefix};
use std::net::SocketAddr;
use std::time::Duration;
use titan_server::config::Backend;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Pause between probes while waiting for a state change (pacing a loop bounded by [`WAIT`]).
const POLL: Duration = Duration::from_millis(50);

fn start(redis: &RedisServer) -> TestServer {
    TestServer::start_with(|c| {
        c.store.backend = Backend::Redis;
        c.store.redis_url = redis.url();
        c.store.key_prefix = fresh_prefix();
        c.store.redis_timeout = Duration::from_millis(500);
    })
}

/// Waits (bounded) until `/readyz` answers `status`; returns the response.
async fn await_ready_status(addr: SocketAddr, status: u16) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (got, response) = request(addr, "/readyz", &[]).await;
        if got == status {
            return response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never answered {status}; last: {response}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// One Redis command over a kept connection (inline syntax); returns the reply line.
async fn command(redis: &mut BufReader<TcpStream>, line: &str) -> String {
    redis
        .get_mut()
        .write_all(format!("{line}\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    tokio::time::timeout(WAIT, redis.read_line(&mut reply))
        .await
        .expect("redis did not answer")
        .unwrap();
    reply
}

/// Redis stopped: /readyz goes 503; Redis restarted: ready again, without restarting Titan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_while_redis_is_down() {
    let mut redis = RedisServer::start(ServerConfig::default());
    let server = start(&redis);
    await_ready_status(server.addr, 200).await;
    redis.stop();
    await_ready_status(server.addr, 503).await;
    redis.restart();
    await_ready_status(server.addr, 200).await;
}

/// A dead subscription (its connection killed, and no new connection possible) makes /readyz
/// 503 although the store still answers; once Redis accepts connections again the bus
/// re-subscribes by itself and /readyz is 200 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_while_the_subscription_is_dead() {
    let redis = RedisServer::start(ServerConfig::default());
    let server = start(&redis);
    await_ready_status(server.addr, 200).await;

    let tcp = TcpStream::connect(("127.0.0.1", redis.port()))
        .await
        .unwrap();
    let mut admin = BufReader::new(tcp);
    // Connections already open (the store's, this one) stay; the bus cannot open a new one.
    assert_eq!(
        command(&mut admin, "CONFIG SET maxclients 1").await,
        "+OK\r\n"
    );
    let killed = command(&mut admin, "CLIENT KILL TYPE pubsub").await;
    assert!(killed.starts_with(":") && killed != ":0\r\n", "{killed}");
    let unready = await_ready_status(server.addr, 503).await;
    assert!(unready.contains("canary"), "{unready}");
    let (status, response) = request(server.addr, "/readyz", &[]).await;
    assert_eq!(status, 503, "still dead: {response}");

    assert_eq!(
        command(&mut admin, "CONFIG SET maxclients 10000").await,
        "+OK\r\n"
    );
    await_ready_status(server.addr, 200).await;
}
