//! The database file, with a checkpoint's page writes and `fdatasync` done on a thread of its
//! own (`titan-store-flush`).
//!
//! A checkpoint commits the writer's open transaction durably: redb writes every page the
//! transaction changed (some 300 scattered 4 KiB writes per checkpoint at 10,000 msg/s) and
//! syncs the file. Done by the writer itself, that took 2.6 ms at 10,000 msg/s and 5.7 ms at
//! 50,000 (tenth set of docs/benchmarks.md), twenty times a second, and the writer answered
//! nothing meanwhile: those pauses were most of the p99 latency at moderate rates. Here redb's
//! writes and syncs are queued, in order, to the flush thread; a commit the writer runs through
//! [`Flushes::deferred`] returns once they are queued, and the writer goes on with the next
//! batches while the thread writes.
//!
//! Why redb stays crash-safe: the thread makes the same writes and syncs in the same order as
//! redb would have, only later, so whatever a crash leaves on disk is something redb itself
//! could have left there. What changes is when a deferred checkpoint is durable: not when its
//! commit returns but when the thread has synced it ([`Flushes::is_durable`]); the writer keeps
//! the journal frames the checkpoint covers until then (`writer::checkpoint`). Every other
//! commit (opening, replay, sign-ins, shutdown) waits for its sync, as with redb's own file.
//!
//! Reads see queued writes: a read overlays every write not yet in the file onto what it read
//! from the file, under the lock the thread takes to retire a written batch, so a batch is
//! either still overlaid or already in the file. `set_len` (the file growing or shrinking, rare)
//! waits for the queue to drain first. An I/O error on the thread is sticky: every later call
//! fails, as redb after an I/O error of its own file refuses every transaction until the
//! database is reopened (the journal then holds what the lost checkpoint covered).

use std::collections::VecDeque;
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// Writes not synced yet that are handed to the thread without waiting for a sync, so a
/// transaction larger than redb's write buffer does not keep all of its pages here too.
const HAND_OVER_BYTES: usize = 16 << 20;

/// Buffers of written batches kept for the next writes: a checkpoint copies a few hundred pages
/// here, and fresh memory for them each time cost the writer page faults (the allocator hands
/// memory freed on this thread back to the system, and refaulting it zeroes it again). At most
/// this many, each of at most [`SPARE_BUFFER_BYTES`] (a few pages), so at most 16 MiB is kept.
const SPARE_BUFFERS: usize = 1024;
/// Larger buffers (rare multi-page writes) are freed rather than kept.
const SPARE_BUFFER_BYTES: usize = 16 << 10;

/// One write redb made: offset and bytes.
type Write = (u64, Vec<u8>);

/// Writes handed to the thread together, and whether a sync follows them.
struct Batch {
    number: u64,
    writes: Vec<Write>,
    sync: bool,
}

#[derive(Default)]
struct Queue {
    /// Writes since the last batch was handed over, in the order redb made them.
    open: Vec<Write>,
    open_bytes: usize,
    /// Batches handed over, oldest first; the first is being written. Kept until written, so
    /// that reads see them.
    queued: VecDeque<Arc<Batch>>,
    /// The last batch handed over (batches are numbered from 1; 0 is none).
    handed: u64,
    /// The last batch written (and synced, when it syncs); batches are done in order.
    done: u64,
    /// The first I/O error of the thread. Sticky.
    failed: Option<String>,
    /// Syncs are handed over without waiting (inside [`Flushes::deferred`]).
    defer: bool,
    /// The thread ends once the queue is empty.
    stop: bool,
    /// Buffers of written batches, reused by later writes (see [`SPARE_BUFFERS`]).
    spare: Vec<Vec<u8>>,
}

struct Shared {
    queue: Mutex<Queue>,
    changed: Condvar,
    file: FileBackend,
    /// Test hook: the thread waits while this is locked before writing a batch.
    #[cfg(test)]
    gate: Arc<Mutex<()>>,
    /// Test hook: the next batch fails as a failing disk would make it fail.
    #[cfg(test)]
    fail_next: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent: every change to it is a
        // single assignment or push.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the open writes over as the next batch (with a sync, when asked) and returns its
    /// number; with nothing to write or sync, the number of the last batch.
    fn hand_over(&self, q: &mut Queue, sync: bool) -> u64 {
        if q.open.is_empty() && !sync {
            return q.handed;
        }
        q.handed += 1;
        q.open_bytes = 0;
        let batch = Batch {
            number: q.handed,
            writes: std::mem::take(&mut q.open),
            sync,
        };
        q.queued.push_back(Arc::new(batch));
        self.changed.notify_all();
        q.handed
    }

    /// Waits until batch `number` is done.
    fn wait<'a>(
        &'a self,
        mut q: MutexGuard<'a, Queue>,
        number: u64,
    ) -> io::Result<MutexGuard<'a, Queue>> {
        while q.done < number && q.failed.is_none() {
            q = self.changed.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
        check(&q)?;
        Ok(q)
    }
}

fn check(q: &Queue) -> io::Result<()> {
    match &q.failed {
        Some(e) => Err(io::Error::other(format!(
            "an earlier write of the database file failed: {e}"
        ))),
        None => Ok(()),
    }
}

/// The writer's view of the flush thread (see the module doc).
#[derive(Clone)]
pub(super) struct Flushes {
    shared: Arc<Shared>,
}

impl Flushes {
    /// Runs `commit` with the syncs it asks for handed to the thread without waiting for them;
    /// returns its result and the batch after which what it wrote is durable.
    pub fn deferred<T>(&self, commit: impl FnOnce() -> T) -> (T, u64) {
        struct Undefer<'a>(&'a Shared);
        impl Drop for Undefer<'_> {
            fn drop(&mut self) {
                self.0.lock().defer = false;
            }
        }
        self.shared.lock().defer = true;
        let undefer = Undefer(&self.shared);
        let result = commit();
        drop(undefer);
        (result, self.shared.lock().handed)
    }

    /// Whether batch `number` is on disk; an error when the thread failed.
    pub fn is_durable(&self, number: u64) -> io::Result<bool> {
        let q = self.shared.lock();
        check(&q)?;
        Ok(q.done >= number)
    }

    /// Waits until batch `number` is on disk.
    pub fn wait_durable(&self, number: u64) -> io::Result<()> {
        self.shared.wait(self.shared.lock(), number).map(drop)
    }

    /// Test hook: while the returned mutex is locked, the thread writes nothing (a slow disk).
    #[cfg(test)]
    pub fn gate(&self) -> Arc<Mutex<()>> {
        self.shared.gate.clone()
    }

    /// Test hook: the next batch fails as a failing disk would make it fail.
    #[cfg(test)]
    pub fn fail_next(&self) {
        self.shared
            .fail_next
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The [`StorageBackend`] redb writes the database file through.
pub(super) struct WriteBehind {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for WriteBehind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBehind").finish_non_exhaustive()
    }
}

impl WriteBehind {
    /// Opens (or creates) the file at `path` and starts its flush thread.
    pub fn open(path: &Path) -> io::Result<(Self, Flushes)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let file = FileBackend::new(file).map_err(|e| io::Error::other(e.to_string()))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            file,
            #[cfg(test)]
            gate: Arc::default(),
            #[cfg(test)]
            fail_next: std::sync::atomic::AtomicBool::new(false),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("titan-store-flush".to_owned())
            .spawn(move || run(&thread_shared))?;
        let flushes = Flushes {
            shared: shared.clone(),
        };
        let backend = Self {
            shared,
            thread: Mutex::new(Some(thread)),
        };
        Ok((backend, flushes))
    }

    /// Lets the thread write what is queued, then waits for it to end.
    fn stop(&self) -> io::Result<()> {
        {
            let mut q = self.shared.lock();
            self.shared.hand_over(&mut q, false);
            q.stop = true;
            self.shared.changed.notify_all();
        }
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            return Err(io::Error::other("the database flush thread panicked"));
        }
        check(&self.shared.lock())
    }
}

impl Drop for WriteBehind {
    /// redb calls [`StorageBackend::close`] first; this only stops a thread still running.
    fn drop(&mut self) {
        let running = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if running && let Err(e) = self.stop() {
            tracing::error!(error = %e, "embedded store: database file not fully written");
        }
    }
}

/// The flush thread: writes the batches in order, retiring each once written.
fn run(shared: &Shared) {
    let mut q = shared.lock();
    loop {
        let Some(batch) = q.queued.front().cloned() else {
            if q.stop {
                return;
            }
            q = shared
                .changed
                .wait(q)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        drop(q);
        let result = write(shared, &batch);
        let number = batch.number;
        q = shared.lock();
        q.queued.pop_front();
        // The queue's copy is gone and reads hold none outside the lock: this is the last one.
        if let Ok(written) = Arc::try_unwrap(batch) {
            let room = SPARE_BUFFERS.saturating_sub(q.spare.len());
            let reusable = written
                .writes
                .into_iter()
                .map(|(_, bytes)| bytes)
                .filter(|bytes| bytes.capacity() <= SPARE_BUFFER_BYTES);
            q.spare.extend(reusable.take(room));
        }
        match result {
            Ok(()) => q.done = number,
            Err(e) => {
                tracing::error!(error = %e, "embedded store: writing the database file failed");
                q.failed = Some(e.to_string());
                q.queued.clear();
            }
        }
        shared.changed.notify_all();
    }
}

fn write(shared: &Shared, batch: &Batch) -> io::Result<()> {
    #[cfg(test)]
    {
        drop(shared.gate.lock());
        if shared
            .fail_next
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            return Err(io::Error::other("failing on purpose (test)"));
        }
    }
    for (offset, bytes) in &batch.writes {
        shared.file.write(*offset, bytes)?;
    }
    if batch.sync {
        shared.file.sync_data()?;
    }
    Ok(())
}

/// Copies the part of `write` that overlaps `out` (which starts at `offset`) into `out`.
fn overlay(offset: u64, out: &mut [u8], (at, bytes): &Write) {
    let start = offset.max(*at);
    let end = (offset + out.len() as u64).min(at + bytes.len() as u64);
    if start < end {
        // All four differences are within `out` or `bytes`, so they fit in usize.
        let (from, to) = ((start - at) as usize, (end - at) as usize);
        out[(start - offset) as usize..(end - offset) as usize].copy_from_slice(&bytes[from..to]);
    }
}

impl StorageBackend for WriteBehind {
    fn len(&self) -> Result<u64, io::Error> {
        let q = self.shared.lock();
        check(&q)?;
        let pending_end = q
            .queued
            .iter()
            .flat_map(|b| b.writes.iter())
            .chain(q.open.iter())
            .map(|(at, bytes)| at + bytes.len() as u64)
            .max()
            .unwrap_or(0);
        Ok(self.shared.file.len()?.max(pending_end))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let q = self.shared.lock();
        check(&q)?;
        self.shared.file.read(offset, out)?;
        for write in q.queued.iter().flat_map(|b| b.writes.iter()) {
            overlay(offset, out, write);
        }
        for write in &q.open {
            overlay(offset, out, write);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut q = self.shared.lock();
        check(&q)?;
        let last = self.shared.hand_over(&mut q, false);
        let _q = self.shared.wait(q, last)?;
        self.shared.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut q = self.shared.lock();
        check(&q)?;
        let batch = self.shared.hand_over(&mut q, true);
        if q.defer {
            return Ok(());
        }
        self.shared.wait(q, batch).map(drop)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut q = self.shared.lock();
        check(&q)?;
        let mut bytes = q.spare.pop().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(data);
        q.open.push((offset, bytes));
        q.open_bytes += data.len();
        if q.open_bytes >= HAND_OVER_BYTES {
            self.shared.hand_over(&mut q, false);
        }
        Ok(())
    }

    fn close(&self) -> Result<(), io::Error> {
        // The file's locks are released even when writing it failed, so that the next open
        // (which replays the journal) can take them.
        let stopped = self.stop();
        let closed = self.shared.file.close();
        stopped.and(closed)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.shared.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.shared.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.shared.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.shared.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.shared.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.shared.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn open() -> (tempfile::TempDir, WriteBehind, Flushes) {
        let dir = tempfile::tempdir().unwrap();
        let (backend, flushes) = WriteBehind::open(&dir.path().join("db")).unwrap();
        backend.set_len(8192).unwrap();
        (dir, backend, flushes)
    }

    fn on_disk(dir: &tempfile::TempDir) -> Vec<u8> {
        std::fs::read(dir.path().join("db")).unwrap()
    }

    /// A deferred sync returns at once; until the thread has written it, reads see the write
    /// and the file does not have it; then it is durable and in the file.
    #[test]
    fn reads_see_writes_the_thread_has_not_made_yet() {
        let (dir, backend, flushes) = open();
        let gate = flushes.gate();
        let held = gate.lock().unwrap();

        backend.write(4096, &[7; 100]).unwrap();
        let (synced, batch) = flushes.deferred(|| backend.sync_data());
        synced.unwrap();
        assert!(!flushes.is_durable(batch).unwrap());
        let mut out = [0u8; 200];
        backend.read(4046, &mut out).unwrap();
        assert_eq!(&out[..50], &[0; 50]);
        assert_eq!(&out[50..150], &[7; 100]);
        assert_eq!(&out[150..], &[0; 50]);
        assert_eq!(
            on_disk(&dir)[4096],
            0,
            "written before the thread was let go"
        );

        // A later write over part of it wins, queued or not.
        backend.write(4100, &[9; 10]).unwrap();
        backend.read(4096, &mut out[..20]).unwrap();
        assert_eq!(
            &out[..20],
            &[7, 7, 7, 7, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 7, 7, 7, 7, 7, 7]
        );

        drop(held);
        flushes.wait_durable(batch).unwrap();
        assert!(flushes.is_durable(batch).unwrap());
        assert_eq!(&on_disk(&dir)[4096..4100], &[7; 4]);
        // Without `deferred`, a sync returns once the thread has synced.
        backend.sync_data().unwrap();
        assert_eq!(&on_disk(&dir)[4100..4102], &[9; 2]);
    }

    /// `set_len` waits for what is queued, so nothing queued lands beyond a shorter file.
    #[test]
    fn set_len_waits_for_the_queue() {
        let (dir, backend, flushes) = open();
        backend.write(4096, &[7; 4096]).unwrap();
        let (synced, _) = flushes.deferred(|| backend.sync_data());
        synced.unwrap();
        backend.set_len(4096).unwrap();
        assert_eq!(on_disk(&dir).len(), 4096);
        assert_eq!(backend.len().unwrap(), 4096);
    }

    /// A failed write fails what waits for it and every call after it.
    #[test]
    fn a_failed_write_is_sticky() {
        let (_dir, backend, flushes) = open();
        flushes.fail_next();
        backend.write(0, &[1; 10]).unwrap();
        let (synced, batch) = flushes.deferred(|| backend.sync_data());
        synced.unwrap();
        assert!(flushes.wait_durable(batch).is_err());
        assert!(flushes.is_durable(batch).is_err());
        assert!(backend.write(0, &[1; 10]).is_err());
        assert!(backend.sync_data().is_err());
        let mut out = [0u8; 10];
        assert!(backend.read(0, &mut out).is_err());
    }
}
