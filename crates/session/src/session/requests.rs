//! The session's request pipeline, a child module of the session so the actor file keeps the
//! connection's life (start, stop, frames, deliveries, kicks): a text frame is parsed into
//! requests, each is admitted (rate and in-flight limits), gated (authentication), executed,
//! and answered alone or as a batch; responses to our own `msg.recv` requests become acks.

// The parent's imports (actix, protocol types, limits, errors): this is the same actor's code.
use super::*;
use titan_delivery::resume::run_then;
use titan_protocol::OutgoingMessage;

impl Session {
    pub(super) fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let mut now = Vec::new();
        let mut later = Vec::new();
        let mut batch = false;
        let mut take = |outcome| match outcome {
            Outcome::Now(Some(r)) => now.push(r),
            Outcome::Now(None) => {}
            Outcome::Later(f) => later.push(f),
        };
        // An ordinary msg.send of a signed-in session (nearly every frame under load) is read
        // straight into its messages; anything else, or anything unusual, the general way.
        if let Some((id, messages)) = self
            .identity
            .as_ref()
            .and_then(|_| parse_send_request(text))
        {
            // Answered by `flush_sends`'s continuation once stored; only a refusal is now.
            let refused = match self.admit() {
                Err(error) => Some(Response::error(id, error)),
                Ok(()) => self.send_alone(id, messages, ctx),
            };
            if let Some(refused) = refused {
                take(observe::request(
                    &self.deps.metrics,
                    "msg.send",
                    Outcome::Now(Some(refused)),
                ));
            }
        } else {
            let items = match parse_frame(text, self.deps.config.max_batch) {
                Err(error) => {
                    self.send_responses(vec![Response::error(Id::Null, error)], false, ctx);
                    return;
                }
                Ok(Frame::Single(item)) => vec![item],
                Ok(Frame::Batch(items)) => {
                    batch = true;
                    items
                }
            };
            for item in items {
                take(self.on_item(item, ctx));
            }
        }
        if later.is_empty() {
            self.send_responses(now, batch, ctx);
        } else {
            // A batch is answered as one array once every item has its answer.
            self.inflight_requests += 1;
            // Run as its own task (see titan_delivery::resume): a session with many requests in
            // flight would otherwise re-poll all of them on every frame and delivery.
            run_then(ctx, join_all(later), move |done, act, ctx| {
                act.inflight_requests -= 1;
                let mut all = now;
                all.extend(done.into_iter().flatten());
                act.send_responses(all, batch, ctx);
                // Asynchronous sign-ins count their failures only once answered.
                if act.auth_failures >= act.deps.config.max_auth_failures {
                    act.close(CloseCode::TooManyAuthFailures, ctx);
                } else if act.drain_pending && act.inflight_requests == 0 {
                    act.close(CloseCode::Draining, ctx);
                }
            });
        }
        if self.auth_failures >= self.deps.config.max_auth_failures {
            self.close(CloseCode::TooManyAuthFailures, ctx);
        }
    }

    pub(super) fn on_item(&mut self, item: Incoming, ctx: &mut Context<Self>) -> Outcome {
        let (id, method, params) = match item {
            Incoming::Request { id, method, params } => (Some(id), method, params),
            Incoming::Notification { method, params } => (None, method, params),
            Incoming::Response { id, outcome } => {
                self.on_response(id, outcome);
                return Outcome::Now(None);
            }
            Incoming::Invalid { id, error } => {
                return Outcome::Now(Some(Response::error(id, error)));
            }
        };
        let outcome = self.on_request(id, &method, params, ctx);
        observe::request(&self.deps.metrics, &method, outcome)
    }

    pub(super) fn on_request(
        &mut self,
        id: Option<Id>,
        method: &str,
        params: Option<Value>,
        ctx: &mut Context<Self>,
    ) -> Outcome {
        if let Err(error) = self.admit() {
            return Outcome::Now(id.map(|id| Response::error(id, error)));
        }
        if let Err(error) = self.gate(method, params.as_ref(), ctx) {
            return Outcome::Now(id.map(|id| Response::error(id, error)));
        }
        match ClientCommand::parse(method, params) {
            Ok(command) => self.execute(command, id, ctx),
            Err(error) => Outcome::Now(id.map(|id| Response::error(id, error))),
        }
    }

    /// Rate limit and concurrency limit for one request.
    pub(super) fn admit(&mut self) -> Result<(), RpcError> {
        if let Err(not_until) = self.limiter.check() {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            return Err(RpcError::with_message(
                ErrorCode::RateLimited,
                "Rate limited: too many requests",
            )
            .with_data(serde_json::json!({ "retry_after_ms": wait.as_millis().max(1) })));
        }
        if self.inflight_requests >= self.deps.config.max_inflight_requests {
            return Err(RpcError::with_message(
                ErrorCode::RateLimited,
                "Rate limited: too many requests in flight",
            )
            .with_data(serde_json::json!({ "retry_after_ms": 100 })));
        }
        Ok(())
    }

    /// The authentication gate: before auth only `auth.*` is served, except that (for the old
    /// clients) a request whose object params carry a `token` authenticates the connection first.
    pub(super) fn gate(
        &mut self,
        method: &str,
        params: Option<&Value>,
        ctx: &mut Context<Self>,
    ) -> Result<(), RpcError> {
        if self.identity.is_some() || ClientCommand::allowed_before_auth(method) {
            return Ok(());
        }
        // push.* is newer than the old clients, and its own `token` member is a push token.
        let legacy = params
            .filter(|_| !method.starts_with("push."))
            .and_then(Value::as_object)
            .and_then(|p| Some((p.get("token")?.as_str()?, p.get("device"))));
        let Some((token, device)) = legacy else {
            return Err(RpcError::with_message(
                ErrorCode::NotAuthenticated,
                "Not authenticated: call auth.jwt first",
            ));
        };
        let device = device
            .and_then(Value::as_str)
            .map(DeviceId::new)
            .transpose()
            .map_err(|e| {
                RpcError::with_message(ErrorCode::InvalidParams, format!("Invalid params: {e}"))
            })?;
        let token = token.to_owned();
        self.authenticate(&token, device, ctx)
            .map(|_| ())
            .map_err(|e| to_rpc(&e))
    }

    pub(super) fn execute(
        &mut self,
        command: ClientCommand,
        id: Option<Id>,
        ctx: &mut Context<Self>,
    ) -> Outcome {
        let result = match command {
            ClientCommand::AuthJwt(p) => return self.auth_jwt(p, id, ctx),
            ClientCommand::AuthGoogle(p) => return self.sign_in_google(p, id, ctx),
            ClientCommand::AuthRefresh => self.refresh(ctx),
            ClientCommand::Echo(params) => Ok(params),
            ClientCommand::PushRegister(p) => return self.push_tokens(PushAction::Register, p, id),
            ClientCommand::PushUnregister(p) => {
                return self.push_tokens(PushAction::Unregister, p, id);
            }
            ClientCommand::MsgSend(messages) => {
                if let Err(error) = self.check_send(&messages) {
                    return Outcome::Now(id.map(|id| Response::error(id, error)));
                }
                self.flush_sends_later(ctx);
                let fut = command::queue(&mut self.queued_sends, messages);
                return Outcome::Later(Box::pin(async move {
                    let outcome = fut.await.map_err(|e| to_rpc(&e));
                    id.map(|id| Response { id, outcome })
                }));
            }
        };
        Outcome::Now(id.map(|id| Response {
            id,
            outcome: result,
        }))
    }

    /// A `msg.send` that came alone in its frame (the common case): checked and queued, to be
    /// answered by `flush_sends`'s continuation straight from the dispatcher's results (no
    /// future of its own). Returns the response of a refusal.
    fn send_alone(
        &mut self,
        id: Id,
        messages: Vec<OutgoingMessage>,
        ctx: &mut Context<Self>,
    ) -> Option<Response> {
        if let Err(error) = self.check_send(&messages) {
            return Some(Response::error(id, error));
        }
        self.flush_sends_later(ctx);
        command::queue_direct(&mut self.queued_sends, messages, id);
        self.inflight_requests += 1;
        None
    }

    /// What a `msg.send` must pass before it is queued: a signed-in connection, the user's
    /// send quota, the message size limit.
    fn check_send(&mut self, messages: &[OutgoingMessage]) -> Result<(), RpcError> {
        let Some(me) = &self.identity else {
            return Err(ErrorCode::NotAuthenticated.into());
        };
        if let Err(retry_after) = self.deps.connections.take_sends(&me.user, messages.len()) {
            return Err(to_rpc(&SessionError::SendQuota { retry_after }));
        }
        command::check_sizes(messages, self.deps.config.max_message_bytes).map_err(|e| to_rpc(&e))
    }

    /// The first request queued in a read schedules the flush of them all.
    fn flush_sends_later(&mut self, ctx: &mut Context<Self>) {
        if self.queued_sends.is_empty() && ctx.state().alive() {
            // Runs once this read's frames are handled (the stream yields first).
            ctx.notify(FlushSends);
        }
    }

    /// Hands the queued `msg.send` requests to the dispatcher; the answers of those that came
    /// alone in their frames are written when it has stored them.
    pub(super) fn flush_sends(&mut self, ctx: &mut Context<Self>) {
        let queued = std::mem::take(&mut self.queued_sends);
        // Requests are queued only once authenticated, and the identity never changes after;
        // without one the dropped requests answer that delivery stopped.
        let Some(me) = &self.identity else { return };
        if queued.is_empty() {
            return;
        }
        let submitted = command::submit(&self.deps.dispatcher, me.user.clone(), queued);
        // Not run if the session stopped meanwhile: its answers can no longer be written.
        run_then(ctx, submitted, |responses, act, ctx| {
            act.inflight_requests -= responses.len();
            for response in responses {
                observe::answered(&act.deps.metrics, "msg.send", Some(&response));
                // Each request came alone in its frame, so each answer is a frame of its own;
                // written in one turn, they leave together.
                act.push(outbound::Frame::Text(response.to_text()), ctx);
            }
            if act.drain_pending && act.inflight_requests == 0 {
                act.close(CloseCode::Draining, ctx);
            }
        });
    }

    /// `push.register` / `push.unregister` for this connection's (user, device).
    pub(super) fn push_tokens(
        &self,
        action: PushAction,
        params: PushParams,
        id: Option<Id>,
    ) -> Outcome {
        let me = self.identity.as_ref().map(|i| (&i.user, &i.device));
        let deps = &self.deps.push;
        Outcome::Later(crate::push::respond(deps, me, action, params, id))
    }

    /// A response to one of our `msg.recv` requests: success acks its messages; an error leaves
    /// them pending for redelivery.
    pub(super) fn on_response(&mut self, id: Id, outcome: Result<Value, RpcError>) {
        let Some(positions) = id.as_u64().and_then(|n| self.awaiting.remove(&n)) else {
            debug!(
                conn = self.conn.0,
                ?id,
                "response to an unknown request ignored"
            );
            return;
        };
        let Some(me) = &self.identity else { return };
        match outcome {
            Ok(_) => self.deps.dispatcher.do_send(Acked {
                user: me.user.clone(),
                device: me.device.clone(),
                conn: self.conn,
                positions,
            }),
            Err(error) => {
                debug!(
                    conn = self.conn.0,
                    code = error.code,
                    "client refused msg.recv; messages stay pending"
                );
            }
        }
    }
}
