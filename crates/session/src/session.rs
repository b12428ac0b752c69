//! The Session actor: one per WebSocket connection.
//!
//! Frames arrive through the actor's stream handler ([`Inbound`], the request payload decoded)
//! and are parsed once into JSON-RPC items. Requests are executed (auth synchronously, so a
//! following request in the same batch already sees the identity; msg.send asynchronously, as
//! it waits for the store). Responses go out through the bounded [`Outbound`] queue, which the
//! WebSocket response body drains. Per connection that is the actor's task and the HTTP/1
//! dispatcher's task, and no channel: the queue is shared in place because both run on the
//! same worker thread (sizing: `outbound` module docs, docs/benchmarks.md "Idle memory").
//! `msg.recv` requests come from the dispatcher as [`Deliver`]; the client's success response
//! to one becomes [`Acked`].
//!
//! Child modules hold the rest of the same actor: `requests` (parse, admit, gate, execute,
//! answer), `signin` (`auth.jwt`, `auth.google`, `auth.refresh`) and `deadlines` (the one timer
//! for pings, the authentication window, the token's expiry and the drain turn).

use actix::prelude::*;
use actix_web::body::BoxBody;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::future::{LocalBoxFuture, join_all};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use serde_json::Value;
use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use titan_delivery::{Acked, Attach, ConnId, Deliver, Detach, Dispatcher, Kick, Metrics, Router};
use titan_protocol::jsonrpc::{ServerRequest, batch_to_text, parse_frame};
use titan_protocol::parse_send_request;
use titan_protocol::{
    ClientCommand, CloseCode, DeviceId, ErrorCode, Frame, Id, Incoming, PushParams, Response,
    RpcError, UserId,
};
use titan_store::Position;
use tracing::{Span, debug, info};

mod deadlines;
mod requests;
mod signin;

use crate::accounts::Accounts;
use crate::auth::Authenticator;
use crate::command;
use crate::connections::{Connections, Live, UserSlot};
use crate::error::{SessionError, protocol_error, to_rpc};
use crate::inbound::{Inbound, ProtocolError, Received};
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
    let mut handshake = actix_http::ws::handshake(req.head())?;
    // The response body drains the outbound queue; it runs in this worker thread's dispatcher
    // task, like the actor (see `outbound`).
    let (outbound, response_body) = outbound::queue(deps.config.outbound_queue);
    let response = handshake.message_body(BoxBody::new(response_body))?;
    let max = deps.config.max_frame_bytes;
    let stream = Inbound::new(body.into_inner(), outbound.connection(), max, max);
    // The client, and the proxy it came through when there is one.
    let peer = match (deps.connections.client_ip(req), req.peer_addr()) {
        (Some(client), Some(tcp)) if client != tcp.ip().to_canonical() => {
            format!("{client} via {tcp}")
        }
        (_, Some(tcp)) => tcp.to_string(),
        _ => String::new(),
    };
    Session::create(move |ctx| {
        ctx.add_stream(stream);
        Session::new(deps, outbound, peer, live)
    });
    Ok(response.into())
}

struct Authenticated {
    user: UserId,
    device: DeviceId,
    /// When the token expires (the session then closes with 4004); a fresh token moves it.
    expires: Instant,
}

/// See the module docs.
pub struct Session {
    conn: ConnId,
    peer: String,
    deps: SessionDeps,
    out: Outbound,
    identity: Option<Authenticated>,
    last_heard: Instant,
    /// The session's deadlines (see [`Session::arm`]): the next ping, and the end of the
    /// authentication window (it matters only until the session authenticates).
    next_ping: Instant,
    auth_deadline: Instant,
    /// This session's turn in a drain, once the drain has sent it ([`DrainTurn`]).
    drain_at: Option<Instant>,
    /// The one timer, armed for the nearest deadline.
    timer: Option<SpawnHandle>,
    next_request_id: u64,
    /// `msg.recv` request id -> the positions it carried.
    awaiting: BTreeMap<u64, Vec<Position>>,
    limiter: DefaultDirectRateLimiter,
    inflight_requests: usize,
    auth_failures: u32,
    closing: Option<CloseCode>,
    live: Live,
    /// Counts this connection towards its user's limit once authenticated.
    user_slot: Option<UserSlot>,
    /// The drain reached this session while requests were executing: close once they are
    /// answered.
    drain_pending: bool,
    /// Every log line of this connection carries its id, peer, and (once known) user and device.
    span: Span,
    /// `msg.send` requests of the frames being handled, submitted together by [`FlushSends`].
    queued_sends: Vec<command::QueuedSend>,
}

/// Submits the queued `msg.send` requests (see `command`). The first request of a read queues
/// it; actix handles it after the stream handler has taken every frame already received (up to
/// 16 at a time), so the requests that arrived together go to the dispatcher together.
#[derive(Message)]
#[rtype(result = "()")]
struct FlushSends;

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
        let now = Instant::now();
        Self {
            conn,
            peer,
            out,
            identity: None,
            last_heard: now,
            next_ping: now + deps.config.ping_interval,
            auth_deadline: now + deps.config.auth_timeout,
            drain_at: None,
            timer: None,
            next_request_id: 1,
            awaiting: BTreeMap::new(),
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            inflight_requests: 0,
            auth_failures: 0,
            closing: None,
            live,
            user_slot: None,
            drain_pending: false,
            span,
            deps,
            queued_sends: Vec::new(),
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
            // Same identity, fresh token: the expiry moves below.
        } else {
            self.user_slot = Some(self.take_user_slot(&verified.user, ctx)?);
        }
        let remaining = verified
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let fresh = self.identity.is_none();
        let expires_at = verified.expires_at;
        self.identity = Some(Authenticated {
            user: verified.user.clone(),
            device: device.clone(),
            expires: Instant::now() + remaining,
        });
        self.arm(ctx);
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
        self.live.register(ctx.address().recipient());
        self.arm(ctx);
    }

    fn stopping(&mut self, ctx: &mut Context<Self>) -> Running {
        let _span = self.span.clone().entered();
        // Requests read in the same read as the close (or the error that ends the session) are
        // queued but not submitted yet: they are stored all the same, though their answers can
        // no longer be written (an unanswered client may send them again: at least once).
        self.flush_sends(ctx);
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

impl StreamHandler<Result<Received, ProtocolError>> for Session {
    fn handle(&mut self, item: Result<Received, ProtocolError>, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        if self.closing.is_some() {
            return;
        }
        self.last_heard = Instant::now();
        match item {
            Ok(Received::Text(text)) => self.on_text(&text, ctx),
            Ok(Received::Binary(_)) => {
                let error = RpcError::with_message(
                    ErrorCode::InvalidRequest,
                    "Invalid Request: binary frames are not supported, send JSON text frames",
                );
                self.send_responses(vec![Response::error(Id::Null, error)], false, ctx);
            }
            Ok(Received::Ping(data)) => self.push(outbound::Frame::Pong(data), ctx),
            Ok(Received::Pong(_)) => {}
            Ok(Received::Close(_)) => self.close(CloseCode::Normal, ctx),
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

impl Handler<titan_delivery::resume::Resume<Session>> for Session {
    type Result = ();

    fn handle(&mut self, msg: titan_delivery::resume::Resume<Session>, ctx: &mut Context<Self>) {
        let _span = self.span.clone().entered();
        msg.run(self, ctx);
    }
}

impl Handler<FlushSends> for Session {
    type Result = ();

    fn handle(&mut self, _: FlushSends, ctx: &mut Context<Self>) {
        self.flush_sends(ctx);
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
