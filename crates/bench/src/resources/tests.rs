//! Tests of the CPU accounting: reports, thread and process CPU, context switches.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn sample(at: Instant, bench: f64, server: f64, store: Option<f64>, tasks: f64) -> CpuSample {
    CpuSample {
        at,
        bench,
        server: Some(server),
        store,
        machine: Some(MachineCpu {
            tasks,
            interrupts: tasks / 10.0,
            steal: 0.0,
        }),
        bench_switches: None,
        server_switches: None,
        server_threads: None,
    }
}

/// A store process's CPU is its own figure, not noise: "other processes" leaves it out,
/// and a run is disturbed only by what neither the bench, the server nor the store used.
#[test]
fn store_cpu_is_reported_apart_from_other_processes() {
    let at = Instant::now();
    let later = at + std::time::Duration::from_secs(10);
    // Tasks busy 9 s over 10 s: bench 2, server 4, store 2.5, others 0.5 (0.05 cores); the
    // 0.9 s of interrupts are the run's own and not counted as others.
    let report = sample(at, 1.0, 1.0, Some(0.5), 10.0)
        .until(&sample(later, 3.0, 5.0, Some(3.0), 19.0), 1_000_000);
    assert_eq!(report.store_cpu_s, Some(2.5));
    assert_eq!(report.store_cpu_us_per_msg, Some(2.5));
    assert!((report.others_cpu_s.unwrap() - 0.5).abs() < 1e-9);
    assert!((report.interrupts_s.unwrap() - 0.9).abs() < 1e-9);
    assert!(
        (report.busy_s.unwrap() - 9.9).abs() < 1e-9,
        "tasks and interrupts"
    );
    assert!(!report.disturbed);
    assert!(report.to_string().contains("server 4.0 us, store 2.5 us"));

    // The same machine without the store's pid: its 2.5 s are noise, and too much of it.
    let report =
        sample(at, 1.0, 1.0, None, 10.0).until(&sample(later, 3.0, 5.0, None, 19.0), 1_000_000);
    assert_eq!(report.store_cpu_s, None);
    assert!((report.others_cpu_s.unwrap() - 3.0).abs() < 1e-9);
    assert!(report.disturbed);
    assert!(report.to_string().contains("warning: disturbed run"));
}

/// A thread's CPU is its own: while another thread of the process works, an idle
/// thread's figure stays put and the process's grows (`/proc/PID/stat` of a thread's id
/// would have given the process's, which is how `floor` first measured its relay).
#[test]
fn a_thread_is_charged_its_own_cpu_only() {
    let tid = std::fs::read_link("/proc/thread-self")
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse::<u32>()
        .unwrap();
    let (mine, process) = (
        own_thread_cpu_seconds(tid).unwrap(),
        own_cpu_seconds().unwrap(),
    );
    std::thread::spawn(|| {
        let started = Instant::now();
        let mut x = 1u64;
        // Long enough for several clock ticks to be charged to the busy thread.
        while started.elapsed() < std::time::Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    })
    .join()
    .unwrap();
    let grown_mine = own_thread_cpu_seconds(tid).unwrap() - mine;
    let grown_process = own_cpu_seconds().unwrap() - process;
    assert!(grown_process >= 0.05, "the process worked: {grown_process}");
    assert!(
        grown_mine < grown_process / 2.0,
        "this thread waited: {grown_mine} of {grown_process}"
    );
}

/// A thread that sleeps is counted as switching voluntarily, once per sleep at least, and
/// the process's sum includes it. (This thread's own count, not the process's, is compared
/// before and after: the test harness's other threads may end meanwhile, taking their
/// switches out of the sum.)
#[test]
fn sleeps_are_counted_as_voluntary_switches() {
    let me = std::path::Path::new("/proc/thread-self/status");
    let (before, _) = task_context_switches(me).unwrap();
    for _ in 0..5 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let (after, _) = task_context_switches(me).unwrap();
    assert!(after >= before + 5, "{before} -> {after}");
    let (process, _) = process_context_switches(std::process::id()).unwrap();
    assert!(process >= after, "process {process} < this thread {after}");
}
