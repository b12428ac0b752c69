//! The ids of recently received messages, to drop redeliveries. Bounded: the oldest ids are
//! forgotten first (a redelivery comes soon after the original, so old ids are not needed).

use std::collections::{HashSet, VecDeque};
use titan_protocol::MessageId;

pub(crate) struct Seen {
    ids: HashSet<MessageId>,
    order: VecDeque<MessageId>,
    capacity: usize,
}

impl Seen {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub(crate) fn contains(&self, id: &MessageId) -> bool {
        self.ids.contains(id)
    }

    /// Remembers `id`; false if it was already known.
    pub(crate) fn insert(&mut self, id: MessageId) -> bool {
        if !self.ids.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;
    use titan_protocol::MessageId;

    fn id(s: &str) -> MessageId {
        MessageId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A known id is refused; past capacity the oldest id is forgotten.
    #[test]
    fn remembers_recent_ids_only() {
        let mut seen = Seen::new(2);
        assert!(seen.insert(id("a")));
        assert!(!seen.insert(id("a")));
        assert!(seen.insert(id("b")));
        assert!(seen.insert(id("c")));
        assert!(!seen.contains(&id("a")));
        assert!(seen.contains(&id("b")) && seen.contains(&id("c")));
    }
}
