//! Waiting for the journal's `fdatasync` on threads of their own, so that the writer applies the
//! next batch meanwhile.
//!
//! With the writer waiting for each batch's `fdatasync` itself, its loop was "apply, write,
//! wait for the disk": at 50,000 msg/s a store call took 5–10 ms (its median), most of it
//! queued behind batches that were waiting for the disk. Now the writer writes a batch's frame,
//! hands the batch's answers over and goes on. A sync thread takes every batch handed over
//! since the last take (a group), syncs the journal once for all of them (their frames were all
//! written before they were handed over, so one `fdatasync` covers them) and then answers them,
//! in the order they ran. Nothing is answered before its frame is on disk.
//!
//! There are [`SYNC_THREADS`] sync threads. With one, a batch written while a sync was running
//! waited for that sync to end and then for its own: two trips to the disk, which is the tail of
//! a paced message's latency on a real disk. Now a free thread takes it at once, and the disk
//! runs both syncs together. Groups are answered strictly in the order they were taken,
//! whichever sync ends first, so a batch is never answered before one that ran before it. Each
//! thread syncs through its own open file description of each journal file
//! ([`SyncFiles`], which says why).
//!
//! Reads are answered in order too: a batch that wrote no frame still waits behind the batches
//! handed over before it, when there are any, since its reads may have seen what those stored;
//! a message is never delivered before it is durable.
//!
//! A failed `fdatasync` fails the answers of every batch it covered, and every batch handed over
//! after it until the writer has rebuilt its state from the journal (`Writer::restore`): after
//! such a failure the kernel may have dropped the frames' pages and a later sync could succeed
//! without them, so nothing written before the restore is trusted. Batches are told apart by
//! the writer's generation, which each restore after a failed sync advances. A group taken after
//! a failed one is answered after it, so it sees the failure whichever sync ended first.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;

use super::Answer;
use crate::embedded::journal::{SYNC_THREADS, SyncFiles};
use crate::error::StoreError;

/// Batches handed to the sync threads, answered after the journal is synced.
struct Handover {
    /// The journal file the batch wrote a frame to, if it wrote one.
    journal: Option<Arc<SyncFiles>>,
    answers: Vec<Box<dyn Answer>>,
    generation: u64,
}

/// Where the sync threads take batches from, one thread at a time.
struct Intake {
    batches: mpsc::Receiver<Handover>,
    /// The ticket of the next group taken: groups are answered in ticket order.
    next_ticket: u64,
}

/// A test's view into a sync thread: called with a group's ticket before its sync (`false`)
/// and after it (`true`), before the group waits for its turn to be answered.
#[cfg(test)]
type Probe = Arc<dyn Fn(u64, bool) + Send + Sync>;

/// What the writer and the sync threads share.
struct Shared {
    intake: Mutex<Intake>,
    /// The ticket of the next group to be answered.
    turn: Mutex<u64>,
    turn_changed: Condvar,
    /// Batches handed over and not answered yet.
    waiting: AtomicUsize,
    /// The newest generation a failed sync covered; 0 when none failed (generations start at
    /// 1). Batches of this generation or older are not trusted.
    failed_generation: AtomicU64,
    /// Test hook: the next sync fails.
    #[cfg(test)]
    fail_next: std::sync::atomic::AtomicBool,
    /// Test hook: while this is locked, the thread that took the first batch handed over waits
    /// before taking the rest (so that a test can choose what one group holds), and no other
    /// thread takes anything.
    #[cfg(test)]
    gate: Arc<Mutex<()>>,
    /// Test hook: the descriptions synced, in order, with the thread that synced each.
    #[cfg(test)]
    synced: Mutex<Vec<(usize, std::os::fd::RawFd)>>,
    /// Test hook: see [`Probe`].
    #[cfg(test)]
    probe: Mutex<Option<Probe>>,
}

/// Locks `mutex`; a thread that panicked holding it left nothing half-done that matters here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The writer's side of the sync threads. Dropping it lets the threads answer what they hold
/// and waits for them to end.
pub(in crate::embedded) struct Syncer {
    handover: Option<mpsc::Sender<Handover>>,
    shared: Arc<Shared>,
    generation: u64,
    threads: Vec<JoinHandle<()>>,
}

impl Syncer {
    pub fn start() -> Result<Self, StoreError> {
        let (handover, batches) = mpsc::channel();
        let shared = Arc::new(Shared {
            intake: Mutex::new(Intake {
                batches,
                next_ticket: 0,
            }),
            turn: Mutex::new(0),
            turn_changed: Condvar::new(),
            waiting: AtomicUsize::new(0),
            failed_generation: AtomicU64::new(0),
            #[cfg(test)]
            fail_next: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            gate: Arc::default(),
            #[cfg(test)]
            synced: Mutex::default(),
            #[cfg(test)]
            probe: Mutex::default(),
        });
        let mut syncer = Self {
            handover: Some(handover),
            shared,
            generation: 1,
            threads: Vec::with_capacity(SYNC_THREADS),
        };
        for thread in 0..SYNC_THREADS {
            let shared = syncer.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("titan-store-sync".to_owned())
                .spawn(move || run(thread, &shared))
                // Dropping `syncer` stops the threads already started.
                .map_err(|e| StoreError::unavailable(format!("cannot start sync thread: {e}")))?;
            syncer.threads.push(spawned);
        }
        Ok(syncer)
    }

    /// Whether answers must go through the sync threads: the batch wrote a frame, or batches
    /// handed over earlier are not answered yet.
    pub fn must_wait(&self, wrote_frame: bool) -> bool {
        wrote_frame || self.shared.waiting.load(Ordering::Acquire) > 0
    }

    /// Hands a batch's answers over, to be sent once `journal` (if any) is synced.
    pub fn hand_over(&self, journal: Option<Arc<SyncFiles>>, answers: Vec<Box<dyn Answer>>) {
        let batch = Handover {
            journal,
            answers,
            generation: self.generation,
        };
        let Some(handover) = &self.handover else {
            return fail(batch.answers, "the journal sync thread has stopped");
        };
        // Counted before the send, so a thread never answers a batch not counted yet.
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
    pub fn gate(&self) -> Arc<Mutex<()>> {
        self.shared.gate.clone()
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.handover = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("embedded store: a journal sync thread panicked");
            }
        }
    }
}

/// Sync thread number `thread`: until the writer's side is dropped, takes everything handed
/// over since the last take, syncs once for all of it, then answers it in its turn.
fn run(thread: usize, shared: &Shared) {
    while let Some((ticket, group)) = take(shared) {
        let count = group.len();
        // Every journal file the group wrote to (two when a checkpoint switched files in
        // between), so that no batch is answered before every frame written before it is on
        // disk, whichever file holds it.
        let mut files: Vec<&Arc<SyncFiles>> = Vec::with_capacity(2);
        for journal in group.iter().filter_map(|b| b.journal.as_ref()) {
            if !files.iter().any(|f| Arc::ptr_eq(f, journal)) {
                files.push(journal);
            }
        }
        #[cfg(test)]
        probe(shared, ticket, false);
        let synced = files
            .iter()
            .try_for_each(|journal| sync(thread, journal, shared));
        if let Err(e) = &synced {
            tracing::error!(error = %e, "embedded store: journal sync failed");
            let newest = group.iter().map(|b| b.generation).max().unwrap_or(0);
            shared.failed_generation.fetch_max(newest, Ordering::AcqRel);
        }
        #[cfg(test)]
        probe(shared, ticket, true);

        let mut turn = lock(&shared.turn);
        while *turn != ticket {
            turn = shared
                .turn_changed
                .wait(turn)
                .unwrap_or_else(PoisonError::into_inner);
        }
        // Includes this group when its sync failed, and any group taken before it whose sync
        // failed: those were answered first.
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
        *turn += 1;
        drop(turn);
        shared.turn_changed.notify_all();
    }
}

/// Takes the next group and its ticket; `None` once the writer's side is gone.
fn take(shared: &Shared) -> Option<(u64, Vec<Handover>)> {
    let mut intake = lock(&shared.intake);
    let first = intake.batches.recv().ok()?;
    #[cfg(test)]
    drop(lock(&shared.gate));
    let mut group = vec![first];
    group.extend(intake.batches.try_iter());
    let ticket = intake.next_ticket;
    intake.next_ticket += 1;
    Some((ticket, group))
}

fn sync(thread: usize, journal: &SyncFiles, shared: &Shared) -> std::io::Result<()> {
    let file = journal.for_thread(thread);
    #[cfg(test)]
    {
        if shared.fail_next.swap(false, Ordering::AcqRel) {
            return Err(std::io::Error::other("failing on purpose (test)"));
        }
        use std::os::fd::AsRawFd;
        lock(&shared.synced).push((thread, file.as_raw_fd()));
    }
    let _ = shared;
    file.sync_data()
}

#[cfg(test)]
fn probe(shared: &Shared, ticket: u64, synced: bool) {
    let probe = lock(&shared.probe).clone();
    if let Some(probe) = probe {
        probe(ticket, synced);
    }
}

fn fail(answers: Vec<Box<dyn Answer>>, reason: &str) {
    for answer in answers {
        answer.fail(reason);
    }
}

#[cfg(test)]
mod tests;
