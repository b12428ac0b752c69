//! [`UncommittedClientIds`]: which client ids may have been written since a commit, so that an
//! append with a client id can run while a checkpoint commits beside the writer.
//!
//! An append with a client id first looks the id up (`append`): a retry must get the first
//! send's message id back, not a second copy. While a checkpoint's transaction commits on the
//! committer thread (`writer::commit`) the writer has no transaction to look in, and apps that
//! send through `titan-client`'s `ReconnectingClient` give every message a client id, so all
//! their appends waited for the commit's end (about a millisecond, twenty times a second).
//! The writer now keeps the ids written into each transaction as hashes: while that
//! transaction commits, an id that none of its hashes (nor those of the appends answered
//! meanwhile) matches can only be in what was committed before, which a read transaction of
//! the database sees. A hash that matches makes the append wait, as before: a collision costs
//! a wait, never a wrong answer.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

/// Hashes of `(sender, recipient, client id)` keys written since some point (see the module
/// doc). Holds a `u64` per append with a client id over a checkpoint interval.
#[derive(Default)]
pub(super) struct UncommittedClientIds {
    hashes: HashSet<u64>,
    hasher: RandomState,
}

impl UncommittedClientIds {
    pub fn record(&mut self, key: (&str, &str, &str)) {
        let hash = self.hasher.hash_one(key);
        self.hashes.insert(hash);
    }

    /// False when `key` was certainly not recorded.
    pub fn may_hold(&self, key: (&str, &str, &str)) -> bool {
        !self.hashes.is_empty() && self.hashes.contains(&self.hasher.hash_one(key))
    }

    pub fn clear(&mut self) {
        self.hashes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What was recorded is found; what was not is not (but for a 64-bit hash collision, one in
    /// 2^64 a key).
    #[test]
    fn finds_what_was_recorded() {
        let mut ids = UncommittedClientIds::default();
        assert!(!ids.may_hold(("alice", "bob", "c-1")));
        ids.record(("alice", "bob", "c-1"));
        assert!(ids.may_hold(("alice", "bob", "c-1")));
        assert!(!ids.may_hold(("alice", "bob", "c-2")));
        assert!(!ids.may_hold(("bob", "alice", "c-1")));
        // Tuples hash their fields apart: moving a character between fields is another key.
        assert!(!ids.may_hold(("alic", "ebob", "c-1")));
        ids.clear();
        assert!(!ids.may_hold(("alice", "bob", "c-1")));
    }
}
