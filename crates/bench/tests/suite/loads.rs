//! The idle, fanout and reconnect-storm loads against a real Titan server started in this
//! process (memory store), at tiny sizes: they connect, deliver everything once and count right.

use crate::common;
use crate::mosquitto;

use common::{SECRET, Server};
use std::time::Duration;
use titan_bench::fanout::{self, FanoutMode, FanoutOptions};
use titan_bench::idle::{self, IdleOptions};
use titan_bench::peer::Protocol;
use titan_bench::resources::Watched;
use titan_bench::storm::{self, StormOptions};
use titan_bench::tokens::TokenSource;
use titan_server::config::Backend;

fn tokens() -> TokenSource {
    TokenSource::secret(SECRET).unwrap()
}

/// Idle connections bound to several 127.0.0.x source addresses all authenticate and stay open,
/// and the server's memory is read (this process is the server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_several_source_addresses_stay_open() {
    let server = Server::start(Backend::Memory);
    let options = IdleOptions {
        url: server.url.clone(),
        protocol: Protocol::Titan,
        conns: 24,
        hold: Duration::from_millis(200),
        sources: 4,
        processes: Watched {
            server: Some(std::process::id()),
            store: None,
        },
        connect_concurrency: 8,
    };
    let report = idle::run(&options, &tokens()).await.unwrap();
    assert_eq!(report.connected, 24, "{report}");
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(report.open_after_hold, 24, "{report}");
    assert!(report.rss_after_hold.is_some(), "{report}");
    assert!(report.rss_per_conn_bytes.is_some(), "{report}");
}

/// The baseline's idle connections (MQTT over WebSocket, each subscribed to its own topic) from
/// several source addresses are all accepted by a real Mosquitto and stay open; the broker's
/// memory is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_mqtt_connections_to_mosquitto_stay_open() {
    let broker = mosquitto::Mosquitto::start();
    let options = IdleOptions {
        url: broker.url.clone(),
        protocol: Protocol::Mqtt,
        conns: 24,
        hold: Duration::from_millis(200),
        sources: 4,
        processes: Watched {
            server: Some(broker.pid()),
            store: None,
        },
        connect_concurrency: 8,
    };
    let report = idle::run(&options, &TokenSource::Missing).await.unwrap();
    assert_eq!(report.protocol, "mqtt");
    assert_eq!(report.connected, 24, "{report}");
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(report.open_after_hold, 24, "{report}");
    assert!(report.rss_per_conn_bytes.is_some(), "{report}");
}

fn fanout_options(url: &str, mode: FanoutMode) -> FanoutOptions {
    FanoutOptions {
        url: url.to_owned(),
        mode,
        rounds: 20,
        size: 64,
        window: 4,
        batch: 3,
        drain: Duration::from_secs(20),
        processes: Watched::default(),
        connect_concurrency: 8,
    }
}

/// Every message to a user with several devices reaches each device exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_to_devices_delivers_to_every_device_once() {
    let server = Server::start(Backend::Memory);
    let options = fanout_options(&server.url, FanoutMode::Devices(5));
    let report = fanout::run(&options, &tokens()).await.unwrap();
    assert_eq!(report.failed_calls, 0, "{report}");
    assert_eq!(report.expected, 5 * 20, "{report}");
    assert_eq!(report.delivered, 5 * 20, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicates, 0, "{report}");
}

/// A sender's batched messages to many users (batches not dividing the users evenly) reach each
/// user exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_to_users_delivers_to_every_user_once() {
    let server = Server::start(Backend::Memory);
    let options = fanout_options(&server.url, FanoutMode::Users(7));
    let report = fanout::run(&options, &tokens()).await.unwrap();
    assert_eq!(report.calls, 20 * 3, "{report}");
    assert_eq!(report.failed_calls, 0, "{report}");
    assert_eq!(report.delivered, 7 * 20, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicates, 0, "{report}");
}

/// Clients that reconnect together get all the messages left pending for them, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_storm_serves_every_pending_message() {
    let server = Server::start(Backend::Memory);
    let options = StormOptions {
        url: server.url.clone(),
        conns: 20,
        pending: 5,
        size: 64,
        batch: 7,
        fill_window: 4,
        connect_concurrency: 8,
        timeout: Duration::from_secs(30),
        processes: Watched::default(),
    };
    let report = storm::run(&options, &tokens()).await.unwrap();
    assert_eq!(report.stored, 100, "{report}");
    assert_eq!(report.reconnected, 20, "{report}");
    assert_eq!(report.served, 20, "{report}");
    assert_eq!(report.delivered, 100, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicates, 0, "{report}");
}
