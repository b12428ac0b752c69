//! `p2p`: N sender/receiver pairs. Each sender sends to its own receiver, one message per
//! `msg.send`, with at most `window` sends waiting for their ACK; each receiver acks every
//! `msg.recv` at once. Messages sent during the warm-up are checked for loss but not measured.
//! With `Protocol::Mqtt` the same pairs speak MQTT to a broker instead (`peer`): a QoS 1
//! PUBLISH to the receiver's topic, acked by PUBACK both ways.
//!
//! A message counts as lost when the server ACKed its `msg.send` but the receiver had not got
//! it when the drain period after the run ended; as duplicated when the receiver got it more
//! than once (the client sees every redelivery, it does not dedupe).

use crate::body::{self, Clock, Stamp};
use crate::connect;
use crate::error::BenchError;
use crate::latency::{Latencies, LatencySummary};
use crate::peer::{self, Peer, Protocol};
use crate::resources::{CpuReport, CpuSample, Watched};
use crate::tokens::TokenSource;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How fast all senders together send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the window allows.
    Max,
    /// This many messages per second in total, spread evenly over the pairs.
    PerSecond(f64),
}

/// What `p2p` runs.
#[derive(Debug, Clone)]
pub struct P2pOptions {
    /// Servers; pair i's sender uses `urls[i % n]` and its receiver `urls[(i + 1) % n]`, so
    /// with several instances every message crosses instances.
    pub urls: Vec<String>,
    /// What the servers speak.
    pub protocol: Protocol,
    pub pairs: usize,
    /// Message body size in bytes.
    pub size: usize,
    pub rate: Rate,
    /// `msg.send` calls per sender waiting for their ACK at most.
    pub window: usize,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    pub warmup: Duration,
    /// How long to wait after the run for ACKed messages still on their way.
    pub drain: Duration,
    /// The server (and a store process serving it), for their CPU time.
    pub processes: Watched,
    /// Handshakes in progress at once while connecting.
    pub connect_concurrency: usize,
    /// Gives every message a client id (`"<pair>-<seq>"`), as `titan-client`'s
    /// `ReconnectingClient` does, so the server checks each for a retry. Titan only.
    pub client_ids: bool,
}

/// The figures of one `p2p` run.
#[derive(Debug, Clone, Serialize)]
pub struct P2pReport {
    /// `"titan"`, or `"mqtt"` for the baseline.
    pub protocol: &'static str,
    pub pairs: usize,
    pub size: usize,
    pub window: usize,
    /// Asked total rate; `None` for max.
    pub rate: Option<f64>,
    /// Every message carried a client id.
    pub client_ids: bool,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// `msg.send` calls made (whole run, warm-up included).
    pub sent: u64,
    /// Of those, ACKed by the server.
    pub acked: u64,
    /// Of those, answered with an error or not at all; by error.
    pub send_errors: BTreeMap<String, u64>,
    /// Distinct messages received.
    pub delivered: u64,
    /// ACKed but never received within the drain period.
    pub lost: u64,
    /// Extra receipts of a message already received.
    pub duplicates: u64,
    /// Received although their `msg.send` got no ACK (e.g. the call timed out after storing).
    pub delivered_unacked: u64,
    /// Messages whose body was not one of this run's.
    pub foreign: u64,
    /// Messages received during the measured time.
    pub measured_delivered: u64,
    /// Received per second during the measured time.
    pub delivered_per_s: f64,
    /// ACKs per second during the measured time.
    pub acked_per_s: f64,
    /// Send to receipt, for messages sent during the measured time.
    pub end_to_end: LatencySummary,
    /// Send to ACK, for messages sent during the measured time.
    pub send_to_ack: LatencySummary,
    /// CPU over the measured time, per message received in it.
    pub cpu: CpuReport,
}

/// Timing shared by every task of a run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    clock: Clock,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    interval: Option<Duration>,
    window: usize,
    size: usize,
    client_ids: bool,
}

impl Plan {
    fn measured(&self, at: Instant) -> bool {
        at >= self.measure_from && at < self.end
    }
}

/// Counters the drain loop watches.
#[derive(Debug, Default)]
struct Progress {
    acked: AtomicU64,
    received: AtomicU64,
}

#[derive(Debug, Default)]
struct SendOutcome {
    acked: Vec<bool>,
    errors: BTreeMap<String, u64>,
    ack_latency: Latencies,
    acked_in_window: u64,
}

#[derive(Debug, Default)]
struct RecvOutcome {
    counts: Vec<u32>,
    e2e: Latencies,
    received_in_window: u64,
    foreign: u64,
}

/// Runs the load and returns its figures.
pub async fn run(options: &P2pOptions, tokens: &TokenSource) -> Result<P2pReport, BenchError> {
    if options.urls.is_empty() || options.pairs == 0 || options.window == 0 {
        return Err(BenchError::Options(
            "p2p needs at least one url, one pair and a window of at least 1".into(),
        ));
    }
    if options.client_ids && options.protocol != Protocol::Titan {
        return Err(BenchError::Options(
            "client ids are Titan's: MQTT has no such field".into(),
        ));
    }
    let interval = match options.rate {
        Rate::Max => None,
        Rate::PerSecond(r) if r > 0.0 => Some(Duration::from_secs_f64(options.pairs as f64 / r)),
        Rate::PerSecond(r) => return Err(BenchError::Options(format!("bad rate {r}"))),
    };
    let (receivers, senders, targets) = peer::open_pairs(
        options.protocol,
        options.pairs,
        &format!("p2p-{}", connect::run_id()),
        &options.urls,
        tokens,
        options.connect_concurrency,
    )
    .await?;

    let start = Instant::now();
    let measure_from = start + options.warmup;
    let plan = Plan {
        clock: Clock::start(),
        start,
        measure_from,
        end: measure_from + options.duration,
        interval,
        window: options.window,
        size: options.size,
        client_ids: options.client_ids,
    };
    let progress = Arc::new(Progress::default());
    let (stop, stopped) = watch::channel(false);
    let receiving: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(tag, client)| {
            let progress = progress.clone();
            let stopped = stopped.clone();
            tokio::spawn(receive(client, tag as u64, plan, progress, stopped))
        })
        .collect();
    let sending: Vec<_> = senders
        .into_iter()
        .zip(targets)
        .enumerate()
        .map(|(tag, (client, to))| {
            // Senders are spread evenly over one interval: a fixed rate is then a steady
            // stream, not every sender at once (a burst of `pairs` messages) each interval.
            let phase = interval.map_or(Duration::ZERO, |i| {
                i.mul_f64(tag as f64 / options.pairs as f64)
            });
            let first = plan.start + phase;
            tokio::spawn(send(client, to, tag as u64, plan, first, progress.clone()))
        })
        .collect();

    tokio::time::sleep_until(plan.measure_from.into()).await;
    let cpu_from = CpuSample::take(options.processes);
    tokio::time::sleep_until(plan.end.into()).await;
    let cpu_to = CpuSample::take(options.processes);

    let mut sent_outcomes = Vec::with_capacity(sending.len());
    for task in sending {
        sent_outcomes.push(
            task.await
                .map_err(|e| BenchError::system("sender task", e))?,
        );
    }
    let drain_until = Instant::now() + options.drain;
    while progress.received.load(Ordering::Acquire) < progress.acked.load(Ordering::Acquire)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    let mut recv_outcomes = Vec::with_capacity(receiving.len());
    for task in receiving {
        recv_outcomes.push(
            task.await
                .map_err(|e| BenchError::system("receiver task", e))?,
        );
    }
    Ok(tally(
        options,
        &sent_outcomes,
        &recv_outcomes,
        cpu_from,
        cpu_to,
    ))
}

fn tally(
    options: &P2pOptions,
    sent: &[SendOutcome],
    received: &[RecvOutcome],
    cpu_from: CpuSample,
    cpu_to: CpuSample,
) -> P2pReport {
    let mut report_errors = BTreeMap::new();
    let (mut total_sent, mut acked, mut delivered, mut lost, mut dups, mut unacked) =
        (0, 0, 0, 0, 0, 0);
    let mut ack_latency = Latencies::new();
    let mut e2e = Latencies::new();
    let (mut acked_in_window, mut received_in_window, mut foreign) = (0, 0, 0);
    for (s, r) in sent.iter().zip(received) {
        total_sent += s.acked.len() as u64;
        for (error, count) in &s.errors {
            *report_errors.entry(error.clone()).or_insert(0) += count;
        }
        ack_latency.merge(&s.ack_latency);
        e2e.merge(&r.e2e);
        acked_in_window += s.acked_in_window;
        received_in_window += r.received_in_window;
        foreign += r.foreign;
        let seqs = s.acked.len().max(r.counts.len());
        for seq in 0..seqs {
            let was_acked = s.acked.get(seq).copied().unwrap_or(false);
            let count = u64::from(r.counts.get(seq).copied().unwrap_or(0));
            acked += u64::from(was_acked);
            delivered += u64::from(count > 0);
            dups += count.saturating_sub(1);
            match (was_acked, count) {
                (true, 0) => lost += 1,
                (false, c) if c > 0 => unacked += 1,
                _ => {}
            }
        }
    }
    let secs = options.duration.as_secs_f64();
    P2pReport {
        protocol: options.protocol.name(),
        pairs: options.pairs,
        size: options.size,
        window: options.window,
        rate: match options.rate {
            Rate::Max => None,
            Rate::PerSecond(r) => Some(r),
        },
        client_ids: options.client_ids,
        warmup_s: options.warmup.as_secs_f64(),
        duration_s: secs,
        sent: total_sent,
        acked,
        send_errors: report_errors,
        delivered,
        lost,
        duplicates: dups,
        delivered_unacked: unacked,
        foreign,
        measured_delivered: received_in_window,
        delivered_per_s: received_in_window as f64 / secs,
        acked_per_s: acked_in_window as f64 / secs,
        end_to_end: e2e.summary(),
        send_to_ack: ack_latency.summary(),
        cpu: cpu_from.until(&cpu_to, received_in_window),
    }
}

/// One sender: keeps up to `window` `msg.send` calls in flight until the end of the run; at a
/// fixed rate, sends one message every interval from `first` on.
async fn send(
    client: Peer,
    to: String,
    tag: u64,
    plan: Plan,
    first: Instant,
    progress: Arc<Progress>,
) -> SendOutcome {
    let mut out = SendOutcome::default();
    let client = &client;
    let mut inflight = FuturesUnordered::new();
    let mut next_due = first;
    loop {
        let now = Instant::now();
        if now >= plan.end {
            break;
        }
        let due = plan.interval.is_none() || now >= next_due;
        if inflight.len() < plan.window && due {
            let seq = out.acked.len() as u64;
            out.acked.push(false);
            let sent_at = Instant::now();
            let stamp = Stamp {
                tag,
                seq,
                sent_us: plan.clock.us_at(sent_at),
            };
            let message = body::encode(stamp, plan.size);
            let to = to.as_str();
            let client_id = plan.client_ids.then(|| format!("{tag}-{seq}"));
            inflight.push(async move {
                let result = client.send(to, message, client_id).await;
                (seq, sent_at, result)
            });
            if let Some(interval) = plan.interval {
                next_due += interval;
            }
            continue;
        }
        let pacing = plan.interval.is_some() && inflight.len() < plan.window;
        tokio::select! {
            Some(done) = inflight.next(), if !inflight.is_empty() => {
                settle(&mut out, done, &plan, &progress);
            }
            () = tokio::time::sleep_until(next_due.into()), if pacing => {}
            () = tokio::time::sleep_until(plan.end.into()) => break,
        }
    }
    while let Some(done) = inflight.next().await {
        settle(&mut out, done, &plan, &progress);
    }
    out
}

fn settle(
    out: &mut SendOutcome,
    (seq, sent_at, result): (u64, Instant, Result<(), String>),
    plan: &Plan,
    progress: &Progress,
) {
    let now = Instant::now();
    match result {
        Ok(()) => {
            if let Some(slot) = usize::try_from(seq).ok().and_then(|s| out.acked.get_mut(s)) {
                *slot = true;
            }
            progress.acked.fetch_add(1, Ordering::AcqRel);
            if plan.measured(sent_at) {
                out.ack_latency.record(now.duration_since(sent_at));
            }
            if plan.measured(now) {
                out.acked_in_window += 1;
            }
        }
        Err(key) => {
            *out.errors.entry(key).or_insert(0) += 1;
        }
    }
}

/// One receiver: records every message until told to stop (its client acks by itself).
async fn receive(
    client: Peer,
    tag: u64,
    plan: Plan,
    progress: Arc<Progress>,
    mut stopped: watch::Receiver<bool>,
) -> RecvOutcome {
    let mut out = RecvOutcome::default();
    let from_us = plan.clock.us_at(plan.measure_from);
    let end_us = plan.clock.us_at(plan.end);
    loop {
        let received = tokio::select! {
            r = client.next() => r,
            _ = stopped.wait_for(|s| *s) => break,
        };
        let Some(received) = received else { break };
        let now = Instant::now();
        let now_us = plan.clock.us_at(now);
        received.for_each_body(|message| {
            let Some(stamp) = body::decode(message).filter(|s| s.tag == tag) else {
                out.foreign += 1;
                return;
            };
            let Ok(seq) = usize::try_from(stamp.seq) else {
                out.foreign += 1;
                return;
            };
            if out.counts.len() <= seq {
                out.counts.resize(seq + 1, 0);
            }
            out.counts[seq] += 1;
            if out.counts[seq] > 1 {
                return;
            }
            progress.received.fetch_add(1, Ordering::AcqRel);
            if (from_us..end_us).contains(&stamp.sent_us) {
                out.e2e.record_us(now_us.saturating_sub(stamp.sent_us));
            }
            if plan.measured(now) {
                out.received_in_window += 1;
            }
        });
    }
    out
}

impl std::fmt::Display for P2pReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = self
            .rate
            .map_or_else(|| "max".to_owned(), |r| format!("{r:.0} msg/s"));
        let protocol = match self.protocol {
            "titan" => String::new(),
            other => format!(" over {other}"),
        };
        writeln!(
            f,
            "p2p{protocol}: {} pairs, {} B, window {}, rate {rate}{}, warm-up {:.1} s, measured {:.1} s",
            self.pairs,
            self.size,
            self.window,
            if self.client_ids { ", client ids" } else { "" },
            self.warmup_s,
            self.duration_s
        )?;
        writeln!(
            f,
            "  delivered {:.0} msg/s, acked {:.0} msg/s (measured)",
            self.delivered_per_s, self.acked_per_s
        )?;
        writeln!(f, "  end-to-end   {}", self.end_to_end)?;
        writeln!(f, "  send-to-ACK  {}", self.send_to_ack)?;
        writeln!(
            f,
            "  sent {}  acked {}  delivered {}  lost {}  duplicates {}  delivered-unacked {}  foreign {}",
            self.sent,
            self.acked,
            self.delivered,
            self.lost,
            self.duplicates,
            self.delivered_unacked,
            self.foreign
        )?;
        for (error, count) in &self.send_errors {
            writeln!(f, "  send error {error}: {count}")?;
        }
        write!(f, "{}", self.cpu)
    }
}
