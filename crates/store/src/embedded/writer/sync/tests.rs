//! Tests of the sync threads: what a group syncs, the order of answers when syncs overlap, and
//! failures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, Sender, channel};

use super::*;

/// An answer that reports its name and whether it was sent (`true`) or failed.
struct Reported(&'static str, Sender<(&'static str, bool)>);

impl Answer for Reported {
    fn send(self: Box<Self>) {
        let _ = self.1.send((self.0, true));
    }
    fn fail(self: Box<Self>, _: &str) {
        let _ = self.1.send((self.0, false));
    }
}

fn journal_file(dir: &tempfile::TempDir, name: &str) -> Arc<SyncFiles> {
    let path = dir.path().join(name);
    std::fs::File::create(&path).unwrap();
    Arc::new(SyncFiles::open(&path).unwrap())
}

/// Batches handed over together that wrote to both journal files (a checkpoint switched
/// files between them) are answered only after both files are synced.
#[test]
fn a_group_that_wrote_to_both_files_syncs_both() {
    let dir = tempfile::tempdir().unwrap();
    let [earlier, first, second] =
        ["earlier", "first", "second"].map(|name| journal_file(&dir, name));
    let syncer = Syncer::start().unwrap();
    let gate = syncer.gate();
    let held = gate.lock().unwrap();
    // A thread takes the first batch and waits at the gate; the two handed over meanwhile join
    // its group.
    let (tx, answers) = channel();
    for file in [&earlier, &first, &second] {
        syncer.hand_over(
            Some(file.clone()),
            vec![Box::new(Reported("b", tx.clone()))],
        );
    }
    drop(held);
    for _ in 0..3 {
        assert!(answers.recv().unwrap().1, "answered as synced");
    }
    let synced = lock(&syncer.shared.synced).clone();
    let thread = synced[0].0;
    assert!(
        synced.iter().all(|(t, _)| *t == thread),
        "one group, one thread"
    );
    let mut synced: Vec<_> = synced.into_iter().map(|(_, fd)| fd).collect();
    synced.sort_unstable();
    let mut expected = [&earlier, &first, &second].map(|f| f.for_thread(thread).as_raw_fd());
    expected.sort_unstable();
    assert_eq!(
        synced, expected,
        "each file synced once, all before any answer"
    );
}

/// Two groups whose syncs overlap: the first group's sync is held (a slow disk), so it is
/// still running when the second group's ends.
struct Overlap {
    syncer: Syncer,
    answers: Receiver<(&'static str, bool)>,
    /// Releases the first group's sync.
    release: Sender<()>,
}

/// Hands over batch "a" and, once a thread is syncing it, batch "b", which the other thread
/// takes and syncs; returns when "b"'s sync has ended and "a"'s has not.
fn overlapping_syncs(dir: &tempfile::TempDir) -> Overlap {
    let file = journal_file(dir, "journal");
    let syncer = Syncer::start().unwrap();
    let (events, seen) = channel();
    let (release, released) = channel::<()>();
    let released = Mutex::new(released);
    let probe: Probe = Arc::new(move |ticket, synced| {
        let _ = events.send((ticket, synced));
        if ticket == 0 && !synced {
            let _ = lock(&released).recv();
        }
    });
    *lock(&syncer.shared.probe) = Some(probe);

    let (tx, answers) = channel();
    syncer.hand_over(
        Some(file.clone()),
        vec![Box::new(Reported("a", tx.clone()))],
    );
    assert_eq!(seen.recv().unwrap(), (0, false), "a's group is syncing");
    syncer.hand_over(Some(file), vec![Box::new(Reported("b", tx))]);
    assert_eq!(seen.recv().unwrap(), (1, false));
    assert_eq!(seen.recv().unwrap(), (1, true), "b's group synced first");
    Overlap {
        syncer,
        answers,
        release,
    }
}

/// A batch written while another batch's sync is running is synced at once by the other
/// thread, through its own description, and answered only after the batch before it.
#[test]
fn a_group_synced_first_is_answered_after_the_group_taken_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let overlap = overlapping_syncs(&dir);
    assert!(
        overlap.answers.try_recv().is_err(),
        "b answered before a, which ran before it"
    );
    overlap.release.send(()).unwrap();
    assert_eq!(overlap.answers.recv().unwrap(), ("a", true));
    assert_eq!(overlap.answers.recv().unwrap(), ("b", true));

    let synced = lock(&overlap.syncer.shared.synced).clone();
    assert_eq!(synced.len(), 2, "{synced:?}");
    assert_ne!(synced[0].0, synced[1].0, "two threads synced");
    assert_ne!(
        synced[0].1, synced[1].1,
        "each thread syncs through its own description"
    );
    assert!(!overlap.syncer.failed());
}

/// When the earlier of two overlapping syncs fails, the later group fails too, though its own
/// sync succeeded (the failed one's pages may be gone, and the later sync may not have seen
/// them), and the writer is told to restore.
#[test]
fn a_failed_sync_fails_the_group_taken_after_it_whose_sync_succeeded() {
    let dir = tempfile::tempdir().unwrap();
    let overlap = overlapping_syncs(&dir);
    overlap.syncer.fail_next_sync();
    overlap.release.send(()).unwrap();
    assert_eq!(overlap.answers.recv().unwrap(), ("a", false));
    assert_eq!(overlap.answers.recv().unwrap(), ("b", false));
    assert!(overlap.syncer.failed());
}

/// After the writer restores, batches of the new generation are answered again.
#[test]
fn batches_after_a_restore_are_answered_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = journal_file(&dir, "journal");
    let mut syncer = Syncer::start().unwrap();
    let (tx, answers) = channel();
    syncer.fail_next_sync();
    syncer.hand_over(
        Some(file.clone()),
        vec![Box::new(Reported("a", tx.clone()))],
    );
    assert_eq!(answers.recv().unwrap(), ("a", false));
    // Handed over before the restore: not trusted, though nothing fails its sync.
    syncer.hand_over(
        Some(file.clone()),
        vec![Box::new(Reported("b", tx.clone()))],
    );
    assert_eq!(answers.recv().unwrap(), ("b", false));
    syncer.restored();
    assert!(!syncer.failed());
    syncer.hand_over(Some(file), vec![Box::new(Reported("c", tx))]);
    assert_eq!(answers.recv().unwrap(), ("c", true));
}
