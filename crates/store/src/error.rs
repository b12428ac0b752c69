//! The store's error type.

use titan_protocol::UserId;

/// Why a store operation failed. `Clone`: one failed call can answer several requests.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Appending would put more than `max_pending` undelivered messages in this user's inbox.
    /// Nothing of the batch was stored.
    #[error("inbox of {user} is full ({max_pending} pending)")]
    InboxFull { user: UserId, max_pending: u64 },
    /// The backend cannot be reached or failed the operation; nothing was written. Temporary.
    #[error("store unavailable: {reason}")]
    Unavailable { reason: String },
    /// The store holds data this version cannot read.
    #[error("store data is corrupt: {reason}")]
    Corrupt { reason: String },
}

impl StoreError {
    pub fn unavailable(reason: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            reason: reason.to_string(),
        }
    }
}
