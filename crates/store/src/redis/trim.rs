//! `trim` and `depth`.
//!
//! `trim` is bounded by the work there is: the registry sorted set scores every inbox by its
//! oldest retained message, so one ZRANGEBYSCORE finds exactly the inboxes holding expired
//! messages, and `lua/trim.lua` trims them [`TRIM_BATCH`] at a time and rescores them. Client-id
//! keys need no trimming: they expire by TTL. On a Redis Cluster each slot has its own registry
//! (so an append registers its inbox atomically), and `trim` reads all of them.

use futures_util::{StreamExt, TryStreamExt};
use titan_protocol::UserId;

use super::RedisStore;
use super::connection::SLOTS;
use crate::error::StoreError;

/// Inboxes trimmed per script call: long enough to amortise round trips, short enough not to
/// stall Redis (a script blocks the server while it runs).
const TRIM_BATCH: usize = 100;

/// Slot registries read at once while trimming a Redis Cluster (16384 of them per trim, most
/// empty: one cheap ZRANGEBYSCORE each).
const CLUSTER_TRIM_CONCURRENCY: usize = 32;

impl RedisStore {
    /// See [`crate::Inbox::depth`].
    pub(super) async fn inbox_depth(&self, user: &UserId) -> Result<u64, StoreError> {
        let mut call = self.shared.scripts.depth.prepare_invoke();
        call.key(self.shared.keys.inbox(user.as_str()));
        self.run("count pending messages", |mut conn| async move {
            call.invoke_async(&mut conn).await
        })
        .await
    }

    /// Trims the inboxes of one registry that hold messages older than `cutoff` (ms).
    async fn trim_registry(&self, registry: String, cutoff: u64) -> Result<u64, StoreError> {
        let registry = &registry;
        let mut dropped = 0;
        // Terminates: every inbox trimmed leaves the range (its oldest entry is now at or after
        // the cutoff, or it left the registry), and appends only add scores after the cutoff.
        loop {
            let users: Vec<String> = self
                .run("list expired inboxes", |mut conn| async move {
                    ::redis::cmd("ZRANGEBYSCORE")
                        .arg(registry)
                        .arg("-inf")
                        .arg(format!("({cutoff}"))
                        .arg("LIMIT")
                        .arg(0)
                        .arg(TRIM_BATCH)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            if users.is_empty() {
                break;
            }
            let mut call = self.shared.scripts.trim.prepare_invoke();
            call.key(registry).arg(format!("{cutoff}-0")).arg(format!(
                "{}-{}",
                cutoff - 1,
                u64::MAX
            ));
            for user in &users {
                call.key(self.shared.keys.inbox(user)).arg(user);
            }
            let n: u64 = self
                .run("trim inboxes", |mut conn| async move {
                    call.invoke_async(&mut conn).await
                })
                .await?;
            dropped += n;
            if users.len() < TRIM_BATCH {
                break;
            }
        }
        Ok(dropped)
    }

    /// See [`crate::Inbox::trim`]. The cutoff comes from the Redis clock, like the stream ids it
    /// is compared with.
    pub(super) async fn trim_expired(&self) -> Result<u64, StoreError> {
        let (seconds, micros): (u64, u64) = self
            .run("read the time", |mut conn| async move {
                ::redis::cmd("TIME").query_async(&mut conn).await
            })
            .await?;
        let now_ms = seconds.saturating_mul(1000) + micros / 1000;
        let retention_ms =
            u64::try_from(self.shared.limits.retention.as_millis()).unwrap_or(u64::MAX);
        let Some(cutoff) = now_ms.checked_sub(retention_ms).filter(|c| *c > 0) else {
            return Ok(0);
        };

        let dropped = if self.conn.is_cluster() {
            // One registry per slot; a few at a time so Redis serves other clients in between.
            futures_util::stream::iter(0..SLOTS)
                .map(|slot| self.trim_registry(self.registry(slot), cutoff))
                .buffer_unordered(CLUSTER_TRIM_CONCURRENCY)
                .try_fold(0, |total, n| async move { Ok(total + n) })
                .await?
        } else {
            self.trim_registry(self.registry(0), cutoff).await?
        };
        if dropped > 0 {
            tracing::debug!(dropped, "redis store trimmed expired messages");
        }
        Ok(dropped)
    }
}
