//! The delivery crate's error type.

use titan_store::StoreError;

/// Why a `msg.send` was not accepted, or (at start) delivery could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The store refused or failed the append; see the inner error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dispatcher actor is gone (the server is shutting down).
    #[error("dispatcher unavailable")]
    Stopped,
    /// A push provider's configuration cannot work (a missing or unreadable key file...).
    /// Only at start.
    #[error("push configuration: {reason}")]
    PushSetup { reason: String },
}
