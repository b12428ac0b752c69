//! The chat message as stored and delivered, and the shape a client sends.

use crate::ids::{MessageId, UserId};
use serde::{Deserialize, Serialize};

/// A message as the recipient receives it in `msg.recv`. `from` and `time` are set by the server;
/// `id` is the same on every redelivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub from: UserId,
    pub to: UserId,
    /// RFC 3339 UTC time at which the server accepted the message.
    pub time: String,
    pub message: String,
}

/// One element of `msg.send`'s params. Unknown members are ignored (old clients sent extras such
/// as `from`, which the server overrides anyway).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OutgoingMessage {
    pub to: UserId,
    pub message: String,
    /// A client-chosen id that makes the send idempotent for this sender.
    #[serde(default)]
    pub id: Option<MessageId>,
}
