//! The messages the current group of operations appended, kept in memory until the group ends.
//!
//! An online recipient's device is usually caught up: the `read_new` that follows an append
//! (the fused append-and-read of a `msg.send` to an online user) asks for exactly the messages
//! the append just stored. Taking them from here spares reading them back out of the inbox
//! table (a B-tree seek and range walk, a copy of each body and a JSON scan to wrap it again),
//! which was a fifth of the writer's CPU at a paced 10,000 messages a second. A read that
//! starts before them (a device that was behind) reads the table as before.

use std::collections::HashMap;

use titan_protocol::MessageJson;

use crate::inbox::{Delivered, Position};

/// Per recipient, the messages appended in this group, in seq order. Appends to one inbox
/// take consecutive seqs, so each run is contiguous and ends at the inbox's newest message.
#[derive(Default)]
pub(super) struct FreshAppends {
    by_user: HashMap<String, Vec<Delivered>>,
}

impl FreshAppends {
    /// Records a message just stored in `user`'s inbox at `position`.
    pub fn record(&mut self, user: &str, position: Position, message: MessageJson) {
        let delivered = Delivered { position, message };
        match self.by_user.get_mut(user) {
            Some(run) => run.push(delivered),
            None => {
                self.by_user.insert(user.to_owned(), vec![delivered]);
            }
        }
    }

    /// Up to `limit` of `user`'s messages after seq `cursor`, when this group appended every
    /// message of the inbox after `cursor` (`next_seq` is the inbox head's next seq); `None`
    /// when some of them are older, so the caller reads the table.
    pub fn after(
        &self,
        user: &str,
        cursor: u64,
        next_seq: u64,
        limit: usize,
    ) -> Option<Vec<Delivered>> {
        let run = self.by_user.get(user)?;
        let first = run.first()?.position.seq;
        let last = run.last()?.position.seq;
        // The run must reach the head (nothing newer elsewhere) and start at or before the
        // first unread seq (nothing older missing).
        if last.checked_add(1) != Some(next_seq) || cursor.saturating_add(1) < first {
            return None;
        }
        let from = run.partition_point(|d| d.position.seq <= cursor);
        Some(run[from..].iter().take(limit).cloned().collect())
    }

    /// Forgets everything (an operation that removes messages, such as a trim, runs).
    pub fn clear(&mut self) {
        self.by_user.clear();
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

    /// A caught-up device gets the group's messages; one further along gets the rest of them;
    /// one at the head gets none; the limit holds.
    #[test]
    fn a_read_within_the_group_s_appends_is_answered_from_them() {
        let fresh = fresh(5..=8);
        assert_eq!(seqs(fresh.after("ann", 4, 9, 10)), Some(vec![5, 6, 7, 8]));
        assert_eq!(seqs(fresh.after("ann", 6, 9, 10)), Some(vec![7, 8]));
        assert_eq!(seqs(fresh.after("ann", 8, 9, 10)), Some(vec![]));
        assert_eq!(seqs(fresh.after("ann", 4, 9, 2)), Some(vec![5, 6]));
    }

    /// A device behind the group's first append, an inbox with messages newer than the run
    /// and an inbox the group did not append to are left to the table.
    #[test]
    fn a_read_reaching_outside_the_group_s_appends_is_not_answered() {
        let fresh = fresh(5..=8);
        assert_eq!(seqs(fresh.after("ann", 3, 9, 10)), None);
        assert_eq!(seqs(fresh.after("ann", 4, 10, 10)), None);
        assert_eq!(seqs(fresh.after("bob", 0, 1, 10)), None);
        let mut cleared = fresh;
        cleared.clear();
        assert_eq!(seqs(cleared.after("ann", 4, 9, 10)), None);
    }
}
