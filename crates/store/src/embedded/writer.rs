//! The writer thread: the only code that touches the database after it is opened.
//!
//! Callers queue an [`Op`] with a oneshot reply. The thread takes everything queued (up to
//! [`MAX_OPS_PER_TRANSACTION`]) and runs it in ONE write transaction: a group commit, so a burst
//! of appends costs one fsync instead of one each. Replies are sent only after the commit, so
//! nobody sees state that could still be rolled back. An operation's own refusal (a full inbox,
//! a corrupt message) writes nothing and leaves the others alone; a redb error aborts the
//! transaction and fails every operation in it with [`StoreError::Unavailable`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use redb::{Database, Durability, StorageError, WriteTransaction};
use titan_protocol::{DeviceId, UserId};
use tokio::sync::{mpsc, oneshot};

use super::push_tokens::PushOp;
use super::tables::{Tables, unix_ms};
use super::users::{self, UserOp};
use super::{append, cursor};
use crate::error::StoreError;
use crate::inbox::{
    Appended, AppendedAndRead, Delivered, InboxLimits, LiveRead, NewMessage, Position,
};

/// Upper bound on the operations of one transaction, so one commit stays short even under a
/// flood and replies keep flowing.
const MAX_OPS_PER_TRANSACTION: usize = 512;

/// Where an operation's answer goes.
pub(super) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// One request to the writer.
pub(super) enum Op {
    Append {
        batch: Vec<NewMessage>,
        reply: Reply<Vec<Appended>>,
    },
    /// The appends of `batches` (each on its own, in order) and, when one succeeds, `read_new`
    /// for each of `reads`, in one transaction.
    AppendRead {
        batches: Vec<Vec<NewMessage>>,
        reads: Vec<LiveRead>,
        reply: Reply<AppendedAndRead>,
    },
    ReadNew {
        user: UserId,
        device: DeviceId,
        limit: usize,
        reply: Reply<Vec<Delivered>>,
    },
    ClaimPending {
        user: UserId,
        device: DeviceId,
        before_ms: u64,
        after_seq: u64,
        limit: usize,
        reply: Reply<Vec<Delivered>>,
    },
    Ack {
        user: UserId,
        device: DeviceId,
        positions: Vec<Position>,
        reply: Reply<u64>,
    },
    Depth {
        user: UserId,
        reply: Reply<u64>,
    },
    Trim {
        reply: Reply<u64>,
    },
    Ping {
        reply: Reply<()>,
    },
    /// Users and revocations (`users`).
    Users(UserOp),
    /// A push registry operation (`push_tokens`).
    Push(PushOp),
}

/// Counters the writer keeps, read through [`super::EmbeddedStore::stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub transactions: AtomicU64,
    pub operations: AtomicU64,
}

/// An operation that ran and waits for its transaction to commit before answering.
pub(super) trait Answer: Send {
    /// Sends the operation's result: the transaction committed.
    fn send(self: Box<Self>);
    /// Replaces the result with a failure: the transaction did not commit.
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
    /// A commit with `Durability::None` happened since the last durable one.
    pub unsynced: bool,
}

impl Writer {
    /// Serves operations until every sender is gone, then makes the last non-durable commits
    /// durable so a clean shutdown loses nothing.
    pub fn run(mut self, mut ops: mpsc::Receiver<Op>) {
        while let Some(first) = ops.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_OPS_PER_TRANSACTION {
                match ops.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            self.execute(batch);
        }
        if self.unsynced
            && let Err(e) = self.sync()
        {
            tracing::error!(error = %e, "embedded store: final sync failed");
        }
        tracing::debug!("embedded store writer stopped");
    }

    /// An empty durable commit: redb then persists the non-durable commits before it.
    fn sync(&mut self) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        self.unsynced = false;
        Ok(())
    }

    /// Runs `batch` in one write transaction and answers every operation.
    fn execute(&mut self, batch: Vec<Op>) {
        let now_ms = unix_ms(SystemTime::now());
        let durable = batch.iter().any(|op| match op {
            Op::Append { .. } | Op::AppendRead { .. } => true,
            Op::Users(op) => op.is_durable_write(),
            _ => false,
        });
        let writes = batch.iter().any(|op| match op {
            Op::Depth { .. } | Op::Ping { .. } | Op::Push(PushOp::Devices { .. }) => false,
            Op::Users(op) => !op.is_read(),
            _ => true,
        });
        let count = batch.len() as u64;

        let mut txn = match self.db.begin_write() {
            Ok(txn) => txn,
            Err(e) => return fail_all(batch, Vec::new(), &e.to_string()),
        };
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        if let Err(e) = txn.set_durability(durability) {
            return fail_all(batch, Vec::new(), &e.to_string());
        }

        let mut answers: Vec<Box<dyn Answer>> = Vec::with_capacity(batch.len());
        {
            let mut tables = match Tables::open(&txn) {
                Ok(tables) => tables,
                Err(e) => return fail_all(batch, answers, &e.to_string()),
            };
            let mut ops = batch.into_iter();
            while let Some(op) = ops.next() {
                match self.apply(&txn, &mut tables, op, now_ms) {
                    Ok(answer) => answers.push(answer),
                    Err(e) => return fail_all(ops.collect(), answers, &e.to_string()),
                }
            }
        }

        let finished = if writes {
            txn.commit().map_err(|e| e.to_string())
        } else {
            txn.abort().map_err(|e| e.to_string())
        };
        if let Err(reason) = finished {
            return fail_all(Vec::new(), answers, &reason);
        }
        if writes {
            self.counters.transactions.fetch_add(1, Ordering::Relaxed);
            self.unsynced = !durable;
        }
        self.counters.operations.fetch_add(count, Ordering::Relaxed);
        for answer in answers {
            answer.send();
        }
    }

    /// Runs one operation inside the batch's transaction. `Err` (a redb error) has already
    /// answered this operation and dooms the transaction.
    fn apply(
        &self,
        txn: &WriteTransaction,
        t: &mut Tables<'_>,
        op: Op,
        now_ms: u64,
    ) -> Result<Box<dyn Answer>, StorageError> {
        match op {
            Op::Append { batch, reply } => {
                ready(reply, append::append(t, &batch, now_ms, &self.limits))
            }
            Op::AppendRead {
                batches,
                reads,
                reply,
            } => ready(
                reply,
                append_read(t, &batches, &reads, now_ms, &self.limits),
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
            Op::Depth { user, reply } => ready(reply, t.depth(user.as_str()).map(Ok)),
            Op::Trim { reply } => ready(reply, append::trim(t, now_ms, &self.limits).map(Ok)),
            Op::Ping { reply } => ready(reply, Ok(Ok(()))),
            Op::Users(op) => apply_users(txn, op),
            Op::Push(op) => op.apply(t),
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
) -> Result<Result<AppendedAndRead, StoreError>, StorageError> {
    let mut appended = Vec::with_capacity(batches.len());
    for batch in batches {
        appended.push(append::append(t, batch, now_ms, limits)?);
    }
    let mut read = Vec::with_capacity(reads.len());
    if appended.iter().any(Result::is_ok) {
        for r in reads {
            read.push(cursor::read_new(
                t,
                r.user.as_str(),
                r.device.as_str(),
                r.limit,
                now_ms,
            )?);
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
fn fail_all(pending: Vec<Op>, answers: Vec<Box<dyn Answer>>, reason: &str) {
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

impl Op {
    /// Answers an operation that never ran. A caller that stopped waiting needs no answer.
    fn fail(self, reason: &str) {
        let err = StoreError::unavailable(reason);
        match self {
            Op::Append { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Op::AppendRead { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Op::ReadNew { reply, .. } | Op::ClaimPending { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            Op::Ack { reply, .. } | Op::Depth { reply, .. } | Op::Trim { reply } => {
                let _ = reply.send(Err(err));
            }
            Op::Ping { reply } => {
                let _ = reply.send(Err(err));
            }
            Op::Users(op) => op.fail(err),
            Op::Push(op) => op.fail(err),
        }
    }
}
