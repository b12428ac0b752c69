//! `titan-server revoke USER`: reject every token of USER issued before now, on every instance,
//! and close USER's live sessions.
//!
//! - Redis store: the revocation is written to Redis and broadcast on the cluster bus; every
//!   running instance records it and closes the user's sessions. Instances that miss the
//!   broadcast pick it up within `auth.revocation_refresh`.
//! - Embedded store, server running: the database file is locked by the server, so the command
//!   calls the server's loopback admin endpoint (see [`crate::admin`]).
//! - Embedded store, server stopped: the command writes the revocation into the database; the
//!   server loads it at its next start.
//! - Memory store: nothing outlives the process, so there is nothing to revoke from outside.

use std::time::SystemTime;
use titan_protocol::UserId;
use titan_store::{EmbeddedStore, InboxLimits, Users};

use crate::admin::{ADMIN_FILE, AdminEndpoint};
use crate::config::{Backend, Config};
use crate::{ServerError, open_store};

/// Revokes and returns a one-line report for the operator.
pub async fn revoke(config: &Config, user: &UserId) -> Result<String, ServerError> {
    match config.store.backend {
        Backend::Redis => {
            let backends = open_store(config, None).await?;
            let bus = backends.bus.as_deref();
            crate::accounts::revoke(backends.users.as_ref(), bus, None, user).await?;
            Ok(format!(
                "revoked every token of {user} issued before now; running instances were notified"
            ))
        }
        Backend::Memory => Err(ServerError::Revoke(
            "store.backend = \"memory\" keeps nothing outside the server process; there is no \
             revocation to record"
                .to_owned(),
        )),
        Backend::Embedded => {
            let file = config.store.path.join(ADMIN_FILE);
            if let Ok(text) = std::fs::read(&file) {
                let endpoint: AdminEndpoint = serde_json::from_slice(&text).map_err(|e| {
                    ServerError::Revoke(format!("unreadable {}: {e}", file.display()))
                })?;
                match call_admin(&endpoint, user).await {
                    Ok(()) => {
                        return Ok(format!(
                            "revoked every token of {user} issued before now; the running \
                             server closed the user's sessions"
                        ));
                    }
                    // A stale file from a server that crashed: nobody listens any more.
                    Err(AdminCall::Unreachable) => {}
                    Err(AdminCall::Refused(why)) => return Err(ServerError::Revoke(why)),
                }
            }
            let store =
                EmbeddedStore::open(&config.store.path, InboxLimits::default()).map_err(|e| {
                    ServerError::Revoke(format!(
                        "no running server answered and the store cannot be opened: {e}"
                    ))
                })?;
            store.revoke(user, SystemTime::now()).await?;
            Ok(format!(
                "revoked every token of {user} issued before now (no server was running; it \
                 applies from the next start)"
            ))
        }
    }
}

enum AdminCall {
    Unreachable,
    Refused(String),
}

async fn call_admin(endpoint: &AdminEndpoint, user: &UserId) -> Result<(), AdminCall> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| AdminCall::Refused(format!("cannot build the HTTP client: {e}")))?;
    let url = format!(
        "{}/admin/revoke/{}",
        endpoint.url,
        encode_path(user.as_str())
    );
    let response = client
        .post(url)
        .bearer_auth(&endpoint.token)
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                AdminCall::Unreachable
            } else {
                AdminCall::Refused(format!("admin endpoint: {e}"))
            }
        })?;
    if response.status().is_success() {
        return Ok(());
    }
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    Err(AdminCall::Refused(format!(
        "the server refused ({status}): {}",
        body.trim()
    )))
}

/// Percent-encodes a user id for one path segment.
fn encode_path(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
