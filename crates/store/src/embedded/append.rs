//! `append` and `trim`: the operations that add messages to inboxes and age them out.
//!
//! `append` works in two phases so that a refused batch writes nothing: first it decides every
//! message's fate (duplicate, or stored) and checks `max_pending` against the transaction's
//! current state (which includes earlier operations of the same group commit), then it writes.
//! Only a redb error can happen in the write phase, and that fails the whole transaction.

use std::collections::HashMap;

use redb::{ReadableTable, StorageError};
use titan_protocol::{MessageId, MessageJson, UserId};

use super::Outcome;
use super::journal::{ClientKey, Redo};
use super::tables::{Head, Tables};
use crate::error::StoreError;
use crate::inbox::{Appended, InboxLimits, NewMessage, Position};

/// What the validation phase decided for one message.
enum Plan {
    Store { json: MessageJson },
    Duplicate { existing: MessageId },
}

/// Appends `batch` at time `now_ms`, all or nothing, and records what it stored in `redo` (the
/// journal). See [`crate::Inbox::append`].
pub(super) fn append(
    t: &mut Tables<'_>,
    batch: &[NewMessage],
    now_ms: u64,
    limits: &InboxLimits,
    redo: &mut Redo,
) -> Outcome<Vec<Appended>> {
    let cutoff = now_ms.saturating_sub(retention_ms(limits));
    let mut plans = Vec::with_capacity(batch.len());
    // Client ids already seen in this batch: a repeat inside one batch is a duplicate too.
    let mut seen: HashMap<(&str, &str, &str), &MessageId> = HashMap::new();
    // New messages per recipient, in first-seen order so the reported full inbox is stable.
    let mut counts: Vec<(&UserId, u64)> = Vec::new();

    for new in batch {
        let message = &new.message;
        if let Some(client_id) = &new.client_id {
            let key = (
                message.from.as_str(),
                message.to.as_str(),
                client_id.as_str(),
            );
            if let Some(existing) = seen.get(&key) {
                plans.push(Plan::Duplicate {
                    existing: (*existing).clone(),
                });
                continue;
            }
            if let Some(existing) = live_client_id(t, key, cutoff)? {
                match existing {
                    Ok(existing) => plans.push(Plan::Duplicate { existing }),
                    Err(e) => return Ok(Err(e)),
                }
                continue;
            }
            seen.insert(key, &message.id);
        }
        let json = match MessageJson::encode(message) {
            Ok(json) => json,
            // A struct of strings always serializes; reported rather than unwrapped all the same.
            Err(e) => {
                return Ok(Err(StoreError::Corrupt {
                    reason: format!("cannot encode message: {e}"),
                }));
            }
        };
        match counts.iter_mut().find(|(user, _)| **user == message.to) {
            Some((_, n)) => *n += 1,
            None => counts.push((&message.to, 1)),
        }
        plans.push(Plan::Store { json });
    }

    // Each recipient's inbox head, read by the check and then advanced by the writes below.
    let mut heads: Vec<(&UserId, Head)> = Vec::with_capacity(counts.len());
    for (user, n) in &counts {
        let (fits, head) = t.fits(user.as_str(), *n, limits.max_pending)?;
        if !fits {
            return Ok(Err(StoreError::InboxFull {
                user: (*user).clone(),
                max_pending: limits.max_pending,
            }));
        }
        heads.push((user, head));
    }

    let mut out = Vec::with_capacity(batch.len());
    for (new, plan) in batch.iter().zip(plans) {
        match plan {
            Plan::Duplicate { existing } => out.push(Appended::Duplicate { existing }),
            Plan::Store { json } => {
                let body = json.as_str().as_bytes();
                let message = &new.message;
                let to = message.to.as_str();
                // Every stored message's recipient was counted, so its head is in `heads`.
                let Some((_, head)) = heads.iter_mut().find(|(user, _)| **user == message.to)
                else {
                    return Err(StorageError::Corrupted(format!(
                        "append: no inbox head read for {to}"
                    )));
                };
                // Never before the inbox's last message, so positions stay ordered like the
                // inbox even if the wall clock steps back.
                let position = Position {
                    ms: now_ms.max(head.last_ms),
                    seq: head.next_seq,
                };
                let client = new.client_id.as_ref().map(|client_id| ClientKey {
                    from: message.from.as_str(),
                    client_id: client_id.as_str(),
                    message_id: message.id.as_str(),
                    created_ms: now_ms,
                });
                t.insert_message(to, position.seq, position.ms, body, client.as_ref())?;
                *head = Head {
                    next_seq: position.seq + 1,
                    last_ms: position.ms,
                };
                t.set_head(to, *head)?;
                redo.stored(to, position.seq, position.ms, body, client);
                t.fresh.record(to, position, json);
                out.push(Appended::Stored { position });
            }
        }
    }
    Ok(Ok(out))
}

/// The message id stored under this (sender, recipient, client id), unless the key has expired (an
/// expired key not trimmed yet counts as absent, so behaviour does not depend on trim timing).
fn live_client_id(
    t: &mut Tables<'_>,
    key: (&str, &str, &str),
    cutoff: u64,
) -> Result<Option<Result<MessageId, StoreError>>, StorageError> {
    let Some((id, created_ms)) = t.client_id(key)? else {
        return Ok(None);
    };
    if created_ms < cutoff {
        return Ok(None);
    }
    Ok(Some(MessageId::new(id).map_err(|e| StoreError::Corrupt {
        reason: format!("invalid stored message id: {e}"),
    })))
}

/// Drops messages older than the retention (with the pending entries pointing at them) and
/// expired client-id keys. Returns how many messages were dropped.
pub(super) fn trim(
    t: &mut Tables<'_>,
    now_ms: u64,
    limits: &InboxLimits,
) -> Result<u64, StorageError> {
    let cutoff = now_ms.saturating_sub(retention_ms(limits));
    // Later reads must not be answered with messages this removes.
    t.fresh.clear();
    // The walk below reads the heads table itself: inboxes created since the last checkpoint
    // have their head only in the inbox states until written back.
    t.write_back()?;
    let users = t
        .heads
        .table()?
        .iter()?
        .map(|entry| entry.map(|(user, _)| user.value().to_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut dropped = 0;
    for user in &users {
        let user = user.as_str();
        let mut expired = Vec::new();
        for entry in t.inbox.table()?.range((user, 0)..=(user, u64::MAX))? {
            let (key, value) = entry?;
            // `ms` never decreases along the inbox, so the expired messages are a prefix.
            if value.value().0 >= cutoff {
                break;
            }
            expired.push(key.value().1);
        }
        let Some(&newest_expired) = expired.last() else {
            continue;
        };
        for seq in &expired {
            t.inbox.table()?.remove((user, *seq))?;
        }
        dropped += expired.len() as u64;
        for (device, mut state) in t.devices_of(user)? {
            let before = state.pending.len();
            state.pending.retain(|p| p.seq > newest_expired);
            if state.pending.len() != before {
                t.set_device(user, device.as_str(), state)?;
            }
        }
    }
    t.client_ids
        .table()?
        .retain(|_, (_, created_ms)| created_ms >= cutoff)?;
    Ok(dropped)
}

fn retention_ms(limits: &InboxLimits) -> u64 {
    u64::try_from(limits.retention.as_millis()).unwrap_or(u64::MAX)
}
