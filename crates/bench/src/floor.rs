//! `floor`: the p2p load's shape with no server in it, to tell what the machine charges for the
//! shape itself from what a server adds. A relay thread stands in for the server and does
//! nothing but move frames: for each message a sender writes, it writes an ack back and forwards
//! the message to the pair's receiver, which writes its own ack; four frames per message over
//! loopback TCP, as a `msg.send`, its `"ACK"`, the `msg.recv` and its ack are. No WebSocket, no
//! JSON, no store, no other thread: the relay is one thread with its own event loop (as
//! Mosquitto is), the generator runs on this process's runtime as `p2p`'s does, paced the same
//! way (senders spread evenly over one interval).
//!
//! Frames are a little-endian `u16` length and that many bytes. A connection's first frame says
//! what it is: `s` or `r` and the pair's index (`u32`). A message is its sequence number
//! (`u64`), the time it was sent (`u64` µs of the run's clock) and padding up to `size`; an ack
//! is the sequence number.
//!
//! On a machine where even this misses a latency limit at some rate, no server can meet it there
//! with the load generator on the same cores (docs/benchmarks.md, seventeenth set).

use crate::error::BenchError;
use crate::latency::{Latencies, LatencySummary};
use crate::resources::{CpuReport, CpuSample, Watched, own_thread_cpu_seconds};
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

mod relay;
use relay::{Relay, start_relay};

/// What `floor` runs.
#[derive(Debug, Clone)]
pub struct FloorOptions {
    pub pairs: usize,
    /// Message size in bytes (at least 16: sequence number and send time).
    pub size: usize,
    /// Messages per second in total, spread evenly over the pairs.
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
}

/// The figures of one `floor` run.
#[derive(Debug, Clone, Serialize)]
pub struct FloorReport {
    pub pairs: usize,
    pub size: usize,
    pub rate: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Messages written by the senders (whole run).
    pub sent: u64,
    /// Of those, acked by the relay.
    pub acked: u64,
    /// Messages received by the receivers (whole run).
    pub delivered: u64,
    /// Received per second during the measured time.
    pub delivered_per_s: f64,
    /// Send to receipt, for messages received during the measured time.
    pub end_to_end: LatencySummary,
    /// The relay thread's CPU per message received in the measured time (the "server").
    pub relay_cpu_us_per_msg: Option<f64>,
    /// The rest of this process (the generator) per message.
    pub generator_cpu_us_per_msg: Option<f64>,
    /// Cores busy on the whole machine during the measured time (tasks and interrupts).
    pub busy_cores: Option<f64>,
    /// Of those, interrupt handling (on loopback, mostly the receiving side of TCP).
    pub interrupt_cores: Option<f64>,
    /// As `p2p` reports it, with no server: "bench" is this whole process, relay included.
    pub cpu: CpuReport,
}

/// Size of a message's header: sequence number and send time.
const HEADER: usize = 16;

/// How long ACKed messages may take to arrive after the senders stop.
const DRAIN: Duration = Duration::from_secs(5);

/// How long the relay waits for all connections: a generator that failed to connect them all
/// must not leave the relay's thread waiting forever.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

fn io_error(what: &str) -> impl Fn(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::system(what, e)
}

/// Appends one frame holding `body` to `out`.
fn frame(out: &mut Vec<u8>, body: &[u8]) {
    // Bodies are at most a few KiB here (size is checked against u16 in `run`).
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(body);
}

/// Calls `each` with every whole frame at the start of `buf` and removes them.
fn take_frames(buf: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
    let mut at = 0;
    while let Some(len) = buf
        .get(at..at + 2)
        .map(|l| usize::from(u16::from_le_bytes([l[0], l[1]])))
    {
        let Some(body) = buf.get(at + 2..at + 2 + len) else {
            break;
        };
        each(body);
        at += 2 + len;
    }
    buf.drain(..at);
}

/// Reads more bytes into `buf`; `false` at the end of the stream.
async fn fill(read: &mut OwnedReadHalf, buf: &mut Vec<u8>) -> Result<bool, BenchError> {
    buf.reserve(8192);
    let n = read.read_buf(buf).await.map_err(io_error("floor read"))?;
    Ok(n > 0)
}

fn u64_at(body: &[u8], at: usize) -> Option<u64> {
    body.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
}

async fn send(to: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), BenchError> {
    to.write_all(bytes).await.map_err(io_error("floor write"))
}

/// Counters shared by the generator's tasks.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    acked: AtomicU64,
    delivered: AtomicU64,
    measured: AtomicU64,
}

async fn connect(
    addr: std::net::SocketAddr,
    role: u8,
    index: usize,
) -> Result<TcpStream, BenchError> {
    let mut socket = TcpStream::connect(addr)
        .await
        .map_err(io_error("floor connect"))?;
    socket
        .set_nodelay(true)
        .map_err(io_error("floor nodelay"))?;
    let mut hello = Vec::with_capacity(7);
    let index = u32::try_from(index).map_err(|_| BenchError::Options("too many pairs".into()))?;
    let mut body = vec![role];
    body.extend_from_slice(&index.to_le_bytes());
    frame(&mut hello, &body);
    socket
        .write_all(&hello)
        .await
        .map_err(io_error("floor hello"))?;
    Ok(socket)
}

/// Runs the relay and the load, and returns the figures.
pub async fn run(options: &FloorOptions) -> Result<FloorReport, BenchError> {
    if options.pairs == 0
        || options.size < HEADER
        || options.size > usize::from(u16::MAX)
        || options.rate <= 0.0
    {
        return Err(BenchError::Options(
            "floor needs at least one pair, a size of 16 to 65535 bytes and a rate above 0".into(),
        ));
    }
    let Relay {
        addr,
        tid: relay_tid,
        thread: relay_thread,
    } = start_relay(options.pairs)?;
    let mut receivers = Vec::with_capacity(options.pairs);
    let mut senders = Vec::with_capacity(options.pairs);
    for i in 0..options.pairs {
        receivers.push(connect(addr, b'r', i).await?);
        senders.push(connect(addr, b's', i).await?);
    }
    let clock = Instant::now();
    let start = clock + Duration::from_millis(100);
    let measure_from = start + options.warmup;
    let end = measure_from + options.duration;
    let interval = Duration::from_secs_f64(options.pairs as f64 / options.rate);
    let counts = Arc::new(Counts::default());

    let mut receiving = Vec::with_capacity(options.pairs);
    for socket in receivers {
        let counts = counts.clone();
        receiving.push(tokio::spawn(async move {
            let (mut read, mut write) = socket.into_split();
            let (mut buf, mut acks) = (Vec::new(), Vec::new());
            let mut latencies = Latencies::new();
            while fill(&mut read, &mut buf).await? {
                let now = Instant::now();
                let now_us = now.duration_since(clock).as_micros() as u64;
                let measured = now >= measure_from && now < end;
                take_frames(&mut buf, |body| {
                    counts.delivered.fetch_add(1, Ordering::Relaxed);
                    if measured {
                        counts.measured.fetch_add(1, Ordering::Relaxed);
                        let sent_us = u64_at(body, 8).unwrap_or(now_us);
                        latencies.record_us(now_us.saturating_sub(sent_us));
                    }
                    frame(&mut acks, body.get(..8).unwrap_or(body));
                });
                if !acks.is_empty() {
                    send(&mut write, &acks).await?;
                    acks.clear();
                }
            }
            Ok::<Latencies, BenchError>(latencies)
        }));
    }
    let mut sending = Vec::with_capacity(options.pairs);
    for (i, socket) in senders.into_iter().enumerate() {
        let counts = counts.clone();
        let size = options.size;
        let first = start + interval.mul_f64(i as f64 / options.pairs as f64);
        sending.push(tokio::spawn(async move {
            let (mut read, mut write) = socket.into_split();
            let acks = {
                let counts = counts.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while fill(&mut read, &mut buf).await? {
                        take_frames(&mut buf, |_| {
                            counts.acked.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                    Ok::<(), BenchError>(())
                })
            };
            let mut ticks = tokio::time::interval_at(first.into(), interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut body = vec![0u8; size];
            let mut out = Vec::with_capacity(size + 2);
            for seq in 0u64.. {
                let due = ticks.tick().await;
                if Instant::from(due) >= end {
                    break;
                }
                let sent_us = Instant::now().duration_since(clock).as_micros() as u64;
                body[..8].copy_from_slice(&seq.to_le_bytes());
                body[8..HEADER].copy_from_slice(&sent_us.to_le_bytes());
                out.clear();
                frame(&mut out, &body);
                send(&mut write, &out).await?;
                counts.sent.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, BenchError>((write, acks))
        }));
    }

    let watched = Watched::default();
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = CpuSample::take(watched);
    let relay_from = own_thread_cpu_seconds(relay_tid).ok();
    tokio::time::sleep_until(end.into()).await;
    let cpu_to = CpuSample::take(watched);
    let relay_to = own_thread_cpu_seconds(relay_tid).ok();

    let mut open = Vec::with_capacity(sending.len());
    for task in sending {
        open.push(
            task.await
                .map_err(|e| BenchError::system("floor sender", e))??,
        );
    }
    let drain_until = Instant::now() + DRAIN;
    while counts.delivered.load(Ordering::Relaxed) < counts.sent.load(Ordering::Relaxed)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Closing the senders' write sides ends the relay's tasks, which close the receivers'.
    for (mut write, acks) in open {
        let _ = write.shutdown().await;
        acks.await
            .map_err(|e| BenchError::system("floor acks", e))??;
    }
    let mut latencies = Latencies::new();
    for task in receiving {
        latencies.merge(
            &task
                .await
                .map_err(|e| BenchError::system("floor receiver", e))??,
        );
    }
    relay_thread
        .join()
        .map_err(|_| BenchError::system("floor relay", "the relay thread panicked"))??;

    let measured = counts.measured.load(Ordering::Relaxed);
    let cpu = cpu_from.until(&cpu_to, measured);
    let per = |secs: f64| (measured > 0).then(|| secs * 1e6 / measured as f64);
    let wall = cpu.wall_s.max(f64::MIN_POSITIVE);
    let relay_s = relay_to.zip(relay_from).map(|(b, a)| b - a);
    Ok(FloorReport {
        pairs: options.pairs,
        size: options.size,
        rate: options.rate,
        warmup_s: options.warmup.as_secs_f64(),
        duration_s: options.duration.as_secs_f64(),
        sent: counts.sent.load(Ordering::Relaxed),
        acked: counts.acked.load(Ordering::Relaxed),
        delivered: counts.delivered.load(Ordering::Relaxed),
        delivered_per_s: measured as f64 / options.duration.as_secs_f64(),
        end_to_end: latencies.summary(),
        relay_cpu_us_per_msg: relay_s.and_then(per),
        generator_cpu_us_per_msg: relay_s.and_then(|r| per(cpu.bench_cpu_s - r)),
        busy_cores: cpu.busy_s.map(|busy| busy / wall),
        interrupt_cores: cpu.interrupts_s.map(|irq| irq / wall),
        cpu,
    })
}

impl std::fmt::Display for FloorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let us = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.1} us"));
        let cores = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.2}"));
        writeln!(
            f,
            "floor (raw TCP relay, no server): {} pairs, {} B, rate {:.0} msg/s, warm-up {:.1} s, measured {:.1} s",
            self.pairs, self.size, self.rate, self.warmup_s, self.duration_s
        )?;
        writeln!(
            f,
            "  delivered {:.0} msg/s (measured)",
            self.delivered_per_s
        )?;
        writeln!(f, "  end-to-end   {}", self.end_to_end)?;
        writeln!(
            f,
            "  sent {}  acked by the relay {}  delivered {}",
            self.sent, self.acked, self.delivered
        )?;
        writeln!(
            f,
            "  cpu per delivered message: relay thread {}, generator {}; machine busy {} of its cores, interrupts {}",
            us(self.relay_cpu_us_per_msg),
            us(self.generator_cpu_us_per_msg),
            cores(self.busy_cores),
            cores(self.interrupt_cores)
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Frames split anywhere are taken whole, in order, and a partial one waits.
    #[test]
    fn frames_are_taken_whole() {
        let mut stream = Vec::new();
        frame(&mut stream, b"first");
        frame(&mut stream, &[7u8; 300]);
        let mut buf = stream[..4].to_vec();
        let mut seen = Vec::new();
        take_frames(&mut buf, |b| seen.push(b.len()));
        assert!(seen.is_empty());
        buf.extend_from_slice(&stream[4..stream.len() - 1]);
        take_frames(&mut buf, |b| seen.push(b.len()));
        assert_eq!(seen, [5]);
        buf.extend_from_slice(&stream[stream.len() - 1..]);
        take_frames(&mut buf, |b| seen.push(b.len()));
        assert_eq!(seen, [5, 300]);
        assert!(buf.is_empty());
    }

    /// A short run moves every message through the relay once: each sent message is acked by
    /// the relay and received, and the measured ones are in the histogram.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_message_goes_through_the_relay() {
        let options = FloorOptions {
            pairs: 4,
            size: 100,
            rate: 400.0,
            duration: Duration::from_millis(1000),
            warmup: Duration::from_millis(200),
        };
        let report = run(&options).await.unwrap();
        assert!(report.sent >= 400, "{report}");
        assert_eq!(report.acked, report.sent, "{report}");
        assert_eq!(report.delivered, report.sent, "{report}");
        assert!(report.end_to_end.count >= 300, "{report}");
        assert!(report.relay_cpu_us_per_msg.is_some(), "{report}");
    }
}
