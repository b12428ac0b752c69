//! What a run costs: CPU seconds of this process (getrusage), of the server and of a store
//! process serving it (`/proc/PID/stat`), the server's resident memory (`/proc/PID/status`), and
//! the open-files limit, which bounds how many connections one process can hold.

use crate::error::BenchError;
use nix::sys::resource::{Resource, UsageWho, getrlimit, getrusage, setrlimit};
use nix::unistd::{SysconfVar, sysconf};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

mod threads;
pub use threads::ThreadCpu;

/// CPU seconds (user + system) this process has used.
pub fn own_cpu_seconds() -> Result<f64, BenchError> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).map_err(|e| BenchError::system("getrusage", e))?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

/// CPU seconds (user + system) process `pid` has used, from `/proc/PID/stat`.
pub fn process_cpu_seconds(pid: u32) -> Result<f64, BenchError> {
    stat_cpu_seconds(format!("/proc/{pid}/stat"))
}

/// CPU seconds (user + system) thread `tid` of this process has used (`/proc/PID/stat` of a
/// thread's id counts the whole process; its `task` entry counts the thread).
pub fn own_thread_cpu_seconds(tid: u32) -> Result<f64, BenchError> {
    stat_cpu_seconds(format!("/proc/self/task/{tid}/stat"))
}

fn stat_cpu_seconds(path: String) -> Result<f64, BenchError> {
    let stat = std::fs::read_to_string(&path).map_err(|e| BenchError::system(&path, e))?;
    parse_stat(&stat)
        .map(|(_, cpu)| cpu)
        .ok_or_else(|| BenchError::system(&path, "malformed stat line"))
}

/// A process's or thread's name and CPU seconds (utime + stime) from its `stat` line. The name
/// (field 2, in parentheses) may hold spaces and parentheses itself; the fields after its last
/// closing parenthesis are plain, utime and stime being the 12th and 13th of them.
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some((
        name,
        (ticks(11)? + ticks(12)?) as f64 / clock_ticks_per_second(),
    ))
}

/// CPU seconds of the whole machine (all cores), from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MachineCpu {
    /// Running processes and kernel threads (user, nice, system).
    pub tasks: f64,
    /// Interrupt and softirq handling, charged to no process: on loopback, much of it is the
    /// receiving side of the run's own TCP traffic.
    pub interrupts: f64,
    /// Time the hypervisor gave to other guests while this one wanted it.
    pub steal: f64,
}

/// The machine's CPU seconds so far ([`MachineCpu`]).
pub fn machine_cpu_seconds() -> Result<MachineCpu, BenchError> {
    let stat =
        std::fs::read_to_string("/proc/stat").map_err(|e| BenchError::system("/proc/stat", e))?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if ticks.len() < 7 {
        return Err(BenchError::system("/proc/stat", "no cpu line"));
    }
    // user nice system idle iowait irq softirq steal ...; guest time is already in user.
    let hz = clock_ticks_per_second();
    let secs = |t: u64| t as f64 / hz;
    Ok(MachineCpu {
        tasks: secs(ticks[0] + ticks[1] + ticks[2]),
        interrupts: secs(ticks[5] + ticks[6]),
        steal: secs(ticks.get(7).copied().unwrap_or(0)),
    })
}

fn clock_ticks_per_second() -> f64 {
    sysconf(SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64
}

/// Resident memory of process `pid` in bytes (`VmRSS` of `/proc/PID/status`).
pub fn process_rss_bytes(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| BenchError::system(&path, e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| BenchError::system(&path, "no VmRSS line"))
}

/// The soft open-files limit of process `pid` (`Max open files` of `/proc/PID/limits`).
pub fn process_nofile(pid: u32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The open-files limit of this process before and after [`raise_nofile`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NofileLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises this process's soft open-files limit to its hard limit (each connection is a file).
pub fn raise_nofile() -> Result<NofileLimit, BenchError> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| BenchError::system("getrlimit", e))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(|e| BenchError::system("setrlimit", e))?;
    }
    Ok(NofileLimit {
        soft_before: soft,
        soft: hard,
        hard,
    })
}

/// Context switches (voluntary, involuntary) of every thread of process `pid`, from
/// `/proc/PID/task/*/status`. A voluntary one is a thread that ran out of work and slept until
/// woken: on the virtual machines these figures come from, each costs tens of µs of CPU
/// (`titan-bench machine`), so their number per message explains much of a paced load's cost.
/// Threads that ended are not counted.
pub fn process_context_switches(pid: u32) -> Result<(u64, u64), BenchError> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| BenchError::system(&dir, e))?;
    let (mut voluntary, mut involuntary) = (0, 0);
    for task in tasks.flatten() {
        // A thread may end between listing and reading: skipped (and its switches with it, so
        // the sum is only meaningful for a process whose threads live, like the server's).
        if let Some((v, i)) = task_context_switches(&task.path().join("status")) {
            voluntary += v;
            involuntary += i;
        }
    }
    Ok((voluntary, involuntary))
}

/// Context switches (voluntary, involuntary) of one thread, from its `status` file.
fn task_context_switches(status: &std::path::Path) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(status).ok()?;
    let (mut voluntary, mut involuntary) = (0, 0);
    for line in status.lines() {
        let count = |prefix: &str| {
            line.strip_prefix(prefix)
                .and_then(|rest| rest.trim().parse::<u64>().ok())
        };
        if let Some(n) = count("voluntary_ctxt_switches:") {
            voluntary = n;
        } else if let Some(n) = count("nonvoluntary_ctxt_switches:") {
            involuntary = n;
        }
    }
    Some((voluntary, involuntary))
}

/// Context switches (voluntary, involuntary) of this process, all threads (getrusage).
fn own_context_switches() -> Option<(u64, u64)> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let count = |n: std::os::raw::c_long| u64::try_from(n).unwrap_or(0);
    Some((
        count(usage.voluntary_context_switches()),
        count(usage.involuntary_context_switches()),
    ))
}

/// The processes a run measures besides its own (`--server-pid`, `--store-pid`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Watched {
    /// The server: its CPU time (and, for `idle`, its memory).
    pub server: Option<u32>,
    /// A store process the server uses (a `redis-server` on the same machine): its CPU is part
    /// of what a message costs, so it is reported beside the server's rather than as noise.
    pub store: Option<u32>,
}

/// Other processes' CPU, in cores, above which a run is reported as disturbed: something else
/// (a build, a service waking up) took a tenth of a core from the two processes measured.
pub const DISTURBED_CORES: f64 = 0.1;

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub struct CpuSample {
    at: Instant,
    bench: f64,
    server: Option<f64>,
    store: Option<f64>,
    machine: Option<MachineCpu>,
    bench_switches: Option<(u64, u64)>,
    server_switches: Option<(u64, u64)>,
    /// The server's threads by name, and how many of each.
    server_threads: Option<(threads::ByName, BTreeMap<String, usize>)>,
}

impl CpuSample {
    /// Reads this process's CPU time, and the server's and the store's when their pids are
    /// known (a process that cannot be read is reported as unknown rather than failing the run).
    pub fn take(watched: Watched) -> Self {
        Self {
            at: Instant::now(),
            bench: own_cpu_seconds().unwrap_or(f64::NAN),
            server: watched.server.and_then(|pid| process_cpu_seconds(pid).ok()),
            store: watched.store.and_then(|pid| process_cpu_seconds(pid).ok()),
            machine: machine_cpu_seconds().ok(),
            bench_switches: own_context_switches(),
            server_switches: watched
                .server
                .and_then(|pid| process_context_switches(pid).ok()),
            server_threads: watched.server.and_then(threads::sample),
        }
    }

    /// The CPU used between `self` and `later`, per unit of work when `work` > 0.
    pub fn until(&self, later: &CpuSample, work: u64) -> CpuReport {
        let bench = later.bench - self.bench;
        let server = later.server.zip(self.server).map(|(b, a)| b - a);
        let store = later.store.zip(self.store).map(|(b, a)| b - a);
        let per = |secs: f64| (work > 0).then(|| secs * 1e6 / work as f64);
        let machine = later.machine.zip(self.machine).map(|(b, a)| MachineCpu {
            tasks: b.tasks - a.tasks,
            interrupts: b.interrupts - a.interrupts,
            steal: b.steal - a.steal,
        });
        let switches = |later: Option<(u64, u64)>, earlier: Option<(u64, u64)>| {
            later.zip(earlier).and_then(|(b, a)| {
                let per = |n: u64| (work > 0).then(|| n as f64 / work as f64);
                Some((per(b.0.saturating_sub(a.0))?, per(b.1.saturating_sub(a.1))?))
            })
        };
        let bench_switches = switches(later.bench_switches, self.bench_switches);
        let server_switches = switches(later.server_switches, self.server_switches);
        let wall_s = later.at.duration_since(self.at).as_secs_f64();
        let server_threads = match (&self.server_threads, &later.server_threads) {
            (Some((earlier, _)), Some((now, counts))) => {
                threads::per_unit(earlier, now, counts, work)
            }
            _ => Vec::new(),
        };
        let others_cpu_s = machine
            .zip(server)
            .map(|(m, s)| (m.tasks - s - bench - store.unwrap_or(0.0)).max(0.0));
        let steal_s = machine.map(|m| m.steal);
        let busy_s = machine.map(|m| m.tasks + m.interrupts);
        let disturbed = wall_s > 0.0
            && others_cpu_s.unwrap_or(0.0).max(steal_s.unwrap_or(0.0)) / wall_s > DISTURBED_CORES;
        CpuReport {
            bench_sleeps_per_msg: bench_switches.map(|s| s.0),
            bench_preemptions_per_msg: bench_switches.map(|s| s.1),
            server_sleeps_per_msg: server_switches.map(|s| s.0),
            server_preemptions_per_msg: server_switches.map(|s| s.1),
            others_cpu_s,
            interrupts_s: machine.map(|m| m.interrupts),
            steal_s,
            busy_s,
            disturbed,
            wall_s,
            bench_cpu_s: bench,
            server_cpu_s: server,
            store_cpu_s: store,
            bench_cpu_us_per_msg: per(bench),
            server_cpu_us_per_msg: server.and_then(per),
            store_cpu_us_per_msg: store.and_then(per),
            server_threads,
        }
    }
}

/// CPU used over a measured interval (both processes share the machine's cores).
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    pub wall_s: f64,
    pub bench_cpu_s: f64,
    /// `None` without `--server-pid`.
    pub server_cpu_s: Option<f64>,
    /// The store process's (`--store-pid`); `None` without it.
    pub store_cpu_s: Option<f64>,
    /// CPU used by every other process of the machine meanwhile (compilers...): how noisy the
    /// measurement was. `None` without `--server-pid`.
    pub others_cpu_s: Option<f64>,
    /// Interrupt and softirq handling on all cores, charged to no process (the loopback
    /// traffic's receiving side, disk completions).
    pub interrupts_s: Option<f64>,
    /// CPU time the hypervisor gave to other guests while this one wanted it (`steal` of
    /// `/proc/stat`): noise from outside the machine.
    pub steal_s: Option<f64>,
    /// CPU time of the whole machine, all cores: every process and the interrupts.
    pub busy_s: Option<f64>,
    /// Other processes or other guests took more than [`DISTURBED_CORES`] of a core on
    /// average: the run's figures are not those of a quiet machine (run it again).
    pub disturbed: bool,
    pub bench_cpu_us_per_msg: Option<f64>,
    /// Server CPU microseconds per delivered message: comparable across noisy runs.
    pub server_cpu_us_per_msg: Option<f64>,
    /// The store process's CPU microseconds per delivered message.
    pub store_cpu_us_per_msg: Option<f64>,
    /// Voluntary context switches (a thread ran out of work and slept) per delivered message.
    pub bench_sleeps_per_msg: Option<f64>,
    /// Involuntary context switches (a thread preempted while it had work) per message.
    pub bench_preemptions_per_msg: Option<f64>,
    /// The server's, over all its threads; `None` without `--server-pid`.
    pub server_sleeps_per_msg: Option<f64>,
    pub server_preemptions_per_msg: Option<f64>,
    /// The server's CPU and sleeps per message by thread name, busiest first (empty without
    /// `--server-pid` or messages).
    pub server_threads: Vec<ThreadCpu>,
}

impl std::fmt::Display for CpuReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<f64>, digits: usize| {
            v.map_or_else(
                || "n/a (no --server-pid)".to_owned(),
                |v| format!("{v:.digits$}"),
            )
        };
        let store = |v: Option<f64>, digits: usize, unit: &str| {
            v.map_or_else(String::new, |v| format!(", store {v:.digits$}{unit}"))
        };
        write!(
            f,
            "  cpu over {:.2} s wall: bench {:.2} s, server {} s{}, interrupts {} s, other processes {} s, steal {} s",
            self.wall_s,
            self.bench_cpu_s,
            opt(self.server_cpu_s, 2),
            store(self.store_cpu_s, 2, " s"),
            self.interrupts_s
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}")),
            opt(self.others_cpu_s, 2),
            self.steal_s
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"))
        )?;
        if self.disturbed {
            write!(
                f,
                "\n  warning: disturbed run: other processes or guests took more than {DISTURBED_CORES} of a core; run it again on a quiet machine"
            )?;
        }
        if self.bench_cpu_us_per_msg.is_none() {
            return Ok(()); // No messages in this interval (an idle hold).
        }
        write!(
            f,
            "\n  cpu per delivered message: server {} us{}, bench {} us",
            opt(self.server_cpu_us_per_msg, 1),
            store(self.store_cpu_us_per_msg, 1, " us"),
            self.bench_cpu_us_per_msg
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
        )?;
        write!(
            f,
            "\n  sleeps (voluntary context switches) per delivered message: server {}, bench {}; preempted: server {}, bench {}",
            opt(self.server_sleeps_per_msg, 2),
            opt(self.bench_sleeps_per_msg, 2),
            opt(self.server_preemptions_per_msg, 2),
            opt(self.bench_preemptions_per_msg, 2),
        )?;
        if !self.server_threads.is_empty() {
            write!(f, "\n  server by thread, per message:")?;
            for t in &self.server_threads {
                let count = if t.threads > 1 {
                    format!(" (x{})", t.threads)
                } else {
                    String::new()
                };
                write!(
                    f,
                    " {}{count} {:.1} us / {:.2} sleeps;",
                    t.name, t.cpu_us_per_msg, t.sleeps_per_msg
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
