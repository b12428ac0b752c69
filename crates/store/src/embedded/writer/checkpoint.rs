//! Checkpoints: when the writer commits its open transaction durably, and how it rebuilds the
//! state from the journal when that transaction is lost.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use redb::{Durability, WriteTransaction};

use super::Writer;
use crate::embedded::journal;
use crate::embedded::tables::Tables;

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
    /// Twenty a second. A checkpoint stalls the writer for its commit's own work (the file is
    /// written behind, `write_behind`), which grows with the pages changed since the last one,
    /// so shorter intervals mean shorter stalls, up to a point: in the p2p benchmark at a fixed
    /// 50,000 msg/s, 50 ms gave a p99 of 24–26 ms where 100 ms gave 33–34 ms (and 1 s, on an
    /// earlier machine, nearly twice the 100 ms figure), for the same CPU per message; 25 ms cut
    /// the p99 at 10,000 msg/s further but cost 3 % of the maximum throughput (docs/benchmarks.md,
    /// seventh set, when the writer also wrote the file). A restart after a crash replays at
    /// most that much journal.
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
        let (committed, batch) = flushes.deferred(|| self.commit_durably(txn));
        match committed {
            Ok(()) => {
                if let Some(journal) = &mut self.journal {
                    journal.rotate();
                }
                self.retired = Some(batch);
                self.dirty = false;
                self.last_checkpoint = Instant::now();
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
    pub(super) fn commit_durably(&mut self, mut txn: WriteTransaction) -> Result<(), redb::Error> {
        {
            let mut tables = Tables::open(&txn);
            tables.states = std::mem::take(&mut self.states);
            let written = tables.write_back();
            self.states = std::mem::take(&mut tables.states);
            written?;
        }
        self.states.bound();
        // Bounds its memory to a checkpoint interval of messages; later reads take the table.
        self.fresh.clear();
        if let Some(journal) = &self.journal {
            journal::set_checkpoint_lsn(&txn, journal.last_lsn())?;
        }
        txn.set_durability(Durability::Immediate)?;
        txn.commit()?;
        Ok(())
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

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
