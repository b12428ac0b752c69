//! `append`: one call of `lua/append.lua` per batch, so a `msg.send` costs one round trip
//! whatever its size, and the client-id checks, the `max_pending` check and the XADDs are one
//! atomic step.

use std::collections::HashMap;

use titan_protocol::{MessageId, UserId};

use super::keys::position;
use super::{RedisStore, Shared};
use crate::error::StoreError;
use crate::inbox::{Appended, NewMessage};

/// The longest client-id TTL Redis accepts with margin (it refuses expiry times past i64 ms).
const MAX_TTL_MS: u64 = i64::MAX as u64 / 4;

impl RedisStore {
    /// See [`crate::Inbox::append`].
    pub(super) async fn append_batch(
        &self,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<Appended>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let Shared {
            keys,
            scripts,
            limits,
            ..
        } = &*self.shared;

        // Inboxes and client-id keys are numbered (from 1) in order of first appearance; each
        // message names its own by number.
        let mut inboxes: Vec<&UserId> = Vec::new();
        let mut inbox_index: HashMap<&str, usize> = HashMap::new();
        let mut client_ids: Vec<String> = Vec::new();
        let mut client_id_index: HashMap<(&str, &str), usize> = HashMap::new();
        let mut per_message = Vec::with_capacity(batch.len());
        for new in &batch {
            let message = &new.message;
            let inbox = *inbox_index.entry(message.to.as_str()).or_insert_with(|| {
                inboxes.push(&message.to);
                inboxes.len()
            });
            let client_id = match &new.client_id {
                Some(id) => *client_id_index
                    .entry((message.from.as_str(), id.as_str()))
                    .or_insert_with(|| {
                        client_ids.push(keys.client_id(message.from.as_str(), id.as_str()));
                        client_ids.len()
                    }),
                None => 0,
            };
            // A struct of strings always serializes; reported rather than unwrapped all the same.
            let json = serde_json::to_string(message).map_err(|e| StoreError::Corrupt {
                reason: format!("cannot encode message: {e}"),
            })?;
            per_message.push((inbox, client_id, message.id.as_str(), json));
        }

        let mut call = scripts.append.prepare_invoke();
        call.key(keys.registry());
        for user in &inboxes {
            call.key(keys.inbox(user.as_str()));
        }
        for key in &client_ids {
            call.key(key);
        }
        let retention_ms = u64::try_from(limits.retention.as_millis()).unwrap_or(u64::MAX);
        call.arg(limits.max_pending)
            .arg(retention_ms.clamp(1, MAX_TTL_MS))
            .arg(inboxes.len())
            .arg(per_message.len());
        for user in &inboxes {
            call.arg(user.as_str());
        }
        for (inbox, client_id, id, json) in &per_message {
            call.arg(inbox).arg(client_id).arg(*id).arg(json);
        }
        let reply: Vec<String> = self
            .run("append", |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        self.appended(reply, &inboxes, batch.len())
    }

    /// Reads the script's answer (see `lua/append.lua`).
    fn appended(
        &self,
        reply: Vec<String>,
        inboxes: &[&UserId],
        expected: usize,
    ) -> Result<Vec<Appended>, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt {
            reason: format!("unexpected append script reply: {what}"),
        };
        match reply.split_first() {
            Some((status, rest)) if status == "full" => {
                let user = rest
                    .first()
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| inboxes.get(i.checked_sub(1)?))
                    .ok_or_else(|| corrupt("full without a known inbox"))?;
                Err(StoreError::InboxFull {
                    user: (*user).clone(),
                    max_pending: self.shared.limits.max_pending,
                })
            }
            Some((status, rest)) if status == "ok" && rest.len() == 2 * expected => rest
                .chunks_exact(2)
                .map(|pair| match pair[0].as_str() {
                    "s" => Ok(Appended::Stored {
                        position: position(&pair[1])?,
                    }),
                    "d" => Ok(Appended::Duplicate {
                        existing: MessageId::new(pair[1].as_str()).map_err(|e| {
                            StoreError::Corrupt {
                                reason: format!("invalid stored message id: {e}"),
                            }
                        })?,
                    }),
                    other => Err(corrupt(other)),
                })
                .collect(),
            _ => Err(corrupt("wrong shape")),
        }
    }
}
