//! The per-device operations: `read_new` (move the cursor), `claim_pending` (redeliver) and
//! `ack`. Each reads and decodes everything it returns before writing anything, so a corrupt
//! message fails only its own operation and leaves the device's state untouched.

use redb::{ReadableTable, StorageError};

use super::Outcome;
use super::tables::{Device, Tables, decode_message};
use crate::inbox::{Delivered, Position};

/// Up to `limit` messages after the device's cursor; they become pending with delivery time
/// `now_ms`. A device seen for the first time starts before the oldest retained message.
pub(super) fn read_new(
    t: &mut Tables<'_>,
    user: &str,
    device: &str,
    limit: usize,
    now_ms: u64,
) -> Outcome<Vec<Delivered>> {
    let (mut state, is_new) = match t.device(user, device)? {
        Some(state) => (state, false),
        None => {
            let cursor = match t.retained(user)? {
                Some((first, _)) => first - 1,
                None => t.head(user)?.next_seq - 1,
            };
            (Device { cursor, pending: 0 }, true)
        }
    };

    let mut delivered = Vec::new();
    if limit > 0 {
        let from = state.cursor.saturating_add(1);
        for entry in t.inbox.range((user, from)..=(user, u64::MAX))?.take(limit) {
            let (key, value) = entry?;
            let (ms, body) = value.value();
            let message = match decode_message(body) {
                Ok(message) => message,
                Err(e) => return Ok(Err(e)),
            };
            delivered.push(Delivered {
                position: Position {
                    ms,
                    seq: key.value().1,
                },
                message,
            });
        }
    }

    for d in &delivered {
        t.pending
            .insert((user, device, d.position.seq), (now_ms, d.position.ms))?;
    }
    if let Some(last) = delivered.last() {
        state.cursor = last.position.seq;
        state.pending += delivered.len() as u64;
    }
    if is_new || !delivered.is_empty() {
        t.set_device(user, device, state)?;
    }
    Ok(Ok(delivered))
}

/// Up to `limit` pending messages last delivered before `before_ms`, in inbox order, redelivered
/// at `now_ms`. Pending entries whose message is gone are dropped on the way.
pub(super) fn claim_pending(
    t: &mut Tables<'_>,
    user: &str,
    device: &str,
    (before_ms, after_seq): (u64, u64),
    limit: usize,
    now_ms: u64,
) -> Outcome<Vec<Delivered>> {
    let Some(mut state) = t.device(user, device)? else {
        return Ok(Ok(Vec::new()));
    };
    let mut claimed = Vec::new();
    let mut gone = Vec::new();
    if limit > 0 {
        for entry in t
            .pending
            .range((user, device, after_seq.saturating_add(1))..=(user, device, u64::MAX))?
        {
            let (key, value) = entry?;
            let seq = key.value().2;
            let (delivered_ms, _) = value.value();
            if delivered_ms >= before_ms {
                continue;
            }
            let Some(stored) = t.inbox.get((user, seq))? else {
                gone.push(seq);
                continue;
            };
            let (ms, body) = stored.value();
            let message = match decode_message(body) {
                Ok(message) => message,
                Err(e) => return Ok(Err(e)),
            };
            claimed.push(Delivered {
                position: Position { ms, seq },
                message,
            });
            if claimed.len() >= limit {
                break;
            }
        }
    }

    for seq in &gone {
        t.pending.remove((user, device, *seq))?;
    }
    for d in &claimed {
        t.pending
            .insert((user, device, d.position.seq), (now_ms, d.position.ms))?;
    }
    if !gone.is_empty() {
        state.pending = state.pending.saturating_sub(gone.len() as u64);
        t.set_device(user, device, state)?;
    }
    Ok(Ok(claimed))
}

/// Removes the pending entries at `positions`; unknown ones (wrong seq, wrong ms, already acked,
/// unknown device) are ignored. Returns how many were removed.
pub(super) fn ack(
    t: &mut Tables<'_>,
    user: &str,
    device: &str,
    positions: &[Position],
) -> Result<u64, StorageError> {
    let Some(mut state) = t.device(user, device)? else {
        return Ok(0);
    };
    let mut removed = 0;
    for position in positions {
        let key = (user, device, position.seq);
        // Removed first and put back if its `ms` does not match (a stale or forged position,
        // rare): one tree walk per acked message instead of a lookup and then a removal.
        let Some(entry) = t.pending.remove(key)?.map(|guard| guard.value()) else {
            continue;
        };
        if entry.1 == position.ms {
            removed += 1;
        } else {
            t.pending.insert(key, entry)?;
        }
    }
    if removed > 0 {
        state.pending = state.pending.saturating_sub(removed);
        t.set_device(user, device, state)?;
    }
    Ok(removed)
}
