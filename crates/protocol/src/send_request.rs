//! The fast path of the hottest request: a `msg.send` frame read straight into its messages,
//! without the [`serde_json::Value`] tree that [`parse_frame`](crate::jsonrpc::parse_frame) and
//! [`ClientCommand::parse`](crate::ClientCommand::parse) build and take apart again (a map and
//! three strings per message, allocated and freed on a session worker: 14 % of one at 50,000
//! msg/s).
//!
//! It only ever answers "this is an ordinary `msg.send` request, and these are its messages", or
//! "not for me" (`None`). Anything unusual (a batch, a notification, a `null` id, a duplicate
//! member, a message given as an array, a count out of range, bad JSON) is `None`, and the
//! caller then takes the general path, which alone decides what is invalid and how to say so.
//! When it answers, the answer is what the general path would give (tests below compare both).

use std::borrow::Cow;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::command::MAX_SEND_BATCH;
use crate::jsonrpc::{Id, Version};
use crate::message::OutgoingMessage;

/// The id and messages of `text` when it is one ordinary `msg.send` request; `None` otherwise
/// (see the module docs).
pub fn parse_send_request(text: &str) -> Option<(Id, Vec<OutgoingMessage>)> {
    // The other frames a busy session reads are mostly acks (`{"result": ...}`): a scan for
    // the method name turns them away before any parsing (an escaped name goes the general way).
    if !text.contains("\"msg.send\"") {
        return None;
    }
    let frame: SendFrame<'_> = serde_json::from_str(text).ok()?;
    if frame.method != "msg.send" || matches!(frame.jsonrpc, Version::Other) {
        return None;
    }
    let id = frame.id?;
    let SendParams(messages) = frame.params?;
    if messages.is_empty() {
        return None;
    }
    Some((id, messages))
}

/// The members of a `msg.send` request. An `"id": null` reads as `None` here (the general path
/// answers it); other members are ignored, as the general path ignores them.
#[derive(Deserialize)]
struct SendFrame<'a> {
    #[serde(default)]
    id: Option<Id>,
    #[serde(default)]
    jsonrpc: Version,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(default)]
    params: Option<SendParams>,
}

/// `msg.send` params: one message object, or an array of 1..=[`MAX_SEND_BATCH`] of them.
struct SendParams(Vec<OutgoingMessage>);

impl<'de> Deserialize<'de> for SendParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamsVisitor)
    }
}

struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = SendParams;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a message object or an array of them")
    }

    /// A lone message object, read as each element of an array is.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SendParams, A::Error> {
        ObjectVisitor
            .visit_map(map)
            .map(|ObjectOnly(message)| SendParams(vec![message]))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SendParams, A::Error> {
        let mut messages = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(MAX_SEND_BATCH));
        while let Some(ObjectOnly(message)) = seq.next_element()? {
            if messages.len() == MAX_SEND_BATCH {
                return Err(de::Error::custom("too many messages"));
            }
            messages.push(message);
        }
        Ok(SendParams(messages))
    }
}

/// A message that must be a JSON object: serde would also fill the struct from an array of its
/// fields, a shape the protocol does not define (the general path refuses it too).
struct ObjectOnly(OutgoingMessage);

impl<'de> Deserialize<'de> for ObjectOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = ObjectOnly;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ObjectOnly, A::Error> {
        OutgoingMessage::deserialize(MapAccessDeserializer::new(map)).map(ObjectOnly)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientCommand;
    use crate::jsonrpc::{Frame, Incoming, parse_frame};

    /// What the general path makes of `text`: the id and messages of a `msg.send` request, or
    /// `None` for anything else (another method, an error, a notification, a batch).
    fn general(text: &str) -> Option<(Id, Vec<OutgoingMessage>)> {
        let Ok(Frame::Single(Incoming::Request { id, method, params })) = parse_frame(text, 100)
        else {
            return None;
        };
        match ClientCommand::parse(&method, params) {
            Ok(ClientCommand::MsgSend(messages)) => Some((id, messages)),
            _ => None,
        }
    }

    /// Ordinary requests take the fast path and read as the general path reads them.
    #[test]
    fn ordinary_requests_read_as_the_general_path_reads_them() {
        for text in [
            r#"{"jsonrpc":"2.0","method":"msg.send","params":[{"to":"bob","message":"hi"}],"id":7}"#,
            r#"{"id":"a","method":"msg.send","params":{"to":"bob","message":"hi","id":"c1"}}"#,
            r#"{"method":"msg.send","id":1,"params":[{"to":"bob","message":"a\"b\\u00e9"},{"to":"carol","message":"","id":null,"from":"x"}],"extra":{"n":[1]}}"#,
            r#"{"method":"msg.send","id":1.5,"params":[{"message":"m","to":"bob"}]}"#,
            r#" {"method":"msg.send","id":-3,"params":[{"to":"bob","message":"hi"}]} "#,
        ] {
            let fast = parse_send_request(text);
            assert!(fast.is_some(), "{text}");
            assert_eq!(fast, general(text), "{text}");
        }
        let most = format!(
            r#"{{"method":"msg.send","id":1,"params":[{}]}}"#,
            vec![r#"{"to":"bob","message":"x"}"#; MAX_SEND_BATCH].join(",")
        );
        assert_eq!(parse_send_request(&most).map(|(_, m)| m.len()), Some(100));
        assert_eq!(parse_send_request(&most), general(&most));
    }

    /// Every frame one edit away from an ordinary request (a character deleted, replaced or
    /// inserted anywhere: a member renamed, a string cut open, a number made a float, a
    /// duplicate introduced...) is either left to the general path or read exactly as the
    /// general path reads it. The count makes sure the edits do reach the fast path.
    #[test]
    fn frames_one_edit_away_agree_with_the_general_path() {
        let seeds = [
            r#"{"jsonrpc":"2.0","method":"msg.send","params":[{"to":"bob","message":"hi"}],"id":7}"#,
            r#"{"id":"a","method":"msg.send","params":{"to":"bob","message":"h\"i","id":"c1"}}"#,
            r#"{"method":"msg.send","id":1,"params":[{"to":"b","message":"x"},{"to":"c","message":"\u00e9","id":null}],"x":[1]}"#,
            r#"{"method":"msg.send","id":-1.5e3,"params":[{"message":"m","to":"bob","from":"z"}]}"#,
        ];
        let mut taken = 0;
        for seed in seeds {
            assert!(parse_send_request(seed).is_some(), "{seed}");
            for text in crate::one_edit::one_edit_away(seed) {
                if let Some(fast) = parse_send_request(&text) {
                    taken += 1;
                    assert_eq!(Some(fast), general(&text), "{text}");
                }
            }
        }
        assert!(
            taken > 1_000,
            "only {taken} edited frames took the fast path"
        );
    }

    /// Anything unusual is left to the general path (`None`), whatever that path then decides.
    #[test]
    fn anything_unusual_is_left_to_the_general_path() {
        let too_many = format!(
            r#"{{"method":"msg.send","id":1,"params":[{}]}}"#,
            vec![r#"{"to":"bob","message":"x"}"#; MAX_SEND_BATCH + 1].join(",")
        );
        for text in [
            // Not msg.send, or not a single request; a response (an ack); an escaped name.
            r#"{"jsonrpc":"2.0","result":"ACK","id":3}"#,
            r#"{"jsonrpc":"2.0","result":"msg.send","id":3,"method":"x"}"#,
            r#"{"method":"msg\u002esend","id":1,"params":[{"to":"bob","message":"hi"}]}"#,
            r#"{"method":"echo","id":1,"params":[{"to":"bob","message":"hi"}]}"#,
            r#"[{"method":"msg.send","id":1,"params":[{"to":"bob","message":"hi"}]}]"#,
            r#"{"method":"msg.send","params":[{"to":"bob","message":"hi"}]}"#,
            r#"{"method":"msg.send","id":null,"params":[{"to":"bob","message":"hi"}]}"#,
            r#"{"method":"msg.send","id":true,"params":[{"to":"bob","message":"hi"}]}"#,
            r#"{"jsonrpc":"1.0","method":"msg.send","id":1,"params":[{"to":"bob","message":"hi"}]}"#,
            r#"{"jsonrpc":2,"method":"msg.send","id":1,"params":[{"to":"bob","message":"hi"}]}"#,
            // Duplicate members: the general path lets the last one win.
            r#"{"method":"echo","method":"msg.send","id":1,"params":[{"to":"bob","message":"hi"}]}"#,
            r#"{"method":"msg.send","id":1,"params":[{"to":"bob","to":"carol","message":"hi"}]}"#,
            // Params the general path refuses or reads differently.
            r#"{"method":"msg.send","id":1}"#,
            r#"{"method":"msg.send","id":1,"params":null}"#,
            r#"{"method":"msg.send","id":1,"params":[]}"#,
            r#"{"method":"msg.send","id":1,"params":[["bob","hi"]]}"#,
            r#"{"method":"msg.send","id":1,"params":["bob"]}"#,
            r#"{"method":"msg.send","id":1,"params":[{"to":"","message":"hi"}]}"#,
            r#"{"method":"msg.send","id":1,"params":[{"to":"bob"}]}"#,
            r#"{"method":"msg.send","id":1,"params":[{"to":5,"message":"hi"}]}"#,
            too_many.as_str(),
            // Not JSON, or more than one value.
            r#"{"method":"msg.send","id":1,"params":[{"to":"bob","message":"hi"}]"#,
            r#"{"method":"msg.send","id":1,"params":[{"to":"bob","message":"hi"}]} x"#,
            "",
        ] {
            assert_eq!(parse_send_request(text), None, "{text}");
        }
    }
}
