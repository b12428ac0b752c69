//! The writer's copy of each active inbox's small state: its head (where the next message goes)
//! and its devices' records (cursor and pending messages).
//!
//! Every append reads its recipient's head and device records (the `max_pending` check) and
//! writes the head; every read and ack reads and writes a device record. Through redb that was
//! five B-tree lookups or inserts per message, a quarter of the writer's CPU. Here they are a
//! hash lookup: an inbox's state is loaded from its tables the first time an operation needs
//! it, changed in memory, and written back to the tables (the open write transaction) only when
//! that transaction is about to be committed, by a checkpoint. That changes nothing about
//! durability: the open transaction reaches the disk only at a checkpoint anyway, and appends
//! are durable through the journal, whose replay sets the heads again. When the open
//! transaction is lost, this copy is dropped with it (`Writer::restore`).
//!
//! Everything that reads the head or device tables goes through [`super::tables::Tables`], which
//! consults this copy first; the one exception, trimming's walk over every head, writes the copy
//! back before it starts.

use super::InboxMap as HashMap;
use super::tables::{Device, Head};

/// Inboxes kept after a checkpoint has written them back, of those used since the one before
/// ([`InboxStates::bound`]); above it the copy starts empty again (each active inbox is then
/// loaded once more, one lookup and one range read, which is what every operation cost before
/// this copy). Bounds the memory to about this many inboxes' device records: 200 bytes for a
/// device with nothing pending, up to 6 KiB with a full window of pending messages.
pub(super) const MAX_CLEAN_INBOXES: usize = 16_384;

/// One inbox's head and device records, as the tables would hold them after a write-back.
#[derive(Debug, Clone)]
pub(super) struct InboxState {
    pub head: Head,
    /// Every device of the inbox's user, sorted by device id (the tables' order).
    pub devices: Vec<(String, Device)>,
    /// Changed since it was loaded or last written back.
    dirty: bool,
    /// Read or changed since the last write-back.
    used: bool,
}

impl InboxState {
    pub fn new(head: Head, devices: Vec<(String, Device)>) -> Self {
        Self {
            head,
            devices,
            dirty: false,
            used: true,
        }
    }

    pub fn device(&self, device: &str) -> Option<&Device> {
        self.devices
            .binary_search_by(|(id, _)| id.as_str().cmp(device))
            .ok()
            .map(|at| &self.devices[at].1)
    }

    fn set_device(&mut self, device: &str, record: Device) {
        match self
            .devices
            .binary_search_by(|(id, _)| id.as_str().cmp(device))
        {
            Ok(at) => self.devices[at].1 = record,
            Err(at) => self.devices.insert(at, (device.to_owned(), record)),
        }
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct InboxStates {
    inboxes: HashMap<String, InboxState>,
    /// Users whose state changed since the last write-back, each once.
    dirty: Vec<String>,
}

impl InboxStates {
    pub fn get(&mut self, user: &str) -> Option<&InboxState> {
        let state = self.inboxes.get_mut(user)?;
        state.used = true;
        Some(state)
    }

    pub fn insert(&mut self, user: &str, state: InboxState) {
        self.inboxes.insert(user.to_owned(), state);
    }

    /// Sets a loaded inbox's head; `false` if `user`'s state is not loaded.
    pub fn set_head(&mut self, user: &str, head: Head) -> bool {
        self.change(user, |state| state.head = head)
    }

    /// Sets a loaded inbox's device record; `false` if `user`'s state is not loaded.
    pub fn set_device(&mut self, user: &str, device: &str, record: Device) -> bool {
        self.change(user, |state| state.set_device(device, record))
    }

    fn change(&mut self, user: &str, apply: impl FnOnce(&mut InboxState)) -> bool {
        let Some(state) = self.inboxes.get_mut(user) else {
            return false;
        };
        apply(state);
        state.used = true;
        if !state.dirty {
            state.dirty = true;
            self.dirty.push(user.to_owned());
        }
        true
    }

    /// Hands every inbox changed since the last write-back to `write` (which puts it in the
    /// tables), each once, and marks it clean. (Marked even when `write` fails: that loses the
    /// transaction, and this copy with it.)
    pub fn write_back<E>(
        &mut self,
        mut write: impl FnMut(&str, &InboxState) -> Result<(), E>,
    ) -> Result<(), E> {
        for user in std::mem::take(&mut self.dirty) {
            if let Some(state) = self.inboxes.get_mut(&user) {
                state.dirty = false;
                write(&user, state)?;
            }
        }
        Ok(())
    }

    /// The changed inboxes' states, as a write-back would write them, marked clean here: for a
    /// checkpoint whose commit writes them on another thread (`writer::commit`) while this copy
    /// goes on changing.
    pub fn take_dirty(&mut self) -> Vec<(String, InboxState)> {
        let mut out = Vec::new();
        let _ = self.write_back(|user, state| {
            out.push((user.to_owned(), state.clone()));
            Ok::<(), ()>(())
        });
        out
    }

    /// After a write-back (a checkpoint): forgets the clean inboxes no operation used since the
    /// previous one, so that what stays is about the inboxes active now (an idle connection's
    /// is dropped a checkpoint after it connected), and every clean one if there are still more
    /// than [`MAX_CLEAN_INBOXES`].
    pub fn bound(&mut self) {
        self.inboxes.retain(|_, state| {
            let keep = state.dirty || state.used;
            state.used = false;
            keep
        });
        if self.dirty.is_empty() && self.inboxes.len() > MAX_CLEAN_INBOXES {
            self.inboxes = HashMap::default();
        } else if self.inboxes.capacity() > 4 * self.inboxes.len() + 64 {
            self.inboxes.shrink_to_fit();
        }
    }

    /// Forgets everything, changes included (the transaction they belonged to is lost).
    pub fn clear(&mut self) {
        self.inboxes = HashMap::default();
        self.dirty = Vec::new();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn device(cursor: u64) -> Device {
        Device {
            cursor,
            pending: Vec::new(),
        }
    }

    /// Changes are reported once per inbox, in the state they ended in, and only until taken;
    /// devices stay sorted by id; an inbox that is not loaded is not changed.
    #[test]
    fn changes_are_taken_once_and_devices_stay_sorted() {
        let mut states = InboxStates::default();
        let head = Head::NEW;
        states.insert(
            "bob",
            InboxState::new(head, vec![("phone".into(), device(0))]),
        );
        assert!(!states.set_head("carol", head), "carol is not loaded");
        assert!(states.set_device("bob", "tablet", device(3)));
        assert!(states.set_device("bob", "laptop", device(2)));
        assert!(states.set_head(
            "bob",
            Head {
                next_seq: 4,
                last_ms: 9
            }
        ));
        let bob = states.get("bob").unwrap();
        let ids: Vec<&str> = bob.devices.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["laptop", "phone", "tablet"]);
        assert_eq!(bob.device("tablet"), Some(&device(3)));
        assert_eq!(bob.device("watch"), None);

        let dirty = states.take_dirty();
        assert_eq!(dirty.len(), 1, "bob, once");
        assert_eq!(dirty[0].0, "bob");
        assert_eq!(dirty[0].1.head.next_seq, 4);
        assert!(states.take_dirty().is_empty());
        assert!(states.set_device("bob", "phone", device(7)));
        assert_eq!(states.take_dirty()[0].1.device("phone"), Some(&device(7)));
    }

    /// At a write-back, clean inboxes unused since the previous one are forgotten; used or
    /// changed ones stay; past the bound every clean one goes, but a changed one never (it
    /// would be lost).
    #[test]
    fn unused_and_surplus_clean_inboxes_are_forgotten() {
        let mut states = InboxStates::default();
        let head = Head::NEW;
        let kept = |states: &InboxStates, user: &str| states.inboxes.contains_key(user);
        states.insert("idle", InboxState::new(head, Vec::new()));
        states.insert("active", InboxState::new(head, Vec::new()));
        states.bound();
        assert!(
            kept(&states, "idle") && kept(&states, "active"),
            "loaded: used"
        );
        assert!(states.get("active").is_some());
        states.bound();
        assert!(!kept(&states, "idle"));
        assert!(kept(&states, "active"));
        assert!(states.set_head("active", head));
        states.bound();
        states.bound();
        assert!(kept(&states, "active"), "changed, not written back yet");
        assert_eq!(states.take_dirty().len(), 1);
        states.bound();
        assert!(!kept(&states, "active"));

        let fill = |states: &mut InboxStates| {
            for n in 0..=MAX_CLEAN_INBOXES {
                states.insert(&format!("user{n}"), InboxState::new(head, Vec::new()));
            }
        };
        fill(&mut states);
        assert!(states.set_head("user0", head));
        states.bound();
        assert!(kept(&states, "user1"), "user0 is not written back yet");
        assert_eq!(states.take_dirty().len(), 1);
        fill(&mut states);
        states.bound();
        assert!(!kept(&states, "user0"));
        assert!(!kept(&states, "user1"));
    }
}
