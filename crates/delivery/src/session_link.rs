//! What the delivery layer sends up to a session. Sessions live in a higher crate, so this crate
//! holds `Recipient`s of these messages and never the session type itself.

use actix::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use titan_protocol::CloseCode;
use titan_store::Delivered;

/// Identifies one WebSocket connection for its lifetime, so a late `Detach` from a replaced
/// session cannot remove its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

impl ConnId {
    /// A process-unique id.
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Messages for the session's device, to be sent as one `msg.recv` request. The session answers
/// the acknowledgement with [`crate::Acked`].
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Deliver {
    pub messages: Vec<Delivered>,
}

/// Close the session with this code (after any error response it owes).
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Kick {
    pub code: CloseCode,
}
