//! Verifying Google ID tokens (OpenID Connect) for `auth.google`.
//!
//! The issuer's discovery document (`<issuer>/.well-known/openid-configuration`) names the JWKS
//! URL; its `issuer` must equal the configured one exactly. The keys are a [`JwksCache`]:
//! fetched again only for an unknown key id (Google rotates its keys), at most once per
//! [`GoogleConfig::jwks_min_refresh`].
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

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::Value;
use std::time::Duration;
use titan_store::SignInProfile;

use crate::jwks::{JwksCache, JwksSource};

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

/// See the module docs.
pub struct GoogleVerifier {
    config: GoogleConfig,
    validation: Validation,
    keys: JwksCache,
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
        let keys = JwksCache::new(
            JwksSource::Discovery {
                issuer: config.issuer.clone(),
            },
            config.http_timeout,
            config.jwks_min_refresh,
        )
        .map_err(|e| SignInError::Unavailable { reason: e.reason })?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.client_ids);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(Self {
            config,
            validation,
            keys,
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

    /// The RS256 key of `kid`, fetching the JWKS when it is unknown (and not fetched lately).
    async fn key(&self, kid: &str) -> Result<DecodingKey, SignInError> {
        let key = match self.keys.get(kid) {
            Some(key) => key,
            None => {
                let found = self
                    .keys
                    .load(kid)
                    .await
                    .map_err(|e| SignInError::Unavailable { reason: e.reason })?;
                match (found, self.keys.get(kid)) {
                    (true, Some(key)) => key,
                    _ => return Err(SignInError::UnknownKey),
                }
            }
        };
        if key.algorithm != Algorithm::RS256 {
            return Err(SignInError::UnknownKey);
        }
        Ok(key.decoding)
    }
}
