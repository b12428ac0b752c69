//! Verifying Google ID tokens (OpenID Connect) for `auth.google`.
//!
//! The issuer's discovery document (`<issuer>/.well-known/openid-configuration`) names the JWKS
//! URL; its `issuer` must equal the configured one exactly. The JWKS is cached and fetched again
//! only when a token names a key id (`kid`) the cache does not hold (Google rotates its keys),
//! and then at most once per [`GoogleConfig::jwks_min_refresh`], so a flood of tokens with
//! made-up key ids cannot turn into a flood of requests to Google. One fetch runs at a time;
//! concurrent sign-ins wait for it rather than fetching again.
//!
//! A token is accepted when its RS256 signature verifies with the JWKS key of its `kid`, `iss`
//! is the issuer, `aud` is one of `auth.google.client_ids` (Android, iOS and web clients have
//! different ids), `exp` is in the future (60 s of clock skew allowed), and `email_verified`
//! is true.
//!
//! Built on reqwest and jsonwebtoken rather than the `openidconnect` crate: verifying an ID token
//! needs only the two fields of the discovery document and a JWKS, which jsonwebtoken (already
//! Titan's JWT library) handles, while openidconnect would add a second JOSE stack, the oauth2
//! crate and `rsa 0.9` (RUSTSEC-2023-0071) for nothing this code uses.

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use titan_store::SignInProfile;
use tokio::sync::Mutex;
use tracing::{info, warn};

/// Clock skew allowed on `exp` (and `iat`/`nbf`) of provider tokens.
const LEEWAY_SECS: u64 = 60;

/// What `auth.google` needs to know.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// `https://accounts.google.com`, or a test's loopback issuer.
    pub issuer: String,
    /// Accepted `aud` values. Empty: `auth.google` is disabled.
    pub client_ids: Vec<String>,
    /// Bound on one HTTP request to the provider.
    pub http_timeout: Duration,
    /// Least time between two JWKS fetches triggered by unknown key ids.
    pub jwks_min_refresh: Duration,
}

/// Why a Google ID token was refused. Everything but [`SignInError::Unavailable`] is the
/// token's fault; messages say what was wrong and never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("Google ID token expired")]
    Expired,
    #[error("Google ID token is for another application (audience not accepted)")]
    WrongAudience,
    #[error("Google ID token is from another issuer")]
    WrongIssuer,
    #[error("Google account email is not verified")]
    UnverifiedEmail,
    #[error("Google ID token is signed with an unknown signing key")]
    UnknownKey,
    #[error("Google ID token has a bad signature")]
    BadSignature,
    #[error("Google ID token algorithm {alg} not accepted, only RS256")]
    WrongAlgorithm { alg: String },
    #[error("malformed Google ID token: {reason}")]
    Malformed { reason: String },
    #[error("identity provider unavailable: {reason}")]
    Unavailable { reason: String },
}

/// The discovery document fields used here.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The ID token claims used here.
#[derive(Deserialize)]
struct IdClaims {
    sub: String,
    #[serde(default)]
    email: Option<String>,
    /// A boolean, or (in some older Google tokens) the string "true".
    #[serde(default)]
    email_verified: Option<Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    picture: Option<String>,
}

/// The cached keys.
#[derive(Default)]
struct Keys {
    jwks_uri: Option<String>,
    by_kid: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

/// See the module docs.
pub struct GoogleVerifier {
    config: GoogleConfig,
    http: reqwest::Client,
    validation: Validation,
    keys: Mutex<Keys>,
}

impl std::fmt::Debug for GoogleVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleVerifier")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GoogleVerifier {
    pub fn new(config: GoogleConfig) -> Result<Self, SignInError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout)
            .build()
            .map_err(|e| SignInError::Unavailable {
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.client_ids);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(Self {
            config,
            http,
            validation,
            keys: Mutex::new(Keys::default()),
        })
    }

    /// Verifies `id_token` and returns who signed in.
    pub async fn verify(&self, id_token: &str) -> Result<SignInProfile, SignInError> {
        let header = jsonwebtoken::decode_header(id_token).map_err(|e| match e.kind() {
            ErrorKind::InvalidAlgorithmName => SignInError::WrongAlgorithm {
                alg: "unsupported".to_owned(),
            },
            _ => SignInError::Malformed {
                reason: "not a JWT".to_owned(),
            },
        })?;
        if header.alg != Algorithm::RS256 {
            return Err(SignInError::WrongAlgorithm {
                alg: format!("{:?}", header.alg),
            });
        }
        let kid = header.kid.ok_or_else(|| SignInError::Malformed {
            reason: "no key id (kid) in the header".to_owned(),
        })?;
        let key = self.key(&kid).await?;
        let data = jsonwebtoken::decode::<IdClaims>(id_token, &key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => SignInError::Expired,
                ErrorKind::InvalidAudience => SignInError::WrongAudience,
                ErrorKind::InvalidIssuer => SignInError::WrongIssuer,
                ErrorKind::InvalidSignature => SignInError::BadSignature,
                other => SignInError::Malformed {
                    reason: format!("{other:?}"),
                },
            },
        )?;
        let claims = data.claims;
        let verified = match &claims.email_verified {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        let email = claims.email.filter(|e| !e.is_empty());
        let (Some(email), true) = (email, verified) else {
            return Err(SignInError::UnverifiedEmail);
        };
        Ok(SignInProfile {
            issuer: self.config.issuer.clone(),
            subject: claims.sub,
            email,
            name: claims.name,
            picture: claims.picture,
        })
    }

    /// The key of `kid`, fetching the JWKS when it is unknown and the last fetch is old enough.
    async fn key(&self, kid: &str) -> Result<DecodingKey, SignInError> {
        let mut keys = self.keys.lock().await;
        if let Some(key) = keys.by_kid.get(kid) {
            return Ok(key.clone());
        }
        let recent = keys
            .fetched_at
            .is_some_and(|at| at.elapsed() < self.config.jwks_min_refresh);
        if recent {
            return Err(SignInError::UnknownKey);
        }
        self.refresh(&mut keys).await?;
        keys.by_kid.get(kid).cloned().ok_or(SignInError::UnknownKey)
    }

    /// Fetches the discovery document (once) and the JWKS, replacing the cached keys.
    async fn refresh(&self, keys: &mut Keys) -> Result<(), SignInError> {
        let jwks_uri = match &keys.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let doc: Discovery = self.get_json(&url).await?;
                if doc.issuer != self.config.issuer {
                    warn!(configured = %self.config.issuer, discovered = %doc.issuer, "discovery issuer mismatch");
                    return Err(SignInError::Unavailable {
                        reason: "the provider's discovery document names another issuer".to_owned(),
                    });
                }
                keys.jwks_uri = Some(doc.jwks_uri.clone());
                doc.jwks_uri
            }
        };
        let set: JwkSet = self.get_json(&jwks_uri).await?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), AlgorithmParameters::RSA(_)) = (&jwk.common.key_id, &jwk.algorithm)
            else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    by_kid.insert(kid.clone(), key);
                }
                Err(e) => warn!(%kid, error = %e, "ignoring an unreadable JWKS key"),
            }
        }
        info!(keys = by_kid.len(), "identity provider keys fetched");
        keys.by_kid = by_kid;
        keys.fetched_at = Some(Instant::now());
        Ok(())
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, SignInError> {
        let unavailable = |what: String| {
            warn!(%url, reason = %what, "identity provider request failed");
            SignInError::Unavailable { reason: what }
        };
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| unavailable(format!("request failed: {e}")))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("answered {}", response.status())));
        }
        response
            .json::<T>()
            .await
            .map_err(|e| unavailable(format!("unreadable answer: {e}")))
    }
}
