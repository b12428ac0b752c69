//! The redb tables of the embedded store, and the small queries several operations share.
//!
//! Keys are tuples so that everything of one user (and of one device) is a contiguous range,
//! ordered like the inbox. Values are fixed tuples rather than serde blobs where the store itself
//! reads them (times, counters): only the message body is JSON, and only delivery decodes it.

use redb::{ReadableTable, StorageError, Table, TableDefinition, WriteTransaction};
use std::time::{SystemTime, UNIX_EPOCH};
use titan_protocol::Message;

use crate::error::StoreError;

/// `(user, seq) -> (ms, message JSON)`: each user's inbox. `seq` counts from 1 per inbox and is
/// never reused; `ms` is the acceptance time, never decreasing along `seq`, so trimming by age
/// always removes a prefix.
pub(super) const INBOX: TableDefinition<(&str, u64), (u64, &[u8])> = TableDefinition::new("inbox");

/// `user -> (next_seq, last_ms)`: where the next message of an inbox goes. Kept when the inbox is
/// emptied by trimming, so sequence numbers (which cursors point at) are never reused.
pub(super) const HEADS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("inbox_heads");

/// `(user, device) -> (cursor, pending count)`: the last seq handed to the device, and how many
/// entries it has in [`PENDING`] (kept here so `depth` is O(devices), not O(pending)).
pub(super) const DEVICES: TableDefinition<(&str, &str), (u64, u64)> =
    TableDefinition::new("devices");

/// `(user, device, seq) -> (last delivery ms, position ms)`: messages handed to a device and not
/// acked yet. The position's `ms` is kept so an ack with a forged or stale position is ignored.
pub(super) const PENDING: TableDefinition<(&str, &str, u64), (u64, u64)> =
    TableDefinition::new("pending");

/// `(sender, recipient, client id) -> (message id, created ms)`: makes appends with a client id
/// idempotent within the retention. (Keyed by recipient too since the Redis Cluster layout put
/// client ids in the recipient's slot; the older `client_ids` table of earlier files is unused.)
pub(super) const CLIENT_IDS: TableDefinition<(&str, &str, &str), (&str, u64)> =
    TableDefinition::new("client_ids_per_recipient");

/// Every table, opened once per write transaction and shared by all operations of the batch.
pub(super) struct Tables<'t> {
    pub inbox: Table<'t, (&'static str, u64), (u64, &'static [u8])>,
    pub heads: Table<'t, &'static str, (u64, u64)>,
    pub devices: Table<'t, (&'static str, &'static str), (u64, u64)>,
    pub pending: Table<'t, (&'static str, &'static str, u64), (u64, u64)>,
    pub client_ids: Table<'t, (&'static str, &'static str, &'static str), (&'static str, u64)>,
    pub push_devices: Table<'t, (&'static str, &'static str), (&'static str, &'static str, u64)>,
    pub push_owners: Table<'t, (&'static str, &'static str), (&'static str, &'static str)>,
}

/// Where an inbox's next message goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    pub next_seq: u64,
    pub last_ms: u64,
}

/// A device's read state.
#[derive(Debug, Clone, Copy)]
pub(super) struct Device {
    /// Last seq handed out by `read_new`; everything after it is unread.
    pub cursor: u64,
    /// Number of this device's entries in [`PENDING`].
    pub pending: u64,
}

impl<'t> Tables<'t> {
    /// Opens (creating on first use) every table in `txn`.
    pub fn open(txn: &'t WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Self {
            inbox: txn.open_table(INBOX)?,
            heads: txn.open_table(HEADS)?,
            devices: txn.open_table(DEVICES)?,
            pending: txn.open_table(PENDING)?,
            client_ids: txn.open_table(CLIENT_IDS)?,
            push_devices: txn.open_table(super::push_tokens::PUSH_DEVICES)?,
            push_owners: txn.open_table(super::push_tokens::PUSH_OWNERS)?,
        })
    }

    pub fn head(&self, user: &str) -> Result<Head, StorageError> {
        Ok(match self.heads.get(user)? {
            Some(guard) => {
                let (next_seq, last_ms) = guard.value();
                Head { next_seq, last_ms }
            }
            None => Head {
                next_seq: 1,
                last_ms: 0,
            },
        })
    }

    pub fn set_head(&mut self, user: &str, head: Head) -> Result<(), StorageError> {
        self.heads.insert(user, (head.next_seq, head.last_ms))?;
        Ok(())
    }

    pub fn device(&self, user: &str, device: &str) -> Result<Option<Device>, StorageError> {
        Ok(self.devices.get((user, device))?.map(|guard| {
            let (cursor, pending) = guard.value();
            Device { cursor, pending }
        }))
    }

    pub fn set_device(&mut self, user: &str, device: &str, d: Device) -> Result<(), StorageError> {
        self.devices.insert((user, device), (d.cursor, d.pending))?;
        Ok(())
    }

    /// Every device of `user` with its state, in device-id order.
    pub fn devices_of(&self, user: &str) -> Result<Vec<(String, Device)>, StorageError> {
        let mut out = Vec::new();
        // ("user", "") is the smallest key of this user: tuples compare element by element.
        for entry in self.devices.range((user, "")..)? {
            let (key, value) = entry?;
            let (owner, device) = key.value();
            if owner != user {
                break;
            }
            let (cursor, pending) = value.value();
            out.push((device.to_owned(), Device { cursor, pending }));
        }
        Ok(out)
    }

    /// Whether `extra` more messages fit in `user`'s inbox under `max` ([`Self::depth`] + `extra`
    /// <= `max`). Checked first against a bound that needs no inbox range scan: the inbox head
    /// stands in for the last retained message and the cursor is not raised to the first one, so
    /// the bound is never below the depth; only when the bound does not fit is the exact depth
    /// computed. Every `append` checks this, so it must stay cheap. Returns the inbox head it
    /// read, with the answer, so the append that follows need not read it again.
    pub fn fits(&self, user: &str, extra: u64, max: u64) -> Result<(bool, Head), StorageError> {
        let head = self.head(user)?;
        let last = head.next_seq - 1;
        let mut bound = None::<u64>;
        for entry in self.devices.range((user, "")..)? {
            let (key, value) = entry?;
            if key.value().0 != user {
                break;
            }
            let (cursor, pending) = value.value();
            let device = last.saturating_sub(cursor) + pending;
            bound = Some(bound.map_or(device, |b| b.max(device)));
        }
        // Without devices, every retained message counts: at most all ever appended.
        if bound.unwrap_or(last) + extra <= max {
            return Ok((true, head));
        }
        Ok((self.depth(user)? + extra <= max, head))
    }

    /// First and last retained seq of `user`'s inbox, `None` when it is empty. Retained seqs are
    /// contiguous because trimming only removes a prefix.
    pub fn retained(&self, user: &str) -> Result<Option<(u64, u64)>, StorageError> {
        let mut range = self.inbox.range((user, 0)..=(user, u64::MAX))?;
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
    pub fn depth(&self, user: &str) -> Result<u64, StorageError> {
        let Some((first, last)) = self.retained(user)? else {
            // Nothing retained: only pending entries can remain, and trim removes those with
            // their messages, so they are at most transiently non-zero; count them anyway.
            return Ok(self
                .devices_of(user)?
                .iter()
                .map(|(_, d)| d.pending)
                .max()
                .unwrap_or(0));
        };
        let devices = self.devices_of(user)?;
        if devices.is_empty() {
            return Ok(last - first + 1);
        }
        Ok(devices
            .iter()
            .map(|(_, d)| {
                let unread = last.saturating_sub(d.cursor.max(first - 1));
                unread + d.pending
            })
            .max()
            .unwrap_or(0))
    }
}

/// Milliseconds since the Unix epoch; times before it count as 0.
pub(super) fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Decodes a stored message body. A failure means the file holds data this version cannot read.
pub(super) fn decode_message(bytes: &[u8]) -> Result<Message, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        reason: format!("undecodable message: {e}"),
    })
}
