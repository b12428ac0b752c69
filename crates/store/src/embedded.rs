//! The embedded backend: Titan's default single-node store, on redb.
//!
//! One engine, two backends: [`EmbeddedStore::open`] keeps a durable file in a directory,
//! [`EmbeddedStore::memory`] runs the very same code with the file in RAM. The latter is
//! Titan's `memory` store for tests and throw-away runs, so tests exercise the production logic
//! rather than a look-alike.
//!
//! A single writer thread owns the database (`writer`); every operation, reads included,
//! is queued to it and answered through a oneshot channel, so no tokio worker ever waits on disk.
//! The writer runs whatever is queued as one batch (group commit) inside a write transaction
//! that stays open between checkpoints, and makes what appends stored durable by writing it to a
//! journal (`journal`) and fsyncing that, one sequential write per batch; a checkpoint (by
//! default ten a second) commits the transaction durably and empties the journal. Cursor moves
//! and acks are not journaled: they may be lost in a crash, which only causes a redelivery.
//! Sending reads through the writer too keeps one owner of the database: dropping the last
//! handle closes it deterministically, so the same path can be reopened. That drop waits for
//! the batch in flight and the last checkpoint (once, at shutdown).
//!
//! - `tables`: the table layout and the queries operations share (`depth`).
//! - `states`: the writer's copy of each active inbox's head and device records, written to
//!   the tables at checkpoints.
//! - `append`: `append` and `trim`.
//! - `cursor`: `read_new`, `claim_pending` and `ack`.
//! - `fresh`: the messages appended since the last checkpoint, which reads take from memory.
//! - `client_ids`: which client ids were written since a commit, so that appends with one run
//!   while a checkpoint commits.
//! - `users`: the [`crate::Users`] tables (sign-ins, revocations).
//! - `push_tokens`: the [`crate::PushRegistry`] tables and operations.
//! - `writer`: the thread, the operation queue, the group commit and the checkpoints.
//! - `journal`: the redo log that makes appends durable between checkpoints, and its replay.
//! - `write_behind`: the database file, written and synced by a thread of its own so that a
//!   checkpoint does not stop the writer.
//! - `memory`: the in-RAM "file" of the memory store.

mod append;
mod client_ids;
mod cursor;
mod fresh;
mod journal;
mod memory;
mod push_tokens;
mod states;
mod tables;
mod users;
mod write_behind;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redb::{Database, DatabaseError, Durability, StorageError as RedbStorageError};
use titan_protocol::{DeviceId, UserId};
use tokio::sync::{mpsc, oneshot};

use crate::error::StoreError;
use crate::inbox::{
    Appended, AppendedAndRead, Delivered, DeviceAcks, Inbox, InboxLimits, LiveRead, NewMessage,
    Position,
};
use crate::users::{SignInProfile, SignedInUser, Users, from_ms, to_ms};
use journal::Journal;
pub use journal::{JOURNAL_FILES, frames_len as journal_frames_len};
use tables::{Tables, unix_ms};
use users::UserOp;
use write_behind::{Flushes, WriteBehind};
pub use writer::Checkpoints;
use writer::{Counters, Op, Reply, Writer};

/// The writer's maps keyed by user id (`states`, `fresh`), looked up several times per message:
/// foldhash rather than std's SipHash, which took 2–3 % of the writer's CPU at 50,000 msg/s
/// (nineteenth set of docs/benchmarks.md). Seeded per process; the keys are recipients of
/// authenticated senders' messages, bounded by `max_pending` and the connection limits, as the
/// Dispatcher's maps are (`titan_delivery`'s hashing module).
type InboxMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// The page cache of [`EmbeddedStore::open`] (`store.cache_mb` in the server's config): 64 MiB,
/// not redb's 1 GiB. Recently written pages are the ones read again (inboxes are append-only),
/// and the OS page cache still holds the rest of the file. Under a write load a cache grows to its
/// limit and only then recycles its memory, so a large one keeps faulting in fresh memory for a
/// long time (in the p2p benchmark, 64 MiB gave about 10 % more messages per second than 1 GiB;
/// docs/benchmarks.md, fifth set) and makes the process that much bigger.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// File name of the database inside the directory given to [`EmbeddedStore::open`].
pub const DATABASE_FILE: &str = "titan.redb";

/// Operations that may wait for the writer before callers feel backpressure.
const QUEUE_CAPACITY: usize = 1024;

/// Result of one operation inside a transaction: the outer error is redb's (it aborts the whole
/// transaction), the inner one is the operation's own refusal (it affects only that operation).
type Outcome<T> = Result<Result<T, StoreError>, RedbStorageError>;

/// The redb-backed [`Inbox`]. Cheap to clone; the database closes when the last clone drops.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

/// Activity counters, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches run (group commits, each with at most one journal write). Less than
    /// `operations` when operations were batched.
    pub batches: u64,
    /// Operations answered from a transaction that completed (refusals such as a full inbox
    /// included; operations failed by a redb error not).
    pub operations: u64,
    /// Durable commits of the database (each empties the journal).
    pub checkpoints: u64,
}

/// Told, on the writer's thread, how long a checkpoint stopped the writer: taking the changed
/// inbox states, switching journal files and handing the commit to the committer thread (or, at
/// shutdown and in the memory store, the commit itself). No operation is answered meanwhile, so
/// these pauses show in the store's latency tail (docs/benchmarks.md). The server turns them
/// into `titan_store_checkpoint_seconds`.
pub type CheckpointObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// Told, on the journal's sync thread, how long each `fdatasync` of the journal took. Every
/// `msg.send` is answered only after one, so this is the disk's share of a send's latency (and
/// of its tail: a batch can wait for the sync in flight and then its own). The server turns
/// them into `titan_store_journal_sync_seconds`.
pub type SyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// How [`EmbeddedStore::open_with`] opens the store.
#[derive(Clone)]
pub struct EmbeddedOptions {
    /// The page cache (`store.cache_mb`); [`DEFAULT_CACHE_BYTES`] by default.
    pub cache_bytes: usize,
    pub checkpoints: Checkpoints,
    /// Called after each checkpoint with the time it took; none by default.
    pub on_checkpoint: Option<CheckpointObserver>,
    /// Called after each journal sync with the time it took; none by default.
    pub on_journal_sync: Option<SyncObserver>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            checkpoints: Checkpoints::default(),
            on_checkpoint: None,
            on_journal_sync: None,
        }
    }
}

impl std::fmt::Debug for EmbeddedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedOptions")
            .field("cache_bytes", &self.cache_bytes)
            .field("checkpoints", &self.checkpoints)
            .field("on_checkpoint", &self.on_checkpoint.is_some())
            .field("on_journal_sync", &self.on_journal_sync.is_some())
            .finish()
    }
}

/// Shared by every clone. Field order matters: `ops` drops first, which ends the writer's loop,
/// then `_writer` joins the thread, which by then has closed the database.
struct Inner {
    ops: mpsc::Sender<Op>,
    _writer: WriterThread,
    counters: Arc<Counters>,
}

/// Joins the writer thread when dropped.
struct WriterThread(Option<JoinHandle<()>>);

impl Drop for WriterThread {
    fn drop(&mut self) {
        // Blocks for at most the transaction in flight, once, at shutdown.
        if let Some(handle) = self.0.take()
            && handle.join().is_err()
        {
            tracing::error!("embedded store writer thread panicked");
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the durable store in directory `path`, creating the directory, with
    /// the default [`EmbeddedOptions`]. Blocking: call it at startup or from `spawn_blocking`.
    pub fn open(path: &Path, limits: InboxLimits) -> Result<Self, StoreError> {
        Self::open_with(path, limits, EmbeddedOptions::default())
    }

    /// [`EmbeddedStore::open`] with these options. Replays the journal first: what was stored
    /// after the last checkpoint before a crash is back before the store answers anything.
    pub fn open_with(
        path: &Path,
        limits: InboxLimits,
        options: EmbeddedOptions,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path).map_err(|e| {
            StoreError::unavailable(format!("cannot create {}: {e}", path.display()))
        })?;
        let file = path.join(DATABASE_FILE);
        let (backend, flushes) = WriteBehind::open(&file)
            .map_err(|e| StoreError::unavailable(format!("cannot open {}: {e}", file.display())))?;
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create_with_backend(backend)
            .map_err(|e| open_error(&file, e))?;
        create_tables(&db).map_err(StoreError::unavailable)?;
        let journal = journal::recover(&db, path)?;
        tracing::info!(path = %file.display(), "embedded store opened");
        let counters = Counters {
            on_checkpoint: options.on_checkpoint,
            on_journal_sync: options.on_journal_sync,
            ..Counters::default()
        };
        Self::start(
            db,
            limits,
            Some(journal),
            options.checkpoints,
            counters,
            Some(flushes),
        )
    }

    /// A store whose database lives in RAM (`memory`): the same engine, nothing on disk.
    pub fn memory(limits: InboxLimits) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(DEFAULT_CACHE_BYTES)
            .create_with_backend(memory::ChunkedMemory::default())
            .map_err(|e| open_error(Path::new(":memory:"), e))?;
        create_tables(&db).map_err(StoreError::unavailable)?;
        let (checkpoints, counters) = (Checkpoints::default(), Counters::default());
        Self::start(db, limits, None, checkpoints, counters, None)
    }

    /// How much work the writer has done so far.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            batches: self.inner.counters.batches.load(Ordering::Relaxed),
            operations: self.inner.counters.operations.load(Ordering::Relaxed),
            checkpoints: self.inner.counters.checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Starts the writer on a database whose tables exist (so transactions only open them).
    fn start(
        db: Database,
        limits: InboxLimits,
        journal: Option<Journal>,
        checkpoints: Checkpoints,
        counters: Counters,
        flushes: Option<Flushes>,
    ) -> Result<Self, StoreError> {
        let counters = Arc::new(counters);
        let (ops, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let writer = Writer::new(
            db,
            limits,
            counters.clone(),
            journal,
            checkpoints,
            flushes,
            ops.downgrade(),
        )?;
        let handle = std::thread::Builder::new()
            .name("titan-store-writer".to_owned())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::unavailable(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                ops,
                _writer: WriterThread(Some(handle)),
                counters,
            }),
        })
    }

    /// Queues an operation and waits for its answer.
    async fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .ops
            .send(op(reply))
            .await
            .map_err(|_| StoreError::unavailable("embedded store writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::unavailable("embedded store writer dropped the operation"))?
    }
}

fn create_tables(db: &Database) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    tables::migrate_device_tables(&txn)?;
    Tables::create(&txn)?;
    users::create_tables(&txn)?;
    txn.commit()?;
    Ok(())
}

fn open_error(file: &Path, e: DatabaseError) -> StoreError {
    let reason = format!("cannot open {}: {e}", file.display());
    match e {
        DatabaseError::UpgradeRequired(_)
        | DatabaseError::Storage(RedbStorageError::Corrupted(_)) => StoreError::Corrupt { reason },
        _ => StoreError::Unavailable { reason },
    }
}

#[async_trait]
impl Inbox for EmbeddedStore {
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|reply| Op::Append { batch, reply }).await
    }

    async fn append_and_read(
        &self,
        batches: Vec<Vec<NewMessage>>,
        reads: Vec<LiveRead>,
    ) -> Result<AppendedAndRead, StoreError> {
        if batches.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        self.call(|reply| Op::AppendRead {
            batches,
            reads,
            reply,
        })
        .await
    }

    async fn read_new(
        &self,
        user: &UserId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        let (user, device) = (user.clone(), device.clone());
        self.call(|reply| Op::ReadNew {
            user,
            device,
            limit,
            reply,
        })
        .await
    }

    async fn claim_pending(
        &self,
        user: &UserId,
        device: &DeviceId,
        delivered_before: Option<SystemTime>,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        let (user, device) = (user.clone(), device.clone());
        let before_ms = delivered_before.map_or(u64::MAX, unix_ms);
        let after_seq = after.map_or(0, |p| p.seq);
        self.call(|reply| Op::ClaimPending {
            user,
            device,
            before_ms,
            after_seq,
            limit,
            reply,
        })
        .await
    }

    async fn ack(
        &self,
        user: &UserId,
        device: &DeviceId,
        positions: &[Position],
    ) -> Result<u64, StoreError> {
        if positions.is_empty() {
            return Ok(0);
        }
        let (user, device, positions) = (user.clone(), device.clone(), positions.to_vec());
        self.call(|reply| Op::Ack {
            user,
            device,
            positions,
            reply,
        })
        .await
    }

    async fn ack_many(&self, mut acks: Vec<DeviceAcks>) -> Result<u64, StoreError> {
        acks.retain(|a| !a.positions.is_empty());
        if acks.is_empty() {
            return Ok(0);
        }
        self.call(|reply| Op::AckMany { acks, reply }).await
    }

    async fn depth(&self, user: &UserId) -> Result<u64, StoreError> {
        let user = user.clone();
        self.call(|reply| Op::Depth { user, reply }).await
    }

    async fn trim(&self) -> Result<u64, StoreError> {
        self.call(|reply| Op::Trim { reply }).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|reply| Op::Ping { reply }).await
    }

    /// One writer takes the calls from one queue in turn, and answers a batch only after every
    /// earlier batch (through the sync thread when one is waiting there: `Syncer::must_wait`).
    fn runs_calls_in_order(&self) -> bool {
        true
    }
}

#[async_trait]
impl Users for EmbeddedStore {
    async fn sign_in(&self, profile: &SignInProfile) -> Result<SignedInUser, StoreError> {
        let profile = profile.clone();
        self.call(|reply| Op::Users(UserOp::SignIn { profile, reply }))
            .await
    }

    async fn revoke(&self, user: &UserId, at: SystemTime) -> Result<(), StoreError> {
        let (user, at_ms) = (user.clone(), to_ms(at));
        self.call(|reply| Op::Users(UserOp::Revoke { user, at_ms, reply }))
            .await
    }

    async fn revoked_before(&self, user: &UserId) -> Result<Option<SystemTime>, StoreError> {
        let user = user.clone();
        let ms = self
            .call(|reply| Op::Users(UserOp::RevokedBefore { user, reply }))
            .await?;
        Ok(ms.map(from_ms))
    }

    async fn revocations(&self) -> Result<Vec<(UserId, SystemTime)>, StoreError> {
        let all = self
            .call(|reply| Op::Users(UserOp::Revocations { reply }))
            .await?;
        Ok(all.into_iter().map(|(u, ms)| (u, from_ms(ms))).collect())
    }
}
