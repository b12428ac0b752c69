//! [`Connections`]: what this instance knows about all of its connections together: how many
//! are open (per instance and per user), who may open one (origin, per-IP rate, capacity), the
//! per-user `msg.send` quota, and the drain that closes them all before a restart.
//!
//! Each session holds a [`Live`] guard for its whole life and an [`UserSlot`] once
//! authenticated; dropping them is what frees the capacity, so a session that ends in any way
//! (even a panic in its actor) is never counted forever. Through its [`Live`] guard a session
//! is also reachable by the drain, which sends it its [`DrainTurn`].

use actix::{Message, Recipient};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use titan_delivery::Metrics;
use titan_protocol::UserId;
use tokio::sync::watch;

use crate::proxies::TrustedProxies;

/// Checks between two sweeps of the keyed rate limiters' idle entries (bounding their memory).
const SWEEP_EVERY: u64 = 4096;

/// What the per-IP connection rate counts as one address: an IPv4 address, or the /64 network of
/// an IPv6 one, the least a provider assigns one customer (whose every device may pick any
/// address in it, so per address a client could take a fresh bucket for each connection).
fn rate_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// Instance-wide connection limits (the `limits` and `server` config sections).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Most open WebSocket connections on this instance; over it, HTTP 503 before the upgrade.
    pub max_connections: usize,
    /// Most authenticated connections of one user on this instance; over it, `-32004` then
    /// close 4008.
    pub max_connections_per_user: usize,
    /// New connections per second from one IP address (an IPv6 /64 counting as one; token
    /// bucket, `connection_burst`); over it, HTTP 429. 0 disables the check.
    pub connections_per_ip_per_second: u32,
    pub connection_burst: u32,
    /// Messages (not calls) one user may send per minute, over all of the user's connections
    /// on this instance; over it, `-32004` with `retry_after_ms`. 0 disables the check.
    pub messages_per_minute: u32,
    /// Browser origins allowed to connect; empty allows every origin (and requests without an
    /// `Origin` header, from non-browser clients, are always allowed).
    pub allowed_origins: Vec<String>,
    /// Reverse proxies whose `X-Forwarded-For` names the client (for the per-IP rate).
    pub trusted_proxies: TrustedProxies,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_connections_per_user: 100,
            connections_per_ip_per_second: 0,
            connection_burst: 1,
            messages_per_minute: 0,
            allowed_origins: Vec::new(),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// Why a connection was refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server is draining: 503 (connect to another instance).
    Draining,
    /// `limits.max_connections` reached: 503.
    Full,
    /// `limits.connections_per_ip_per_second` exceeded: 429.
    RateLimited { retry_after: Duration },
    /// The `Origin` is not in `server.allowed_origins`: 403.
    Origin,
}

impl Refusal {
    /// The `titan_limit_rejections_total` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Draining => "draining",
            Self::Full => "max_connections",
            Self::RateLimited { .. } => "connections_per_ip",
            Self::Origin => "origin",
        }
    }

    /// The HTTP answer (the only place these statuses are chosen; docs/protocol.md lists them).
    pub fn response(self) -> HttpResponse {
        let (status, retry, text) = match self {
            Self::Draining => (StatusCode::SERVICE_UNAVAILABLE, Some(1), "server draining"),
            Self::Full => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(1),
                "too many connections",
            ),
            Self::RateLimited { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                Some(retry_after.as_secs().max(1)),
                "too many new connections from this address",
            ),
            Self::Origin => (StatusCode::FORBIDDEN, None, "origin not allowed"),
        };
        let mut response = HttpResponse::build(status);
        if let Some(secs) = retry {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response
            .content_type("text/plain; charset=utf-8")
            .body(format!("{text}\n"))
    }
}

/// See the module docs. Cheap to clone.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    limits: ConnectionLimits,
    metrics: Metrics,
    live: watch::Sender<usize>,
    per_user: Mutex<HashMap<UserId, usize>>,
    /// The sessions the drain reaches, and whether it has started (under one lock, so that a
    /// session registering as the drain starts is either sent its turn by the drain or sees the
    /// drain and takes its turn itself).
    sessions: Mutex<Sessions>,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    sends: Option<DefaultKeyedRateLimiter<UserId>>,
    checks: AtomicU64,
}

/// Held by a session for its whole life: one open connection.
pub struct Live {
    inner: Arc<Inner>,
    /// Its session's entry in [`Sessions`], once registered (see [`Live::register`]).
    session: Option<u64>,
}

/// The drain's word to one session: close with 4006 once `after` has passed and the requests
/// in flight are answered. Each session is given its own random point in the drain window, so
/// that clients do not all reconnect elsewhere at once.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct DrainTurn {
    pub after: Duration,
}

/// The sessions the drain will reach. A session's address here rather than a future in each
/// session waiting for the drain: actix polls every future in an actor's context each time the
/// actor wakes, and that one was 168 bytes of every idle connection (twenty-second set of
/// docs/benchmarks.md).
#[derive(Default)]
struct Sessions {
    next: u64,
    by_key: HashMap<u64, Recipient<DrainTurn>>,
    /// `Some(window)` once the drain has started: each session closes at a random point within
    /// it.
    window: Option<Duration>,
}

/// A random point within the drain window.
fn turn_in(window: Duration) -> DrainTurn {
    let millis = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let at = if millis == 0 {
        0
    } else {
        rand::random_range(0..millis)
    };
    DrainTurn {
        after: Duration::from_millis(at),
    }
}

/// Held by an authenticated session: one of its user's connections.
pub struct UserSlot {
    inner: Arc<Inner>,
    user: UserId,
}

impl Connections {
    pub fn new(limits: ConnectionLimits, metrics: Metrics) -> Self {
        let per_ip = NonZeroU32::new(limits.connections_per_ip_per_second).map(|rate| {
            let burst = NonZeroU32::new(limits.connection_burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let sends = NonZeroU32::new(limits.messages_per_minute)
            .map(|n| RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)));
        Self {
            inner: Arc::new(Inner {
                limits,
                metrics,
                live: watch::Sender::new(0),
                per_user: Mutex::new(HashMap::new()),
                sessions: Mutex::new(Sessions::default()),
                per_ip,
                sends,
                checks: AtomicU64::new(0),
            }),
        }
    }

    /// Decides whether `req` may open a WebSocket; on success the connection counts as open
    /// until the returned guard is dropped.
    pub fn admit(&self, req: &HttpRequest) -> Result<Live, Refusal> {
        let result = self.check(req);
        if let Err(refusal) = &result {
            self.inner
                .metrics
                .limit_rejections
                .with_label_values(&[refusal.label()])
                .inc();
        }
        result
    }

    /// The address `req` counts as coming from: its TCP peer, or the client behind a trusted
    /// proxy (`server.trusted_proxies`).
    pub fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        self.inner.limits.trusted_proxies.client_ip(req)
    }

    fn check(&self, req: &HttpRequest) -> Result<Live, Refusal> {
        let inner = &self.inner;
        if !inner.limits.allowed_origins.is_empty()
            && let Some(origin) = req.headers().get(header::ORIGIN)
            && !inner
                .limits
                .allowed_origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
        {
            return Err(Refusal::Origin);
        }
        if self.is_draining() {
            return Err(Refusal::Draining);
        }
        if let (Some(limiter), Some(client)) = (&inner.per_ip, self.client_ip(req)) {
            self.sweep();
            if let Err(not_until) = limiter.check_key(&rate_key(client)) {
                let retry_after = not_until.wait_time_from(DefaultClock::default().now());
                return Err(Refusal::RateLimited { retry_after });
            }
        }
        let mut admitted = false;
        inner.live.send_modify(|n| {
            if *n < inner.limits.max_connections {
                *n += 1;
                admitted = true;
            }
        });
        if !admitted {
            return Err(Refusal::Full);
        }
        inner.metrics.connections_open.inc();
        inner.metrics.connections_total.inc();
        Ok(Live {
            inner: inner.clone(),
            session: None,
        })
    }

    /// Counts an authenticated connection of `user`; `None` when the user already has
    /// `limits.max_connections_per_user` here.
    pub fn attach_user(&self, user: &UserId) -> Option<UserSlot> {
        let inner = &self.inner;
        let mut per_user = inner.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_user.entry(user.clone()).or_default();
        if *n >= inner.limits.max_connections_per_user {
            drop(per_user);
            inner
                .metrics
                .limit_rejections
                .with_label_values(&["max_connections_per_user"])
                .inc();
            return None;
        }
        *n += 1;
        inner.metrics.sessions_authenticated.inc();
        Some(UserSlot {
            inner: inner.clone(),
            user: user.clone(),
        })
    }

    /// Takes `count` messages from `user`'s per-minute quota; `Err(wait)` when it is exhausted
    /// (then nothing is taken).
    pub fn take_sends(&self, user: &UserId, count: usize) -> Result<(), Duration> {
        let Some(limiter) = &self.inner.sends else {
            return Ok(());
        };
        self.sweep();
        let n =
            NonZeroU32::new(u32::try_from(count).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let refused = match limiter.check_key_n(user, n) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => not_until.wait_time_from(DefaultClock::default().now()),
            // More messages in one call than the whole quota: never possible; wait a minute.
            Err(_) => Duration::from_secs(60),
        };
        self.inner
            .metrics
            .limit_rejections
            .with_label_values(&["messages_per_minute"])
            .inc();
        Err(refused)
    }

    /// Drops idle entries of the keyed limiters now and then.
    fn sweep(&self) {
        if self.inner.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            if let Some(l) = &self.inner.per_ip {
                l.retain_recent();
            }
            if let Some(l) = &self.inner.sends {
                l.retain_recent();
            }
        }
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        *self.inner.live.borrow()
    }

    pub fn is_draining(&self) -> bool {
        self.inner.sessions().window.is_some()
    }

    /// Starts the drain: new connections are refused, and every session is sent its
    /// [`DrainTurn`], a random point within `window` at which it closes with 4006 (after its
    /// in-flight requests are answered). Starting it again changes nothing.
    pub fn start_drain(&self, window: Duration) {
        let mut sessions = self.inner.sessions();
        if sessions.window.is_some() {
            return;
        }
        sessions.window = Some(window);
        for session in std::mem::take(&mut sessions.by_key).into_values() {
            session.do_send(turn_in(window));
        }
    }

    /// Resolves once no connection is open.
    pub fn idle(&self) -> impl Future<Output = ()> + 'static {
        let mut rx = self.inner.live.subscribe();
        async move {
            // An error means the registry is gone, which also means no connection is left.
            let _ = rx.wait_for(|n| *n == 0).await;
        }
    }
}

impl Inner {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // The map stays consistent whatever panicked while holding the lock.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Live {
    /// Lets the drain reach this connection's session: `session` is sent its [`DrainTurn`]
    /// when the drain starts, or now if it has started already. Until the guard is dropped.
    pub fn register(&mut self, session: Recipient<DrainTurn>) {
        let mut sessions = self.inner.sessions();
        if let Some(window) = sessions.window {
            drop(sessions);
            session.do_send(turn_in(window));
            return;
        }
        let key = sessions.next;
        sessions.next += 1;
        sessions.by_key.insert(key, session);
        self.session = Some(key);
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(key) = self.session {
            self.inner.sessions().by_key.remove(&key);
        }
        self.inner.live.send_modify(|n| *n = n.saturating_sub(1));
        self.inner.metrics.connections_open.dec();
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut per_user = self
            .inner
            .per_user
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(&self.user);
            }
        }
        self.inner.metrics.sessions_authenticated.dec();
    }
}

#[cfg(test)]
#[path = "connections_tests.rs"]
mod tests;
