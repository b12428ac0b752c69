//! `reconnect-storm`: C users are connected once (so their devices are known) and closed; a
//! sender then leaves P messages pending for each; then all C reconnect at once and the run
//! measures how long until every pending message has been delivered (and acked).

use crate::body::{self, Clock, Stamp};
use crate::connect::{self, Login};
use crate::error::BenchError;
use crate::latency::{Latencies, LatencySummary};
use crate::resources::{CpuReport, CpuSample, Watched};
use crate::tokens::TokenSource;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use titan_client::{Client, ClientOptions, Outgoing};
use tokio::sync::Semaphore;

/// What `reconnect-storm` runs.
#[derive(Debug, Clone)]
pub struct StormOptions {
    pub url: String,
    pub conns: usize,
    pub pending: usize,
    pub size: usize,
    /// Messages per `msg.send` while filling the inboxes.
    pub batch: usize,
    /// `msg.send` calls in flight while filling.
    pub fill_window: usize,
    /// Handshakes in progress at once (the rest wait for a slot, not for earlier clients to
    /// finish receiving).
    pub connect_concurrency: usize,
    /// Give up on clients not served within this time after the storm began.
    pub timeout: Duration,
    /// The server (and a store process serving it), for their CPU time.
    pub processes: Watched,
}

/// The figures of one `reconnect-storm` run.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub conns: usize,
    pub pending: usize,
    /// Messages stored by the fill phase (ACKed).
    pub stored: u64,
    pub fill_s: f64,
    pub fill_per_s: f64,
    /// Clients that reconnected and authenticated.
    pub reconnected: usize,
    /// Clients that got all their pending messages in time.
    pub served: usize,
    pub delivered: u64,
    pub duplicates: u64,
    pub lost: u64,
    pub reconnect_errors: BTreeMap<String, u64>,
    /// From the start of the storm until the last client was served (or the timeout).
    pub all_served_s: f64,
    /// Per client: from the start of the storm until it had all its messages.
    pub served_after: LatencySummary,
    /// CPU over the storm, per delivered message.
    pub cpu: CpuReport,
}

/// What one reconnecting client saw.
struct ClientOutcome {
    counts: Vec<u32>,
    done_at: Option<Instant>,
    client: Client,
}

/// Runs the storm and returns its figures.
pub async fn run(options: &StormOptions, tokens: &TokenSource) -> Result<StormReport, BenchError> {
    if options.conns == 0 || options.pending == 0 {
        return Err(BenchError::Options(
            "reconnect-storm needs --conns and --pending".into(),
        ));
    }
    let run = connect::run_id();
    let logins: Vec<Login> = (0..options.conns)
        .map(|i| Login {
            url: options.url.clone(),
            source: None,
            user: format!("storm-{run}-{i}"),
            device: None,
        })
        .collect();
    let quiet = ClientOptions {
        delivery_buffer: 4,
        outbound_buffer: 4,
        ..ClientOptions::default()
    };
    // Prime: each device connects once, so the storm is a reconnect of known devices.
    let primed =
        connect::open_all(logins.clone(), tokens, &quiet, options.connect_concurrency).await?;
    connect::each_concurrently(primed, options.connect_concurrency, |c| async move {
        let _ = c.close().await;
    })
    .await;

    let sender = Login {
        url: options.url.clone(),
        source: None,
        user: format!("storm-{run}-sender"),
        device: None,
    };
    let sender = connect::open(&sender, tokens, ClientOptions::default()).await?;
    let fill_started = Instant::now();
    let stored = fill(&sender, &logins, options).await;
    let fill_s = fill_started.elapsed().as_secs_f64();
    drop(sender);

    let semaphore = Semaphore::new(options.connect_concurrency.max(1));
    let start = Instant::now();
    let deadline = start + options.timeout;
    let cpu_from = CpuSample::take(options.processes);
    let storm: FuturesUnordered<_> = logins
        .iter()
        .map(|login| reconnect(login, tokens, &semaphore, options.pending, deadline))
        .collect();
    let outcomes: Vec<Result<ClientOutcome, BenchError>> = storm.collect().await;
    let cpu_to_at = Instant::now();
    let cpu_to = CpuSample::take(options.processes);

    let mut report_errors = BTreeMap::new();
    let (mut reconnected, mut served, mut delivered, mut duplicates, mut lost) = (0, 0, 0, 0, 0);
    let mut served_after = Latencies::new();
    let mut last = start;
    let mut clients = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome {
            Ok(o) => {
                reconnected += 1;
                let unique = o.counts.iter().filter(|c| **c > 0).count();
                delivered += unique as u64;
                duplicates += o
                    .counts
                    .iter()
                    .map(|c| u64::from(c.saturating_sub(1)))
                    .sum::<u64>();
                lost += (options.pending - unique.min(options.pending)) as u64;
                if let Some(done) = o.done_at {
                    served += 1;
                    served_after.record(done.duration_since(start));
                    last = last.max(done);
                } else {
                    last = last.max(cpu_to_at);
                }
                clients.push(o.client);
            }
            Err(e) => {
                lost += options.pending as u64;
                *report_errors.entry(e.to_string()).or_insert(0) += 1;
            }
        }
    }
    drop(clients);
    Ok(StormReport {
        conns: options.conns,
        pending: options.pending,
        stored,
        fill_s,
        fill_per_s: stored as f64 / fill_s.max(f64::MIN_POSITIVE),
        reconnected,
        served,
        delivered,
        duplicates,
        lost,
        reconnect_errors: report_errors,
        all_served_s: last.duration_since(start).as_secs_f64(),
        served_after: served_after.summary(),
        cpu: cpu_from.until(&cpu_to, delivered),
    })
}

/// Leaves `pending` messages for every user, `batch` per `msg.send`; returns how many were
/// ACKed.
async fn fill(sender: &Client, logins: &[Login], options: &StormOptions) -> u64 {
    let clock = Clock::start();
    let all = (0..options.pending).flat_map(|seq| {
        logins
            .iter()
            .enumerate()
            .map(move |(tag, login)| (tag, seq, &login.user))
    });
    let mut batches = Vec::new();
    let mut batch = Vec::with_capacity(options.batch);
    for (tag, seq, user) in all {
        let stamp = Stamp {
            tag: tag as u64,
            seq: seq as u64,
            sent_us: clock.now_us(),
        };
        batch.push(Outgoing::new(
            user.clone(),
            body::encode(stamp, options.size),
        ));
        if batch.len() >= options.batch.clamp(1, titan_protocol::MAX_SEND_BATCH) {
            batches.push(std::mem::take(&mut batch));
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    futures_util::stream::iter(batches)
        .map(|b| async move {
            match sender.send_many(&b).await {
                Ok(()) => b.len() as u64,
                Err(e) => {
                    tracing::warn!(error = %e, "fill msg.send failed");
                    0
                }
            }
        })
        .buffer_unordered(options.fill_window.max(1))
        .fold(0, |sum, n| async move { sum + n })
        .await
}

/// One client of the storm: connect (when a handshake slot is free), then take deliveries
/// until all `pending` messages arrived or the deadline passed.
async fn reconnect(
    login: &Login,
    tokens: &TokenSource,
    semaphore: &Semaphore,
    pending: usize,
    deadline: Instant,
) -> Result<ClientOutcome, BenchError> {
    let client = {
        // The semaphore is never closed, so acquiring only waits.
        let _slot = semaphore.acquire().await;
        connect::open(login, tokens, connect::auto_ack_options()).await?
    };
    let mut counts = vec![0u32; pending];
    let mut unique = 0;
    let mut done_at = None;
    while unique < pending {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(delivery)) = tokio::time::timeout(wait, client.next_delivery()).await else {
            break;
        };
        for message in &delivery.messages {
            let Some(seq) = body::decode(&message.message)
                .and_then(|s| usize::try_from(s.seq).ok())
                .filter(|s| *s < pending)
            else {
                continue;
            };
            counts[seq] += 1;
            unique += usize::from(counts[seq] == 1);
        }
        if unique == pending {
            done_at = Some(Instant::now());
        }
    }
    Ok(ClientOutcome {
        counts,
        done_at,
        client,
    })
}

impl std::fmt::Display for StormReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "reconnect-storm: {} clients x {} pending ({} stored in {:.1} s, {:.0} msg/s)",
            self.conns, self.pending, self.stored, self.fill_s, self.fill_per_s
        )?;
        writeln!(
            f,
            "  all served in {:.2} s: {} reconnected, {} served, delivered {}, lost {}, duplicates {}",
            self.all_served_s,
            self.reconnected,
            self.served,
            self.delivered,
            self.lost,
            self.duplicates
        )?;
        writeln!(f, "  served after {}", self.served_after)?;
        for (error, count) in &self.reconnect_errors {
            writeln!(f, "  reconnect error ({count}x): {error}")?;
        }
        write!(f, "{}", self.cpu)
    }
}
