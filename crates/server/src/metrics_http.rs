//! `GET /metrics` (Prometheus text format) and `GET /debug/vars` (the same figures as one JSON
//! object, plus the old Go server's counter names for anyone who scraped them): on the main
//! listener, or, with `server.metrics_listen`, on a [`MetricsServer`] of their own.

use actix_web::dev::ServerHandle;
use actix_web::{HttpResponse, Responder, web};
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use titan_delivery::Metrics;

/// The two routes on a listener of their own (`server.metrics_listen`), one worker.
pub struct MetricsServer {
    handle: ServerHandle,
}

impl MetricsServer {
    /// Binds `addr` and serves; an address that cannot be bound stops the server's start.
    pub fn start(addr: SocketAddr, metrics: Metrics) -> std::io::Result<Self> {
        let metrics = web::Data::new(metrics);
        let listener = std::net::TcpListener::bind(addr)?;
        let handle = crate::aside::serve(listener, move |cfg| {
            cfg.app_data(metrics.clone());
            routes(cfg);
        })?;
        tracing::info!(%addr, "metrics listening");
        Ok(Self { handle })
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// Registers the two routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/debug/vars", web::get().to(debug_vars));
}

async fn metrics(metrics: web::Data<Metrics>) -> impl Responder {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&metrics.registry().gather(), &mut body) {
        Ok(()) => HttpResponse::Ok()
            .content_type(encoder.format_type())
            .body(body),
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}

async fn debug_vars(metrics: web::Data<Metrics>) -> impl Responder {
    HttpResponse::Ok().json(vars(&metrics))
}

/// Every family by name: a number for an unlabelled counter or gauge, an object keyed by
/// `label=value,...` for labelled ones, `{count, sum}` for histograms. Then the old names.
pub fn vars(metrics: &Metrics) -> Value {
    let mut out = Map::new();
    for family in metrics.registry().gather() {
        out.insert(family.name().to_owned(), family_value(&family));
    }
    let number = |name: &str| out.get(name).and_then(Value::as_f64).unwrap_or(0.0);
    let requests: f64 = out
        .get("titan_rpc_requests_total")
        .and_then(Value::as_object)
        .map_or(0.0, |m| m.values().filter_map(Value::as_f64).sum());
    let old = json!({
        "conns": number("titan_connections_open"),
        "requests": requests,
        "queue-length": number("titan_inbox_depth"),
        "users": number("titan_online_users"),
    });
    if let Value::Object(old) = old {
        out.extend(old);
    }
    Value::Object(out)
}

fn family_value(family: &MetricFamily) -> Value {
    let kind = family.get_field_type();
    let one = |m: &prometheus::proto::Metric| match kind {
        MetricType::COUNTER => json!(m.get_counter().get_value()),
        MetricType::GAUGE => json!(m.get_gauge().get_value()),
        MetricType::HISTOGRAM => {
            let h = m.get_histogram();
            json!({ "count": h.get_sample_count(), "sum": h.get_sample_sum() })
        }
        _ => Value::Null,
    };
    let metrics = family.get_metric();
    match metrics {
        [m] if m.get_label().is_empty() => one(m),
        _ => Value::Object(
            metrics
                .iter()
                .map(|m| {
                    let key = m
                        .get_label()
                        .iter()
                        .map(|l| format!("{}={}", l.name(), l.value()))
                        .collect::<Vec<_>>()
                        .join(",");
                    (key, one(m))
                })
                .collect(),
        ),
    }
}
