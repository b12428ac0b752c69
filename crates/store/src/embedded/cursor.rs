//! The per-device operations: `read_new` (move the cursor), `claim_pending` (redeliver) and
//! `ack`. Each reads and decodes everything it returns before writing anything, so a corrupt
//! message fails only its own operation and leaves the device's state untouched. A device's
//! cursor and pending messages are one record ([`Device`]), read once and written once per
//! operation.

use redb::{ReadableTable, StorageError};

use super::Outcome;
use super::tables::{Device, Pending, Tables, stored_message};
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
            (
                Device {
                    cursor,
                    pending: Vec::new(),
                },
                true,
            )
        }
    };

    let mut delivered = Vec::new();
    // Nothing after the cursor: no read at all (a device's reads once it has caught up).
    let next_seq = t.head(user)?.next_seq;
    if limit > 0 && state.cursor.saturating_add(1) < next_seq {
        delivered = match t.fresh.after(user, state.cursor, next_seq, limit) {
            Some(fresh) => fresh,
            None => match read_inbox(t, user, state.cursor, limit)? {
                Ok(read) => read,
                Err(e) => return Ok(Err(e)),
            },
        };
    }

    // After the cursor, so appending keeps `pending` in seq order.
    state.pending.extend(delivered.iter().map(|d| Pending {
        seq: d.position.seq,
        delivered_ms: now_ms,
        ms: d.position.ms,
    }));
    if let Some(last) = delivered.last() {
        state.cursor = last.position.seq;
    }
    if is_new || !delivered.is_empty() {
        t.set_device(user, device, state)?;
    }
    Ok(Ok(delivered))
}

/// Up to `limit` messages of `user`'s inbox after seq `cursor`, read from the table.
fn read_inbox(
    t: &mut Tables<'_>,
    user: &str,
    cursor: u64,
    limit: usize,
) -> Outcome<Vec<Delivered>> {
    let mut delivered = Vec::new();
    let from = cursor.saturating_add(1);
    for entry in t
        .inbox
        .table()?
        .range((user, from)..=(user, u64::MAX))?
        .take(limit)
    {
        let (key, value) = entry?;
        let (ms, body) = value.value();
        let message = match stored_message(body) {
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
    let mut changed = false;
    if limit > 0 {
        let start = state.pending.partition_point(|p| p.seq <= after_seq);
        let mut kept = Vec::with_capacity(state.pending.len());
        kept.extend_from_slice(&state.pending[..start]);
        let mut rest = state.pending[start..].iter();
        for p in rest.by_ref() {
            if p.delivered_ms >= before_ms {
                kept.push(*p);
                continue;
            }
            let Some(stored) = t.inbox.table()?.get((user, p.seq))? else {
                // The message is gone (trimmed): so is its pending entry.
                changed = true;
                continue;
            };
            let (ms, body) = stored.value();
            let message = match stored_message(body) {
                Ok(message) => message,
                Err(e) => return Ok(Err(e)),
            };
            claimed.push(Delivered {
                position: Position { ms, seq: p.seq },
                message,
            });
            kept.push(Pending {
                delivered_ms: now_ms,
                ..*p
            });
            changed = true;
            if claimed.len() >= limit {
                break;
            }
        }
        kept.extend(rest);
        state.pending = kept;
    }
    if changed {
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
        if let Ok(at) = state.pending.binary_search_by_key(&position.seq, |p| p.seq)
            && state.pending[at].ms == position.ms
        {
            state.pending.remove(at);
            removed += 1;
        }
    }
    if removed > 0 {
        t.set_device(user, device, state)?;
    }
    Ok(removed)
}
