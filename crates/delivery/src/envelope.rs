//! Turning what a client sent into what the store keeps: the server assigns the id, the sender
//! and the time, whatever the client wrote, and the echo bot's messages come back to the sender.

use std::time::SystemTime;
use titan_protocol::{Message, MessageId, OutgoingMessage, UserId};
use titan_store::NewMessage;

/// A fresh, unique, time-ordered message id (UUIDv7; ordered within this process).
pub fn new_message_id() -> MessageId {
    // A UUID's hyphenated form is 36 ASCII characters with no control characters, so the id
    // rules cannot reject it.
    // Written on the stack: the id's own allocation is then the only one.
    let mut text = uuid::Uuid::encode_buffer();
    MessageId::new(uuid::Uuid::now_v7().hyphenated().encode_lower(&mut text))
        .unwrap_or_else(|_| unreachable!("a UUID is a valid message id"))
}

/// RFC 3339 UTC time with milliseconds, as `msg.recv` carries it.
pub fn format_time(at: SystemTime) -> String {
    use std::fmt::Write;
    // Sized for "2026-11-30T12:35:32.123Z" up front: `to_string` grew the string three times,
    // once per message on the Dispatcher's thread (seventeenth set's profile).
    let mut text = String::with_capacity(TIME_LEN);
    // Writing to a String cannot fail.
    let _ = write!(text, "{}", humantime::format_rfc3339_millis(at));
    text
}

/// Length of [`format_time`]'s text for years 1000 to 9999.
const TIME_LEN: usize = 24;

/// Builds the stored form of a client's message sent by `from` at `at`.
pub fn stamp(from: &UserId, outgoing: OutgoingMessage, at: SystemTime) -> NewMessage {
    let (from, to) = if outgoing.to.is_echo() {
        (UserId::echo(), from.clone())
    } else {
        (from.clone(), outgoing.to)
    };
    NewMessage {
        message: Message {
            id: new_message_id(),
            from,
            to,
            time: format_time(at),
            message: outgoing.message,
        },
        client_id: outgoing.id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).unwrap()
    }

    /// The echo bot, in any letter case, returns the message to the sender from "echo".
    #[test]
    fn echo_comes_back_from_echo() {
        let out = OutgoingMessage {
            to: user("EcHo"),
            message: "hi".into(),
            id: None,
        };
        let m = stamp(&user("alice"), out, SystemTime::now()).message;
        assert_eq!((m.from.as_str(), m.to.as_str()), ("echo", "alice"));
    }

    /// Ids are unique and ordered by creation.
    #[test]
    fn ids_are_ordered() {
        let ids: Vec<_> = (0..1000).map(|_| new_message_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    /// Times are RFC 3339 UTC.
    #[test]
    fn time_format() {
        let t = format_time(SystemTime::UNIX_EPOCH);
        assert_eq!(t, "1970-01-01T00:00:00.000Z");
        assert_eq!(
            t.len(),
            TIME_LEN,
            "the string is allocated once, at its length"
        );
    }
}
