//! The delivery crate's error type.

use titan_store::StoreError;

/// Why a `msg.send` was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The store refused or failed the append; see the inner error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dispatcher actor is gone (the server is shutting down).
    #[error("dispatcher unavailable")]
    Stopped,
}
