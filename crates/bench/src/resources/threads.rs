//! The server's CPU and sleeps by thread name (`/proc/PID/task/*`), so that every run says where
//! a message's server CPU goes (session workers, Dispatcher, the store's threads) without a
//! profiler. Threads of one name (actix's workers) are summed.

use serde::Serialize;
use std::collections::BTreeMap;

/// CPU seconds and voluntary context switches per thread name, at one instant.
pub(super) type ByName = BTreeMap<String, (f64, u64)>;

/// One thread name's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadCpu {
    /// The thread's name (`comm`), as `top -H` shows it; the main thread has the program's.
    pub name: String,
    /// How many live threads had it at the end.
    pub threads: usize,
    pub cpu_us_per_msg: f64,
    pub sleeps_per_msg: f64,
}

/// Reads every thread of `pid`; `None` if the process cannot be read.
pub(super) fn sample(pid: u32) -> Option<(ByName, BTreeMap<String, usize>)> {
    let dir = format!("/proc/{pid}/task");
    let mut by_name = ByName::new();
    let mut counts = BTreeMap::new();
    for task in std::fs::read_dir(dir).ok()?.flatten() {
        // A thread may end between listing and reading: skipped.
        let Some((name, cpu)) = name_and_cpu(&task.path().join("stat")) else {
            continue;
        };
        let voluntary =
            super::task_context_switches(&task.path().join("status")).map_or(0, |(v, _)| v);
        let entry = by_name.entry(name.clone()).or_insert((0.0, 0));
        entry.0 += cpu;
        entry.1 += voluntary;
        *counts.entry(name).or_insert(0) += 1;
    }
    Some((by_name, counts))
}

/// A thread's name and CPU seconds from its `stat` file.
fn name_and_cpu(stat: &std::path::Path) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(stat).ok()?;
    super::parse_stat(&text).map(|(name, cpu)| (name.to_owned(), cpu))
}

/// Each name's CPU and sleeps between two samples per unit of work, busiest first. A name
/// that appears only later (a thread started meanwhile) counts from zero.
pub(super) fn per_unit(
    earlier: &ByName,
    later: &ByName,
    counts: &BTreeMap<String, usize>,
    work: u64,
) -> Vec<ThreadCpu> {
    if work == 0 {
        return Vec::new();
    }
    let mut threads: Vec<ThreadCpu> = later
        .iter()
        .map(|(name, (cpu, sleeps))| {
            let (cpu0, sleeps0) = earlier.get(name).copied().unwrap_or((0.0, 0));
            ThreadCpu {
                name: name.clone(),
                threads: counts.get(name).copied().unwrap_or(0),
                cpu_us_per_msg: (cpu - cpu0).max(0.0) * 1e6 / work as f64,
                sleeps_per_msg: sleeps.saturating_sub(sleeps0) as f64 / work as f64,
            }
        })
        .filter(|t| t.cpu_us_per_msg > 0.0 || t.sleeps_per_msg > 0.0)
        .collect();
    threads.sort_by(|a, b| b.cpu_us_per_msg.total_cmp(&a.cpu_us_per_msg));
    threads
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A named thread that works and sleeps shows up under its name with its CPU and sleeps.
    #[test]
    fn a_busy_named_thread_is_reported_by_name() {
        let pid = std::process::id();
        let (before, _) = sample(pid).unwrap();
        let (go, went) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("probe-busy".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let mut x = 1u64;
                // Work until the kernel has charged at least a few clock ticks to this thread.
                while started.elapsed() < std::time::Duration::from_millis(60) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                for _ in 0..3 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                done.send(()).unwrap();
                went.recv().unwrap();
            })
            .unwrap();
        finished.recv().unwrap();
        let (after, counts) = sample(pid).unwrap();
        go.send(()).unwrap();
        worker.join().unwrap();
        let threads = per_unit(&before, &after, &counts, 1);
        let busy = threads
            .iter()
            .find(|t| t.name == "probe-busy")
            .expect("reported");
        assert_eq!(busy.threads, 1);
        assert!(busy.cpu_us_per_msg > 0.0, "{busy:?}");
        assert!(busy.sleeps_per_msg >= 3.0, "{busy:?}");
        assert!(per_unit(&before, &after, &counts, 0).is_empty());
    }
}
