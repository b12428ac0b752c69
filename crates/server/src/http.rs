//! HTTP routes: the WebSocket endpoint (`GET /` and `GET /ws`), the chat page on a plain `GET /`
//! (its assets and the dev token endpoint are in [`crate::page`]), liveness and readiness probes.
//! The metrics routes ([`crate::metrics_http`]) join them unless `server.metrics_listen` serves
//! them elsewhere.

use actix_web::{HttpRequest, HttpResponse, Responder, http::header, web};
use std::sync::Arc;
use std::time::Duration;
use titan_session::{Connections, SessionDeps};
use titan_store::{Bus, Inbox};

/// What the readiness probe checks: the store, the cluster bus's pub/sub path (with Redis), and
/// the drain.
#[derive(Clone)]
pub struct Readiness {
    pub inbox: Arc<dyn Inbox>,
    pub timeout: Duration,
    pub bus: Option<Arc<dyn Bus>>,
    pub connections: Connections,
}

/// Registers Titan's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/ws", web::get().to(websocket))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .configure(crate::page::routes);
}

fn wants_websocket(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `GET /`: a WebSocket upgrade starts a session; a plain request gets the chat page.
async fn root(
    req: HttpRequest,
    body: web::Payload,
    deps: web::Data<SessionDeps>,
) -> Result<HttpResponse, actix_web::Error> {
    if wants_websocket(&req) {
        return titan_session::start(&req, body, deps.get_ref().clone());
    }
    Ok(crate::page::index())
}

async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    deps: web::Data<SessionDeps>,
) -> Result<HttpResponse, actix_web::Error> {
    titan_session::start(&req, body, deps.get_ref().clone())
}

async fn healthz() -> impl Responder {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// `GET /readyz`: 200 when the store answers within its timeout and, with a cluster bus, a
/// canary published on this instance's own pub/sub channel came back within it; 503 otherwise
/// and while draining (a load balancer then sends new clients elsewhere; connected sessions
/// stay open unless draining).
async fn readyz(ready: web::Data<Readiness>) -> impl Responder {
    match check(&ready).await {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Err(reason) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {reason}\n")),
    }
}

async fn check(ready: &Readiness) -> Result<(), String> {
    if ready.connections.is_draining() {
        return Err("draining".to_owned());
    }
    match tokio::time::timeout(ready.timeout, ready.inbox.ping()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err("store did not answer in time".to_owned()),
    }
    if let Some(bus) = &ready.bus {
        bus.canary(ready.timeout).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}
