//! The browser side served by Titan itself: the chat page (`GET /` without an upgrade), the
//! JavaScript client module (`GET /titan.js`), the page's own script (`GET /chat.js`) and
//! stylesheet, and the local-only dev token endpoint (`POST /dev/token`, when `auth.dev_tokens`
//! is on).
//!
//! The files live in `crates/server/static/` and are compiled into the binary, so the page works
//! from any working directory and needs no build step.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::Arc;
use titan_protocol::UserId;
use titan_session::{Authenticator, TrustedProxies};

const INDEX_HTML: &str = include_str!("../static/index.html");
const TITAN_JS: &str = include_str!("../static/titan.js");
const CHAT_JS: &str = include_str!("../static/chat.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

/// What the dev token endpoint needs: whether it is on, and the minter.
#[derive(Clone)]
pub struct DevTokens {
    /// `auth.dev_tokens`.
    pub enabled: bool,
    pub auth: Arc<Authenticator>,
    /// `server.trusted_proxies`: a request through a trusted proxy counts as coming from the
    /// client it names, so a proxy on this machine does not make every client local.
    pub proxies: TrustedProxies,
}

/// Body of `POST /dev/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevTokenRequest {
    pub user: String,
}

/// Answer of `POST /dev/token`.
#[derive(Debug, Serialize)]
pub struct DevTokenResponse {
    pub user: String,
    pub token: String,
}

/// Registers the page, its assets and the dev token endpoint (the `/` route itself is in
/// [`crate::http`], which shares it with the WebSocket upgrade).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/titan.js", web::get().to(titan_js))
        .route("/chat.js", web::get().to(chat_js))
        .route("/style.css", web::get().to(style_css))
        .route("/dev/token", web::post().to(dev_token));
}

/// What the chat page may load and who may frame it: its own scripts, styles and connections
/// only (it has no inline script or style), no plugins, no `<base>`, and no framing, so that a
/// token typed or minted in the page cannot be read by an injected script or a framing site.
/// `img-src data:` is the empty favicon.
const PAGE_POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                           base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The chat page. Revalidated on every load so a restarted (upgraded) server is picked up.
pub fn index() -> HttpResponse {
    let mut page = asset("text/html; charset=utf-8", INDEX_HTML);
    let headers = page.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(PAGE_POLICY),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    page
}

async fn titan_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", TITAN_JS)
}

async fn chat_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", CHAT_JS)
}

async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// `POST /dev/token` with `{"user":"alice"}`: a token for that user, minted with the server's
/// secret. Exists only when `auth.dev_tokens` is on AND the client is a loopback address (the
/// TCP peer, or the client a trusted proxy names: `server.trusted_proxies`);
/// otherwise it answers 404 whatever the body, as if the route did not exist. A JSON content type
/// is required, so a foreign web page cannot mint a token with a "simple" cross-origin request
/// (and, without CORS headers, could not read the answer anyway).
async fn dev_token(req: HttpRequest, dev: web::Data<DevTokens>, body: web::Bytes) -> HttpResponse {
    if !dev_tokens_served(dev.enabled, dev.proxies.client_ip(&req)) {
        return HttpResponse::NotFound()
            .content_type("text/plain")
            .body("not found\n");
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !is_json {
        return json_error(
            HttpResponse::UnsupportedMediaType(),
            "send {\"user\":\"name\"} as application/json",
        );
    }
    let request: DevTokenRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return json_error(HttpResponse::BadRequest(), &format!("bad body: {e}")),
    };
    let user = match UserId::new(request.user) {
        Ok(user) => user,
        Err(e) => return json_error(HttpResponse::BadRequest(), &e.to_string()),
    };
    match dev.auth.mint(&user, None, None) {
        Ok(token) => {
            tracing::info!(%user, "minted a dev token");
            HttpResponse::Ok().json(DevTokenResponse {
                user: user.to_string(),
                token,
            })
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot mint a dev token");
            json_error(HttpResponse::InternalServerError(), "cannot mint a token")
        }
    }
}

/// Whether `POST /dev/token` exists for this peer: only when enabled, and only for a loopback
/// TCP peer (an unknown peer, such as a Unix socket, gets nothing).
fn dev_tokens_served(enabled: bool, client: Option<IpAddr>) -> bool {
    enabled && client.is_some_and(|ip| ip.is_loopback())
}

/// The body of every error answer of `POST /dev/token`.
#[derive(Debug, Serialize)]
struct DevTokenError<'a> {
    error: &'a str,
}

fn json_error(mut builder: actix_web::HttpResponseBuilder, message: &str) -> HttpResponse {
    builder.json(DevTokenError { error: message })
}

#[cfg(test)]
mod tests {
    use super::dev_tokens_served;

    /// Dev tokens are served only when enabled and only to loopback clients (v4 and v6).
    #[test]
    fn dev_tokens_only_for_loopback_when_enabled() {
        let client = |s: &str| Some(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")));
        assert!(dev_tokens_served(true, client("127.0.0.1")));
        assert!(dev_tokens_served(true, client("::1")));
        assert!(!dev_tokens_served(false, client("127.0.0.1")));
        assert!(!dev_tokens_served(true, client("192.0.2.7")));
        assert!(!dev_tokens_served(true, client("2001:db8::1")));
        assert!(!dev_tokens_served(true, None));
    }
}
