//! The dispatcher's store reads for its feeds, a child module of the same actor: `pump` starts a
//! device's next store operation (catch-up, redelivery or new messages), one at a time per
//! device, and `finish` records what it returned and sends it to the device's session.
//!
//! Reads that go with an append (`live_reads`) are the exception: with a store that runs calls
//! in order ([`Inbox::runs_calls_in_order`]), a live device's next append takes a read with it
//! even while its previous one runs. At a steady rate that is the common case (a device's
//! messages come faster than a store round trip), and without the overlap each message after
//! the first waited for the running read, then needed a read of its own: two round trips
//! instead of one. Overlapping reads share the window (`Feed::reserved`) and their results go
//! to the session in the order the reads were made (`Feed::next_handed`), which, the store
//! running calls in order, is the order of the messages they hold.

// The parent's imports (actix, store and protocol types): this is the same actor's code.
use super::*;
use crate::feed::ReadResult;
use std::collections::BTreeMap;

/// A feed's `read_new` that runs with an append ([`Inbox::append_and_read`]).
pub(super) struct FusedRead {
    pub key: FeedKey,
    conn: ConnId,
    limit: usize,
    ticket: u64,
}

impl Dispatcher {
    /// The feeds of `recipients` (each with how many messages this append stores for it) that
    /// read new messages with the append: live, nothing overdue, room in the window, and no
    /// store operation running (or, with a store that runs calls in order, only reads of new
    /// messages). They are marked running and their read goes with the append (the second
    /// list, in the same order), so a waiting device costs the store no separate operation. The
    /// others are woken after the append as usual.
    pub(super) fn live_reads(
        &mut self,
        recipients: &[(&UserId, usize)],
    ) -> (Vec<FusedRead>, Vec<titan_store::LiveRead>) {
        let now = Instant::now();
        let mut fused = Vec::new();
        let mut reads = Vec::new();
        for &(user, stored) in recipients {
            let Some(devices) = self.devices.get(user) else {
                continue;
            };
            for device in devices {
                let key = (user.clone(), device.clone());
                let Some(feed) = self.feeds.get_mut(&key) else {
                    continue;
                };
                let running = self.running.get(&key);
                let overlaps = running.is_some_and(|r| !self.pipelined || r.exclusive);
                let budget = feed.budget(self.config.window);
                if feed.phase != Phase::Live
                    || budget == 0
                    || overlaps
                    || feed.redelivery_due(now, self.config.ack_timeout)
                {
                    continue;
                }
                let limit = if self.pipelined {
                    // What this append stores and one more: reads that overlap share the window,
                    // and one that finds more than its own (an earlier message nobody read yet)
                    // marks the feed for another read (`finish`).
                    budget.min(stored + 1)
                } else {
                    // Alone, it sees everything the device has not been given.
                    feed.dirty = false;
                    budget
                };
                let ticket = feed.start_read(limit);
                reads.push(titan_store::LiveRead {
                    user: user.clone(),
                    device: device.clone(),
                    limit,
                });
                fused.push(FusedRead {
                    conn: feed.conn,
                    limit,
                    ticket,
                    key: key.clone(),
                });
                self.running.entry(key).or_default().ops += 1;
            }
        }
        (fused, reads)
    }

    /// Hands each fused read's result to its feed like any `read_new`. `read` is empty when the
    /// append failed (the reads did not run): those feeds get an empty result and are pumped
    /// again as if woken.
    pub(super) fn finish_live_reads(
        &mut self,
        fused: Vec<FusedRead>,
        read: Vec<Result<Vec<Delivered>, StoreError>>,
        ctx: &mut Context<Self>,
    ) {
        let mut read = read.into_iter();
        for f in fused {
            let result = read.next().unwrap_or_else(|| {
                if let Some(feed) = self.feeds.get_mut(&f.key) {
                    feed.dirty = true;
                }
                Ok(Vec::new())
            });
            self.finish(
                f.key,
                f.conn,
                Ended::Read {
                    limit: f.limit,
                    ticket: f.ticket,
                },
                result,
                ctx,
            );
        }
    }

    /// Runs the feed's next store operation unless one is already running.
    pub(super) fn pump(&mut self, key: FeedKey, ctx: &mut Context<Self>) {
        let Some(feed) = self.feeds.get_mut(&key) else {
            return;
        };
        if self.running.contains_key(&key) {
            feed.dirty = true;
            return;
        }
        let now = Instant::now();
        let Some(step) = feed.next_step(now, self.config.ack_timeout, self.config.window) else {
            return;
        };
        let ended = match step {
            Step::ReadNew { limit } => {
                feed.dirty = false;
                Ended::Read {
                    limit,
                    ticket: feed.start_read(limit),
                }
            }
            Step::CatchUp { limit, .. } => Ended::CatchUp { limit },
            Step::Redeliver { .. } => Ended::Redeliver { started: now },
        };
        self.running.insert(
            key.clone(),
            Running {
                ops: 1,
                exclusive: !matches!(step, Step::ReadNew { .. }),
            },
        );
        let conn = feed.conn;
        let store = self.store.clone();
        let (user, device) = key.clone();
        let cutoff = SystemTime::now()
            .checked_sub(
                self.config
                    .ack_timeout
                    .saturating_sub(STORE_TIME_GRANULARITY),
            )
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let op = async move {
            match step {
                Step::CatchUp { after, limit } => {
                    store
                        .claim_pending(&user, &device, None, after, limit)
                        .await
                }
                Step::Redeliver { limit } => {
                    store
                        .claim_pending(&user, &device, Some(cutoff), None, limit)
                        .await
                }
                Step::ReadNew { limit } => store.read_new(&user, &device, limit).await,
            }
        };
        run_then(ctx, op, move |result, act, ctx| {
            act.finish(key, conn, ended, result, ctx);
        });
    }

    /// A store operation of the feed `key` ended: its result goes to the feed (a read of new
    /// messages in its turn), then the feed's next operation starts once none is running.
    pub(super) fn finish(
        &mut self,
        key: FeedKey,
        conn: ConnId,
        ended: Ended,
        result: Result<Vec<Delivered>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        if let Some(running) = self.running.get_mut(&key) {
            running.ops = running.ops.saturating_sub(1);
            if running.ops == 0 {
                self.running.remove(&key);
            }
        }
        let Some(feed) = self.feeds.get_mut(&key) else {
            return;
        };
        if feed.conn != conn {
            // The device reconnected meanwhile. What this operation read is pending in the store
            // and the new session's catch-up (which starts once nothing runs) claims it.
            self.pump_when_idle(key, ctx);
            return;
        }
        match ended {
            Ended::Read { limit, ticket } => {
                // In ticket order: a result that came back early waits for the earlier ones.
                // Parked only then: an empty map keeps no node, and every idle feed has one.
                if ticket != feed.next_handed {
                    feed.parked.insert(ticket, ReadResult { limit, result });
                    return;
                }
                let mut next = Some(ReadResult { limit, result });
                while let Some(read) = next {
                    let Some(feed) = self.feeds.get_mut(&key) else {
                        break;
                    };
                    let ticket = feed.next_handed;
                    feed.next_handed += 1;
                    feed.reserved = feed.reserved.saturating_sub(read.limit);
                    next = feed.parked.remove(&feed.next_handed);
                    if feed.parked.is_empty() {
                        // Frees the node the map kept after its last removal.
                        feed.parked = BTreeMap::new();
                    }
                    let limit = read.limit;
                    self.handed(&key, Ended::Read { limit, ticket }, read.result);
                }
            }
            Ended::CatchUp { .. } | Ended::Redeliver { .. } => self.handed(&key, ended, result),
        }
        self.pump_when_idle(key, ctx);
    }

    /// Pumps the feed unless some of its operations still run (the last one to end pumps it).
    pub(super) fn pump_when_idle(&mut self, key: FeedKey, ctx: &mut Context<Self>) {
        if !self.running.contains_key(&key) {
            self.pump(key, ctx);
        }
    }

    /// Records what one operation of the feed `key` returned and sends it to the session.
    fn handed(&mut self, key: &FeedKey, ended: Ended, result: Result<Vec<Delivered>, StoreError>) {
        let Some(feed) = self.feeds.get_mut(key) else {
            return;
        };
        let messages = match result {
            Ok(messages) => messages,
            Err(err) => {
                // The store may have applied the operation without answering (a timeout, a dropped
                // connection): its messages would then be pending but untracked here. Starting
                // over with a full catch-up re-sends everything pending (clients dedupe by id).
                // Retried by the tick; the messages stay safe in the store.
                warn!(user = %key.0, device = %key.1, error = %err, "delivery read failed");
                feed.phase = Phase::CatchUp { after: None };
                feed.inflight.clear();
                feed.dirty = true;
                return;
            }
        };
        let got = messages.len();
        match ended {
            Ended::CatchUp { limit } => {
                feed.phase = match messages.last() {
                    Some(last) if got >= limit => Phase::CatchUp {
                        after: Some(last.position),
                    },
                    _ => Phase::Live,
                };
                feed.dirty = true;
            }
            Ended::Redeliver { started } => {
                // In-flight entries the store no longer holds as stale (acked meanwhile, or
                // trimmed) must not trigger redelivery again.
                let cutoff = started.checked_sub(self.config.ack_timeout);
                let returned: HashSet<Position> = messages.iter().map(|d| d.position).collect();
                feed.inflight
                    .retain(|pos, sent| returned.contains(pos) || cutoff.is_none_or(|c| *sent > c));
                if got > 0 {
                    debug!(user = %key.0, device = %key.1, count = got, "redelivering unacked messages");
                }
            }
            Ended::Read { limit, .. } => {
                if got >= limit {
                    feed.dirty = true;
                }
            }
        }
        let now = Instant::now();
        for d in &messages {
            feed.inflight.insert(d.position, now);
        }
        if self.push_unacked.is_some() {
            unacked::track(feed, &messages, now);
        }
        self.metrics
            .record_delivery(!matches!(ended, Ended::Read { .. }), &messages);
        send_in_batches(&feed.deliver, messages, &self.config);
    }
}

/// How a feed's store operation ended, with what `finish` needs to record its result.
pub(super) enum Ended {
    /// A read of new messages (`read_new`, alone or with an append), with its ticket.
    Read { limit: usize, ticket: u64 },
    /// A catch-up page of up to `limit`.
    CatchUp { limit: usize },
    /// A redelivery claim, started at `started`.
    Redeliver { started: Instant },
}

/// Splits messages into `msg.recv`-sized batches for the session.
fn send_in_batches(to: &Recipient<Deliver>, messages: Vec<Delivered>, config: &DispatcherConfig) {
    // Nearly always one batch (a live device's read is a message or two): sent as it is, without
    // a copy into a new Vec.
    let fits = messages.len() <= config.recv_batch
        && messages
            .iter()
            .map(|d| d.message.as_str().len() + 1)
            .sum::<usize>()
            <= config.recv_bytes;
    if fits || messages.len() == 1 {
        if !messages.is_empty() {
            to.do_send(Deliver { messages });
        }
        return;
    }
    let mut batch = Vec::new();
    let mut bytes = 0;
    for d in messages {
        // The message's JSON and the comma after it.
        let size = d.message.as_str().len() + 1;
        if !batch.is_empty()
            && (batch.len() >= config.recv_batch || bytes + size > config.recv_bytes)
        {
            to.do_send(Deliver {
                messages: std::mem::take(&mut batch),
            });
            bytes = 0;
        }
        bytes += size;
        batch.push(d);
    }
    if !batch.is_empty() {
        to.do_send(Deliver { messages: batch });
    }
}
