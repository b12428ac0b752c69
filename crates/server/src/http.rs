//! HTTP routes: the WebSocket endpoint (`GET /` and `GET /ws`), the chat page on a plain `GET /`
//! (its assets and the dev token endpoint are in [`crate::page`]), liveness and readiness probes.

use actix_web::{HttpRequest, HttpResponse, Responder, http::header, web};
use std::sync::Arc;
use std::time::Duration;
use titan_session::SessionDeps;
use titan_store::Inbox;

/// The store handle the readiness probe pings.
#[derive(Clone)]
pub struct Readiness {
    pub inbox: Arc<dyn Inbox>,
    pub timeout: Duration,
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

/// `GET /readyz`: 200 when the store answers within its timeout, 503 otherwise (a load balancer
/// then sends new clients elsewhere; connected sessions stay open).
async fn readyz(ready: web::Data<Readiness>) -> impl Responder {
    match tokio::time::timeout(ready.timeout, ready.inbox.ping()).await {
        Ok(Ok(())) => HttpResponse::Ok()
            .content_type("text/plain")
            .body("ready\n"),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body(format!("not ready: {e}\n")),
        Err(_) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("not ready: store did not answer in time\n"),
    }
}
