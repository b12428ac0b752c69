//! Waiting for the journal's `fdatasync` on a thread of its own, so that the writer applies the
//! next batch meanwhile.
//!
//! With the writer waiting for each batch's `fdatasync` itself, its loop was "apply, write,
//! wait for the disk": at 50,000 msg/s a store call took 5–10 ms (its median), most of it
//! queued behind batches that were waiting for the disk. Now the writer writes a batch's frame,
//! hands the batch's answers to this thread and goes on. This thread takes every batch handed
//! over since its last sync, syncs the journal once for all of them (their frames were all
//! written before they were handed over, so one `fdatasync` covers them) and then answers them,
//! in the order they ran. Nothing is answered before its frame is on disk.
//!
//! Reads are answered in order too: a batch that wrote no frame still waits behind the batches
//! handed over before it, when there are any, since its reads may have seen what those stored;
//! a message is never delivered before it is durable.
//!
//! A failed `fdatasync` fails the answers of every batch it covered, and every batch handed over
//! after it until the writer has rebuilt its state from the journal (`Writer::restore`): after
//! such a failure the kernel may have dropped the frames' pages and a later sync could succeed
//! without them, so nothing written before the restore is trusted. Batches are told apart by
//! the writer's generation, which each restore after a failed sync advances.

use std::fs::File;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use super::Answer;
use crate::embedded::SyncObserver;
use crate::error::StoreError;

/// Batches handed to the sync thread, answered after the journal is synced.
struct Handover {
    /// The journal file the batch wrote a frame to, if it wrote one.
    journal: Option<Arc<File>>,
    answers: Vec<Box<dyn Answer>>,
    generation: u64,
}

/// What the writer and the sync thread share.
#[derive(Default)]
struct Shared {
    /// Batches handed over and not answered yet.
    waiting: AtomicUsize,
    /// The newest generation a failed sync covered; 0 when none failed (generations start at
    /// 1). Batches of this generation or older are not trusted.
    failed_generation: AtomicU64,
    /// Told how long each successful sync took.
    observe: Option<SyncObserver>,
    /// Test hook: the next sync fails.
    #[cfg(test)]
    fail_next: std::sync::atomic::AtomicBool,
    /// Test hook: while this is locked, the thread waits after taking the first batch handed
    /// over and before taking the rest (so that a test can choose what one group holds).
    #[cfg(test)]
    gate: Arc<std::sync::Mutex<()>>,
    /// Test hook: the files synced, in order, as their raw descriptors.
    #[cfg(test)]
    synced: std::sync::Mutex<Vec<std::os::fd::RawFd>>,
}

/// The writer's side of the sync thread. Dropping it lets the thread answer what it holds and
/// waits for it to end.
pub(in crate::embedded) struct Syncer {
    handover: Option<mpsc::Sender<Handover>>,
    shared: Arc<Shared>,
    generation: u64,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread; `observe` is told how long each successful sync took.
    pub fn start(observe: Option<SyncObserver>) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            observe,
            ..Shared::default()
        });
        let (handover, batches) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("titan-store-sync".to_owned())
            .spawn(move || run(&batches, &thread_shared))
            .map_err(|e| StoreError::unavailable(format!("cannot start sync thread: {e}")))?;
        Ok(Self {
            handover: Some(handover),
            shared,
            generation: 1,
            thread: Some(thread),
        })
    }

    /// Whether answers must go through the sync thread: the batch wrote a frame, or batches
    /// handed over earlier are not answered yet.
    pub fn must_wait(&self, wrote_frame: bool) -> bool {
        wrote_frame || self.shared.waiting.load(Ordering::Acquire) > 0
    }

    /// Hands a batch's answers over, to be sent once `journal` (if any) is synced.
    pub fn hand_over(&self, journal: Option<Arc<File>>, answers: Vec<Box<dyn Answer>>) {
        let batch = Handover {
            journal,
            answers,
            generation: self.generation,
        };
        let Some(handover) = &self.handover else {
            return fail(batch.answers, "the journal sync thread has stopped");
        };
        // Counted before the send, so the thread never answers a batch not counted yet.
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(batch)) = handover.send(batch) {
            self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
            fail(batch.answers, "the journal sync thread has stopped");
        }
    }

    /// A sync of the current generation failed (none since the last [`Syncer::restored`]): the
    /// writer must restore.
    pub fn failed(&self) -> bool {
        self.shared.failed_generation.load(Ordering::Acquire) >= self.generation
    }

    /// The writer rebuilt its state: after a failed sync, later batches are trusted again.
    pub fn restored(&mut self) {
        if self.failed() {
            self.generation += 1;
        }
    }

    /// Test hook: the next sync fails as a failing disk would make it fail.
    #[cfg(test)]
    pub fn fail_next_sync(&self) {
        self.shared.fail_next.store(true, Ordering::Release);
    }

    /// Test hook: while the returned mutex is locked, syncs wait (a slow disk).
    #[cfg(test)]
    pub fn gate(&self) -> Arc<std::sync::Mutex<()>> {
        self.shared.gate.clone()
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.handover = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("embedded store: the journal sync thread panicked");
        }
    }
}

/// The sync thread: until the writer's side is dropped, syncs once for everything handed over
/// since the last time, then answers it.
fn run(batches: &mpsc::Receiver<Handover>, shared: &Shared) {
    while let Ok(first) = batches.recv() {
        #[cfg(test)]
        drop(shared.gate.lock());
        let mut group = vec![first];
        group.extend(batches.try_iter());
        let count = group.len();
        // Every journal file the group wrote to (two when a checkpoint switched files in
        // between), so that no batch is answered before every frame written before it is on
        // disk, whichever file holds it.
        let mut files: Vec<&Arc<File>> = Vec::with_capacity(2);
        for journal in group.iter().filter_map(|b| b.journal.as_ref()) {
            if !files.iter().any(|f| Arc::ptr_eq(f, journal)) {
                files.push(journal);
            }
        }
        let synced = files.iter().try_for_each(|journal| sync(journal, shared));
        if let Err(e) = &synced {
            tracing::error!(error = %e, "embedded store: journal sync failed");
            let newest = group.iter().map(|b| b.generation).max().unwrap_or(0);
            shared.failed_generation.fetch_max(newest, Ordering::AcqRel);
        }
        // Includes this group when its sync failed.
        let failed_generation = shared.failed_generation.load(Ordering::Acquire);
        for batch in group {
            if batch.generation <= failed_generation {
                fail(batch.answers, "the journal could not be synced to disk");
            } else {
                for answer in batch.answers {
                    answer.send();
                }
            }
        }
        shared.waiting.fetch_sub(count, Ordering::AcqRel);
    }
}

fn sync(journal: &File, shared: &Shared) -> std::io::Result<()> {
    #[cfg(test)]
    {
        if shared.fail_next.swap(false, Ordering::AcqRel) {
            return Err(std::io::Error::other("failing on purpose (test)"));
        }
        use std::os::fd::AsRawFd;
        if let Ok(mut synced) = shared.synced.lock() {
            synced.push(journal.as_raw_fd());
        }
    }
    let started = Instant::now();
    journal.sync_data()?;
    if let Some(observe) = &shared.observe {
        observe(started.elapsed());
    }
    Ok(())
}

fn fail(answers: Vec<Box<dyn Answer>>, reason: &str) {
    for answer in answers {
        answer.fail(reason);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::sync::mpsc::{Sender, channel};

    use super::*;

    /// An answer that reports whether it was sent or failed.
    struct Reported(Sender<bool>);

    impl Answer for Reported {
        fn send(self: Box<Self>) {
            let _ = self.0.send(true);
        }
        fn fail(self: Box<Self>, _: &str) {
            let _ = self.0.send(false);
        }
    }

    /// Batches handed over together that wrote to both journal files (a checkpoint switched
    /// files between them) are answered only after both files are synced.
    #[test]
    fn a_group_that_wrote_to_both_files_syncs_both() {
        let dir = tempfile::tempdir().unwrap();
        let [earlier, first, second] = ["earlier", "first", "second"]
            .map(|name| Arc::new(File::create(dir.path().join(name)).unwrap()));
        let syncer = Syncer::start(None).unwrap();
        let gate = syncer.gate();
        let held = gate.lock().unwrap();
        // The thread takes the first batch and waits at the gate; the two handed over
        // meanwhile join its group.
        let (tx, answers) = channel();
        for file in [&earlier, &first, &second] {
            syncer.hand_over(Some(file.clone()), vec![Box::new(Reported(tx.clone()))]);
        }
        drop(held);
        for _ in 0..3 {
            assert!(answers.recv().unwrap(), "answered as synced");
        }
        let mut synced = syncer.shared.synced.lock().unwrap().clone();
        synced.sort_unstable();
        let mut expected = [&earlier, &first, &second].map(|f| f.as_raw_fd());
        expected.sort_unstable();
        assert_eq!(
            synced, expected,
            "each file synced once, all before any answer"
        );
    }

    /// Each successful sync is timed to the observer, before the answers it covers go out; a
    /// failed one is not.
    #[test]
    fn each_successful_sync_is_timed() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(dir.path().join("journal")).unwrap());
        let (timings, timed) = channel();
        let observe: SyncObserver = Arc::new(move |took| {
            let _ = timings.send(took);
        });
        let syncer = Syncer::start(Some(observe)).unwrap();
        let (tx, answers) = channel();
        syncer.hand_over(Some(file.clone()), vec![Box::new(Reported(tx.clone()))]);
        assert!(answers.recv().unwrap(), "answered as synced");
        assert!(timed.try_recv().is_ok(), "timed before it was answered");
        syncer.fail_next_sync();
        syncer.hand_over(Some(file.clone()), vec![Box::new(Reported(tx.clone()))]);
        assert!(!answers.recv().unwrap(), "answered as failed");
        drop(syncer);
        assert!(timed.try_recv().is_err(), "a failed sync is not timed");
    }
}
