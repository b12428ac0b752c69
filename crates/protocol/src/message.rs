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

    /// Encodes a message as the stores keep it: compact JSON, exactly as serde_json writes a
    /// [`Message`] (tests compare the two). When no member has a byte to escape (ids, user names
    /// and the time never do, most texts do not) the members are copied as they are and the
    /// result is checked with one scan: serde_json's writer looks up every byte of every string
    /// in its escape table, which made encoding 3,800 instructions of a 100-byte message (the
    /// store's writer thread encodes each message it stores).
    pub fn encode(message: &Message) -> Result<Self, serde_json::Error> {
        let members = [
            ("id", message.id.as_str()),
            ("from", message.from.as_str()),
            ("to", message.to.as_str()),
            ("time", message.time.as_str()),
            ("message", message.message.as_str()),
        ];
        if members.iter().any(|(_, value)| needs_escaping(value)) {
            return serde_json::value::to_raw_value(message).map(Self);
        }
        // Exactly the length (so the boxed text needs no reallocation): `{}`, each member's name
        // and value with `"":""` around them, and a comma between members.
        let len = 1 + members
            .iter()
            .map(|(name, value)| name.len() + value.len() + 6)
            .sum::<usize>();
        let mut text = String::with_capacity(len);
        text.push('{');
        for (i, (name, value)) in members.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push('"');
            text.push_str(name);
            text.push_str("\":\"");
            text.push_str(value);
            text.push('"');
        }
        text.push('}');
        RawValue::from_string(text).map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The message itself, for code that needs its members (tests, tools).
    pub fn decode(&self) -> Result<Message, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

/// Whether serde_json escapes anything in `text` (a control character, `"` or `\`; it writes
/// everything else, non-ASCII included, as it is). No early exit, so the compiler can look at
/// many bytes at once.
fn needs_escaping(text: &str) -> bool {
    text.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::one_edit::one_edit_away;

    fn message(id: &str, from: &str, to: &str, time: &str, text: &str) -> Option<Message> {
        Some(Message {
            id: MessageId::new(id).ok()?,
            from: UserId::new(from).ok()?,
            to: UserId::new(to).ok()?,
            time: time.to_owned(),
            message: text.to_owned(),
        })
    }

    /// The encoding is serde_json's, byte for byte, for every member one edit away from an
    /// ordinary message (quotes, backslashes, non-ASCII) and with each character serde_json
    /// escapes, or might be thought to (control characters, DEL, `/`), in the text.
    #[test]
    fn encoding_is_serde_jsons() {
        let seed = [
            "0193a5c2-7d1e-7c3a-9b1f-000000000001",
            "alice",
            "bob",
            "2026-11-29T01:02:03.456Z",
            "hello, world",
        ];
        let mut cases = Vec::new();
        for member in 0..seed.len() {
            for edited in one_edit_away(seed[member]) {
                let mut m = seed.map(str::to_owned);
                m[member] = edited;
                cases.push(m);
            }
        }
        for c in (0u8..0x20).chain([0x7f, b'/']) {
            let mut m = seed.map(str::to_owned);
            m[4] = format!("a{}b", char::from(c));
            cases.push(m);
        }
        let mut encoded = 0;
        for [id, from, to, time, text] in &cases {
            let Some(message) = message(id, from, to, time, text) else {
                continue;
            };
            let json = MessageJson::encode(&message).unwrap();
            assert_eq!(
                json.as_str(),
                serde_json::to_string(&message).unwrap(),
                "{message:?}"
            );
            assert_eq!(json.decode().unwrap(), message);
            encoded += 1;
        }
        // Most edits keep the ids valid: the comparison covered them, not just the seed.
        assert!(encoded > cases.len() / 2, "{encoded} of {}", cases.len());
    }
}
