//! The per-device operations: `read_new` (XREADGROUP `>`; `lua/read.lua` when the device has no
//! group yet, which creates it), `claim_pending` (`lua/claim.lua`: XPENDING IDLE + XCLAIM) and
//! `ack` (XACK).

use std::time::{SystemTime, UNIX_EPOCH};

use ::redis::AsyncCommands;
use titan_protocol::{DeviceId, MessageJson, UserId};

use super::RedisStore;
use super::keys::{position, stream_id};
use crate::error::StoreError;
use crate::inbox::{Delivered, Position};

/// The one consumer of every device's group: a (user, device) has one live session, so there is
/// nothing to share the group with.
pub(super) const CONSUMER: &str = "c";

impl RedisStore {
    /// See [`crate::Inbox::read_new`].
    pub(super) async fn read_new_entries(
        &self,
        user: &UserId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        // XREADGROUP itself, unless the device has no group yet (or asks for nothing): the
        // script's Lua turning the reply into a table and back cost redis-server more than the
        // read did (docs/benchmarks.md, ninth set).
        if limit > 0 {
            let mut read = ::redis::cmd("XREADGROUP");
            read.arg("GROUP")
                .arg(device.as_str())
                .arg(CONSUMER)
                .arg("COUNT")
                .arg(limit)
                .arg("STREAMS")
                .arg(self.shared.keys.inbox(user.as_str()))
                .arg(">");
            let reply = self
                .run("read new messages", |mut conn| async move {
                    match read.query_async::<::redis::Value>(&mut conn).await {
                        Err(e) if e.code() == Some("NOGROUP") => Ok(None),
                        reply => reply.map(Some),
                    }
                })
                .await?;
            if let Some(reply) = reply {
                return read_reply(reply);
            }
        }
        let mut call = self.shared.scripts.read.prepare_invoke();
        call.key(self.shared.keys.inbox(user.as_str()))
            .arg(device.as_str())
            .arg(CONSUMER)
            .arg(limit);
        let reply = self
            .run("read new messages", |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        entries(reply)
    }

    /// See [`crate::Inbox::claim_pending`].
    pub(super) async fn claim_pending_entries(
        &self,
        user: &UserId,
        device: &DeviceId,
        delivered_before: Option<SystemTime>,
        after: Option<Position>,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
        // A cutoff before 1970 claims nothing, like cutoff 0: nothing was delivered before it.
        let cutoff = delivered_before.map_or_else(String::new, |t| {
            let ms = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            ms.to_string()
        });
        let start = after.map_or_else(|| "-".to_owned(), |p| format!("({}", stream_id(p)));
        let mut call = self.shared.scripts.claim.prepare_invoke();
        call.key(self.shared.keys.inbox(user.as_str()))
            .arg(device.as_str())
            .arg(CONSUMER)
            .arg(cutoff)
            .arg(start)
            .arg(limit);
        let reply = self
            .run("claim pending messages", |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        entries(reply)
    }

    /// See [`crate::Inbox::ack`]. XACK ignores ids that are not pending, and counts a repeated
    /// id once.
    pub(super) async fn ack_entries(
        &self,
        user: &UserId,
        device: &DeviceId,
        positions: &[Position],
    ) -> Result<u64, StoreError> {
        if positions.is_empty() {
            return Ok(0);
        }
        let key = self.shared.keys.inbox(user.as_str());
        let ids: Vec<String> = positions.iter().copied().map(stream_id).collect();
        self.run("ack", |mut conn| async move {
            conn.xack(key, device.as_str(), &ids).await
        })
        .await
    }
}

/// Decodes XREADGROUP's reply for one stream: nil when nothing is new, else the stream's
/// entries (an array of `[key, entries]` pairs, or a map from key to entries over RESP3), each
/// `[id, [field, value, ...]]` with the message in field `m`. Not the redis crate's
/// `StreamReadReply`: to try its two formats it clones the whole reply (every message body)
/// first, and it builds a map per entry, both per delivered message.
fn read_reply(reply: ::redis::Value) -> Result<Vec<Delivered>, StoreError> {
    use ::redis::Value;
    let corrupt = |what: &str| StoreError::Corrupt {
        reason: format!("unexpected XREADGROUP reply from redis: {what}"),
    };
    let entries = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(mut streams) => match streams.pop() {
            Some(Value::Array(mut stream)) if stream.len() == 2 => stream.pop(),
            _ => None,
        },
        Value::Map(mut streams) => streams.pop().map(|(_, entries)| entries),
        _ => None,
    };
    let Some(Value::Array(entries)) = entries else {
        return Err(corrupt("no entry list"));
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(entry) = entry else {
            return Err(corrupt("an entry that is not an array"));
        };
        let mut entry = entry.into_iter();
        let (Some(id), Some(Value::Array(fields))) = (entry.next(), entry.next()) else {
            return Err(corrupt("an entry without id and fields"));
        };
        let id: String = ::redis::from_redis_value(id).map_err(|e| corrupt(&e.to_string()))?;
        let mut json = None;
        let mut fields = fields.into_iter();
        while let (Some(field), Some(value)) = (fields.next(), fields.next()) {
            if matches!(&field, Value::BulkString(name) if name == b"m") {
                json = Some(value);
            }
        }
        let json: String = match json {
            Some(value) => ::redis::from_redis_value(value).map_err(|e| corrupt(&e.to_string()))?,
            None => String::new(),
        };
        out.push(delivered(id, json)?);
    }
    Ok(out)
}

/// Decodes `[id1, json1, id2, json2, ...]` as returned by the read and claim scripts.
pub(super) fn entries(reply: Vec<String>) -> Result<Vec<Delivered>, StoreError> {
    if !reply.len().is_multiple_of(2) {
        return Err(StoreError::Corrupt {
            reason: "odd-length entry list from redis".to_owned(),
        });
    }
    let mut reply = reply.into_iter();
    let mut out = Vec::with_capacity(reply.len() / 2);
    while let (Some(id), Some(json)) = (reply.next(), reply.next()) {
        out.push(delivered(id, json)?);
    }
    Ok(out)
}

/// One stream entry: its id and its message's stored JSON.
fn delivered(id: String, json: String) -> Result<Delivered, StoreError> {
    let message = MessageJson::from_stored(json).map_err(|e| StoreError::Corrupt {
        reason: format!("invalid message in inbox entry {id}: {e}"),
    })?;
    Ok(Delivered {
        position: position(&id)?,
        message,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ::redis::Value;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    const MESSAGE: &str = r#"{"id":"0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","from":"alice","to":"bob","time":"2026-11-29T18:20:00.123Z","message":"hi"}"#;

    fn entries() -> Value {
        Value::Array(vec![Value::Array(vec![
            bulk("1795976645888-3"),
            Value::Array(vec![bulk("m"), bulk(MESSAGE)]),
        ])])
    }

    /// The same entries read over RESP2 (an array of [key, entries]) and RESP3 (a map), and
    /// nothing new (nil).
    #[test]
    fn reads_both_protocols_replies() {
        let resp2 = Value::Array(vec![Value::Array(vec![bulk("t:{bob}:inbox"), entries()])]);
        let resp3 = Value::Map(vec![(bulk("t:{bob}:inbox"), entries())]);
        for reply in [resp2, resp3] {
            let read = read_reply(reply).unwrap();
            assert_eq!(read.len(), 1);
            assert_eq!(
                read[0].position,
                Position {
                    ms: 1_795_976_645_888,
                    seq: 3
                }
            );
            assert_eq!(read[0].message.as_str(), MESSAGE);
        }
        assert!(read_reply(Value::Nil).unwrap().is_empty());
    }

    /// A reply of another shape, or an entry without a readable message, is an error, not an
    /// empty read.
    #[test]
    fn refuses_unexpected_replies() {
        for reply in [
            Value::Int(1),
            Value::Array(vec![]),
            Value::Array(vec![Value::Array(vec![bulk("key")])]),
            Value::Array(vec![Value::Array(vec![
                bulk("key"),
                Value::Array(vec![bulk("1-1")]),
            ])]),
            // An entry without the message field, and one whose message is not JSON.
            Value::Array(vec![Value::Array(vec![
                bulk("key"),
                Value::Array(vec![Value::Array(vec![
                    bulk("1-1"),
                    Value::Array(vec![bulk("x"), bulk(MESSAGE)]),
                ])]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                bulk("key"),
                Value::Array(vec![Value::Array(vec![
                    bulk("1-1"),
                    Value::Array(vec![bulk("m"), bulk("{not json")]),
                ])]),
            ])]),
        ] {
            assert!(
                matches!(read_reply(reply.clone()), Err(StoreError::Corrupt { .. })),
                "{reply:?}"
            );
        }
    }
}
