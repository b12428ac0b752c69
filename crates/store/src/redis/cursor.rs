//! The per-device operations: `read_new` (`lua/read.lua`: XREADGROUP `>`, creating the group on
//! first use), `claim_pending` (`lua/claim.lua`: XPENDING IDLE + XCLAIM) and `ack` (XACK).

use std::time::{SystemTime, UNIX_EPOCH};

use ::redis::AsyncCommands;
use titan_protocol::{DeviceId, MessageJson, UserId};

use super::RedisStore;
use super::keys::{position, stream_id};
use crate::error::StoreError;
use crate::inbox::{Delivered, Position};

/// The one consumer of every device's group: a (user, device) has one live session, so there is
/// nothing to share the group with.
const CONSUMER: &str = "c";

impl RedisStore {
    /// See [`crate::Inbox::read_new`].
    pub(super) async fn read_new_entries(
        &self,
        user: &UserId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<Delivered>, StoreError> {
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

/// Decodes `[id1, json1, id2, json2, ...]` as returned by the read and claim scripts.
fn entries(reply: Vec<String>) -> Result<Vec<Delivered>, StoreError> {
    if !reply.len().is_multiple_of(2) {
        return Err(StoreError::Corrupt {
            reason: "odd-length entry list from redis".to_owned(),
        });
    }
    let mut reply = reply.into_iter();
    let mut out = Vec::with_capacity(reply.len() / 2);
    while let (Some(id), Some(json)) = (reply.next(), reply.next()) {
        let message = MessageJson::from_stored(json).map_err(|e| StoreError::Corrupt {
            reason: format!("invalid message in inbox entry {id}: {e}"),
        })?;
        out.push(Delivered {
            position: position(&id)?,
            message,
        });
    }
    Ok(out)
}
