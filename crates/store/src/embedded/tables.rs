//! The redb tables of the embedded store, and the small queries several operations share.
//!
//! Keys are tuples so that everything of one user (and of one device) is a contiguous range,
//! ordered like the inbox. Values the store itself reads (times, counters, a device's cursor and
//! pending set) are fixed tuples or fixed-width records rather than serde blobs: only the
//! message body is JSON, and only delivery decodes it.

use redb::{ReadableTable, StorageError, Table, TableDefinition, TableHandle, WriteTransaction};
use std::time::{SystemTime, UNIX_EPOCH};
use titan_protocol::MessageJson;

use super::client_ids::UncommittedClientIds;
use super::fresh::FreshAppends;
use super::states::{InboxState, InboxStates};
use crate::error::StoreError;

mod held;
mod lazy;
pub(super) use held::{CommitInFlight, HeldRow};
pub(super) use lazy::Lazy;

/// `(user, seq) -> (ms, message JSON)`: each user's inbox. `seq` counts from 1 per inbox and is
/// never reused; `ms` is the acceptance time, never decreasing along `seq`, so trimming by age
/// always removes a prefix.
pub(super) const INBOX: TableDefinition<(&str, u64), (u64, &[u8])> = TableDefinition::new("inbox");

/// `user -> (next_seq, last_ms)`: where the next message of an inbox goes. Kept when the inbox is
/// emptied by trimming, so sequence numbers (which cursors point at) are never reused.
pub(super) const HEADS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("inbox_heads");

/// `(user, device) -> device record`: the last seq handed to the device (its cursor) and the
/// messages handed to it and not acked yet, as one [`Device`] value (see [`Device::encode`]).
/// One record per device instead of a row per pending message: a transaction that reads for
/// or acks a device rewrites one small value, where the two tables this replaced
/// ([`LEGACY_DEVICES`], [`LEGACY_PENDING`]) each had a page to copy per recipient.
pub(super) const DEVICE_STATE: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("device_state");

/// Files written before `device_state`: `(user, device) -> (cursor, pending count)`. Read once,
/// by [`migrate_device_tables`], then deleted.
pub(super) const LEGACY_DEVICES: TableDefinition<(&str, &str), (u64, u64)> =
    TableDefinition::new("devices");

/// Files written before `device_state`: `(user, device, seq) -> (last delivery ms, position
/// ms)`. Read once, by [`migrate_device_tables`], then deleted.
pub(super) const LEGACY_PENDING: TableDefinition<(&str, &str, u64), (u64, u64)> =
    TableDefinition::new("pending");

/// `(sender, recipient, client id) -> (message id, created ms)`: makes appends with a client id
/// idempotent within the retention. (Keyed by recipient too since the Redis Cluster layout put
/// client ids in the recipient's slot; the older `client_ids` table of earlier files is unused.)
pub(super) const CLIENT_IDS: TableDefinition<(&str, &str, &str), (&str, u64)> =
    TableDefinition::new("client_ids_per_recipient");

/// Every table of a write transaction, shared by all operations of the batch. Each is opened
/// the first time an operation of the batch uses it ([`Lazy`]).
pub(super) struct Tables<'t> {
    pub inbox: Lazy<'t, (&'static str, u64), (u64, &'static [u8])>,
    pub heads: Lazy<'t, &'static str, (u64, u64)>,
    pub devices: Lazy<'t, (&'static str, &'static str), &'static [u8]>,
    pub client_ids: Lazy<'t, (&'static str, &'static str, &'static str), (&'static str, u64)>,
    pub push_devices: Lazy<'t, (&'static str, &'static str), (&'static str, &'static str, u64)>,
    pub push_owners: Lazy<'t, (&'static str, &'static str), (&'static str, &'static str)>,
    /// The heads and device records of the inboxes operations touched, ahead of `heads` and
    /// `devices` (see `states`): read and changed only through the methods below, and written
    /// to the tables by [`Self::write_back`]. The writer keeps it between transactions.
    pub states: InboxStates,
    /// The messages appended since the last checkpoint, for the reads that follow (see
    /// `fresh`); the writer's, lent to each group like `states`.
    pub fresh: FreshAppends,
    /// While a checkpoint commits on another thread (`writer::commit`): the inbox rows appended
    /// meanwhile, inserted into the next transaction once the commit is done. `None` otherwise:
    /// appends insert into the inbox table.
    pub held: Option<Vec<HeldRow>>,
    /// While a checkpoint commits: what appends with client ids check besides the held rows.
    pub in_flight: Option<&'t CommitInFlight>,
    /// The client ids appends wrote since the last commit began (`client_ids`); the writer's,
    /// lent to each group like `states`.
    pub client_ids_written: UncommittedClientIds,
}

/// Writes one inbox's state (its head and device records) to their tables: a write-back, or
/// the committer thread's share of a checkpoint (`writer::checkpoint`).
pub(super) fn put_state(
    heads: &mut Table<'_, &'static str, (u64, u64)>,
    devices: &mut Table<'_, (&'static str, &'static str), &'static [u8]>,
    user: &str,
    state: &InboxState,
) -> Result<(), StorageError> {
    heads.insert(user, (state.head.next_seq, state.head.last_ms))?;
    for (device, record) in &state.devices {
        devices.insert((user, device.as_str()), record.encode().as_slice())?;
    }
    Ok(())
}

/// Where an inbox's next message goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    pub next_seq: u64,
    pub last_ms: u64,
}

impl Head {
    /// The head of an inbox that never held a message.
    pub const NEW: Head = Head {
        next_seq: 1,
        last_ms: 0,
    };
}

/// A device's read state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Device {
    /// Last seq handed out by `read_new`; everything after it is unread.
    pub cursor: u64,
    /// Messages handed to the device and not acked yet, in seq order (every one is at or before
    /// the cursor, and `read_new` only ever adds seqs after it).
    pub pending: Vec<Pending>,
}

/// One message handed to a device and not acked yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    pub seq: u64,
    /// When it was last handed out (redelivery is due `ack_timeout` after).
    pub delivered_ms: u64,
    /// The position's `ms`, kept so an ack with a forged or stale position is ignored.
    pub ms: u64,
}

/// Bytes of the cursor, then of each pending entry, in a device record.
const CURSOR_BYTES: usize = 8;
const PENDING_BYTES: usize = 24;

impl Device {
    /// The record: the cursor, then `(seq, delivered ms, ms)` per pending message, all
    /// little-endian `u64`s. Fixed-width, so the pending count is the length alone.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CURSOR_BYTES + PENDING_BYTES * self.pending.len());
        out.extend_from_slice(&self.cursor.to_le_bytes());
        for p in &self.pending {
            out.extend_from_slice(&p.seq.to_le_bytes());
            out.extend_from_slice(&p.delivered_ms.to_le_bytes());
            out.extend_from_slice(&p.ms.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StorageError> {
        let (cursor, _) = Self::peek(bytes)?;
        let pending = bytes[CURSOR_BYTES..]
            .chunks_exact(PENDING_BYTES)
            .map(|entry| Pending {
                seq: word(entry, 0),
                delivered_ms: word(entry, 8),
                ms: word(entry, 16),
            })
            .collect();
        Ok(Self { cursor, pending })
    }

    /// The cursor and the pending count of a record, checking its length first: a length that
    /// is not a cursor plus whole entries is a corrupt record. Only `decode` needs it now (the
    /// `max_pending` bound reads the inbox states, not the records).
    fn peek(bytes: &[u8]) -> Result<(u64, u64), StorageError> {
        match bytes.len().checked_sub(CURSOR_BYTES) {
            Some(n) if n % PENDING_BYTES == 0 => Ok((word(bytes, 0), (n / PENDING_BYTES) as u64)),
            _ => Err(StorageError::Corrupted(format!(
                "device record of {} bytes",
                bytes.len()
            ))),
        }
    }
}

impl<'t> Tables<'t> {
    /// The tables of `txn`, each opened when an operation first uses it.
    pub fn open(txn: &'t WriteTransaction) -> Self {
        Self {
            inbox: Lazy::new(txn, INBOX),
            heads: Lazy::new(txn, HEADS),
            devices: Lazy::new(txn, DEVICE_STATE),
            client_ids: Lazy::new(txn, CLIENT_IDS),
            push_devices: Lazy::new(txn, super::push_tokens::PUSH_DEVICES),
            push_owners: Lazy::new(txn, super::push_tokens::PUSH_OWNERS),
            states: InboxStates::default(),
            fresh: FreshAppends::default(),
            held: None,
            in_flight: None,
            client_ids_written: UncommittedClientIds::default(),
        }
    }

    /// Tables of no transaction, for the operations that run while a checkpoint commits: they
    /// work on the inbox states and `fresh` alone, their inbox rows go to `held`, and their
    /// client ids are checked against `in_flight` (see `held`).
    pub fn without_transaction(held: Vec<HeldRow>, in_flight: &'t CommitInFlight) -> Self {
        Self {
            inbox: Lazy::absent(INBOX),
            heads: Lazy::absent(HEADS),
            devices: Lazy::absent(DEVICE_STATE),
            client_ids: Lazy::absent(CLIENT_IDS),
            push_devices: Lazy::absent(super::push_tokens::PUSH_DEVICES),
            push_owners: Lazy::absent(super::push_tokens::PUSH_OWNERS),
            states: InboxStates::default(),
            fresh: FreshAppends::default(),
            held: Some(held),
            in_flight: Some(in_flight),
            client_ids_written: UncommittedClientIds::default(),
        }
    }

    /// Creates every table in `txn` (a new file), so the file holds them all from the start.
    pub fn create(txn: &'t WriteTransaction) -> Result<(), StorageError> {
        let mut t = Self::open(txn);
        t.inbox.table()?;
        t.heads.table()?;
        t.devices.table()?;
        t.client_ids.table()?;
        t.push_devices.table()?;
        t.push_owners.table()?;
        Ok(())
    }

    /// `user`'s inbox state, loaded from the tables the first time.
    fn state(&mut self, user: &str) -> Result<&InboxState, StorageError> {
        if self.states.get(user).is_none() {
            let loaded = InboxState::new(self.stored_head(user)?, self.stored_devices(user)?);
            self.states.insert(user, loaded);
        }
        self.states
            .get(user)
            .ok_or_else(|| StorageError::Corrupted(format!("inbox state of {user} not kept")))
    }

    fn stored_head(&mut self, user: &str) -> Result<Head, StorageError> {
        Ok(match self.heads.table()?.get(user)? {
            Some(guard) => {
                let (next_seq, last_ms) = guard.value();
                Head { next_seq, last_ms }
            }
            None => Head::NEW,
        })
    }

    /// Every device record of `user` in the table, in device-id order.
    fn stored_devices(&mut self, user: &str) -> Result<Vec<(String, Device)>, StorageError> {
        let mut out = Vec::new();
        // ("user", "") is the smallest key of this user: tuples compare element by element.
        for entry in self.devices.table()?.range((user, "")..)? {
            let (key, value) = entry?;
            let (owner, device) = key.value();
            if owner != user {
                break;
            }
            out.push((device.to_owned(), Device::decode(value.value())?));
        }
        Ok(out)
    }

    pub fn head(&mut self, user: &str) -> Result<Head, StorageError> {
        Ok(self.state(user)?.head)
    }

    pub fn set_head(&mut self, user: &str, head: Head) -> Result<(), StorageError> {
        self.state(user)?;
        self.states.set_head(user, head);
        Ok(())
    }

    pub fn device(&mut self, user: &str, device: &str) -> Result<Option<Device>, StorageError> {
        Ok(self.state(user)?.device(device).cloned())
    }

    pub fn set_device(&mut self, user: &str, device: &str, d: Device) -> Result<(), StorageError> {
        self.state(user)?;
        self.states.set_device(user, device, d);
        Ok(())
    }

    /// Every device of `user` with its state, in device-id order.
    pub fn devices_of(&mut self, user: &str) -> Result<Vec<(String, Device)>, StorageError> {
        Ok(self.state(user)?.devices.clone())
    }

    /// Writes the changed inbox states to the tables. Before a commit (a checkpoint), and before
    /// anything reads the head or device tables directly.
    pub fn write_back(&mut self) -> Result<(), StorageError> {
        let (heads, devices) = (self.heads.table()?, self.devices.table()?);
        self.states
            .write_back(|user, state| put_state(heads, devices, user, state))
    }

    /// Whether `extra` more messages fit in `user`'s inbox under `max` ([`Self::depth`] + `extra`
    /// <= `max`). Checked first against a bound that needs no inbox read: the inbox head stands
    /// in for the last retained message and the cursor is not raised to the first one, so the
    /// bound is never below the depth; only when the bound does not fit is the exact depth
    /// computed. Every `append` checks this, so it must stay cheap (the head and the device
    /// records are in the inbox states). Returns the inbox head it read, with the answer, so the
    /// append that follows need not read it again.
    pub fn fits(&mut self, user: &str, extra: u64, max: u64) -> Result<(bool, Head), StorageError> {
        let state = self.state(user)?;
        let head = state.head;
        let last = head.next_seq - 1;
        let bound = state
            .devices
            .iter()
            .map(|(_, d)| last.saturating_sub(d.cursor) + d.pending.len() as u64)
            .max();
        // Without devices, every retained message counts: at most all ever appended.
        if bound.unwrap_or(last) + extra <= max {
            return Ok((true, head));
        }
        Ok((self.depth(user)? + extra <= max, head))
    }

    /// First and last retained seq of `user`'s inbox, `None` when it is empty. Retained seqs are
    /// contiguous because trimming only removes a prefix.
    pub fn retained(&mut self, user: &str) -> Result<Option<(u64, u64)>, StorageError> {
        let mut range = self.inbox.table()?.range((user, 0)..=(user, u64::MAX))?;
        let Some(first) = range.next() else {
            return Ok(None);
        };
        let first = first?.0.value().1;
        let last = match range.next_back() {
            Some(last) => last?.0.value().1,
            None => first,
        };
        Ok(Some((first, last)))
    }

    /// What `max_pending` bounds: for each device, unread messages after its cursor plus its
    /// pending entries; the largest of those, or every retained message when there is no device.
    pub fn depth(&mut self, user: &str) -> Result<u64, StorageError> {
        let retained = self.retained(user)?;
        let devices = &self.state(user)?.devices;
        let Some((first, last)) = retained else {
            // Nothing retained: only pending entries can remain, and trim removes those with
            // their messages, so they are at most transiently non-zero; count them anyway.
            return Ok(devices
                .iter()
                .map(|(_, d)| d.pending.len() as u64)
                .max()
                .unwrap_or(0));
        };
        if devices.is_empty() {
            return Ok(last - first + 1);
        }
        Ok(devices
            .iter()
            .map(|(_, d)| {
                let unread = last.saturating_sub(d.cursor.max(first - 1));
                unread + d.pending.len() as u64
            })
            .max()
            .unwrap_or(0))
    }
}

/// Moves the device state of a file written before `device_state` (cursors in
/// [`LEGACY_DEVICES`], pending messages in [`LEGACY_PENDING`]) into device records, then deletes
/// the two old tables. Runs in the transaction that opens the store, so a file is either
/// migrated whole or not at all; a file without the old tables is left alone.
pub(super) fn migrate_device_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let legacy = txn
        .list_tables()?
        .any(|table| table.name() == LEGACY_DEVICES.name());
    if !legacy {
        return Ok(());
    }
    let mut migrated = 0u64;
    {
        let old_devices = txn.open_table(LEGACY_DEVICES)?;
        let old_pending = txn.open_table(LEGACY_PENDING)?;
        let mut records = txn.open_table(DEVICE_STATE)?;
        for entry in old_devices.iter()? {
            let (key, value) = entry?;
            let (user, device) = key.value();
            let (cursor, _count) = value.value();
            let pending = old_pending
                .range((user, device, 0)..=(user, device, u64::MAX))?
                .map(|entry| {
                    entry.map(|(key, value)| {
                        let (delivered_ms, ms) = value.value();
                        Pending {
                            seq: key.value().2,
                            delivered_ms,
                            ms,
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            records.insert(
                (user, device),
                Device { cursor, pending }.encode().as_slice(),
            )?;
            migrated += 1;
        }
    }
    txn.delete_table(LEGACY_DEVICES)?;
    txn.delete_table(LEGACY_PENDING)?;
    tracing::info!(
        devices = migrated,
        "embedded store: device state moved to device records"
    );
    Ok(())
}

/// The little-endian `u64` at `at` in `bytes`; callers have checked the length.
fn word(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Milliseconds since the Unix epoch; times before it count as 0.
pub(super) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A stored message body, for delivery as it is. A failure means the file holds data this
/// version cannot read.
pub(super) fn stored_message(bytes: &[u8]) -> Result<MessageJson, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt {
        reason: format!("undecodable message: {e}"),
    };
    let text = String::from_utf8(bytes.to_vec()).map_err(|e| corrupt(&e))?;
    MessageJson::from_stored(text).map_err(|e| corrupt(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record decodes to what was encoded, its length alone gives the pending count, and a
    /// length that is not a cursor plus whole entries is refused as corrupt, not misread.
    #[test]
    fn device_records_round_trip_and_refuse_bad_lengths() {
        let device = Device {
            cursor: 42,
            pending: vec![
                Pending {
                    seq: 40,
                    delivered_ms: 7,
                    ms: 5,
                },
                Pending {
                    seq: 42,
                    delivered_ms: u64::MAX,
                    ms: 6,
                },
            ],
        };
        let bytes = device.encode();
        assert_eq!(Device::decode(&bytes).unwrap(), device);
        assert_eq!(Device::peek(&bytes).unwrap(), (42, 2));
        assert_eq!(
            Device::decode(&Device::default().encode()).unwrap(),
            Device::default()
        );
        for bad in [&bytes[..7], &bytes[..bytes.len() - 1], &[][..]] {
            assert!(matches!(Device::peek(bad), Err(StorageError::Corrupted(_))));
            assert!(matches!(
                Device::decode(bad),
                Err(StorageError::Corrupted(_))
            ));
        }
    }
}
