//! Persistence for Titan: per-recipient inboxes with per-device cursors and pending sets.
//!
//! - [`inbox`]: the [`Inbox`] trait every backend implements, and the types it speaks
//!   ([`NewMessage`], [`Appended`], [`Delivered`], [`Position`]).
//! - [`bus`]: the [`Bus`] trait: presence and wake-ups between instances sharing a store.
//! - [`users`]: the [`Users`] trait: users who sign in with Google, and token revocations.
//! - [`push_tokens`]: the [`PushRegistry`] trait: each device's push token, for offline delivery.
//! - [`error`]: [`StoreError`], this crate's one error enum.
//! - [`embedded`]: the default, durable single-node backend on redb (also used, with redb's
//!   in-memory backend, as the `memory` backend for tests).
//! - [`redis`]: the Redis Streams backend, for several Titan nodes sharing one store.
//! - `conformance` (feature `conformance`, and in this crate's tests): the behaviour every
//!   backend must show, as async checks any backend's tests can run.
//!
//! The trait is shaped after Redis Streams so the Redis backend maps onto it one to one:
//! append = XADD, read new = XREADGROUP `>`, ack = XACK, claim stale pending = XAUTOCLAIM.

pub mod bus;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod embedded;
pub mod error;
pub mod inbox;
pub mod push_tokens;
pub mod redis;
pub mod users;

pub use self::redis::{RedisBus, RedisOptions, RedisStore};
pub use bus::{Bus, BusEvent};
pub use embedded::{
    CheckpointObserver, Checkpoints, DATABASE_FILE, EmbeddedOptions, EmbeddedStore, JOURNAL_FILES,
    StoreStats, SyncObserver, journal_frames_len,
};
pub use error::StoreError;
pub use inbox::{
    Appended, AppendedAndRead, Delivered, DeviceAcks, Inbox, InboxLimits, LiveRead, NewMessage,
    Position,
};
pub use push_tokens::{DevicePush, PushRegistry};
pub use users::{RevocationList, SignInProfile, SignedInUser, Users, to_ms as unix_ms};
