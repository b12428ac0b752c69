//! The load generator against a real Titan server started in this process (memory store and
//! embedded store), and against a real Mosquitto (the MQTT baseline): a short p2p run loses and
//! duplicates nothing.

use crate::common;
use crate::mosquitto;

use common::{SECRET, Server};
use std::time::Duration;
use titan_bench::p2p::{self, P2pOptions, P2pReport, Rate};
use titan_bench::peer::Protocol;
use titan_bench::resources::Watched;
use titan_bench::tokens::TokenSource;
use titan_server::config::Backend;

fn options(url: &str) -> P2pOptions {
    P2pOptions {
        urls: vec![url.to_owned()],
        protocol: Protocol::Titan,
        pairs: 4,
        size: 100,
        // Well under the default per-connection request rate (500/s), so no call is refused.
        rate: Rate::PerSecond(400.0),
        window: 8,
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(500),
        drain: Duration::from_secs(20),
        processes: Watched {
            server: Some(std::process::id()),
            store: None,
        },
        connect_concurrency: 8,
        client_ids: false,
    }
}

async fn run_and_check(backend: Backend) {
    let server = Server::start(backend);
    let tokens = TokenSource::secret(SECRET).unwrap();
    let report = p2p::run(&options(&server.url), &tokens).await.unwrap();
    check(&report);
}

fn check(report: &P2pReport) {
    assert!(report.sent > 0, "{report}");
    assert!(report.send_errors.is_empty(), "{report}");
    assert_eq!(report.acked, report.sent, "{report}");
    assert_eq!(report.delivered, report.sent, "{report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.duplicates, 0, "{report}");
    assert_eq!(report.foreign, 0, "{report}");
    assert_eq!(
        report.end_to_end.count, report.send_to_ack.count,
        "{report}"
    );
}

/// Every message of a short p2p run on the memory store is delivered once: none lost, none doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_memory_store_delivers_everything_once() {
    run_and_check(Backend::Memory).await;
}

/// Every message of a short p2p run on the embedded (redb) store is delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_embedded_store_delivers_everything_once() {
    run_and_check(Backend::Embedded).await;
}

/// With a client id on every message (`--client-ids`, what `ReconnectingClient` sends), every
/// message is stored and delivered once: distinct ids are never taken for retries, and nothing
/// waits forever on the client-id checks. Fails if the ids repeat across messages (the server
/// answers a repeat as a duplicate and delivers only the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_with_client_ids_delivers_everything_once() {
    let server = Server::start(Backend::Embedded);
    let tokens = TokenSource::secret(SECRET).unwrap();
    let mut options = options(&server.url);
    options.client_ids = true;
    let report = p2p::run(&options, &tokens).await.unwrap();
    assert!(report.client_ids, "{report}");
    check(&report);
}

/// Client ids are Titan's: asking for them over MQTT is refused before anything connects.
#[tokio::test]
async fn client_ids_over_mqtt_are_refused() {
    let mut options = options("ws://127.0.0.1:9/mqtt");
    options.protocol = Protocol::Mqtt;
    options.client_ids = true;
    let refused = p2p::run(&options, &TokenSource::Missing).await.unwrap_err();
    assert!(refused.to_string().contains("client ids"), "{refused}");
}

/// The same run as MQTT QoS 1 through a real Mosquitto (the baseline of issue 7): every
/// message PUBACKed is delivered once, and no token is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_over_mqtt_through_mosquitto_delivers_everything_once() {
    let broker = mosquitto::Mosquitto::start();
    let mut options = options(&broker.url);
    options.protocol = Protocol::Mqtt;
    options.processes.server = None;
    let report = p2p::run(&options, &TokenSource::Missing).await.unwrap();
    assert_eq!(report.protocol, "mqtt");
    check(&report);
}
