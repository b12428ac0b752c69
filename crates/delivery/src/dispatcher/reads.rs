//! The dispatcher's store reads for its feeds, a child module of the same actor: `pump` starts a
//! device's next store operation (catch-up, redelivery or new messages), one at a time per
//! device, and `finish` records what it returned and sends it to the device's session.

// The parent's imports (actix, store and protocol types): this is the same actor's code.
use super::*;

/// A feed's `read_new` that runs with an append ([`Inbox::append_and_read`]).
pub(super) struct FusedRead {
    pub key: FeedKey,
    conn: ConnId,
    started: Instant,
    limit: usize,
}

impl Dispatcher {
    /// The feeds of `recipients` that would read new messages right after the append: live,
    /// idle (no store operation running), nothing overdue and room in the window. They are marked
    /// running and their read goes with the append (the second list, in the same order), so a
    /// waiting device costs the store no separate operation. The others are woken after the
    /// append as usual.
    pub(super) fn live_reads(
        &mut self,
        recipients: &[UserId],
    ) -> (Vec<FusedRead>, Vec<titan_store::LiveRead>) {
        let now = Instant::now();
        let mut fused = Vec::new();
        let mut reads = Vec::new();
        for user in recipients {
            let Some(devices) = self.devices.get(user) else {
                continue;
            };
            for device in devices {
                let key = (user.clone(), device.clone());
                let Some(feed) = self.feeds.get_mut(&key) else {
                    continue;
                };
                let budget = self.config.window.saturating_sub(feed.inflight.len());
                if feed.phase != Phase::Live
                    || budget == 0
                    || self.running.contains(&key)
                    || feed.redelivery_due(now, self.config.ack_timeout)
                {
                    continue;
                }
                feed.dirty = false;
                reads.push(titan_store::LiveRead {
                    user: user.clone(),
                    device: device.clone(),
                    limit: budget,
                });
                fused.push(FusedRead {
                    conn: feed.conn,
                    started: now,
                    limit: budget,
                    key: key.clone(),
                });
                self.running.insert(key);
            }
        }
        (fused, reads)
    }

    /// Hands each fused read's result to its feed like any `read_new`. `read` is empty when the
    /// append failed (the reads did not run): those feeds are pumped again as if woken.
    pub(super) fn finish_live_reads(
        &mut self,
        fused: Vec<FusedRead>,
        read: Vec<Result<Vec<Delivered>, StoreError>>,
        ctx: &mut Context<Self>,
    ) {
        let mut read = read.into_iter();
        for f in fused {
            let key = f.key;
            let step = Step::ReadNew { limit: f.limit };
            match read.next() {
                Some(result) => self.finish(key, f.conn, step, f.started, result, ctx),
                None => {
                    self.running.remove(&key);
                    if let Some(feed) = self.feeds.get_mut(&key) {
                        feed.dirty = true;
                    }
                    self.pump(key, ctx);
                }
            }
        }
    }

    /// Runs the feed's next store operation unless one is already running.
    pub(super) fn pump(&mut self, key: FeedKey, ctx: &mut Context<Self>) {
        let Some(feed) = self.feeds.get_mut(&key) else {
            return;
        };
        if self.running.contains(&key) {
            feed.dirty = true;
            return;
        }
        let now = Instant::now();
        let Some(step) = feed.next_step(now, self.config.ack_timeout, self.config.window) else {
            return;
        };
        self.running.insert(key.clone());
        if matches!(step, Step::ReadNew { .. }) {
            feed.dirty = false;
        }
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
            act.finish(key, conn, step, now, result, ctx);
        });
    }

    pub(super) fn finish(
        &mut self,
        key: FeedKey,
        conn: ConnId,
        step: Step,
        started: Instant,
        result: Result<Vec<Delivered>, StoreError>,
        ctx: &mut Context<Self>,
    ) {
        self.running.remove(&key);
        let Some(feed) = self.feeds.get_mut(&key) else {
            return;
        };
        if feed.conn != conn {
            // The device reconnected meanwhile. What this operation read is pending in the store
            // and the new session's catch-up (which starts now, after it) claims it.
            self.pump(key, ctx);
            return;
        }
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
        match step {
            Step::CatchUp { limit, .. } => {
                feed.phase = match messages.last() {
                    Some(last) if got >= limit => Phase::CatchUp {
                        after: Some(last.position),
                    },
                    _ => Phase::Live,
                };
                feed.dirty = true;
            }
            Step::Redeliver { .. } => {
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
            Step::ReadNew { limit } => {
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
            .record_delivery(!matches!(step, Step::ReadNew { .. }), &messages);
        send_in_batches(&feed.deliver, messages, &self.config);
        self.pump(key, ctx);
    }
}

/// Splits messages into `msg.recv`-sized batches for the session.
fn send_in_batches(to: &Recipient<Deliver>, messages: Vec<Delivered>, config: &DispatcherConfig) {
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
