//! The admin endpoint of a server on the embedded store, for `titan-server revoke`.
//!
//! The embedded database is locked by the running server, so the CLI cannot write a revocation
//! into it. Instead the server binds an HTTP endpoint on 127.0.0.1 (a free port), generates a
//! random bearer token, and writes both to `<store.path>/admin.json` (mode 0600). The CLI,
//! run by whoever can read the data directory (who could read the database anyway), reads that
//! file and calls `POST /admin/revoke/<user>`. Nothing is reachable from outside the host, and
//! nothing is configured. The file is removed at a clean shutdown.

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, dev::ServerHandle, http::header, web};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use titan_delivery::Router;
use titan_protocol::UserId;
use titan_store::Users;
use tracing::{info, warn};

/// File name of the endpoint description inside `store.path`.
pub const ADMIN_FILE: &str = "admin.json";

/// What `admin.json` holds.
#[derive(Serialize, Deserialize)]
pub struct AdminEndpoint {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub token: String,
}

struct State {
    token: String,
    users: Arc<dyn Users>,
    router: Addr<Router>,
}

/// A running admin endpoint; [`Admin::stop`] ends it and removes its file.
pub struct Admin {
    handle: ServerHandle,
    file: PathBuf,
}

impl Admin {
    /// Binds on 127.0.0.1, writes `dir/admin.json` and serves.
    pub fn start(dir: &Path, users: Arc<dyn Users>, router: Addr<Router>) -> std::io::Result<Self> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| std::io::Error::other(e.to_string()))?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let state = web::Data::new(State {
            token: token.clone(),
            users,
            router,
        });
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let handle = crate::aside::serve(listener, move |cfg| {
            cfg.app_data(state.clone())
                .route("/admin/revoke/{user}", web::post().to(revoke));
        })?;
        let file = dir.join(ADMIN_FILE);
        let endpoint = AdminEndpoint {
            url: format!("http://{addr}"),
            token,
        };
        write_private(&file, &serde_json::to_vec(&endpoint)?)?;
        info!(%addr, file = %file.display(), "admin endpoint ready (loopback only)");
        Ok(Self { handle, file })
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        if let Err(e) = std::fs::remove_file(&self.file) {
            warn!(error = %e, "cannot remove the admin endpoint file");
        }
    }
}

/// Writes `bytes` to `path`, readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `POST /admin/revoke/{user}` with `Authorization: Bearer <token>`.
async fn revoke(
    req: HttpRequest,
    user: web::Path<String>,
    state: web::Data<State>,
) -> HttpResponse {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !same_token(presented, &state.token) {
        return HttpResponse::Unauthorized().body("bad admin token\n");
    }
    let user = match UserId::new(user.into_inner()) {
        Ok(user) => user,
        Err(e) => return HttpResponse::BadRequest().body(format!("invalid user: {e}\n")),
    };
    match crate::accounts::revoke(state.users.as_ref(), None, Some(&state.router), &user).await {
        Ok(at_ms) => {
            HttpResponse::Ok().json(serde_json::json!({ "user": user, "revoked_before_ms": at_ms }))
        }
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("cannot revoke: {e}\n")),
    }
}
