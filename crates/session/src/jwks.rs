//! A cached JSON Web Key Set: the keys of an app backend that mints Titan tokens
//! (`auth.jwks_url`), by key id. (`auth.google` has its own, through openidconnect: see
//! [`crate::google`].)
//!
//! Reading a key is synchronous (a lock and a map lookup), so token checks stay synchronous.
//! Keys are fetched on demand only: when a token names a key id the cache does not hold (the
//! signer rotated its keys), and then at most once per `min_refresh`, so a flood of tokens with
//! made-up key ids cannot become a flood of requests to the key server. One fetch runs at a
//! time; concurrent callers wait for it instead of fetching again.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// Where the key set comes from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A JWKS URL.
    Url(String),
}

/// Why the keys could not be fetched. Temporary: the key server may come back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key server unavailable: {reason}")]
pub struct FetchError {
    pub reason: String,
}

/// One usable key: what it decodes and the one algorithm it is for.
#[derive(Clone)]
pub struct Key {
    pub decoding: DecodingKey,
    pub algorithm: Algorithm,
}

/// See the module docs.
pub struct JwksCache {
    source: JwksSource,
    http: reqwest::Client,
    min_refresh: Duration,
    keys: RwLock<HashMap<String, Key>>,
    /// When the keys were last fetched.
    fetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for JwksCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksCache")
            .field("source", &self.source)
            .field("min_refresh", &self.min_refresh)
            .finish_non_exhaustive()
    }
}

impl JwksCache {
    /// `timeout` bounds each HTTP request.
    pub fn new(
        source: JwksSource,
        timeout: Duration,
        min_refresh: Duration,
    ) -> Result<Self, FetchError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| FetchError {
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            source,
            http,
            min_refresh,
            keys: RwLock::new(HashMap::new()),
            fetch: Mutex::new(None),
        })
    }

    /// The cached key of `kid`.
    pub fn get(&self, kid: &str) -> Option<Key> {
        // A poisoned lock only means a writer panicked between whole-map replacements.
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        keys.get(kid).cloned()
    }

    /// Makes sure `kid` is cached if the key server has it: fetches the set unless the key is
    /// already there or the last fetch is more recent than `min_refresh`. `Ok(false)`: unknown.
    pub async fn load(&self, kid: &str) -> Result<bool, FetchError> {
        let mut fetch = self.fetch.lock().await;
        if self.get(kid).is_some() {
            return Ok(true);
        }
        if fetch.is_some_and(|at| at.elapsed() < self.min_refresh) {
            return Ok(false);
        }
        let JwksSource::Url(url) = &self.source;
        let set: JwkSet = self.get_json(url).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => continue,
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(decoding) => {
                    keys.insert(
                        kid.clone(),
                        Key {
                            decoding,
                            algorithm,
                        },
                    );
                }
                Err(e) => warn!(%kid, error = %e, "ignoring an unreadable JWKS key"),
            }
        }
        info!(keys = keys.len(), %url, "signing keys fetched");
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = keys;
        *fetch = Some(Instant::now());
        Ok(self.get(kid).is_some())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, FetchError> {
        let fail = |reason: String| {
            warn!(%url, %reason, "key server request failed");
            FetchError { reason }
        };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| fail(format!("request failed: {e}")))?;
        if !response.status().is_success() {
            return Err(fail(format!("answered {}", response.status())));
        }
        response
            .json::<T>()
            .await
            .map_err(|e| fail(format!("unreadable answer: {e}")))
    }
}
