//! The session's deadlines, kept by one timer: a child module of the session.
//!
//! A session closes when its authentication window passes unauthenticated (4001), its token
//! expires (4004), it has been silent for `idle_timeout` (4000, checked at each ping) or its
//! turn in a drain comes (4006, once its requests are answered), and it pings every
//! `ping_interval`. All of these are instants the session keeps, and one actix timer is armed
//! for the nearest ([`Session::arm`]).

use actix::prelude::*;
use std::time::Instant;
use titan_protocol::CloseCode;
use tracing::info;

use super::Session;
use crate::connections::DrainTurn;
use crate::outbound;

impl Session {
    /// Arms the session's one timer for its nearest deadline: the next ping, the end of the
    /// authentication window until it authenticates, the token's expiry once it has, its turn in
    /// a drain once the drain has sent it. One timer rather than a timer or future per deadline
    /// because actix polls every future in an actor's context each time the actor wakes: those
    /// were 4 % of the session workers' CPU at 50,000 msg/s, and each one a part of every
    /// connection's memory (twenty-second set of docs/benchmarks.md).
    pub(super) fn arm(&mut self, ctx: &mut Context<Self>) {
        if let Some(armed) = self.timer.take() {
            ctx.cancel_future(armed);
        }
        let mut due = match &self.identity {
            None => self.next_ping.min(self.auth_deadline),
            Some(me) => self.next_ping.min(me.expires),
        };
        if let Some(turn) = self.drain_at {
            due = due.min(turn);
        }
        let wait = due.saturating_duration_since(Instant::now());
        self.timer = Some(ctx.run_later(wait, |act, ctx| {
            act.timer = None;
            act.on_deadline(ctx);
        }));
    }

    /// The timer fired: close on a passed authentication window, expiry, idle timeout or drain
    /// turn (the last once requests in flight are answered), ping when one is due, and arm the
    /// timer for the next deadline.
    fn on_deadline(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if self.drain_at.is_some_and(|turn| now >= turn) {
            self.drain_at = None;
            if self.inflight_requests == 0 {
                return self.close(CloseCode::Draining, ctx);
            }
            self.drain_pending = true;
        }
        match &self.identity {
            None if now >= self.auth_deadline => {
                info!(conn = self.conn.0, peer = %self.peer, "authentication timeout");
                return self.close(CloseCode::AuthTimeout, ctx);
            }
            Some(me) if now >= me.expires => {
                info!(conn = self.conn.0, "token expired");
                return self.close(CloseCode::TokenExpired, ctx);
            }
            _ => {}
        }
        if now >= self.next_ping {
            if self.last_heard.elapsed() >= self.deps.config.idle_timeout {
                info!(conn = self.conn.0, "idle timeout");
                return self.close(CloseCode::IdleTimeout, ctx);
            }
            self.push(outbound::Frame::Ping, ctx);
            self.next_ping = now + self.deps.config.ping_interval;
        }
        if self.closing.is_none() {
            self.arm(ctx);
        }
    }
}

impl Handler<DrainTurn> for Session {
    type Result = ();

    fn handle(&mut self, msg: DrainTurn, ctx: &mut Context<Self>) {
        if self.closing.is_some() {
            return;
        }
        self.drain_at = Some(Instant::now() + msg.after);
        self.arm(ctx);
    }
}
