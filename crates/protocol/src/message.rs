//! The chat message as stored and delivered, and the shape a client sends.

use crate::ids::{MessageId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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

/// A [`Message`] as its JSON text: how the stores keep a message and how `msg.recv` carries it.
/// A delivery copies the stored text into the frame rather than decoding it into a [`Message`]
/// and encoding it again (five strings allocated, escaped and freed per message, on the
/// hottest path of the server).
#[derive(Debug, Clone)]
pub struct MessageJson(Box<RawValue>);

impl MessageJson {
    /// Takes text that a store returns as a message. It must be one JSON value, or the
    /// `msg.recv` frame it goes into would not parse; that is checked (a scan, no allocation).
    /// Its members are not: the stores keep only what an encoding of [`Message`] wrote.
    pub fn from_stored(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// Encodes a message as the stores keep it (compact JSON, no scan: serde_json wrote it).
    pub fn encode(message: &Message) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(message).map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The message itself, for code that needs its members (tests, tools).
    pub fn decode(&self) -> Result<Message, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl PartialEq for MessageJson {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for MessageJson {}

impl Serialize for MessageJson {
    /// The text as it is (not as a JSON string).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}
