//! `machine`: what this machine charges for the three things a paced message makes the server do
//! many times over, and how fast it computes, so that figures from different machines (or of
//! one machine at different hours) can be read side by side
//! (docs/benchmarks.md, eleventh set). On the virtual machines these benchmarks run on, the
//! same build needed 7–8 µs of server CPU per message at maximum load and 68 µs at a fixed
//! 10,000/s on one machine, 15–17 and 106–116 µs on another, and what differs most between such
//! machines is less the speed of computation than the price of the first three:
//!
//! - **sleep**: a thread sleeps 100 µs and wakes up (`std::thread::sleep`): the price of a
//!   thread going idle and being woken by a timer, which every thread of the server pays each
//!   time it runs out of work.
//! - **hand-off**: a round trip between two threads over channels (`std::sync::mpsc`), each
//!   side blocked until the other answers: the price of the two wake-ups a hand-off between
//!   threads (session worker, Dispatcher, store writer, sync thread) costs when the receiving
//!   thread was idle.
//! - **fdatasync**: a 512-byte append to a file in `--dir` followed by `fdatasync`, what the
//!   embedded store's journal does for each group of batches.
//! - **compute**: 100 `msg.recv` requests (JSON, a 100-byte message each) parsed and written
//!   again: plain user-space work, so that a machine whose speed drifts within the hour (the
//!   same binary's p2p maximum moving by half between runs, seventeenth set) shows it here too.
//!
//! Each reports the CPU time this process used per round (user and system, all its threads)
//! and the wall time of a round as percentiles.

use crate::error::BenchError;
use crate::latency::{Latencies, LatencySummary};
use crate::resources::own_cpu_seconds;
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long each round of the sleep probe sleeps.
pub const SLEEP: Duration = Duration::from_micros(100);

/// Bytes appended before each `fdatasync` (a journal frame of a few small messages).
const APPEND: usize = 512;

/// Documents parsed and written per round of the compute probe.
const COMPUTE_DOCS: usize = 100;

/// What the compute probe parses and writes: a `msg.recv` as the server sends it.
const COMPUTE_DOC: &str = r#"{"jsonrpc":"2.0","method":"msg.recv","id":17,"params":{"messages":[{"id":"0192f0c4-8a3b-7c1d-9e2f-3a4b5c6d7e8f","from":"p2p-1796039815725-17-s","message":"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkl","ts":1796039815725}]}}"#;

/// What `machine` runs.
#[derive(Debug, Clone)]
pub struct MachineOptions {
    /// Directory for the `fdatasync` probe's file (the disk being measured); the file is
    /// removed afterwards.
    pub dir: PathBuf,
    /// Rounds of the sleep and `fdatasync` probes; the hand-off probe runs ten times as many.
    pub rounds: usize,
}

/// The cost of one probe.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    pub rounds: u64,
    /// CPU time of this process (all threads, user + system) per round, in µs.
    pub cpu_us_per_round: f64,
    /// Wall time per round.
    pub wall: LatencySummary,
}

/// The figures of one `machine` run.
#[derive(Debug, Clone, Serialize)]
pub struct MachineReport {
    /// CPUs this process may run on.
    pub cpus: usize,
    pub sleep_100us: Cost,
    pub handoff_round_trip: Cost,
    pub fdatasync_512b: Cost,
    /// 100 JSON `msg.recv` documents parsed and written per round.
    pub compute_json_100: Cost,
}

/// Runs the three probes, one after the other, on the calling thread (and one peer thread for
/// the hand-off).
pub fn run(options: &MachineOptions) -> Result<MachineReport, BenchError> {
    if options.rounds == 0 {
        return Err(BenchError::Options("machine needs at least 1 round".into()));
    }
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let sleep_100us = measure(options.rounds, |_| {
        std::thread::sleep(SLEEP);
        Ok(())
    })?;
    let handoff_round_trip = handoff(options.rounds.saturating_mul(10))?;
    let fdatasync_512b = fdatasync(options)?;
    let compute_json_100 = measure(options.rounds, |_| {
        for _ in 0..COMPUTE_DOCS {
            let doc: serde_json::Value = serde_json::from_str(std::hint::black_box(COMPUTE_DOC))
                .map_err(|e| BenchError::system("compute probe", e))?;
            let text =
                serde_json::to_string(&doc).map_err(|e| BenchError::system("compute probe", e))?;
            std::hint::black_box(text);
        }
        Ok(())
    })?;
    Ok(MachineReport {
        cpus,
        sleep_100us,
        handoff_round_trip,
        fdatasync_512b,
        compute_json_100,
    })
}

/// Runs `round` `rounds` times, timing each, and the CPU this process used meanwhile.
fn measure(
    rounds: usize,
    mut round: impl FnMut(usize) -> Result<(), BenchError>,
) -> Result<Cost, BenchError> {
    let mut wall = Latencies::new();
    let cpu_from = own_cpu_seconds()?;
    for i in 0..rounds {
        let started = Instant::now();
        round(i)?;
        wall.record(started.elapsed());
    }
    let cpu = own_cpu_seconds()? - cpu_from;
    Ok(Cost {
        rounds: rounds as u64,
        cpu_us_per_round: cpu * 1e6 / rounds as f64,
        wall: wall.summary(),
    })
}

/// Round trips with a peer thread: send a number, wait for it to come back.
fn handoff(rounds: usize) -> Result<Cost, BenchError> {
    let (to_peer, peer_inbox) = mpsc::sync_channel::<usize>(1);
    let (to_us, our_inbox) = mpsc::sync_channel::<usize>(1);
    let peer = std::thread::Builder::new()
        .name("titan-bench-peer".into())
        .spawn(move || {
            // Ends when the sending side is dropped below.
            while let Ok(n) = peer_inbox.recv() {
                if to_us.send(n).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| BenchError::system("starting the hand-off peer", e))?;
    let cost = measure(rounds, |i| {
        to_peer
            .send(i)
            .map_err(|e| BenchError::system("hand-off", e))?;
        match our_inbox.recv() {
            Ok(n) if n == i => Ok(()),
            Ok(n) => Err(BenchError::system(
                "hand-off",
                format!("got {n} back, sent {i}"),
            )),
            Err(e) => Err(BenchError::system("hand-off", e)),
        }
    });
    drop(to_peer);
    peer.join()
        .map_err(|_| BenchError::system("hand-off peer", "panicked"))?;
    cost
}

/// Appends and syncs a file of its own in `dir`, removed afterwards whatever happens.
fn fdatasync(options: &MachineOptions) -> Result<Cost, BenchError> {
    let path = options
        .dir
        .join(format!("titan-bench-probe-{}.tmp", std::process::id()));
    let what = path.display().to_string();
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| BenchError::system(&what, e))?;
    let frame = [0x5a_u8; APPEND];
    let cost = measure(options.rounds, |_| {
        file.write_all(&frame)
            .and_then(|()| file.sync_data())
            .map_err(|e| BenchError::system(&what, e))
    });
    drop(file);
    let removed = std::fs::remove_file(&path).map_err(|e| BenchError::system(&what, e));
    let cost = cost?;
    removed?;
    Ok(cost)
}

impl std::fmt::Display for MachineReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "machine: {} CPUs available to this process", self.cpus)?;
        for (name, cost) in [
            ("sleep 100 us        ", &self.sleep_100us),
            ("hand-off round trip ", &self.handoff_round_trip),
            ("512 B + fdatasync   ", &self.fdatasync_512b),
            ("compute (100 JSON)  ", &self.compute_json_100),
        ] {
            writeln!(
                f,
                "  {name} cpu {:7.1} us per round; wall {} ({} rounds)",
                cost.cpu_us_per_round, cost.wall, cost.rounds
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// Every probe runs its rounds, measures something, and leaves no file behind.
    #[test]
    fn probes_run_their_rounds_and_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let options = MachineOptions {
            dir: dir.path().to_path_buf(),
            rounds: 20,
        };
        let report = run(&options).unwrap();
        assert!(report.cpus >= 1);
        assert_eq!(report.sleep_100us.rounds, 20);
        assert_eq!(report.handoff_round_trip.rounds, 200);
        assert_eq!(report.compute_json_100.rounds, 20);
        assert!(report.compute_json_100.cpu_us_per_round > 0.0);
        assert_eq!(report.fdatasync_512b.rounds, 20);
        for cost in [
            &report.sleep_100us,
            &report.handoff_round_trip,
            &report.fdatasync_512b,
        ] {
            assert_eq!(cost.wall.count, cost.rounds, "every round timed");
            assert!(cost.cpu_us_per_round.is_finite() && cost.cpu_us_per_round >= 0.0);
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe file removed"
        );
    }

    #[test]
    fn zero_rounds_is_refused() {
        let options = MachineOptions {
            dir: std::env::temp_dir(),
            rounds: 0,
        };
        assert!(matches!(run(&options), Err(BenchError::Options(_))));
    }

    /// The fdatasync probe refuses a directory it cannot write to rather than measuring nothing.
    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let options = MachineOptions {
            dir: dir.path().join("absent"),
            rounds: 1,
        };
        assert!(matches!(run(&options), Err(BenchError::System { .. })));
    }
}
