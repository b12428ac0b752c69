//! Storing what clients send, a child module of the same actor: the `msg.send` requests of every
//! sender that reached the actor in one turn go to the store in one call with the reads of their
//! recipients' waiting devices; then each request is answered and its recipients woken.

// The parent's imports (actix, store and protocol types): this is the same actor's code.
use super::*;

impl Handler<Submit> for Dispatcher {
    type Result = ResponseFuture<Result<(), DeliveryError>>;

    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) -> Self::Result {
        let replied = self.gather_submit(msg.from, vec![msg.messages], ctx);
        Box::pin(async move {
            match replied.await {
                Ok(mut results) => results.pop().unwrap_or(Err(DeliveryError::Stopped)),
                Err(_) => Err(DeliveryError::Stopped),
            }
        })
    }
}

impl Handler<SubmitMany> for Dispatcher {
    type Result = ResponseFuture<Vec<Result<(), DeliveryError>>>;

    fn handle(&mut self, msg: SubmitMany, ctx: &mut Context<Self>) -> Self::Result {
        let count = msg.requests.len();
        let replied = self.gather_submit(msg.from, msg.requests, ctx);
        Box::pin(async move {
            replied
                .await
                .unwrap_or_else(|_| (0..count).map(|_| Err(DeliveryError::Stopped)).collect())
        })
    }
}

/// One sender's `msg.send` requests waiting for the end of the turn (`Gathered`).
pub(super) struct GatheredSubmit {
    from: UserId,
    requests: Vec<Vec<OutgoingMessage>>,
    reply: Replies,
}

/// Where one [`GatheredSubmit`]'s results go: one per request, in order.
type Replies = tokio::sync::oneshot::Sender<Vec<Result<(), DeliveryError>>>;

impl Dispatcher {
    /// Keeps `requests` for the end of this turn, when every sender's requests gathered
    /// meanwhile are stored in one call (`store_gathered`); the receiver gets one result per
    /// request.
    fn gather_submit(
        &mut self,
        from: UserId,
        requests: Vec<Vec<OutgoingMessage>>,
        ctx: &mut Context<Self>,
    ) -> tokio::sync::oneshot::Receiver<Vec<Result<(), DeliveryError>>> {
        self.end_turn_later(ctx);
        let (reply, replied) = tokio::sync::oneshot::channel();
        self.gathered.submits.push(GatheredSubmit {
            from,
            requests,
            reply,
        });
        replied
    }

    /// Stamps and stores every request of `submits` (each one `msg.send`'s messages, all or
    /// nothing on its own) in one store call, with the reads of the recipients' waiting devices;
    /// then answers each submit with its requests' results, in order.
    pub(super) fn store_gathered(&mut self, submits: Vec<GatheredSubmit>, ctx: &mut Context<Self>) {
        let now = SystemTime::now();
        let mut batches: Vec<Vec<titan_store::NewMessage>> = Vec::new();
        let mut replies: Vec<(Replies, usize)> = Vec::with_capacity(submits.len());
        for submit in submits {
            replies.push((submit.reply, submit.requests.len()));
            let from = submit.from;
            batches.extend(submit.requests.into_iter().map(|messages| {
                messages
                    .into_iter()
                    .map(|outgoing| stamp(&from, outgoing, now))
                    .collect()
            }));
        }
        let recipients: Vec<Vec<UserId>> = batches
            .iter()
            .map(|batch| {
                let mut to: Vec<UserId> = batch.iter().map(|m| m.message.to.clone()).collect();
                to.sort();
                to.dedup();
                to
            })
            .collect();
        // Every recipient with how many messages this call stores for it (at most).
        let mut counts: HashMap<&UserId, usize> = HashMap::default();
        for message in batches.iter().flatten() {
            *counts.entry(&message.message.to).or_default() += 1;
        }
        let everyone: Vec<(&UserId, usize)> = counts.into_iter().collect();
        let (fused, reads) = self.live_reads(&everyone);
        let store = self.store.clone();
        let for_push: Option<Vec<Vec<_>>> = self.push.as_ref().map(|_| {
            batches
                .iter()
                .map(|batch| batch.iter().map(|n| n.message.clone()).collect())
                .collect()
        });
        run_then(
            ctx,
            async move { store.append_and_read(batches, reads).await },
            move |result, act, ctx| {
                let (appended, read) = match result {
                    Ok(done) => done,
                    Err(e) => (
                        recipients.iter().map(|_| Err(e.clone())).collect(),
                        Vec::new(),
                    ),
                };
                let mut for_push = for_push.map(Vec::into_iter);
                let results: Vec<_> = appended
                    .into_iter()
                    .zip(recipients)
                    .map(|(appended, recipients)| {
                        let messages = for_push.as_mut().and_then(Iterator::next);
                        act.stored(appended, recipients, &fused, messages, ctx)
                    })
                    .collect();
                let mut results = results.into_iter();
                for (reply, count) in replies {
                    // A session that ended meanwhile no longer waits for its answer.
                    let _ = reply.send(results.by_ref().take(count).collect());
                }
                act.finish_live_reads(fused, read, ctx);
            },
        );
    }

    /// After a `msg.send` batch's append: metrics, push for offline devices, wake the
    /// recipients' feeds here (except `read`, the feeds whose read ran with the append) and on
    /// other instances. Returns what the sender is answered.
    fn stored(
        &mut self,
        result: Result<Vec<titan_store::Appended>, StoreError>,
        recipients: Vec<UserId>,
        read: &[FusedRead],
        for_push: Option<Vec<titan_protocol::Message>>,
        ctx: &mut Context<Self>,
    ) -> Result<(), DeliveryError> {
        let appended = result?;
        self.metrics.record_accepted(&appended);
        // Not awaited: push is never on the `msg.send` ACK path.
        if let (Some(pusher), Some(messages)) = (&self.push, for_push) {
            let online = |u: &UserId| self.devices.get(u).cloned().unwrap_or_default();
            if let Some(job) = PushStored::after_append(messages, &appended, &recipients, online) {
                pusher.do_send(job);
            }
        }
        for user in &recipients {
            self.wake_user(user, read, ctx);
        }
        if self.bus.is_some() {
            self.wake_queue.extend(recipients);
            self.wake_others(ctx);
        }
        Ok(())
    }

    /// Sends the queued wake-ups to the other instances in one call, unless a call is on its
    /// way (its end sends what gathered meanwhile). Off the ACK path: a lost wake-up only waits
    /// for the next poll.
    fn wake_others(&mut self, ctx: &mut Context<Self>) {
        let Some(bus) = self.bus.clone() else { return };
        if self.waking || self.wake_queue.is_empty() {
            return;
        }
        self.waking = true;
        let users: Vec<UserId> = self.wake_queue.drain().collect();
        let wake = async move { bus.wake(&users).await };
        run_then(ctx, wake, |result, act, ctx| {
            act.waking = false;
            if let Err(e) = result {
                debug!(error = %e, "cluster wake-up failed; the poll will deliver");
            }
            act.wake_others(ctx);
        });
    }
}
