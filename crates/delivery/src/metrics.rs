//! [`Metrics`]: every Prometheus family Titan exports, in one registry per server.
//!
//! Defined here, in the lowest crate that records into it, so the dispatcher, the router, the
//! instrumented store, the sessions (one crate up) and the HTTP exposition (two up) share one
//! set of handles. Cloning is cheap (an `Arc`); recording is lock-free atomics. Each server
//! owns its own registry (not the process-global default one), so tests that run several
//! servers in one process see only their own figures.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use titan_protocol::{ClientCommand, UserId};
use titan_store::{Appended, Delivered, Inbox};

/// How often the dispatcher samples `titan_messages_in_flight` and `titan_inbox_depth`.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// Most users whose inbox depth one sample asks the store for (one store call each), so a busy
/// instance's sample stays cheap; the gauge then covers this many of the users online here.
pub const MAX_DEPTH_SAMPLE: usize = 1000;

/// Latency buckets (seconds) for delivery and store operations: 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Buckets of `titan_store_checkpoint_seconds` and `titan_store_journal_sync_seconds`: a tenth
/// of a millisecond to a few milliseconds is the useful range (docs/benchmarks.md), finer than
/// request latencies.
const PAUSE_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Handles to every family; see [`Families`] for each figure's meaning.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Families>,
}

/// The metric families. Names and labels are part of the operations contract (the Grafana
/// dashboard in `docker/` and README.md name them).
pub struct Families {
    registry: Registry,
    /// `titan_connections_open`: WebSocket connections open now.
    pub connections_open: IntGauge,
    /// `titan_connections_total`: WebSocket connections accepted since start.
    pub connections_total: IntCounter,
    /// `titan_sessions_authenticated`: open connections that have authenticated.
    pub sessions_authenticated: IntGauge,
    /// `titan_online_users`: users with at least one live device on this instance.
    pub online_users: IntGauge,
    /// `titan_online_devices`: (user, device) pairs live on this instance.
    pub online_devices: IntGauge,
    /// `titan_messages_accepted_total`: messages stored by `msg.send` here (duplicates of a
    /// client id not counted).
    pub messages_accepted: IntCounter,
    /// `titan_messages_delivered_total`: messages sent in `msg.recv` (first sends and resends).
    pub messages_delivered: IntCounter,
    /// `titan_messages_acked_total`: messages acknowledged by devices.
    pub messages_acked: IntCounter,
    /// `titan_messages_redelivered_total`: messages sent again (ack timeout or reconnect).
    pub messages_redelivered: IntCounter,
    /// `titan_accept_to_deliver_seconds`: store acceptance to first `msg.recv`.
    pub accept_to_deliver: Histogram,
    /// `titan_deliver_to_ack_seconds`: `msg.recv` sent to its acknowledgement.
    pub deliver_to_ack: Histogram,
    /// `titan_messages_in_flight`: sent and not yet acknowledged, over the devices online here.
    pub messages_in_flight: IntGauge,
    /// `titan_inbox_depth`: undelivered plus unacknowledged messages of the users online here
    /// (sampled; see the dispatcher).
    pub inbox_depth: IntGauge,
    /// `titan_store_operation_seconds{op}`: store call latency.
    pub store_seconds: HistogramVec,
    /// `titan_store_errors_total{op}`: failed store calls.
    pub store_errors: IntCounterVec,
    /// `titan_store_checkpoint_seconds`: how long each checkpoint of the embedded store stopped
    /// its writer (no store call is answered meanwhile; the commit itself runs beside it).
    pub store_checkpoint: Histogram,
    /// `titan_store_journal_sync_seconds`: how long each `fdatasync` of the embedded store's
    /// journal took (every `msg.send` is answered after one: the disk's share of its latency).
    pub store_journal_sync: Histogram,
    /// `titan_push_sends_total{provider,outcome}`: push notifications attempted.
    pub push_sends: IntCounterVec,
    /// `titan_auth_failures_total{reason}`: refused authentications.
    pub auth_failures: IntCounterVec,
    /// `titan_rpc_requests_total{method,code}`: client requests answered, `code` = `ok` or the
    /// JSON-RPC error code.
    pub rpc_requests: IntCounterVec,
    /// `rpc_requests{method, code="ok"}` for each of [`ClientCommand::METHODS`], looked up on
    /// first use: a request answered with success (nearly all of them) then costs one atomic add
    /// instead of hashing its labels under the family's lock (4 % of a session worker at
    /// 50,000 msg/s). A series still appears only once a request of its method succeeds.
    rpc_ok: [OnceLock<IntCounter>; ClientCommand::METHODS.len()],
    /// `titan_connections_closed_total{code}`: connections closed by the server, per close code.
    pub closes: IntCounterVec,
    /// `titan_slow_consumer_closes_total`: connections closed with 4003.
    pub slow_consumer_closes: IntCounter,
    /// `titan_limit_rejections_total{limit}`: connections or requests refused by a limit.
    pub limit_rejections: IntCounterVec,
    /// `titan_tls_reloads_total{outcome}`: TLS certificate reloads on SIGHUP, `ok` or `failed`
    /// (the previous certificate is still served).
    pub tls_reloads: IntCounterVec,
}

impl Deref for Metrics {
    type Target = Families;

    fn deref(&self) -> &Families {
        &self.inner
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Families {
    /// Counts a successful answer to a request of method `ClientCommand::METHODS[method]`.
    pub fn rpc_ok(&self, method: usize) {
        let (Some(name), Some(slot)) =
            (ClientCommand::METHODS.get(method), self.rpc_ok.get(method))
        else {
            return;
        };
        slot.get_or_init(|| self.rpc_requests.with_label_values(&[name, "ok"]))
            .inc();
    }
}

impl Metrics {
    /// A fresh registry holding every family.
    pub fn new() -> Self {
        let registry = Registry::new();
        let families = Families {
            connections_open: gauge(
                &registry,
                "titan_connections_open",
                "Open WebSocket connections",
            ),
            connections_total: counter(
                &registry,
                "titan_connections_total",
                "WebSocket connections accepted",
            ),
            sessions_authenticated: gauge(
                &registry,
                "titan_sessions_authenticated",
                "Authenticated connections",
            ),
            online_users: gauge(
                &registry,
                "titan_online_users",
                "Users online on this instance",
            ),
            online_devices: gauge(
                &registry,
                "titan_online_devices",
                "Devices online on this instance",
            ),
            messages_accepted: counter(
                &registry,
                "titan_messages_accepted_total",
                "Messages stored by msg.send",
            ),
            messages_delivered: counter(
                &registry,
                "titan_messages_delivered_total",
                "Messages sent in msg.recv",
            ),
            messages_acked: counter(
                &registry,
                "titan_messages_acked_total",
                "Messages acknowledged",
            ),
            messages_redelivered: counter(
                &registry,
                "titan_messages_redelivered_total",
                "Messages sent again",
            ),
            accept_to_deliver: histogram(
                &registry,
                "titan_accept_to_deliver_seconds",
                "Store acceptance to first msg.recv",
            ),
            deliver_to_ack: histogram(
                &registry,
                "titan_deliver_to_ack_seconds",
                "msg.recv to its acknowledgement",
            ),
            messages_in_flight: gauge(
                &registry,
                "titan_messages_in_flight",
                "Messages sent and not acknowledged",
            ),
            inbox_depth: gauge(
                &registry,
                "titan_inbox_depth",
                "Pending messages of the users online here",
            ),
            store_seconds: histogram_vec(
                &registry,
                "titan_store_operation_seconds",
                "Store operation latency",
                &["op"],
            ),
            store_errors: counter_vec(
                &registry,
                "titan_store_errors_total",
                "Failed store operations",
                &["op"],
            ),
            store_checkpoint: histogram_with(
                &registry,
                "titan_store_checkpoint_seconds",
                "Time each embedded-store checkpoint stopped the store's writer",
                PAUSE_BUCKETS,
            ),
            store_journal_sync: histogram_with(
                &registry,
                "titan_store_journal_sync_seconds",
                "Time each fdatasync of the embedded store's journal took",
                PAUSE_BUCKETS,
            ),
            tls_reloads: counter_vec(
                &registry,
                "titan_tls_reloads_total",
                "TLS certificate reloads on SIGHUP",
                &["outcome"],
            ),
            push_sends: counter_vec(
                &registry,
                "titan_push_sends_total",
                "Push notifications attempted",
                &["provider", "outcome"],
            ),
            auth_failures: counter_vec(
                &registry,
                "titan_auth_failures_total",
                "Refused authentications",
                &["reason"],
            ),
            rpc_requests: counter_vec(
                &registry,
                "titan_rpc_requests_total",
                "JSON-RPC requests answered",
                &["method", "code"],
            ),
            rpc_ok: Default::default(),
            closes: counter_vec(
                &registry,
                "titan_connections_closed_total",
                "Connections closed by the server",
                &["code"],
            ),
            slow_consumer_closes: counter(
                &registry,
                "titan_slow_consumer_closes_total",
                "Connections closed as slow consumers",
            ),
            limit_rejections: counter_vec(
                &registry,
                "titan_limit_rejections_total",
                "Connections or requests refused by a limit",
                &["limit"],
            ),
            registry,
        };
        Self {
            inner: Arc::new(families),
        }
    }

    /// The registry, for exposition.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Counts the messages an append stored (a client id's duplicate is not a new message).
    pub fn record_accepted(&self, appended: &[Appended]) {
        let stored = appended
            .iter()
            .filter(|a| matches!(a, Appended::Stored { .. }))
            .count();
        self.messages_accepted.inc_by(stored as u64);
    }

    /// Counts messages handed to a session; a first send also observes the time since the store
    /// accepted it (its position's millisecond is the acceptance time).
    pub fn record_delivery(&self, redelivery: bool, messages: &[Delivered]) {
        self.messages_delivered.inc_by(messages.len() as u64);
        if redelivery {
            self.messages_redelivered.inc_by(messages.len() as u64);
            return;
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for d in messages {
            let ms = now_ms.saturating_sub(d.position.ms);
            self.accept_to_deliver.observe(ms as f64 / 1000.0);
        }
    }

    /// Records one push attempt (`outcome` such as `sent`, `failed`, `invalid_token`).
    pub fn record_push(&self, provider: &str, outcome: &str) {
        self.push_sends
            .with_label_values(&[provider, outcome])
            .inc();
    }
}

/// The summed inbox depth of (at most [`MAX_DEPTH_SAMPLE`] of) `users`; users whose depth the
/// store could not give count as 0 (the store error is already counted by the instrumented
/// store).
pub async fn sample_depth(store: Arc<dyn Inbox>, users: Vec<UserId>) -> i64 {
    let mut total: u64 = 0;
    for user in users.iter().take(MAX_DEPTH_SAMPLE) {
        total = total.saturating_add(store.depth(user).await.unwrap_or(0));
    }
    i64::try_from(total).unwrap_or(i64::MAX)
}

// The constructors below only fail on an invalid name or a name registered twice; every name is a
// literal above, valid and unique, and the registry is new, so a failure is a programming error
// caught by the first test that builds a `Metrics`.

#[allow(clippy::expect_used)]
fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique literals");
    c
}

#[allow(clippy::expect_used)]
fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::new(name, help).expect("valid metric name"),
    )
}

#[allow(clippy::expect_used)]
fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).expect("valid metric name"),
    )
}

#[allow(clippy::expect_used)]
fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric name"),
    )
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    histogram_with(registry, name, help, LATENCY_BUCKETS)
}

#[allow(clippy::expect_used)]
fn histogram_with(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(
        registry,
        Histogram::with_opts(opts).expect("valid metric name"),
    )
}

#[allow(clippy::expect_used)]
fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    register(
        registry,
        HistogramVec::new(opts, labels).expect("valid metric name"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family registers (no name clash) and shows up once recorded into.
    #[test]
    fn families_register_and_record() {
        let m = Metrics::new();
        m.messages_accepted.inc();
        m.record_push("fcm", "sent");
        let names: Vec<String> = m
            .registry()
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(names.contains(&"titan_messages_accepted_total".to_owned()));
        assert!(names.contains(&"titan_push_sends_total".to_owned()));
    }

    /// `rpc_ok` counts into the same series as the labelled family, and creates a series only
    /// for a method that succeeded; an index off the list counts nothing.
    #[test]
    fn rpc_ok_counts_into_the_labelled_series() {
        let m = Metrics::new();
        let send = ClientCommand::method_index("msg.send").unwrap();
        m.rpc_ok(send);
        m.rpc_ok(send);
        m.rpc_ok(ClientCommand::METHODS.len());
        assert_eq!(
            m.rpc_requests.with_label_values(&["msg.send", "ok"]).get(),
            2
        );
        let series: usize = m
            .registry()
            .gather()
            .iter()
            .filter(|f| f.name() == "titan_rpc_requests_total")
            .map(|f| f.get_metric().len())
            .sum();
        assert_eq!(series, 1);
    }
}
