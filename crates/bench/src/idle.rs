//! `idle`: many authenticated connections that send nothing, held for a while; how many the
//! server keeps, and its resident memory per connection. Connections are spread over local
//! addresses 127.0.0.1..=127.0.0.N so the ephemeral ports of one source address are no limit.
//! With `Protocol::Mqtt` each connection is the baseline's equivalent of a signed-in Titan
//! device instead: an accepted MQTT CONNECT (clean session, no keep-alive) subscribed at QoS 1
//! to its own topic, so that the broker holds what it needs to deliver to it.

use crate::connect::{self, Login};
use crate::error::BenchError;
use crate::mqtt::MqttClient;
use crate::peer::{Peer, Protocol};
use crate::resources::{self, CpuReport, CpuSample, Watched};
use crate::tokens::TokenSource;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use titan_client::ClientOptions;

/// What `idle` runs.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    pub url: String,
    /// What the server speaks.
    pub protocol: Protocol,
    pub conns: usize,
    pub hold: Duration,
    /// How many 127.0.0.x source addresses to spread over (1..=254).
    pub sources: u8,
    /// The server (and a store process serving it), for their CPU time.
    pub processes: Watched,
    pub connect_concurrency: usize,
}

/// The figures of one `idle` run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// `"titan"`, or `"mqtt"` for the baseline.
    pub protocol: &'static str,
    pub requested: usize,
    pub connected: usize,
    /// Connections that failed to open or authenticate; the first error says why.
    pub failed: usize,
    pub first_error: Option<String>,
    /// Still open when the hold time ended.
    pub open_after_hold: usize,
    pub connect_s: f64,
    pub hold_s: f64,
    /// The server's open-files limit (from /proc/PID/limits).
    pub server_nofile: Option<u64>,
    pub rss_before: Option<u64>,
    pub rss_connected: Option<u64>,
    pub rss_after_hold: Option<u64>,
    /// (rss_after_hold - rss_before) / connected.
    pub rss_per_conn_bytes: Option<f64>,
    /// CPU while the connections were held (pings, pongs, timers).
    pub hold_cpu: CpuReport,
}

/// Options for connections that only wait: small queues.
fn idle_client_options() -> ClientOptions {
    ClientOptions {
        delivery_buffer: 4,
        outbound_buffer: 4,
        ..ClientOptions::default()
    }
}

/// Opens the connections, holds them, and measures.
pub async fn run(options: &IdleOptions, tokens: &TokenSource) -> Result<IdleReport, BenchError> {
    if options.sources == 0 || options.sources == 255 {
        return Err(BenchError::Options("--sources must be 1..=254".into()));
    }
    let rss = |pid: Option<u32>| pid.and_then(|p| resources::process_rss_bytes(p).ok());
    let rss_before = rss(options.processes.server);
    let run = connect::run_id();
    let logins: Vec<Login> = (0..options.conns)
        .map(|i| Login {
            url: options.url.clone(),
            source: Some(IpAddr::V4(Ipv4Addr::new(
                127,
                0,
                0,
                1 + (i % usize::from(options.sources)) as u8,
            ))),
            user: format!("idle-{run}-{i}"),
            device: None,
        })
        .collect();
    let started = Instant::now();
    let client_options = idle_client_options();
    let protocol = options.protocol;
    let results = connect::each_concurrently(logins, options.connect_concurrency, |login| {
        let client_options = client_options.clone();
        async move {
            match protocol {
                Protocol::Titan => connect::open(&login, tokens, client_options)
                    .await
                    .map(Peer::Titan),
                Protocol::Mqtt => {
                    let topic = format!("{}/inbox", login.user);
                    MqttClient::connect(&login.url, &login.user, Some(&topic), login.source)
                        .await
                        .map(Peer::Mqtt)
                }
            }
        }
    })
    .await;
    let connect_s = started.elapsed().as_secs_f64();
    let mut clients = Vec::with_capacity(results.len());
    let mut failed = 0;
    let mut first_error = None;
    for result in results {
        match result {
            Ok(client) => clients.push(client),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let rss_connected = rss(options.processes.server);
    let cpu_from = CpuSample::take(options.processes);
    tokio::time::sleep(options.hold).await;
    let cpu_to = CpuSample::take(options.processes);
    let rss_after_hold = rss(options.processes.server);
    let open_after_hold = clients.iter().filter(|c| !c.is_closed()).count();
    let connected = clients.len();
    let rss_per_conn_bytes = rss_after_hold
        .zip(rss_before)
        .filter(|_| connected > 0)
        .map(|(after, before)| (after as f64 - before as f64) / connected as f64);
    drop(clients);
    Ok(IdleReport {
        protocol: options.protocol.name(),
        requested: options.conns,
        connected,
        failed,
        first_error,
        open_after_hold,
        connect_s,
        hold_s: options.hold.as_secs_f64(),
        server_nofile: options.processes.server.and_then(resources::process_nofile),
        rss_before,
        rss_connected,
        rss_after_hold,
        rss_per_conn_bytes,
        hold_cpu: cpu_from.until(&cpu_to, 0),
    })
}

impl std::fmt::Display for IdleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: Option<u64>| {
            b.map_or_else(
                || "n/a".into(),
                |b| format!("{:.1} MiB", b as f64 / 1048576.0),
            )
        };
        writeln!(
            f,
            "idle{}: {} requested, {} connected in {:.1} s, {} failed, {} still open after {:.0} s",
            match self.protocol {
                "titan" => String::new(),
                other => format!(" over {other}"),
            },
            self.requested,
            self.connected,
            self.connect_s,
            self.failed,
            self.open_after_hold,
            self.hold_s
        )?;
        if let Some(e) = &self.first_error {
            writeln!(f, "  first error: {e}")?;
        }
        writeln!(
            f,
            "  server rss: before {}, connected {}, after hold {}; per connection {}",
            mib(self.rss_before),
            mib(self.rss_connected),
            mib(self.rss_after_hold),
            self.rss_per_conn_bytes.map_or_else(
                || "n/a (no --server-pid)".into(),
                |b| format!("{:.2} KiB", b / 1024.0)
            )
        )?;
        writeln!(
            f,
            "  server open-files limit: {}",
            self.server_nofile
                .map_or_else(|| "n/a".into(), |n| n.to_string())
        )?;
        write!(f, "{}", self.hold_cpu)
    }
}
