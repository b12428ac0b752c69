//! Checkpoints committed beside the writer, so that appends go on while redb commits.
//!
//! A checkpoint's commit stopped the writer for 1.2–1.6 ms twenty times a second at 10,000
//! msg/s, about 0.9 ms of it whatever the commit held (redb's checksums of the dirty pages, its
//! page writes, its bookkeeping of freed pages): every message that arrived meanwhile waited,
//! and that was the difference between the embedded store's p99 and the memory store's
//! (docs/benchmarks.md, twenty-sixth set). Now the writer takes a copy of the inbox states that
//! changed and hands it with the transaction to the committer thread, which writes them and
//! commits; the writer switches the journal to its other file and goes on.
//! Until the commit ends there is no transaction: an operation that needs only what the writer
//! holds in memory runs at once (an append whose recipients' inbox states are loaded, so its
//! limit check and positions come from memory; an ack; a read whose messages are all in
//! `fresh`), its journal frame making it durable as always and its inbox rows held
//! ([`HeldRow`]) for the next transaction. An append's client ids are looked up among the held
//! rows and in a read transaction of the database as committed before, unless the committing
//! transaction may hold one of them (`crate::embedded::client_ids`): then it waits. Anything
//! else, and everything after the first operation that must wait, waits for the commit and then
//! runs in order, so no operation overtakes an earlier one.
//!
//! The commit's end reaches the writer as [`Op::Committed`] on its own queue: the committer
//! holds a sender for the length of one commit, taken from the writer's weak one, so a store
//! being dropped still ends once the commit in flight has. If the commit failed, the writer
//! rebuilds its state from the last checkpoint and the journal (`Writer::restore`), which holds
//! the frames of everything answered meanwhile; the held rows are dropped with the rest.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use redb::WriteTransaction;
use tokio::sync::mpsc;

use super::checkpoint::ReadyCommit;
use super::{Answer, Counters, Op, Syncer, Writer, fail_all};
use crate::embedded::client_ids::UncommittedClientIds;
use crate::embedded::fresh::FreshAppends;
use crate::embedded::states::InboxStates;
use crate::embedded::tables::{CommitInFlight, HeldRow, Tables, unix_ms};
use crate::embedded::write_behind::Flushes;
use crate::error::StoreError;
use crate::inbox::{InboxLimits, NewMessage};

/// A transaction to commit with what the writer took for it, and where to say it is done.
struct Job {
    txn: WriteTransaction,
    ready: ReadyCommit,
    flushes: Flushes,
    done: mpsc::Sender<Op>,
}

/// The committer thread. Dropping it lets the thread finish the commit in flight and waits.
pub(in crate::embedded) struct Committer {
    jobs: Option<std_mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

/// Test hooks: hold the committer before its commits, fail the next one, count the commits
/// handed over.
#[cfg(test)]
#[derive(Default)]
pub(in crate::embedded) struct Hooks {
    pub gate: Arc<std::sync::Mutex<()>>,
    pub fail_next: std::sync::atomic::AtomicBool,
    pub handed_over: std::sync::atomic::AtomicU64,
}

impl Committer {
    pub fn start(counters: Arc<Counters>) -> Result<Self, StoreError> {
        let (jobs, received) = std_mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("titan-store-commit".to_owned())
            .spawn(move || {
                while let Ok(job) = received.recv() {
                    run_job(job, &counters);
                }
            })
            .map_err(|e| StoreError::unavailable(format!("cannot start committer thread: {e}")))?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }
}

/// Commits one job and tells the writer it ended. `counters` carries the test hooks.
#[cfg_attr(not(test), allow(unused_variables))]
fn run_job(job: Job, counters: &Counters) {
    let Job {
        txn,
        ready,
        flushes,
        done,
    } = job;
    #[cfg(test)]
    {
        drop(counters.commit_hooks.gate.lock());
        if counters
            .commit_hooks
            .fail_next
            .swap(false, Ordering::AcqRel)
        {
            let _ = txn.abort();
            let result = Err("failing on purpose (test)".to_owned());
            let _ = done.blocking_send(Op::Committed { result, batch: 0 });
            return;
        }
    }
    let (result, batch) = flushes.deferred(|| ready.commit(txn));
    let result = result.map_err(|e| e.to_string());
    // The writer ends only after this answer: it has no other way to learn that the commit
    // ended, and `done` keeps its queue open until then.
    let _ = done.blocking_send(Op::Committed { result, batch });
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("embedded store: the committer thread panicked");
        }
    }
}

/// What the writer holds while a commit runs on the committer thread.
pub(in crate::embedded) struct Committing {
    /// Operations that wait for the commit's end, in arrival order.
    pub waiting: Vec<Op>,
    /// Inbox rows of the appends that ran meanwhile, for the next transaction.
    pub held: Vec<HeldRow>,
    /// What appends with client ids check meanwhile.
    pub in_flight: CommitInFlight,
}

impl Committing {
    /// A commit just handed over, of a transaction that wrote the client ids `written`.
    fn new(written: UncommittedClientIds) -> Self {
        Self {
            waiting: Vec::new(),
            held: Vec::new(),
            in_flight: CommitInFlight::new(written),
        }
    }
}

impl Writer {
    /// Runs `batch` in order: each commit's end where it came, the operations around it as a
    /// group commit, or while a commit runs as far as they can without a transaction (`commit`).
    pub(super) fn serve(&mut self, batch: Vec<Op>) {
        let mut group = Vec::with_capacity(batch.len());
        for op in batch {
            match op {
                Op::Committed { result, batch } => {
                    self.run_group(std::mem::take(&mut group));
                    self.committed(result, batch);
                }
                op => group.push(op),
            }
        }
        self.run_group(group);
    }

    fn run_group(&mut self, group: Vec<Op>) {
        if group.is_empty() {
            return;
        }
        match self.committing.take() {
            Some(mut committing) => {
                self.execute_committing(group, &mut committing);
                self.committing = Some(committing);
            }
            None => self.execute(group),
        }
    }

    /// Hands `txn` and what was taken for its commit to the committer; gives them back when
    /// there is none or the store is being dropped (no sender left to hand over), for the caller
    /// to commit itself.
    /// `written` are the client ids `txn` holds that the last commit did not.
    pub(super) fn commit_beside(
        &mut self,
        txn: WriteTransaction,
        ready: ReadyCommit,
        written: UncommittedClientIds,
    ) -> Option<(WriteTransaction, ReadyCommit)> {
        let (Some(committer), Some(flushes), Some(done)) = (
            &self.committer,
            &self.flushes,
            self.queue.as_ref().and_then(mpsc::WeakSender::upgrade),
        ) else {
            return Some((txn, ready));
        };
        let Some(jobs) = &committer.jobs else {
            return Some((txn, ready));
        };
        let job = Job {
            txn,
            ready,
            flushes: flushes.clone(),
            done,
        };
        match jobs.send(job) {
            Ok(()) => {
                #[cfg(test)]
                self.counters
                    .commit_hooks
                    .handed_over
                    .fetch_add(1, Ordering::AcqRel);
                self.committing = Some(Committing::new(written));
                None
            }
            Err(std_mpsc::SendError(job)) => Some((job.txn, job.ready)),
        }
    }

    /// Runs what of `batch` needs no transaction, on the inbox states and `fresh` alone (its
    /// inbox rows held for the next transaction), and keeps the rest, in order, for the end of
    /// the commit (see the module doc). What ran is answered once its journal frame is synced,
    /// as [`Writer::execute`] answers. Each operation is checked just before it runs, against the
    /// state the operations before it left.
    pub(super) fn execute_committing(&mut self, batch: Vec<Op>, committing: &mut Committing) {
        if self.syncer.as_ref().is_some_and(Syncer::failed) {
            // Restored once the commit has ended; until then nothing runs.
            self.needs_restore = true;
        }
        let now_ms = unix_ms(SystemTime::now());
        let mut redo = std::mem::take(&mut self.redo);
        redo.clear();
        let mut answers: Vec<Box<dyn Answer>> = Vec::with_capacity(batch.len());
        let Committing {
            waiting,
            held,
            in_flight,
        } = committing;
        if batch.iter().any(Op::has_client_ids) {
            in_flight.open_committed(&self.db);
        }
        let mut ops = batch.into_iter();
        let mut tables = Tables::without_transaction(std::mem::take(held), in_flight);
        tables.states = std::mem::take(&mut self.states);
        tables.fresh = std::mem::take(&mut self.fresh);
        tables.client_ids_written = std::mem::take(&mut self.client_ids);
        let mut failure = None;
        let mut writes = false;
        for op in ops.by_ref() {
            if !waiting.is_empty()
                || self.needs_restore
                || !runs_in_memory(&op, &mut tables, &self.limits)
            {
                waiting.push(op);
                continue;
            }
            writes |= op.writes();
            match self.apply(None, &mut tables, op, now_ms, &mut redo) {
                Ok(answer) => answers.push(answer),
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let count = answers.len() as u64;
        self.states = std::mem::take(&mut tables.states);
        self.fresh = std::mem::take(&mut tables.fresh);
        self.client_ids = std::mem::take(&mut tables.client_ids_written);
        *held = tables.held.take().unwrap_or_default();
        let mut wrote = None;
        if failure.is_none()
            && !redo.is_empty()
            && let Some(journal) = &mut self.journal
        {
            match journal.write(&mut redo) {
                Ok(()) => wrote = Some(journal.handle()),
                Err(e) => failure = Some(e),
            }
        }
        self.redo = redo;
        if let Some(reason) = failure {
            // What ran changed the states in memory only: rebuilt from the journal once the
            // commit has ended.
            fail_all(ops.collect(), answers, &reason);
            self.needs_restore = true;
            return;
        }
        if answers.is_empty() {
            return;
        }
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.operations.fetch_add(count, Ordering::Relaxed);
        self.dirty |= writes;
        self.answer(wrote, answers);
    }

    /// The commit ended: on success the held rows go into a new transaction and the waiting
    /// operations run; on failure the state is rebuilt from the journal first.
    pub(super) fn committed(&mut self, result: Result<(), String>, batch: u64) {
        let Some(Committing {
            waiting,
            held,
            in_flight,
        }) = self.committing.take()
        else {
            return;
        };
        // Ends its read transaction.
        drop(in_flight);
        match result {
            Ok(()) => {
                self.retired = Some(batch);
                self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
                if self.needs_restore {
                    // The journal holds the held rows' frames: the restore puts them back.
                    self.restore();
                } else if let Err(e) = self.insert_held(held) {
                    tracing::error!(error = %e, "embedded store: cannot store held rows");
                    self.restore();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded store: checkpoint failed");
                self.restore();
            }
        }
        if !waiting.is_empty() {
            self.execute(waiting);
        }
    }

    /// Inserts the rows appended during the commit into a new open transaction.
    fn insert_held(&mut self, held: Vec<HeldRow>) -> Result<(), redb::Error> {
        if held.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut tables = Tables::open(&txn);
            // (The ids go into the writer's `client_ids` when they were held, not again here.)
            for row in &held {
                let client = row.client.as_ref().map(|c| c.key());
                tables.insert_message(&row.user, row.seq, row.ms, &row.body, client.as_ref())?;
            }
        }
        self.txn = Some(txn);
        self.dirty = true;
        Ok(())
    }
}

/// Whether `op` can run with no transaction: everything it reads and changes is in the inbox
/// states, `fresh` and the held rows, and any client id it looks up is in the held rows or
/// the committed table. Checked here without changing anything.
fn runs_in_memory(op: &Op, t: &mut Tables<'_>, limits: &InboxLimits) -> bool {
    let states = &mut t.states;
    match op {
        Op::Ping { .. } => true,
        Op::Append { batch, .. } => {
            appends_fit(std::slice::from_ref(batch), states, t.in_flight, limits)
        }
        // Its reads run only as far as they find everything in memory (`super::append_read`).
        Op::AppendRead { batches, .. } => appends_fit(batches, states, t.in_flight, limits),
        Op::ReadNew {
            user,
            device,
            limit,
            ..
        } => read_in_memory(states, &t.fresh, user.as_str(), device.as_str(), *limit),
        // An unknown device is no change; a known one's record is in the loaded state.
        Op::Ack { user, .. } => states.get(user.as_str()).is_some(),
        Op::AckMany { acks, .. } => acks.iter().all(|a| states.get(a.user.as_str()).is_some()),
        _ => false,
    }
}

/// Whether every message of `batches` can be appended from memory: every client id one that
/// the committing transaction cannot hold (see `CommitInFlight`), every recipient's inbox state
/// loaded, and all of them fitting under `max_pending` by the bound `Tables::fits` checks first
/// (the exact depth reads the inbox).
fn appends_fit(
    batches: &[Vec<NewMessage>],
    states: &mut InboxStates,
    in_flight: Option<&CommitInFlight>,
    limits: &InboxLimits,
) -> bool {
    let mut counts: Vec<(&str, u64)> = Vec::new();
    for new in batches.iter().flatten() {
        let to = new.message.to.as_str();
        if let Some(client_id) = &new.client_id {
            let key = (new.message.from.as_str(), to, client_id.as_str());
            if !in_flight.is_some_and(|f| f.can_check(key)) {
                return false;
            }
        }
        match counts.iter_mut().find(|(user, _)| *user == to) {
            Some((_, n)) => *n += 1,
            None => counts.push((to, 1)),
        }
    }
    counts.iter().all(|(user, n)| {
        let Some(state) = states.get(user) else {
            return false;
        };
        let last = state.head.next_seq - 1;
        let bound = state
            .devices
            .iter()
            .map(|(_, d)| last.saturating_sub(d.cursor) + d.pending.len() as u64)
            .max()
            .unwrap_or(last);
        bound.saturating_add(*n) <= limits.max_pending
    })
}

/// Whether `read_new` for this device reads nothing but memory: a known device (a new one reads
/// the inbox for where to start) with nothing unread or every unread message in `fresh`.
pub(super) fn read_in_memory(
    states: &mut InboxStates,
    fresh: &FreshAppends,
    user: &str,
    device: &str,
    limit: usize,
) -> bool {
    let Some(state) = states.get(user) else {
        return false;
    };
    let next_seq = state.head.next_seq;
    let Some(record) = state.device(device) else {
        return false;
    };
    limit == 0
        || record.cursor.saturating_add(1) >= next_seq
        || fresh.covers(user, record.cursor, next_seq)
}

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;
