//! The writer thread: the only code that touches the database after it is opened.
//!
//! Callers queue an [`Op`] with a oneshot reply. The thread takes everything queued (up to
//! [`MAX_OPS_PER_BATCH`]) and runs it as one batch: a group commit, so a burst of appends
//! costs one fsync instead of one each. An operation's own refusal (a full inbox, a corrupt
//! message) writes nothing and leaves the others alone.
//!
//! Batches do not each commit to redb. They all run in one open write transaction, which every
//! operation (reads included) goes through, so each sees the others' changes; a B-tree page is
//! then copied once per checkpoint rather than once per batch, which was most of the writer's
//! work when every batch committed. What a batch's appends stored is made durable by the journal
//! (`journal`): one sequential write per batch; the sync thread (`sync`) then runs one
//! `fdatasync` for every batch written meanwhile and answers them, while the writer goes on with
//! the next batch. The heads and device records of active inboxes are kept in memory (`states`,
//! a hash lookup where redb needed a B-tree lookup and insert per message) and written to the
//! transaction by each checkpoint. A checkpoint commits the transaction durably (every page
//! changed since the last one, written at once) when [`Checkpoints::every`] has passed or the
//! journal has grown past [`Checkpoints::journal_bytes`], and at shutdown. The durable store's
//! file is written behind (`super::write_behind`), and the commit itself runs on the committer
//! thread (`commit`), the writer answering what it can from memory meanwhile: the journal
//! switches to its other file, and the file it left is released (written over from its start
//! later) once the checkpoint is on disk (`checkpoint`).
//! Users' durable writes (sign-ins, revocations) commit durably at once and wait for the disk,
//! which is a checkpoint too. A redb error, a failed journal write or sync, or a failed
//! checkpoint loses the open transaction: the batch at hand fails with
//! [`StoreError::Unavailable`] and the state is rebuilt from the last checkpoint plus the
//! journal (cursor moves and acks since the checkpoint are lost, which only redelivers; see
//! `checkpoint`).

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use redb::{Database, StorageError, WriteTransaction};
use tokio::sync::mpsc;

use super::client_ids::UncommittedClientIds;
use super::fresh::FreshAppends;
use super::journal::{Journal, Redo};
use super::states::InboxStates;
use super::tables::{Tables, unix_ms};
use super::users::{self, UserOp};
use super::write_behind::Flushes;
use super::{append, cursor};
use crate::error::StoreError;
use crate::inbox::{AppendedAndRead, InboxLimits, LiveRead, NewMessage};

mod checkpoint;
mod commit;
mod op;
mod sync;
pub use checkpoint::Checkpoints;
use commit::{Committer, Committing};
pub(super) use op::{Op, Reply};
pub(super) use sync::Syncer;

/// Upper bound on the operations of one batch, so one batch stays short even under a flood and
/// replies keep flowing.
const MAX_OPS_PER_BATCH: usize = 512;

/// What the writer reports while it runs: counters read through
/// [`super::EmbeddedStore::stats`], and the observers told of each checkpoint's pause and each
/// journal sync.
#[derive(Default)]
pub(super) struct Counters {
    pub batches: AtomicU64,
    pub operations: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Told how long each checkpoint stopped the writer ([`super::EmbeddedOptions`]).
    pub on_checkpoint: Option<super::CheckpointObserver>,
    /// Told how long each journal sync took ([`super::EmbeddedOptions`]).
    pub on_journal_sync: Option<super::SyncObserver>,
    /// Test hooks of the committer thread (`commit`).
    #[cfg(test)]
    pub commit_hooks: commit::Hooks,
}

/// An operation that ran and waits for its batch to be journaled (or committed) before answering.
pub(super) trait Answer: Send {
    /// Sends the operation's result: its batch is durable.
    fn send(self: Box<Self>);
    /// Replaces the result with a failure: its batch was lost.
    fn fail(self: Box<Self>, reason: &str);
}

struct Ready<T> {
    reply: Reply<T>,
    result: Result<T, StoreError>,
}

impl<T: Send> Answer for Ready<T> {
    fn send(self: Box<Self>) {
        // The caller may have given up waiting; its result is committed all the same.
        let _ = self.reply.send(self.result);
    }
    fn fail(self: Box<Self>, reason: &str) {
        let _ = self.reply.send(Err(StoreError::unavailable(reason)));
    }
}

/// State the writer loop owns.
pub(super) struct Writer {
    pub db: Database,
    pub limits: InboxLimits,
    pub counters: Arc<Counters>,
    /// `None` for the memory store, which has nothing to make durable.
    pub journal: Option<Journal>,
    pub checkpoints: Checkpoints,
    /// The write transaction every batch since the last checkpoint ran in. Operations see
    /// each other's changes through it; it is committed (durably) only by a checkpoint.
    pub txn: Option<WriteTransaction>,
    /// An operation that writes ran since the last checkpoint.
    pub dirty: bool,
    /// The open transaction was lost and rebuilding it failed: retried before the next batch.
    pub needs_restore: bool,
    pub last_checkpoint: Instant,
    /// The journal records of the transaction being built; kept to reuse its buffer.
    pub redo: Redo,
    /// The heads and device records of active inboxes, ahead of the open transaction's tables
    /// (`states`): written to them by each checkpoint, dropped with a lost transaction.
    pub states: InboxStates,
    /// The messages appended since the last checkpoint, for the reads that follow them
    /// (`super::fresh`); emptied by each checkpoint, dropped with a lost transaction.
    pub fresh: FreshAppends,
    /// The client ids appends wrote into the open transaction, and while a commit runs those
    /// held for the next one: handed to the commit of that transaction (`commit`).
    pub client_ids: UncommittedClientIds,
    /// Syncs the journal and answers the batches that wrote to it (`sync`); `None` without a
    /// journal.
    pub syncer: Option<Syncer>,
    /// The database file's flush thread, where it is written behind (`super::write_behind`).
    pub flushes: Option<Flushes>,
    /// The flush batch that puts the last checkpoint on disk, while the journal file that
    /// checkpoint left is not released yet.
    pub retired: Option<u64>,
    /// Commits checkpoints beside the writer (`commit`); `None` without a journal or a file
    /// written behind (the memory store), where the writer commits them itself.
    pub committer: Option<Committer>,
    /// While the committer runs a checkpoint's commit: what waits for its end.
    pub committing: Option<Committing>,
    /// The writer's own queue, for the committer to say a commit ended; weak, so that it does
    /// not keep the queue open once the store's handles are gone.
    pub queue: Option<mpsc::WeakSender<Op>>,
}

impl Writer {
    /// A writer with nothing open yet; with a journal, its sync thread is started.
    pub fn new(
        db: Database,
        limits: InboxLimits,
        counters: Arc<Counters>,
        journal: Option<Journal>,
        checkpoints: Checkpoints,
        flushes: Option<Flushes>,
        queue: mpsc::WeakSender<Op>,
    ) -> Result<Self, StoreError> {
        let syncer = journal
            .is_some()
            .then(|| Syncer::start(counters.on_journal_sync.clone()))
            .transpose()?;
        let committer = (journal.is_some() && flushes.is_some())
            .then(|| Committer::start(counters.clone()))
            .transpose()?;
        Ok(Self {
            db,
            limits,
            counters,
            journal,
            checkpoints,
            txn: None,
            dirty: false,
            needs_restore: false,
            last_checkpoint: Instant::now(),
            redo: Redo::default(),
            states: InboxStates::default(),
            fresh: FreshAppends::default(),
            client_ids: UncommittedClientIds::default(),
            syncer,
            flushes,
            retired: None,
            committer,
            committing: None,
            queue: Some(queue),
        })
    }

    /// Serves operations until every sender is gone, then checkpoints so a clean shutdown
    /// leaves an empty journal.
    pub fn run(mut self, mut ops: mpsc::Receiver<Op>) {
        while let Some(first) = ops.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_OPS_PER_BATCH {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.serve(batch);
            if self.committing.is_some() {
                // The commit in flight ends first.
            } else if self.dirty && self.checkpoint_due() {
                self.checkpoint();
            } else if let Err(e) = self.settle_retired(false)
                && !self.needs_restore
            {
                tracing::error!(error = %e, "embedded store: checkpoint failed");
                self.needs_restore = true;
            }
        }
        if self.dirty {
            self.checkpoint();
        }
        match self.settle_retired(true) {
            Err(e) => tracing::error!(error = %e, "embedded store: last checkpoint failed"),
            // Everything the journal held is in the database, on disk: its files are left empty
            // rather than released, so the directory holds no frames an older binary could read.
            Ok(()) if !self.dirty && !self.needs_restore => {
                if let Some(journal) = &mut self.journal
                    && let Err(e) = journal.truncate()
                {
                    tracing::warn!(error = %e, "embedded store: cannot empty the journal");
                }
            }
            Ok(()) => {}
        }
        // Only reads ran since the last checkpoint (or it failed): nothing to keep. Ended here,
        // before the database closes.
        if let Some(txn) = self.txn.take() {
            let _ = txn.abort();
        }
        // Answers what it still holds, then ends.
        self.syncer = None;
        tracing::debug!("embedded store writer stopped");
    }

    /// Runs `batch` in the open write transaction (a group commit) and answers every operation
    /// once what it stored is in the journal.
    pub(super) fn execute(&mut self, batch: Vec<Op>) {
        if self.syncer.as_ref().is_some_and(Syncer::failed) {
            // What the journal holds can no longer be trusted to be on disk (see `sync`).
            self.needs_restore = true;
        }
        if self.needs_restore && !self.restore() {
            return fail_all(batch, Vec::new(), "the store is recovering from a failure");
        }
        let now_ms = unix_ms(SystemTime::now());
        // Rare (a sign-in, a revocation): committed durably at once rather than journaled.
        let durable = batch.iter().any(|op| match op {
            Op::Users(op) => op.is_durable_write(),
            _ => false,
        });
        let writes = batch.iter().any(Op::writes);
        let count = batch.len() as u64;

        let txn = match self.txn.take() {
            Some(txn) => txn,
            None => match self.db.begin_write() {
                Ok(txn) => txn,
                Err(e) => return fail_all(batch, Vec::new(), &e.to_string()),
            },
        };
        let mut redo = std::mem::take(&mut self.redo);
        redo.clear();
        let mut answers: Vec<Box<dyn Answer>> = Vec::with_capacity(batch.len());
        let mut ops = batch.into_iter();
        let failure = {
            let mut tables = Tables::open(&txn);
            tables.states = std::mem::take(&mut self.states);
            tables.fresh = std::mem::take(&mut self.fresh);
            tables.client_ids_written = std::mem::take(&mut self.client_ids);
            let mut failure = None;
            for op in ops.by_ref() {
                match self.apply(Some(&txn), &mut tables, op, now_ms, &mut redo) {
                    Ok(answer) => answers.push(answer),
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            self.states = std::mem::take(&mut tables.states);
            self.fresh = std::mem::take(&mut tables.fresh);
            self.client_ids = std::mem::take(&mut tables.client_ids_written);
            failure
        };
        let mut wrote = None;
        let finished = match failure {
            // Ended here: restoring begins a write transaction, which waits for this one.
            Some(reason) => {
                let _ = txn.abort();
                Err(reason)
            }
            None if durable => self.commit_durably(txn).map_err(|e| e.to_string()),
            None => match &mut self.journal {
                // Journal first, answers once it is synced: an answered append is on disk.
                Some(journal) if !redo.is_empty() => journal.write(&mut redo).map(|()| {
                    wrote = Some(journal.handle());
                    self.txn = Some(txn);
                }),
                _ => {
                    self.txn = Some(txn);
                    Ok(())
                }
            },
        };
        self.redo = redo;
        if let Err(reason) = finished {
            fail_all(ops.collect(), answers, &reason);
            self.restore();
            return;
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.operations.fetch_add(count, Ordering::Relaxed);
        if durable {
            self.checkpointed();
        } else if writes {
            self.dirty = true;
        }
        self.answer(wrote, answers);
    }

    /// Sends a batch's answers once the journal frame it wrote (if any) is synced, and after
    /// every batch handed to the sync thread before it.
    pub(super) fn answer(&self, wrote: Option<Arc<File>>, answers: Vec<Box<dyn Answer>>) {
        match &self.syncer {
            Some(syncer) if syncer.must_wait(wrote.is_some()) => syncer.hand_over(wrote, answers),
            _ => {
                for answer in answers {
                    answer.send();
                }
            }
        }
    }

    /// Runs one operation inside the batch's transaction. `Err` (a redb error) has already
    /// answered this operation and dooms the transaction.
    pub(super) fn apply(
        &self,
        txn: Option<&WriteTransaction>,
        t: &mut Tables<'_>,
        op: Op,
        now_ms: u64,
        redo: &mut Redo,
    ) -> Result<Box<dyn Answer>, StorageError> {
        match op {
            Op::Append { batch, reply } => {
                ready(reply, append::append(t, &batch, now_ms, &self.limits, redo))
            }
            Op::AppendRead {
                batches,
                reads,
                reply,
            } => ready(
                reply,
                append_read(t, &batches, &reads, now_ms, &self.limits, redo),
            ),
            Op::ReadNew {
                user,
                device,
                limit,
                reply,
            } => ready(
                reply,
                cursor::read_new(t, user.as_str(), device.as_str(), limit, now_ms),
            ),
            Op::ClaimPending {
                user,
                device,
                before_ms,
                after_seq,
                limit,
                reply,
            } => ready(
                reply,
                cursor::claim_pending(
                    t,
                    user.as_str(),
                    device.as_str(),
                    (before_ms, after_seq),
                    limit,
                    now_ms,
                ),
            ),
            Op::Ack {
                user,
                device,
                positions,
                reply,
            } => ready(
                reply,
                cursor::ack(t, user.as_str(), device.as_str(), &positions).map(Ok),
            ),
            Op::AckMany { acks, reply } => {
                let mut removed = 0;
                for a in &acks {
                    removed += cursor::ack(t, a.user.as_str(), a.device.as_str(), &a.positions)?;
                }
                ready(reply, Ok(Ok(removed)))
            }
            Op::Depth { user, reply } => ready(reply, t.depth(user.as_str()).map(Ok)),
            Op::Trim { reply } => ready(reply, append::trim(t, now_ms, &self.limits).map(Ok)),
            Op::Ping { reply } => ready(reply, Ok(Ok(()))),
            Op::Users(op) => match txn {
                Some(txn) => apply_users(txn, op),
                // `commit::runs_in_memory` keeps these for the commit's end.
                None => {
                    op.fail(StoreError::unavailable(
                        "the store ran an operation out of turn",
                    ));
                    Err(StorageError::Corrupted(
                        "a users operation ran while a checkpoint commits".to_owned(),
                    ))
                }
            },
            Op::Push(op) => op.apply(t),
            // `serve` takes these out of every batch.
            Op::Committed { .. } => Err(StorageError::Corrupted(
                "a commit's end was run as an operation".to_owned(),
            )),
        }
    }
}

/// Each batch's append, then (only if one succeeded) each read, inside one transaction. A
/// batch's own refusal (a full inbox) fails that batch alone, and a read's (a corrupt message)
/// that read alone; a redb error dooms the transaction.
fn append_read(
    t: &mut Tables<'_>,
    batches: &[Vec<NewMessage>],
    reads: &[LiveRead],
    now_ms: u64,
    limits: &InboxLimits,
    redo: &mut Redo,
) -> Result<Result<AppendedAndRead, StoreError>, StorageError> {
    let mut appended = Vec::with_capacity(batches.len());
    for batch in batches {
        appended.push(append::append(t, batch, now_ms, limits, redo)?);
    }
    let mut read = Vec::with_capacity(reads.len());
    if appended.iter().any(Result::is_ok) {
        for r in reads {
            // While a checkpoint commits (no transaction), the reads stop at the first that would
            // read the inbox table; the caller reads those devices again (`Inbox::append_and_read`).
            let (user, device) = (r.user.as_str(), r.device.as_str());
            if t.held.is_some()
                && !commit::read_in_memory(&mut t.states, &t.fresh, user, device, r.limit)
            {
                break;
            }
            read.push(cursor::read_new(t, user, device, r.limit, now_ms)?);
        }
    }
    Ok(Ok((appended, read)))
}

/// Runs one users operation (see `users`).
fn apply_users(txn: &WriteTransaction, op: UserOp) -> Result<Box<dyn Answer>, StorageError> {
    match op {
        UserOp::SignIn { profile, reply } => ready(reply, users::sign_in(txn, &profile)),
        UserOp::Revoke { user, at_ms, reply } => ready(reply, users::revoke(txn, &user, at_ms)),
        UserOp::RevokedBefore { user, reply } => ready(reply, users::revoked_before(txn, &user)),
        UserOp::Revocations { reply } => ready(reply, users::revocations(txn)),
    }
}

/// Wraps an operation's outcome: a logical result waits for the commit, a redb error answers
/// now and is passed up to abort the transaction.
pub(super) fn ready<T: Send + 'static>(
    reply: Reply<T>,
    outcome: Result<Result<T, StoreError>, StorageError>,
) -> Result<Box<dyn Answer>, StorageError> {
    match outcome {
        Ok(result) => Ok(Box::new(Ready { reply, result })),
        Err(e) => {
            tracing::error!(error = %e, "embedded store: operation failed, aborting transaction");
            let _ = reply.send(Err(StoreError::unavailable(&e)));
            Err(e)
        }
    }
}

/// Fails the operations that did not run (`pending`) and those waiting for the commit
/// (`answers`): the transaction is lost.
pub(super) fn fail_all(pending: Vec<Op>, answers: Vec<Box<dyn Answer>>, reason: &str) {
    tracing::error!(
        reason,
        operations = pending.len() + answers.len(),
        "embedded store: transaction failed"
    );
    for answer in answers {
        answer.fail(reason);
    }
    for op in pending {
        op.fail(reason);
    }
}
