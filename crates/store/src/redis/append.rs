//! `append`: one call of `lua/append.lua` per batch (per hash slot on a Redis Cluster), so a
//! `msg.send` costs one round trip whatever its size, and the client-id checks, the
//! `max_pending` check and the XADDs are one atomic step. `append_and_read` adds the reads of
//! the recipients' waiting devices to that call when it can (one slot, no `WAIT`).

use std::collections::HashMap;

use titan_protocol::{MessageId, UserId};

use super::cursor::{CONSUMER, entries};
use super::keys::position;
use super::{RedisStore, Shared};
use crate::error::StoreError;
use crate::inbox::{Appended, AppendedAndRead, Delivered, LiveRead, NewMessage};

/// The longest client-id TTL Redis accepts with margin (it refuses expiry times past i64 ms).
const MAX_TTL_MS: u64 = i64::MAX as u64 / 4;

/// Whether a script call writes or only checks (see `lua/append.lua`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    DryRun,
    Write,
}

impl RedisStore {
    /// See [`crate::Inbox::append`].
    ///
    /// On a standalone Redis the whole batch is one script call. On a Redis Cluster it is one
    /// call per hash slot among the recipients, run concurrently: when the batch spans several
    /// slots, a dry run in each first checks `max_pending` (and client ids), and the writes
    /// follow only if every slot has room. A concurrent append can still fill an inbox between
    /// the two, in which case the slots already written keep their messages and the call fails
    /// with `InboxFull`; client ids make the client's retry store nothing twice.
    pub(super) async fn append_batch(
        &self,
        batch: Vec<NewMessage>,
    ) -> Result<Vec<Appended>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, new) in batch.iter().enumerate() {
            let shard = self.shard(new.message.to.as_str());
            match groups.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, members)) => members.push(i),
                None => groups.push((shard, vec![i])),
            }
        }
        if let [(shard, members)] = groups.as_slice() {
            return self
                .append_group(&batch, *shard, members, Pass::Write)
                .await;
        }
        let checks = groups
            .iter()
            .map(|(shard, members)| self.append_group(&batch, *shard, members, Pass::DryRun));
        for check in futures_util::future::join_all(checks).await {
            check?;
        }
        let writes = groups
            .iter()
            .map(|(shard, members)| self.append_group(&batch, *shard, members, Pass::Write));
        let written = futures_util::future::join_all(writes).await;
        let mut out: Vec<Option<Appended>> = vec![None; batch.len()];
        for ((_, members), appended) in groups.iter().zip(written) {
            for (&i, a) in members.iter().zip(appended?) {
                out[i] = Some(a);
            }
        }
        out.into_iter()
            .map(|a| {
                a.ok_or_else(|| StoreError::Corrupt {
                    reason: "append script answered for fewer messages than sent".to_owned(),
                })
            })
            .collect()
    }

    /// The batches of [`crate::Inbox::append_and_read`] in one script call, when every
    /// recipient of every batch hashes to one slot (always on a standalone Redis): each batch is
    /// still appended on its own, in order, but the call's fixed cost (a round trip, a script
    /// run) is paid once for all of them. `None` when they span several slots (the caller then
    /// appends them one by one); `Err` when the call itself failed.
    pub(super) async fn append_together(
        &self,
        batches: &[Vec<NewMessage>],
    ) -> Option<Result<Vec<Result<Vec<Appended>, StoreError>>, StoreError>> {
        let shard = self.one_shard(batches.iter().flatten().map(|new| &new.message.to))?;
        let messages: Vec<Vec<&NewMessage>> =
            batches.iter().map(|batch| batch.iter().collect()).collect();
        Some(
            self.append_call(&messages, shard, Pass::Write, &[])
                .await
                .map(|(appended, _)| appended),
        )
    }

    /// [`Self::append_together`] with `reads` in the same script call, after the appends (and
    /// only when some batch was stored), so that a waiting device gets what was just stored
    /// without a second round trip. `None` when that cannot be one call: the recipients and the
    /// readers span several slots, or the store waits for replicas after a write (a message is
    /// then handed out only once it is on them, so the reads wait for `WAIT` as before).
    pub(super) async fn append_and_read_together(
        &self,
        batches: &[Vec<NewMessage>],
        reads: &[LiveRead],
    ) -> Option<Result<AppendedAndRead, StoreError>> {
        if self.shared.options.wait_replicas > 0 {
            return None;
        }
        let users = batches.iter().flatten().map(|new| &new.message.to);
        let shard = self.one_shard(users.chain(reads.iter().map(|read| &read.user)))?;
        let messages: Vec<Vec<&NewMessage>> =
            batches.iter().map(|batch| batch.iter().collect()).collect();
        Some(self.append_call(&messages, shard, Pass::Write, reads).await)
    }

    /// The hash slot of every one of `users`' inboxes (slot 0 on a standalone Redis, and for no
    /// users), or `None` when they span several.
    fn one_shard<'u>(&self, users: impl IntoIterator<Item = &'u UserId>) -> Option<u16> {
        let mut shards = users.into_iter().map(|user| self.shard(user.as_str()));
        let shard = shards.next().unwrap_or(0);
        shards.all(|other| other == shard).then_some(shard)
    }

    /// One script call for the messages `members` of `batch`, whose recipients all hash to
    /// `shard`. Returns their outcomes in order (nothing for a dry run).
    async fn append_group(
        &self,
        batch: &[NewMessage],
        shard: u16,
        members: &[usize],
        pass: Pass,
    ) -> Result<Vec<Appended>, StoreError> {
        let messages = vec![members.iter().map(|&i| &batch[i]).collect()];
        let (mut outcomes, _) = self.append_call(&messages, shard, pass, &[]).await?;
        outcomes.pop().unwrap_or_else(|| {
            Err(StoreError::Corrupt {
                reason: "append script answered for no batch".to_owned(),
            })
        })
    }

    /// One call of `lua/append.lua` for `batches`, whose recipients (and the users of `reads`)
    /// all hash to `shard`. Returns each batch's outcome in order, then each read's (none when
    /// no batch was stored).
    async fn append_call(
        &self,
        batches: &[Vec<&NewMessage>],
        shard: u16,
        pass: Pass,
        reads: &[LiveRead],
    ) -> Result<AppendedAndRead, StoreError> {
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
        let mut client_id_index: HashMap<(&str, &str, &str), usize> = HashMap::new();
        let mut per_batch = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut per_message = Vec::with_capacity(batch.len());
            for new in batch {
                let message = &new.message;
                let inbox = *inbox_index.entry(message.to.as_str()).or_insert_with(|| {
                    inboxes.push(&message.to);
                    inboxes.len()
                });
                let client_id = match &new.client_id {
                    Some(id) => *client_id_index
                        .entry((message.to.as_str(), message.from.as_str(), id.as_str()))
                        .or_insert_with(|| {
                            client_ids.push(keys.client_id(
                                message.to.as_str(),
                                message.from.as_str(),
                                id.as_str(),
                            ));
                            client_ids.len()
                        }),
                    None => 0,
                };
                // A struct of strings always serializes; reported rather than unwrapped all the
                // same.
                let json = serde_json::to_string(message).map_err(|e| StoreError::Corrupt {
                    reason: format!("cannot encode message: {e}"),
                })?;
                per_message.push((inbox, client_id, message.id.as_str(), json));
            }
            per_batch.push(per_message);
        }

        let mut call = scripts.append.prepare_invoke();
        call.key(self.registry(shard));
        for user in &inboxes {
            call.key(keys.inbox(user.as_str()));
        }
        for key in &client_ids {
            call.key(key);
        }
        for read in reads {
            call.key(keys.inbox(read.user.as_str()));
        }
        let retention_ms = u64::try_from(limits.retention.as_millis()).unwrap_or(u64::MAX);
        call.arg(limits.max_pending)
            .arg(retention_ms.clamp(1, MAX_TTL_MS))
            .arg(inboxes.len())
            .arg(per_batch.len())
            .arg(if pass == Pass::DryRun { "1" } else { "0" });
        for user in &inboxes {
            call.arg(user.as_str());
        }
        for per_message in &per_batch {
            call.arg(per_message.len());
            for (inbox, client_id, id, json) in per_message {
                call.arg(inbox).arg(client_id).arg(*id).arg(json);
            }
        }
        if !reads.is_empty() {
            call.arg(reads.len()).arg(CONSUMER);
            for read in reads {
                call.arg(read.device.as_str()).arg(read.limit);
            }
        }
        let reply: Vec<String> = self
            .run("append", |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        if pass == Pass::Write {
            self.replicated(shard).await?;
        }
        let expected = per_batch.iter().map(|per_message| match pass {
            Pass::DryRun => 0,
            Pass::Write => per_message.len(),
        });
        let mut words = reply.into_iter();
        let appended = self.appended(&mut words, &inboxes, expected)?;
        let read = read_outcomes(&mut words, reads.len())?;
        if words.next().is_some() {
            return Err(StoreError::Corrupt {
                reason: "unexpected append script reply: more outcomes than asked for".to_owned(),
            });
        }
        Ok((appended, read))
    }

    /// With [`super::RedisOptions::wait_replicas`]: waits until that many replicas of the node
    /// of `shard` have what was just written there, or fails as temporary.
    async fn replicated(&self, shard: u16) -> Result<(), StoreError> {
        let options = &self.shared.options;
        let (wanted, timeout) = (options.wait_replicas, options.wait_timeout);
        if wanted == 0 {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let acknowledged = super::bounded(
            timeout + options.operation_timeout,
            "wait for replicas",
            async move { conn.wait_replicas(shard, wanted, timeout).await },
        )
        .await?;
        if acknowledged < u64::from(wanted) {
            return Err(StoreError::unavailable(format!(
                "stored on the primary but acknowledged by {acknowledged} of {wanted} replicas \
                 within {timeout:?}"
            )));
        }
        Ok(())
    }

    /// Reads the script's answer (see `lua/append.lua`): per batch, its status and then, when
    /// it was stored, two words for each of its `expected` messages.
    fn appended(
        &self,
        words: &mut impl Iterator<Item = String>,
        inboxes: &[&UserId],
        expected: impl Iterator<Item = usize>,
    ) -> Result<Vec<Result<Vec<Appended>, StoreError>>, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt {
            reason: format!("unexpected append script reply: {what}"),
        };
        let mut outcomes = Vec::new();
        for expected in expected {
            let outcome = match words.next().as_deref() {
                Some("full") => {
                    let user = words
                        .next()
                        .and_then(|i| i.parse::<usize>().ok())
                        .and_then(|i| inboxes.get(i.checked_sub(1)?))
                        .ok_or_else(|| corrupt("full without a known inbox"))?;
                    Err(StoreError::InboxFull {
                        user: (*user).clone(),
                        max_pending: self.shared.limits.max_pending,
                    })
                }
                Some("ok") => {
                    let mut appended = Vec::with_capacity(expected);
                    for _ in 0..expected {
                        let (Some(kind), Some(value)) = (words.next(), words.next()) else {
                            return Err(corrupt("fewer outcomes than messages"));
                        };
                        appended.push(match kind.as_str() {
                            "s" => Appended::Stored {
                                position: position(&value)?,
                            },
                            "d" => Appended::Duplicate {
                                existing: MessageId::new(value.as_str()).map_err(|e| {
                                    StoreError::Corrupt {
                                        reason: format!("invalid stored message id: {e}"),
                                    }
                                })?,
                            },
                            other => return Err(corrupt(other)),
                        });
                    }
                    Ok(appended)
                }
                _ => return Err(corrupt("wrong shape")),
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }
}

/// The reads' part of the script's answer: per read, `r` and the number of words that follow
/// (an id and a JSON per entry), or `e` and the error's text; nothing at all when the script ran
/// no read (no batch was stored).
fn read_outcomes(
    words: &mut impl Iterator<Item = String>,
    reads: usize,
) -> Result<Vec<Result<Vec<Delivered>, StoreError>>, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        reason: format!("unexpected append script reply: {what}"),
    };
    let mut words = words.peekable();
    if reads == 0 || words.peek().is_none() {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(reads);
    for _ in 0..reads {
        match (words.next().as_deref(), words.next()) {
            (Some("r"), Some(count)) => {
                let count: usize = count.parse().map_err(|_| corrupt("read count"))?;
                let read: Vec<String> = words.by_ref().take(count).collect();
                if read.len() != count {
                    return Err(corrupt("fewer entries than announced"));
                }
                out.push(entries(read));
            }
            (Some("e"), Some(error)) => out.push(Err(StoreError::unavailable(format!(
                "reading new messages failed: {error}"
            )))),
            _ => return Err(corrupt("read outcome of the wrong shape")),
        }
    }
    Ok(out)
}
