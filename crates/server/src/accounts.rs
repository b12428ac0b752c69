//! Wiring of authentication: the token key mode, Google sign-in, and revocations (the in-memory
//! list every instance keeps, its periodic reload, and the revoke operation itself).

use actix::Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;
use titan_delivery::{RevokeUser, Router};
use titan_protocol::UserId;
use titan_session::jwks::{JwksCache, JwksSource};
use titan_session::{Accounts, Authenticator, GoogleConfig, GoogleVerifier, TokenScope};
use titan_store::{Bus, BusEvent, RevocationList, StoreError, Users, unix_ms};
use tracing::{info, warn};

use crate::config::Config;
use crate::{ServerError, secret};

/// Bound on one request to `auth.jwks_url`.
const JWKS_HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the key of public-key mode could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read auth.jwt_public_key from {path}: {source}")]
pub struct PublicKeyError {
    path: PathBuf,
    source: std::io::Error,
}

/// The token minter/verifier for this configuration (shared with `titan-server token`).
pub fn authenticator(config: &Config) -> Result<Authenticator, ServerError> {
    let a = &config.auth;
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let scope = TokenScope {
        issuer: non_empty(&a.issuer),
        audience: non_empty(&a.audience),
    };
    if !a.jwks_url.is_empty() {
        let keys = JwksCache::new(
            JwksSource::Url(a.jwks_url.clone()),
            JWKS_HTTP_TIMEOUT,
            a.jwks_min_refresh,
        )?;
        return Ok(Authenticator::jwks(Arc::new(keys), scope, a.token_ttl));
    }
    if !a.jwt_public_key.is_empty() {
        let pem = if a.jwt_public_key.trim_start().starts_with("-----BEGIN") {
            a.jwt_public_key.as_bytes().to_vec()
        } else {
            let path = PathBuf::from(&a.jwt_public_key);
            std::fs::read(&path).map_err(|source| PublicKeyError { path, source })?
        };
        return Ok(Authenticator::public_key(&pem, scope, a.token_ttl)?);
    }
    let secret = secret::load_or_generate(&a.jwt_secret, &config.store.path)?;
    Ok(Authenticator::hs256_scoped(&secret, scope, a.token_ttl)?)
}

/// The Google verifier, when `auth.google.client_ids` enables it.
pub fn google(config: &Config) -> Result<Option<Arc<GoogleVerifier>>, ServerError> {
    let g = &config.auth.google;
    if g.client_ids.is_empty() {
        return Ok(None);
    }
    let verifier = GoogleVerifier::new(GoogleConfig {
        issuer: g.issuer.clone(),
        client_ids: g.client_ids.clone(),
        http_timeout: g.http_timeout,
        jwks_min_refresh: g.jwks_min_refresh,
    })?;
    Ok(Some(Arc::new(verifier)))
}

/// Builds the sessions' [`Accounts`], with every stored revocation loaded.
pub async fn accounts(config: &Config, users: Arc<dyn Users>) -> Result<Accounts, ServerError> {
    let revocations = Arc::new(RevocationList::default());
    reload(&revocations, users.as_ref()).await?;
    Ok(Accounts {
        google: google(config)?,
        users,
        revocations,
    })
}

/// Reads every revocation into `list`; returns those that were news.
async fn reload(
    list: &RevocationList,
    users: &dyn Users,
) -> Result<Vec<(UserId, u64)>, StoreError> {
    let mut news = Vec::new();
    for (user, at) in users.revocations().await? {
        let at_ms = unix_ms(at);
        if list.record(&user, at_ms) {
            news.push((user, at_ms));
        }
    }
    Ok(news)
}

/// Reloads the revocations every `auth.revocation_refresh`, closing the live sessions of users
/// whose revocation this instance had missed (a lost broadcast). Runs until the system stops.
pub fn keep_revocations_current(config: &Config, accounts: &Accounts, router: Addr<Router>) {
    let every = config.auth.revocation_refresh;
    let (list, users) = (accounts.revocations.clone(), accounts.users.clone());
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            match reload(&list, users.as_ref()).await {
                Ok(news) => {
                    for (user, at_ms) in news {
                        info!(%user, "revocation found on reload");
                        router.do_send(RevokeUser { user, at_ms });
                    }
                }
                Err(e) => warn!(error = %e, "cannot reload revocations; retrying"),
            }
        }
    });
}

/// Revokes every token of `user` issued before now: stored first, then announced to every
/// instance (through the bus) or to this one's router. Returns the revocation time in ms.
pub async fn revoke(
    users: &dyn Users,
    bus: Option<&dyn Bus>,
    router: Option<&Addr<Router>>,
    user: &UserId,
) -> Result<u64, StoreError> {
    let now = SystemTime::now();
    users.revoke(user, now).await?;
    let at_ms = unix_ms(now);
    if let Some(bus) = bus {
        bus.broadcast(&BusEvent::Revoked {
            user: user.clone(),
            at_ms,
        })
        .await?;
    } else if let Some(router) = router {
        router.do_send(RevokeUser {
            user: user.clone(),
            at_ms,
        });
    }
    info!(%user, "tokens revoked");
    Ok(at_ms)
}
