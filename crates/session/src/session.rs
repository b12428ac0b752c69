//! The Session actor: one per WebSocket connection.
//!
//! Frames arrive through the actor's stream handler and are parsed once into JSON-RPC items.
//! Requests are executed (auth synchronously, so a following request in the same batch already
//! sees the identity; msg.send asynchronously, as it waits for the store). Responses go out
//! through the bounded [`Outbound`] queue. `msg.recv` requests come from the dispatcher as
//! [`Deliver`]; the client's success response to one becomes [`Acked`].

use actix::prelude::*;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, ProtocolError};
use futures_util::future::{LocalBoxFuture, join_all};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use serde_json::Value;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use titan_delivery::{Acked, Attach, ConnId, Deliver, Detach, Dispatcher, Kick, Metrics, Router};
use titan_protocol::jsonrpc::{ServerRequest, batch_to_text, parse_frame};
use titan_protocol::{
    ClientCommand, CloseCode, DeviceId, ErrorCode, Frame, Id, Incoming, PushParams, Response,
    RpcError, UserId,
};
use titan_store::Position;
use tracing::{Span, debug, info};

mod signin;

use crate::accounts::Accounts;
use crate::auth::Authenticator;
use crate::command;
use crate::connections::{Connections, Live, UserSlot};
use crate::error::{SessionError, protocol_error, to_rpc};
use crate::limits::SessionConfig;
use crate::observe;
use crate::outbound::{self, Outbound, QueueError};
use crate::push::PushAction;

/// Most unanswered `msg.recv` requests remembered; older ones are forgotten (their messages are
/// redelivered by the dispatcher anyway).
const MAX_AWAITING: usize = 4096;

/// What every session needs from the rest of the server.
#[derive(Clone)]
pub struct SessionDeps {
    pub router: Addr<Router>,
    pub dispatcher: Addr<Dispatcher>,
    pub auth: Arc<Authenticator>,
    pub config: Arc<SessionConfig>,
    pub metrics: Metrics,
    /// Instance-wide limits, counts and the drain.
    pub connections: Connections,
    /// Sign-in (`auth.google`), users and revocations.
    pub accounts: Accounts,
    pub push: crate::push::PushDeps,
}

/// Upgrades the request to a WebSocket and starts its Session actor.
pub fn start(
    req: &HttpRequest,
    body: web::Payload,
    deps: SessionDeps,
) -> Result<HttpResponse, actix_web::Error> {
    let live = match deps.connections.admit(req) {
        Ok(live) => live,
        Err(refusal) => return Ok(refusal.response()),
    };
    let (response, socket, stream) = actix_ws::handle(req, body)?;
    let max = deps.config.max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    Session::create(move |ctx| {
        ctx.add_stream(stream);
        let outbound = Outbound::start(socket, deps.config.outbound_queue);
        Session::new(deps, outbound, peer, live)
    });
    Ok(response)
}

struct Authenticated {
    user: UserId,
    device: DeviceId,
    expiry_timer: SpawnHandle,
}

/// See the module docs.
pub struct Session {
    conn: ConnId,
    peer: String,
    deps: SessionDeps,
    out: Outbound,
    identity: Option<Authenticated>,
    last_heard: Instant,
    next_request_id: u64,
    /// `msg.recv` request id -> the positions it carried.
    awaiting: BTreeMap<u64, Vec<Position>>,
    limiter: DefaultDirectRateLimiter,
    inflight_requests: usize,
    auth_failures: u32,
    closing: Option<CloseCode>,
    _live: Live,
    /// Counts this connection towards its user's limit once authenticated.
    user_slot: Option<UserSlot>,
    /// The drain reached this session while requests were executing: close once they are
    /// answered.
    drain_pending: bool,
    /// Every log line of this connection carries its id, peer, and (once known) user and device.
    span: Span,
}

/// A request's answer: now, or once a future resolves.
pub(crate) enum Outcome {
    Now(Option<Response>),
    Later(LocalBoxFuture<'static, Option<Response>>),
}

impl Session {
    fn new(deps: SessionDeps, out: Outbound, peer: String, live: Live) -> Self {
        let rate = NonZeroU32::new(deps.config.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(deps.config.request_burst).unwrap_or(rate);
        let conn = ConnId::next();
        let span = observe::span(conn, &peer);
        Self {
            conn,
            peer,
            out,
            identity: None,
            last_heard: Instant::now(),
            next_request_id: 1,
            awaiting: BTreeMap::new(),
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            inflight_requests: 0,
            auth_failures: 0,
            closing: None,
            _live: live,
            user_slot: None,
            drain_pending: false,
            span,
            deps,
        }
    }

    /// Queues a frame; a full queue closes the connection as a slow consumer.
    fn push(&mut self, frame: outbound::Frame, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        match self.out.push(frame) {
            Ok(()) => {}
            Err(QueueError::Full) => {
                info!(conn = self.conn.0, user = ?self.identity.as_ref().map(|i| &i.user), "slow consumer");
                self.close(CloseCode::SlowConsumer, ctx);
            }
            Err(QueueError::Closed) => ctx.stop(),
        }
    }

    fn close(&mut self, code: CloseCode, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        self.closing = Some(code);
        observe::close(&self.deps.metrics, code);
        self.out.close(code);
        ctx.stop();
    }

    fn send_responses(&mut self, responses: Vec<Response>, batch: bool, ctx: &mut Context<Self>) {
        let text = match (batch, responses.len()) {
            (_, 0) => return,
            (false, _) => responses[0].to_text(),
            (true, _) => batch_to_text(&responses),
        };
        self.push(outbound::Frame::Text(text), ctx);
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        let (items, batch) = match parse_frame(text, self.deps.config.max_batch) {
            Err(error) => {
                self.send_responses(vec![Response::error(Id::Null, error)], false, ctx);
                return;
            }
            Ok(Frame::Single(item)) => (vec![item], false),
            Ok(Frame::Batch(items)) => (items, true),
        };
        let mut now = Vec::new();
        let mut later = Vec::new();
        for item in items {
            match self.on_item(item, ctx) {
                Outcome::Now(Some(r)) => now.push(r),
                Outcome::Now(None) => {}
                Outcome::Later(f) => later.push(f),
            }
        }
        if later.is_empty() {
            self.send_responses(now, batch, ctx);
        } else {
            // A batch is answered as one array once every item has its answer.
            self.inflight_requests += 1;
            let fut = join_all(later).into_actor(self).map(move |done, act, ctx| {
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
            ctx.spawn(fut);
        }
        if self.auth_failures >= self.deps.config.max_auth_failures {
            self.close(CloseCode::TooManyAuthFailures, ctx);
        }
    }

    fn on_item(&mut self, item: Incoming, ctx: &mut Context<Self>) -> Outcome {
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

    fn on_request(
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
    fn admit(&mut self) -> Result<(), RpcError> {
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
    fn gate(
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

    fn execute(
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
                let Some(me) = &self.identity else {
                    return Outcome::Now(
                        id.map(|id| Response::error(id, ErrorCode::NotAuthenticated.into())),
                    );
                };
                if let Err(retry_after) = self.deps.connections.take_sends(&me.user, messages.len())
                {
                    let error = to_rpc(&SessionError::SendQuota { retry_after });
                    return Outcome::Now(id.map(|id| Response::error(id, error)));
                }
                let limit = self.deps.config.max_message_bytes;
                match command::send(&self.deps.dispatcher, me.user.clone(), messages, limit) {
                    Err(e) => Err(to_rpc(&e)),
                    Ok(fut) => {
                        return Outcome::Later(Box::pin(async move {
                            let outcome = fut.await.map_err(|e| to_rpc(&e));
                            id.map(|id| Response { id, outcome })
                        }));
                    }
                }
            }
        };
        Outcome::Now(id.map(|id| Response {
            id,
            outcome: result,
        }))
    }

    /// `push.register` / `push.unregister` for this connection's (user, device).
    fn push_tokens(&self, action: PushAction, params: PushParams, id: Option<Id>) -> Outcome {
        let me = self.identity.as_ref().map(|i| (&i.user, &i.device));
        let deps = &self.deps.push;
        Outcome::Later(crate::push::respond(deps, me, action, params, id))
    }

    /// Verifies a token (revocations included) and binds the connection to its (user,
    /// device). Returns the token's expiry.
    fn authenticate(
        &mut self,
        token: &str,
        device: Option<DeviceId>,
        ctx: &mut Context<Self>,
    ) -> Result<SystemTime, SessionError> {
        let verified = match self.verify_token(token) {
            Ok(v) => v,
            Err(e) => {
                self.auth_failures += 1;
                observe::auth_failure(&self.deps.metrics, &e);
                info!(conn = self.conn.0, peer = %self.peer, reason = %e, "authentication failed");
                return Err(e.into());
            }
        };
        let device = match (verified.device, device) {
            (Some(bound), Some(asked)) if bound != asked => {
                self.auth_failures += 1;
                observe::device_mismatch(&self.deps.metrics);
                return Err(crate::auth::AuthError::DeviceMismatch {
                    token_device: bound.to_string(),
                    requested: asked.to_string(),
                }
                .into());
            }
            (Some(d), _) | (None, Some(d)) => d,
            (None, None) => DeviceId::default_device(),
        };
        if let Some(current) = &mut self.identity {
            if current.user != verified.user || current.device != device {
                return Err(SessionError::AlreadyAuthenticated {
                    user: current.user.to_string(),
                    device: current.device.to_string(),
                });
            }
            // Same identity, fresh token: just move the expiry.
            let old = current.expiry_timer;
            ctx.cancel_future(old);
        } else {
            self.user_slot = Some(self.take_user_slot(&verified.user, ctx)?);
        }
        let remaining = verified
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let expiry_timer = ctx.run_later(remaining, |act, ctx| {
            info!(conn = act.conn.0, "token expired");
            act.close(CloseCode::TokenExpired, ctx);
        });
        let fresh = self.identity.is_none();
        let expires_at = verified.expires_at;
        self.identity = Some(Authenticated {
            user: verified.user.clone(),
            device: device.clone(),
            expiry_timer,
        });
        if fresh {
            self.span.record("user", verified.user.as_str());
            self.span.record("device", device.as_str());
            info!(conn = self.conn.0, peer = %self.peer, user = %verified.user, device = %device, "authenticated");
            let me_user = verified.user.clone();
            self.deps.router.do_send(Attach {
                user: verified.user,
                device,
                conn: self.conn,
                deliver: ctx.address().recipient(),
                kick: ctx.address().recipient(),
            });
            self.recheck_revocation(me_user, verified.issued_at, ctx);
        }
        Ok(expires_at)
    }

    /// Counts this connection towards its user's limit; over it, the error is answered and the
    /// connection then closed with 4008 (the close is queued behind the response).
    fn take_user_slot(
        &self,
        user: &UserId,
        ctx: &mut Context<Self>,
    ) -> Result<UserSlot, SessionError> {
        self.deps.connections.attach_user(user).ok_or_else(|| {
            ctx.notify(Kick {
                code: CloseCode::TooManyConnections,
            });
            SessionError::TooManyConnections
        })
    }

    /// A response to one of our `msg.recv` requests: success acks its messages; an error leaves
    /// them pending for redelivery.
    fn on_response(&mut self, id: Id, outcome: Result<Value, RpcError>) {
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

    fn on_protocol_error(&mut self, err: ProtocolError, ctx: &mut Context<Self>) {
        let (error, code) = protocol_error(&err, self.deps.config.max_frame_bytes);
        info!(conn = self.conn.0, error = %err, "closing on protocol error");
        self.send_responses(vec![Response::error(Id::Null, error)], false, ctx);
        self.close(code, ctx);
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        info!(conn = self.conn.0, peer = %self.peer, "connection opened");
        let turn = self.deps.connections.drain_turn();
        ctx.spawn(turn.into_actor(self).map(|(), act, ctx| {
            if act.inflight_requests == 0 {
                act.close(CloseCode::Draining, ctx);
            } else {
                act.drain_pending = true;
            }
        }));
        let config = self.deps.config.clone();
        ctx.run_later(config.auth_timeout, |act, ctx| {
            if act.identity.is_none() {
                info!(conn = act.conn.0, peer = %act.peer, "authentication timeout");
                act.close(CloseCode::AuthTimeout, ctx);
            }
        });
        ctx.run_interval(config.ping_interval, move |act, ctx| {
            if act.last_heard.elapsed() >= config.idle_timeout {
                info!(conn = act.conn.0, "idle timeout");
                act.close(CloseCode::IdleTimeout, ctx);
            } else {
                act.push(outbound::Frame::Ping, ctx);
            }
        });
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        let _span = self.span.clone().entered();
        if let Some(me) = &self.identity {
            self.deps.router.do_send(Detach {
                user: me.user.clone(),
                device: me.device.clone(),
                conn: self.conn,
            });
        }
        let reason = self.closing.map_or("client went away", CloseCode::reason);
        info!(conn = self.conn.0, user = ?self.identity.as_ref().map(|i| &i.user), reason, "connection closed");
        Running::Stop
    }
}

impl StreamHandler<Result<AggregatedMessage, ProtocolError>> for Session {
    fn handle(&mut self, item: Result<AggregatedMessage, ProtocolError>, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        if self.closing.is_some() {
            return;
        }
        self.last_heard = Instant::now();
        match item {
            Ok(AggregatedMessage::Text(text)) => self.on_text(&text, ctx),
            Ok(AggregatedMessage::Binary(_)) => {
                let error = RpcError::with_message(
                    ErrorCode::InvalidRequest,
                    "Invalid Request: binary frames are not supported, send JSON text frames",
                );
                self.send_responses(vec![Response::error(Id::Null, error)], false, ctx);
            }
            Ok(AggregatedMessage::Ping(data)) => self.push(outbound::Frame::Pong(data), ctx),
            Ok(AggregatedMessage::Pong(_)) => {}
            Ok(AggregatedMessage::Close(_)) => self.close(CloseCode::Normal, ctx),
            Err(err) => self.on_protocol_error(err, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Context<Self>) {
        if self.closing.is_some() || msg.messages.is_empty() {
            return;
        }
        let id = self.next_request_id;
        self.next_request_id += 1;
        let messages: Vec<_> = msg.messages.iter().map(|d| &d.message).collect();
        let text = ServerRequest::new(Some(Id::from(id)), "msg.recv", &messages).to_text();
        self.awaiting
            .insert(id, msg.messages.iter().map(|d| d.position).collect());
        while self.awaiting.len() > MAX_AWAITING {
            self.awaiting.pop_first();
        }
        self.push(outbound::Frame::Text(text), ctx);
    }
}

impl Handler<Kick> for Session {
    type Result = ();

    fn handle(&mut self, msg: Kick, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        info!(
            conn = self.conn.0,
            code = msg.code.code(),
            "closing on server request"
        );
        self.close(msg.code, ctx);
    }
}
