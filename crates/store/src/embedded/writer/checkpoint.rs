//! Checkpoints: when the writer commits its open transaction durably, and how it rebuilds the
//! state from the journal when that transaction is lost.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redb::{Durability, WriteTransaction};

use super::Writer;
use crate::embedded::journal;
use crate::embedded::states::InboxState;
use crate::embedded::tables::{DEVICE_STATE, HEADS, put_state};

/// When the writer checkpoints (see the module doc of `writer`).
#[derive(Debug, Clone, Copy)]
pub struct Checkpoints {
    /// Time after the last checkpoint when the next batch that follows a change triggers one:
    /// bounds how much journal a restart replays and how many changed pages one checkpoint
    /// writes. Checked after each batch, so a store that goes quiet checkpoints with its next
    /// operation (the Dispatcher's periodic trim at the latest) or at shutdown; until then its
    /// journal holds what it stored.
    pub every: Duration,
    /// Journal size that triggers a checkpoint before `every` has passed.
    pub journal_bytes: u64,
}

impl Default for Checkpoints {
    /// Twenty a second. Chosen when a checkpoint stalled the writer for its commit (seventh and
    /// tenth sets of docs/benchmarks.md: at a fixed 50,000 msg/s, 50 ms gave a p99 of 24–26 ms
    /// where 100 ms gave 33–34 ms, for the same CPU per message); the commit now runs beside the
    /// writer (`commit`), and a commit costs about 1 ms of CPU whatever it holds (twenty-sixth
    /// set), so shorter intervals cost more CPU in all. A restart after a crash replays at most
    /// that much journal.
    fn default() -> Self {
        Self {
            every: Duration::from_millis(50),
            journal_bytes: 64 << 20,
        }
    }
}

impl Writer {
    pub(super) fn checkpoint_due(&self) -> bool {
        self.last_checkpoint.elapsed() >= self.checkpoints.every
            || self
                .journal
                .as_ref()
                .is_some_and(|j| j.len() >= self.checkpoints.journal_bytes)
    }

    /// Commits the open transaction durably. Where the database file is written behind
    /// (`write_behind`), the commit returns once its writes are queued: the journal then switches
    /// files, and the one it leaves, whose frames this checkpoint covers, is released once the
    /// commit is on disk ([`Writer::settle_retired`]). On failure, rebuilds from the journal.
    pub(super) fn checkpoint(&mut self) {
        let Some(txn) = self.txn.take() else {
            return;
        };
        let started = Instant::now();
        self.commit_checkpoint(txn);
        if let Some(observe) = &self.counters.on_checkpoint {
            observe(started.elapsed());
        }
    }

    /// [`Writer::checkpoint`] of the transaction taken, untimed.
    fn commit_checkpoint(&mut self, txn: WriteTransaction) {
        let Some(flushes) = self.flushes.clone() else {
            match self.commit_durably(txn) {
                Ok(()) => self.checkpointed(),
                Err(e) => {
                    tracing::error!(error = %e, "embedded store: checkpoint failed");
                    self.restore();
                }
            }
            return;
        };
        // The journal can switch back to the file the previous checkpoint left only once that
        // checkpoint is on disk; it has had a checkpoint interval to get there.
        if let Err(e) = self.settle_retired(true) {
            tracing::error!(error = %e, "embedded store: checkpoint failed");
            self.txn = Some(txn);
            self.restore();
            return;
        }
        // The ids this transaction wrote: appends with client ids check them while it commits.
        let written = std::mem::take(&mut self.client_ids);
        let ready = self.take_for_commit();
        // Frames written from here on are the next checkpoint's: they go to the other file
        // whether this commit runs beside the writer or here.
        if let Some(journal) = &mut self.journal {
            journal.rotate();
        }
        self.dirty = false;
        self.last_checkpoint = Instant::now();
        let Some((txn, ready)) = self.commit_beside(txn, ready, written) else {
            return;
        };
        let (committed, batch) = flushes.deferred(|| ready.commit(txn));
        match committed {
            Ok(()) => {
                self.retired = Some(batch);
                self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded store: checkpoint failed");
                self.restore();
            }
        }
    }

    /// Releases the journal file the last checkpoint left once that checkpoint is on disk (with
    /// `wait`, waits for it). An error means the checkpoint could not be written: the database
    /// file refuses everything from then on, and its frames stay in the journal for the next
    /// start to replay.
    pub(super) fn settle_retired(&mut self, wait: bool) -> Result<(), String> {
        let (Some(batch), Some(flushes)) = (self.retired, &self.flushes) else {
            return Ok(());
        };
        let durable = if wait {
            flushes.wait_durable(batch).map(|()| true)
        } else {
            flushes.is_durable(batch)
        };
        if !durable.map_err(|e| format!("writing the checkpoint: {e}"))? {
            return Ok(());
        }
        self.retired = None;
        if let Some(journal) = &mut self.journal
            && let Err(e) = journal.release_retired()
        {
            // Harmless: its frames are at or below the checkpoint and skipped at open, and
            // frames written over them later end where the old ones start (an lsn going back).
            tracing::warn!(error = %e, "embedded store: cannot release a journal file");
        }
        Ok(())
    }

    /// Commits `txn` durably, with the inbox states written back, recording that it includes
    /// every journal frame so far.
    pub(super) fn commit_durably(&mut self, txn: WriteTransaction) -> Result<(), redb::Error> {
        self.take_for_commit().commit(txn)
    }

    /// What a checkpoint's commit writes besides the open transaction's changes: the inbox
    /// states changed since the last one (marked clean here) and the journal's last lsn. Taken
    /// on the writer, so that the commit can run on another thread while the writer goes on.
    pub(super) fn take_for_commit(&mut self) -> ReadyCommit {
        let states = self.states.take_dirty();
        self.states.bound();
        // Bounds its memory to a checkpoint interval of messages; later reads take the table.
        self.fresh.clear();
        // Committed with the transaction (a commit beside the writer took them first).
        self.client_ids.clear();
        ReadyCommit {
            states,
            lsn: self.journal.as_ref().map(|j| j.last_lsn()),
        }
    }

    /// A durable commit, on disk when it returned, included every journal frame (those of a
    /// file the last checkpoint left too: the file's writes are done in order): the journal can
    /// start again.
    pub(super) fn checkpointed(&mut self) {
        self.dirty = false;
        self.retired = None;
        self.last_checkpoint = Instant::now();
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        if let Some(journal) = &mut self.journal
            && let Err(e) = journal.reset()
        {
            // Harmless: the frames left are at or below the checkpoint and skipped at open.
            tracing::warn!(error = %e, "embedded store: cannot release the journal");
        }
    }

    /// The open transaction is lost (a redb error doomed it, a checkpoint failed, or a journal
    /// frame could not be written): drops it and rebuilds the state from the last checkpoint
    /// plus the journal, so every append that was answered is back. Cursor moves and acks since
    /// the checkpoint are lost, which only redelivers. Without a journal (the memory store) the
    /// state since the last checkpoint is lost. Until this succeeds, operations fail: after an
    /// I/O error of its file redb refuses every transaction until the database is reopened, so
    /// then it is the next start (the health check fails meanwhile) that replays the journal.
    pub(super) fn restore(&mut self) -> bool {
        if let Some(txn) = self.txn.take() {
            let _ = txn.abort();
        }
        self.dirty = false;
        self.states.clear();
        self.fresh.clear();
        // Once restored, the database holds every id (the replay commits); until then nothing
        // runs.
        self.client_ids.clear();
        let Some(journal) = &self.journal else {
            return true;
        };
        let dir = journal.dir().to_owned();
        match journal::recover(&self.db, &dir) {
            Ok(journal) => {
                self.journal = Some(journal);
                self.needs_restore = false;
                if let Some(syncer) = &mut self.syncer {
                    syncer.restored();
                }
                self.checkpointed();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "embedded store: cannot restore from the journal");
                self.needs_restore = true;
                false
            }
        }
    }
}

/// A checkpoint's commit, taken from the writer ([`Writer::take_for_commit`]).
pub(super) struct ReadyCommit {
    states: Vec<(String, InboxState)>,
    /// The journal's last frame when the commit was taken (`None`: no journal).
    lsn: Option<u64>,
}

impl ReadyCommit {
    /// Writes the states and the checkpoint lsn into `txn` and commits it durably.
    pub fn commit(self, mut txn: WriteTransaction) -> Result<(), redb::Error> {
        {
            let mut heads = txn.open_table(HEADS)?;
            let mut devices = txn.open_table(DEVICE_STATE)?;
            for (user, state) in &self.states {
                put_state(&mut heads, &mut devices, user, state)?;
            }
        }
        if let Some(lsn) = self.lsn {
            journal::set_checkpoint_lsn(&txn, lsn)?;
        }
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
pub(super) mod tests;
