//! The [`Inbox`] trait: what Delivery needs from persistence.
//!
//! Each recipient has an append-only inbox (a stream). Each of its devices reads the inbox
//! through its own cursor (a consumer group): reading new messages moves the cursor and puts the
//! messages in the device's pending set with a delivery time; acking removes them from the pending
//! set. A device seen for the first time starts at the oldest retained message, so new devices
//! catch up. Messages stay in the inbox until they are older than the retention, whether acked
//! or not.

use async_trait::async_trait;
use std::time::{Duration, SystemTime};
use titan_protocol::{DeviceId, Message, MessageId, MessageJson, UserId};

use crate::error::StoreError;

/// Where a message sits in its recipient's inbox. Ordered like the inbox. Maps to a Redis
/// stream id `<ms>-<seq>`; the embedded backend uses `ms` = acceptance time and a per-inbox `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub ms: u64,
    pub seq: u64,
}

/// A message to append. `message.id`, `message.from` and `message.time` are already set by the
/// server. `client_id`, when present, makes the append idempotent per (sender, recipient,
/// client id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub message: Message,
    pub client_id: Option<MessageId>,
}

/// What happened to one message of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored now, at this position of the recipient's inbox.
    Stored { position: Position },
    /// The sender already sent this client id (within the retention); nothing new was stored.
    Duplicate { existing: MessageId },
}

/// A message handed to a device, with its position (what the device acks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub position: Position,
    /// As stored: it goes into the `msg.recv` frame as it is.
    pub message: MessageJson,
}

/// An online device to hand new messages to in the same step as an append (see
/// [`Inbox::append_and_read`]): a [`Inbox::read_new`] of up to `limit` messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRead {
    pub user: UserId,
    pub device: DeviceId,
    pub limit: usize,
}

/// One device's acknowledged positions, for [`Inbox::ack_many`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAcks {
    pub user: UserId,
    pub device: DeviceId,
    pub positions: Vec<Position>,
}

/// What [`Inbox::append_and_read`] returns: each batch's own outcome (as [`Inbox::append`]
/// would give it), and one `read_new` result per [`LiveRead`], in order.
pub type AppendedAndRead = (
    Vec<Result<Vec<Appended>, StoreError>>,
    Vec<Result<Vec<Delivered>, StoreError>>,
);

/// Bounds every backend enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    /// Most undelivered-or-unacked messages one inbox may hold for its slowest device (or in total
    /// while the user has no device yet). An append past it fails with [`StoreError::InboxFull`].
    pub max_pending: u64,
    /// How long messages (and client-id idempotency keys) are kept.
    pub retention: Duration,
}

impl Default for InboxLimits {
    fn default() -> Self {
        Self {
            max_pending: 10_000,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Per-recipient inboxes with per-device cursors and pending sets.
///
/// Every method is atomic. Only [`Inbox::append`] must be durable when it returns; cursor moves
/// and acks may be lost in a crash (that only causes a redelivery, which at-least-once allows).
#[async_trait]
pub trait Inbox: Send + Sync + 'static {
    /// Appends every message of `batch` to its recipient's inbox, all or nothing, durably.
    /// Returns one [`Appended`] per input, in order. Fails whole with [`StoreError::InboxFull`]
    /// when any recipient would exceed `max_pending`.
    async fn append(&self, batch: Vec<NewMessage>) -> Result<Vec<Appended>, StoreError>;

    /// [`Inbox::append`] of each of `batches`, then [`Inbox::read_new`] for each of `reads`
    /// (online devices of the recipients, usually): a device that is waiting gets what was just
    /// stored without a second trip through the store. `batches` are the `msg.send` requests of
    /// one sender that arrived together: each is appended in order, exactly as atomic and durable
    /// as `append` alone, and refused on its own (a full inbox fails that batch and leaves the
    /// others stored). The reads run only when some batch succeeded; a read that fails fails
    /// alone, and its messages stay in the inbox for the next read. The answer holds the results
    /// of a prefix of `reads`, in order: all of them, none when no batch succeeded, or those
    /// before the first that a backend leaves for later (the embedded store, while a checkpoint
    /// commits, leaves every read from the first that needs its tables); a device whose read is
    /// not answered is read again by the caller. `Err` means the backend failed the whole call
    /// and nothing is known to be stored.
    ///
    /// The default runs the appends, then the reads, as separate calls; a backend that can do
    /// them in one transaction or round trip overrides it (the embedded store does all of them in
    /// one write transaction, saving the writer a transaction per request and per delivery; the
    /// Redis store runs the reads in the appending script's call, one round trip).
    async fn append_and_read(
        &self,
        batches: Vec<Vec<NewMessage>>,
        reads: Vec<LiveRead>,
    ) -> Result<AppendedAndRead, StoreError> {
        let mut appended = Vec::with_capacity(batches.len());
        for batch in batches {
            appended.push(self.append(batch).await);
        }
        let mut read = Vec::with_capacity(reads.len());
        if appended.iter().any(Result::is_ok) {
            for r in &reads {
                read.push(self.read_new(&r.user, &r.device, r.limit).await);
            }
        }
        Ok((appended, read))
    }

    /// Up to `limit` messages of `user`'s inbox that `device` has not been given yet, in inbox
    /// order. They join the device's pending set with delivery time now. (XREADGROUP `>`.)
    async fn read_new(
        &self,
        user: &UserId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError>;

    /// Up to `limit` pending messages of `device` positioned after `after` (from the start when
    /// `None`) whose last delivery was before `delivered_before` (any time when `None`), in inbox
    /// order; their delivery time is reset to now. Pending entries whose message was trimmed are
    /// dropped. (XAUTOCLAIM with a start id and a min idle time.) Used on reconnect
    /// (`delivered_before = None`, paging with `after`) and after the ack timeout
    /// (`Some(now - ack_timeout)`: claimed entries are then fresh and not returned again).
    async fn claim_pending(
        &self,
        user: &UserId,
        device: &DeviceId,
        delivered_before: Option<SystemTime>,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError>;

    /// Removes these positions from the device's pending set. Unknown or already acked positions
    /// are ignored. Returns how many were removed. (XACK.)
    async fn ack(
        &self,
        user: &UserId,
        device: &DeviceId,
        positions: &[Position],
    ) -> Result<u64, StoreError>;

    /// [`Inbox::ack`] of several devices at once (what the dispatcher gathered from every
    /// session in one turn). Returns how many positions were removed in all. Like `ack` it
    /// needs no durability: an `Err` may leave some of them acked and not the others, which only
    /// redelivers those. The default runs the acks concurrently; the embedded store does all of
    /// them in one operation of its writer.
    async fn ack_many(&self, acks: Vec<DeviceAcks>) -> Result<u64, StoreError> {
        let each = acks
            .iter()
            .map(|a| self.ack(&a.user, &a.device, &a.positions));
        let mut removed = 0;
        for result in futures_util::future::join_all(each).await {
            removed += result?;
        }
        Ok(removed)
    }

    /// Undelivered plus pending messages of the user's slowest device (all retained messages
    /// while the user has no device). What `max_pending` bounds.
    async fn depth(&self, user: &UserId) -> Result<u64, StoreError>;

    /// Drops messages and idempotency keys older than the retention. Returns how many messages
    /// were dropped. Called periodically by Delivery.
    async fn trim(&self) -> Result<u64, StoreError>;

    /// Cheap liveness check of the backend.
    async fn ping(&self) -> Result<(), StoreError>;

    /// True when the backend runs calls in the order they are made and answers them in that
    /// order (each call's answer before a later call's). The dispatcher then lets the reads of
    /// one device that go with appends overlap, knowing that their results come back in the
    /// order of the messages they hold. False by default (the Redis store: calls share
    /// connections and end in any order).
    fn runs_calls_in_order(&self) -> bool {
        false
    }
}
