//! `fanout`: the per-recipient cost. Either one user with many devices (every message goes to
//! each device), or one sender to many users (each round sends the same body to every user, in
//! `msg.send` calls of up to `batch` messages). Receivers ack every `msg.recv`.

use crate::body::{self, Clock, Stamp};
use crate::connect::{self, Login};
use crate::error::BenchError;
use crate::latency::{Latencies, LatencySummary};
use crate::resources::{CpuReport, CpuSample, Watched};
use crate::tokens::TokenSource;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use titan_client::{Client, Outgoing};
use tokio::sync::watch;

/// Who receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FanoutMode {
    /// One user connected with this many devices.
    Devices(usize),
    /// This many users, one device each.
    Users(usize),
}

/// What `fanout` runs.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    pub url: String,
    pub mode: FanoutMode,
    /// Rounds: each round is one message to every recipient.
    pub rounds: usize,
    pub size: usize,
    /// `msg.send` calls in flight at most.
    pub window: usize,
    /// Messages per `msg.send` in users mode (at most the server's batch limit, 100).
    pub batch: usize,
    pub drain: Duration,
    /// The server (and a store process serving it), for their CPU time.
    pub processes: Watched,
    pub connect_concurrency: usize,
}

/// The figures of one `fanout` run.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutReport {
    pub mode: FanoutMode,
    pub rounds: usize,
    pub size: usize,
    pub calls: u64,
    pub acked_calls: u64,
    pub failed_calls: u64,
    /// Deliveries owed for the ACKed calls (one per recipient device and message).
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    /// From the first send to the last first-time receipt.
    pub elapsed_s: f64,
    pub deliveries_per_s: f64,
    pub end_to_end: LatencySummary,
    /// CPU from the first send to the end of the drain, per delivery.
    pub cpu: CpuReport,
}

#[derive(Debug, Default)]
struct Received {
    counts: Vec<u32>,
    e2e: Latencies,
    last: Option<Instant>,
}

/// Runs the fan-out and returns its figures.
pub async fn run(
    options: &FanoutOptions,
    tokens: &TokenSource,
) -> Result<FanoutReport, BenchError> {
    let (fan, batch) = match options.mode {
        FanoutMode::Devices(n) => (n, 1),
        FanoutMode::Users(n) => (n, options.batch.clamp(1, titan_protocol::MAX_SEND_BATCH)),
    };
    if fan == 0 || options.rounds == 0 || options.window == 0 {
        return Err(BenchError::Options(
            "fanout needs recipients, rounds and a window".into(),
        ));
    }
    let run = connect::run_id();
    let receivers: Vec<Login> = (0..fan)
        .map(|j| match options.mode {
            FanoutMode::Devices(_) => Login {
                url: options.url.clone(),
                source: None,
                user: format!("fan-{run}-u"),
                device: Some(format!("d{j}")),
            },
            FanoutMode::Users(_) => Login {
                url: options.url.clone(),
                source: None,
                user: format!("fan-{run}-{j}"),
                device: None,
            },
        })
        .collect();
    // The recipients of each msg.send of a round, and which call reaches receiver j.
    let chunks: Vec<Vec<String>> = match options.mode {
        FanoutMode::Devices(_) => vec![vec![format!("fan-{run}-u")]],
        FanoutMode::Users(_) => receivers
            .chunks(batch)
            .map(|c| c.iter().map(|l| l.user.clone()).collect())
            .collect(),
    };
    let chunk_of = |j: usize| match options.mode {
        FanoutMode::Devices(_) => 0,
        FanoutMode::Users(_) => j / batch,
    };
    let sender = Login {
        url: options.url.clone(),
        source: None,
        user: format!("fan-{run}-sender"),
        device: None,
    };
    let client_options = connect::auto_ack_options();
    let clients = connect::open_all(
        receivers,
        tokens,
        &client_options,
        options.connect_concurrency,
    )
    .await?;
    let sender = connect::open(&sender, tokens, client_options).await?;

    let clock = Clock::start();
    let received_total = Arc::new(AtomicU64::new(0));
    let (stop, stopped) = watch::channel(false);
    let receiving: Vec<_> = clients
        .into_iter()
        .map(|client| {
            tokio::spawn(receive(
                client,
                clock,
                received_total.clone(),
                stopped.clone(),
            ))
        })
        .collect();

    let start = Instant::now();
    let cpu_from = CpuSample::take(options.processes);
    let acked = send_rounds(&sender, &chunks, options, clock).await;
    let expected: u64 = (0..fan)
        .map(|j| acked.iter().filter(|round| round[chunk_of(j)]).count() as u64)
        .sum();
    let drain_until = Instant::now() + options.drain;
    while received_total.load(Ordering::Acquire) < expected && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_to = CpuSample::take(options.processes);
    let _ = stop.send(true);
    let mut outcomes = Vec::with_capacity(receiving.len());
    for task in receiving {
        outcomes.push(
            task.await
                .map_err(|e| BenchError::system("receiver task", e))?,
        );
    }

    let (mut delivered, mut lost, mut duplicates) = (0, 0, 0);
    let mut e2e = Latencies::new();
    let mut last = start;
    for (j, r) in outcomes.iter().enumerate() {
        e2e.merge(&r.e2e);
        last = last.max(r.last.unwrap_or(start));
        for (round, acked_round) in acked.iter().enumerate() {
            let count = u64::from(r.counts.get(round).copied().unwrap_or(0));
            delivered += u64::from(count > 0);
            duplicates += count.saturating_sub(1);
            lost += u64::from(acked_round[chunk_of(j)] && count == 0);
        }
    }
    let calls = (acked.len() * chunks.len()) as u64;
    let acked_calls = acked.iter().flatten().filter(|a| **a).count() as u64;
    let elapsed_s = last.duration_since(start).as_secs_f64();
    Ok(FanoutReport {
        mode: options.mode,
        rounds: options.rounds,
        size: options.size,
        calls,
        acked_calls,
        failed_calls: calls - acked_calls,
        expected,
        delivered,
        lost,
        duplicates,
        elapsed_s,
        deliveries_per_s: if elapsed_s > 0.0 {
            delivered as f64 / elapsed_s
        } else {
            0.0
        },
        end_to_end: e2e.summary(),
        cpu: cpu_from.until(&cpu_to, delivered),
    })
}

/// Sends every round (one call per chunk of recipients) with at most `window` calls in
/// flight; returns, per round, which chunks were ACKed.
async fn send_rounds(
    sender: &Client,
    chunks: &[Vec<String>],
    options: &FanoutOptions,
    clock: Clock,
) -> Vec<Vec<bool>> {
    let mut acked = vec![vec![false; chunks.len()]; options.rounds];
    let mut inflight = FuturesUnordered::new();
    let calls = (0..options.rounds).flat_map(|round| (0..chunks.len()).map(move |c| (round, c)));
    for (round, chunk) in calls {
        let stamp = Stamp {
            tag: 0,
            seq: round as u64,
            sent_us: clock.now_us(),
        };
        let text = body::encode(stamp, options.size);
        let messages: Vec<Outgoing> = chunks[chunk]
            .iter()
            .map(|to| Outgoing::new(to.clone(), text.clone()))
            .collect();
        inflight.push(async move {
            let ok = sender.send_many(&messages).await.is_ok();
            (round, chunk, ok)
        });
        if inflight.len() >= options.window
            && let Some((round, chunk, ok)) = inflight.next().await
        {
            acked[round][chunk] = ok;
        }
    }
    while let Some((round, chunk, ok)) = inflight.next().await {
        acked[round][chunk] = ok;
    }
    acked
}

async fn receive(
    client: Client,
    clock: Clock,
    total: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
) -> Received {
    let mut out = Received::default();
    loop {
        let delivery = tokio::select! {
            d = client.next_delivery() => d,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let Some(delivery) = delivery else { break };
        let now = Instant::now();
        for message in &delivery.messages {
            let Some(stamp) = body::decode(&message.message) else {
                continue;
            };
            let Ok(round) = usize::try_from(stamp.seq) else {
                continue;
            };
            if out.counts.len() <= round {
                out.counts.resize(round + 1, 0);
            }
            out.counts[round] += 1;
            if out.counts[round] == 1 {
                total.fetch_add(1, Ordering::AcqRel);
                out.e2e
                    .record_us(clock.us_at(now).saturating_sub(stamp.sent_us));
                out.last = Some(now);
            }
        }
    }
    out
}

impl std::fmt::Display for FanoutReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            FanoutMode::Devices(n) => format!("one user with {n} devices"),
            FanoutMode::Users(n) => format!("one sender to {n} users"),
        };
        writeln!(f, "fanout: {mode}, {} rounds, {} B", self.rounds, self.size)?;
        writeln!(
            f,
            "  {} deliveries in {:.2} s = {:.0} deliveries/s",
            self.delivered, self.elapsed_s, self.deliveries_per_s
        )?;
        writeln!(f, "  end-to-end   {}", self.end_to_end)?;
        writeln!(
            f,
            "  calls {} acked {} failed {}  expected {}  lost {}  duplicates {}",
            self.calls,
            self.acked_calls,
            self.failed_calls,
            self.expected,
            self.lost,
            self.duplicates
        )?;
        write!(f, "{}", self.cpu)
    }
}
