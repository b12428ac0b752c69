//! The messages appended since the last checkpoint, kept in memory for the reads that follow.
//!
//! An online recipient's device is usually caught up: the `read_new` that follows an append
//! (the fused append-and-read of a `msg.send` to an online user) asks for exactly the messages
//! the append just stored. Taking them from here spares reading them back out of the inbox
//! table (a B-tree seek and range walk, a copy of each body and a JSON scan to wrap it again),
//! which was a fifth of the writer's CPU at a paced 10,000 messages a second. A read that
//! starts before them (a device that was behind, or one whose messages came before the last
//! checkpoint) reads the table as before. The writer empties this at each checkpoint, so it
//! holds about one checkpoint interval of messages (and never more than [`MAX_FRESH`]).

use titan_protocol::MessageJson;

use super::InboxMap as HashMap;
use crate::inbox::{Delivered, Position};

/// Most messages kept: past it the next append starts over (reads take the table), so a
/// checkpoint that does not come (a failing disk) cannot make this grow without bound.
pub(super) const MAX_FRESH: usize = 65_536;

/// Per recipient, the messages appended since the last checkpoint, in seq order. Appends to
/// one inbox take consecutive seqs, so each run is contiguous and ends at the inbox's newest
/// message.
#[derive(Default)]
pub(super) struct FreshAppends {
    by_user: HashMap<String, Vec<Delivered>>,
    count: usize,
}

impl FreshAppends {
    /// Records a message just stored in `user`'s inbox at `position`.
    pub fn record(&mut self, user: &str, position: Position, message: MessageJson) {
        if self.count >= MAX_FRESH {
            self.clear();
        }
        self.count += 1;
        let delivered = Delivered { position, message };
        match self.by_user.get_mut(user) {
            Some(run) => run.push(delivered),
            None => {
                self.by_user.insert(user.to_owned(), vec![delivered]);
            }
        }
    }

    /// Up to `limit` of `user`'s messages after seq `cursor`, when every message of the inbox
    /// after `cursor` is kept here (`next_seq` is the inbox head's next seq); `None` when some
    /// of them are older, so the caller reads the table.
    pub fn after(
        &self,
        user: &str,
        cursor: u64,
        next_seq: u64,
        limit: usize,
    ) -> Option<Vec<Delivered>> {
        if !self.covers(user, cursor, next_seq) {
            return None;
        }
        let run = self.by_user.get(user)?;
        let from = run.partition_point(|d| d.position.seq <= cursor);
        Some(run[from..].iter().take(limit).cloned().collect())
    }

    /// Whether [`Self::after`] would answer (every message of the inbox after `cursor` is kept
    /// here), without copying anything.
    pub fn covers(&self, user: &str, cursor: u64, next_seq: u64) -> bool {
        let Some(run) = self.by_user.get(user) else {
            return false;
        };
        // The run must reach the head (nothing newer elsewhere) and start at or before the
        // first unread seq (nothing older missing).
        match (run.first(), run.last()) {
            (Some(first), Some(last)) => {
                last.position.seq.checked_add(1) == Some(next_seq)
                    && cursor.saturating_add(1) >= first.position.seq
            }
            _ => false,
        }
    }

    /// Forgets everything (a checkpoint, a lost transaction, or an operation that removes
    /// messages, such as a trim).
    pub fn clear(&mut self) {
        self.by_user.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> Delivered {
        Delivered {
            position: Position { ms: 10, seq },
            message: MessageJson::from_stored(format!("{{\"n\":{seq}}}")).expect("valid JSON"),
        }
    }

    fn fresh(seqs: std::ops::RangeInclusive<u64>) -> FreshAppends {
        let mut fresh = FreshAppends::default();
        for seq in seqs {
            let m = message(seq);
            fresh.record("ann", m.position, m.message);
        }
        fresh
    }

    fn seqs(read: Option<Vec<Delivered>>) -> Option<Vec<u64>> {
        read.map(|r| r.iter().map(|d| d.position.seq).collect())
    }

    /// A caught-up device gets the kept messages; one further along gets the rest of them;
    /// one at the head gets none; the limit holds.
    #[test]
    fn a_read_within_the_kept_appends_is_answered_from_them() {
        let fresh = fresh(5..=8);
        assert_eq!(seqs(fresh.after("ann", 4, 9, 10)), Some(vec![5, 6, 7, 8]));
        assert_eq!(seqs(fresh.after("ann", 6, 9, 10)), Some(vec![7, 8]));
        assert_eq!(seqs(fresh.after("ann", 8, 9, 10)), Some(vec![]));
        assert_eq!(seqs(fresh.after("ann", 4, 9, 2)), Some(vec![5, 6]));
    }

    /// A device behind the first kept append, an inbox with messages newer than the run, an
    /// inbox with nothing kept and anything after a clear are left to the table.
    #[test]
    fn a_read_reaching_outside_the_kept_appends_is_not_answered() {
        let fresh = fresh(5..=8);
        assert_eq!(seqs(fresh.after("ann", 3, 9, 10)), None);
        assert_eq!(seqs(fresh.after("ann", 4, 10, 10)), None);
        assert_eq!(seqs(fresh.after("bob", 0, 1, 10)), None);
        let mut cleared = fresh;
        cleared.clear();
        assert_eq!(seqs(cleared.after("ann", 4, 9, 10)), None);
    }

    /// Past the bound, what was kept is dropped and the run starts again at the next append.
    #[test]
    fn the_bound_starts_over() {
        let mut fresh = fresh(1..=MAX_FRESH as u64);
        assert_eq!(fresh.count, MAX_FRESH);
        let next = message(MAX_FRESH as u64 + 1);
        fresh.record("ann", next.position, next.message);
        assert_eq!(fresh.count, 1);
        let head = MAX_FRESH as u64 + 2;
        assert_eq!(seqs(fresh.after("ann", head - 3, head, 10)), None);
        assert_eq!(
            seqs(fresh.after("ann", head - 2, head, 10)),
            Some(vec![head - 1])
        );
    }
}
