//! Verifying Google ID tokens (OpenID Connect) for `auth.google`.
//!
//! Built on the `openidconnect` crate, so the ID-token validation rules of OpenID Connect Core
//! (§3.1.3.7: issuer, audiences, signature algorithm and key selection by `kid`, expiry) come
//! from a maintained implementation of the spec instead of hand-written checks. The issuer's
//! discovery document (`<issuer>/.well-known/openid-configuration`) is fetched once, lazily, at
//! the first sign-in, and retried at the next sign-in when the provider was down; its `issuer`
//! must equal the configured one exactly. The JWKS comes with it and is cached; it is fetched
//! again only for an unknown key id (Google rotates its keys), at most once per
//! [`GoogleConfig::jwks_min_refresh`], so made-up key ids cannot flood the provider.
//!
//! A token is accepted when its RS256 signature verifies with the JWKS key of its `kid`, `iss`
//! is the issuer, `aud` contains one of `auth.google.client_ids` (Android, iOS and web clients
//! have different ids; any other audience in `aud` must be one of them too), `exp` is in the
//! future (60 s of clock skew allowed), and `email_verified` is true. No nonce is required: the
//! ID tokens of Google's mobile sign-in SDKs carry none, and Titan never started the flow.
//!
//! HTTP: openidconnect ships a client only for reqwest 0.12, so it is built without default
//! features and Titan's reqwest 0.13 is plugged in through [`Http`], an `AsyncHttpClient` that
//! runs each `http::Request` through a reqwest client with redirects disabled and
//! `auth.google.http_timeout` on every request.
//!
//! Security note: openidconnect depends on `rsa 0.9`, flagged by RUSTSEC-2023-0071 (a timing
//! side channel that can leak an RSA *private* key while decrypting or signing). Titan only
//! verifies signatures with the provider's public keys and never holds an RSA private key in
//! this code, so the advisory does not apply.

use openidconnect::core::{
    CoreIdToken, CoreIdTokenClaims, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AsyncHttpClient, ClaimsVerificationError, ClientId, DiscoveryError, HttpRequest, HttpResponse,
    IssuerUrl, JsonWebKeySetUrl, Nonce, SignatureVerificationError,
};
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};
use titan_store::SignInProfile;
use tracing::{info, warn};

/// Clock skew allowed on `exp` of provider tokens.
const LEEWAY_SECS: i64 = 60;

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

/// One verifier per configured client id, all over the same cached JWKS. openidconnect checks
/// that `aud` contains *its* client id, so a token is tried against each in turn (an audience
/// mismatch is found before any signature work).
type Verifiers = Vec<CoreIdTokenVerifier<'static>>;

/// What the (one at a time) provider requests know.
#[derive(Default)]
struct Fetch {
    /// From the discovery document, once fetched.
    jwks_uri: Option<JsonWebKeySetUrl>,
    /// When the JWKS was last fetched successfully.
    last: Option<Instant>,
}

/// See the module docs.
pub struct GoogleVerifier {
    config: GoogleConfig,
    issuer: IssuerUrl,
    http: Http,
    /// `None` until the discovery document and the JWKS were fetched.
    verifiers: RwLock<Option<Arc<Verifiers>>>,
    /// Held across each provider request, so concurrent sign-ins wait for one fetch.
    fetch: tokio::sync::Mutex<Fetch>,
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
        let issuer =
            IssuerUrl::new(config.issuer.clone()).map_err(|e| SignInError::Unavailable {
                reason: format!("invalid issuer URL: {e}"),
            })?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout)
            .build()
            .map_err(|e| SignInError::Unavailable {
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(Self {
            config,
            issuer,
            http: Http(client),
            verifiers: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(Fetch::default()),
        })
    }

    /// Verifies `id_token` and returns who signed in.
    pub async fn verify(&self, id_token: &str) -> Result<SignInProfile, SignInError> {
        let token = CoreIdToken::from_str(id_token).map_err(|_| SignInError::Malformed {
            reason: "not a JWT with ID token claims".to_owned(),
        })?;
        let alg = match token.signing_alg() {
            Ok(CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256) => None,
            Ok(other) => Some(alg_name(other)),
            Err(SignatureVerificationError::NoSignature) => Some("none".to_owned()),
            Err(_) => Some("JWE".to_owned()),
        };
        if let Some(alg) = alg {
            return Err(SignInError::WrongAlgorithm { alg });
        }
        let mut verifiers = self.current_or_discover().await?;
        let Some(probe) = verifiers.first() else {
            return Err(SignInError::WrongAudience);
        };
        if let Err(SignatureVerificationError::NoMatchingKey) = token.signing_key(probe) {
            verifiers = self.refresh(&verifiers).await?;
        }
        let claims = accepted_claims(&token, &verifiers)?;
        let (Some(email), Some(true)) = (claims.email(), claims.email_verified()) else {
            return Err(SignInError::UnverifiedEmail);
        };
        if email.is_empty() {
            return Err(SignInError::UnverifiedEmail);
        }
        Ok(SignInProfile {
            issuer: self.config.issuer.clone(),
            subject: claims.subject().to_string(),
            email: email.to_string(),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string()),
            picture: claims
                .picture()
                .and_then(|p| p.get(None))
                .map(|p| p.to_string()),
        })
    }

    fn current(&self) -> Option<Arc<Verifiers>> {
        // A poisoned lock only means a writer panicked between whole-value replacements.
        self.verifiers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The verifiers, fetching the discovery document and the JWKS the first time (and again
    /// after a failed first time).
    async fn current_or_discover(&self) -> Result<Arc<Verifiers>, SignInError> {
        if let Some(verifiers) = self.current() {
            return Ok(verifiers);
        }
        let mut fetch = self.fetch.lock().await;
        if let Some(verifiers) = self.current() {
            return Ok(verifiers);
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| unavailable("discovery", &e))?;
        fetch.jwks_uri = Some(metadata.jwks_uri().clone());
        fetch.last = Some(Instant::now());
        info!(keys = metadata.jwks().keys().len(), issuer = %self.config.issuer, "identity provider discovered");
        Ok(self.install(metadata.jwks()))
    }

    /// After a token named an unknown key id: fetches the JWKS again unless another sign-in just
    /// did, or the last fetch is more recent than `jwks_min_refresh`.
    async fn refresh(&self, seen: &Arc<Verifiers>) -> Result<Arc<Verifiers>, SignInError> {
        let fetch = &mut *self.fetch.lock().await;
        match self.current() {
            Some(current) if !Arc::ptr_eq(&current, seen) => return Ok(current),
            _ => {}
        }
        if fetch
            .last
            .is_some_and(|at| at.elapsed() < self.config.jwks_min_refresh)
        {
            return Ok(seen.clone());
        }
        // Set together with the first verifiers, which `seen` is or follows.
        let Some(jwks_uri) = &fetch.jwks_uri else {
            return Ok(seen.clone());
        };
        let jwks = CoreJsonWebKeySet::fetch_async(jwks_uri, &self.http)
            .await
            .map_err(|e| unavailable("JWKS", &e))?;
        fetch.last = Some(Instant::now());
        info!(keys = jwks.keys().len(), issuer = %self.config.issuer, "signing keys fetched");
        Ok(self.install(&jwks))
    }

    /// Builds the verifiers over `jwks` and makes them current.
    fn install(&self, jwks: &CoreJsonWebKeySet) -> Arc<Verifiers> {
        let trusted: Arc<[String]> = self.config.client_ids.clone().into();
        let verifiers: Arc<Verifiers> = Arc::new(
            self.config
                .client_ids
                .iter()
                .map(|id| {
                    let trusted = trusted.clone();
                    CoreIdTokenVerifier::new_public_client(
                        ClientId::new(id.clone()),
                        self.issuer.clone(),
                        jwks.clone(),
                    )
                    .set_other_audience_verifier_fn(move |aud| {
                        trusted.iter().any(|t| t.as_str() == aud.as_str())
                    })
                    .set_time_fn(|| chrono::Utc::now() - chrono::TimeDelta::seconds(LEEWAY_SECS))
                })
                .collect(),
        );
        *self
            .verifiers
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(verifiers.clone());
        verifiers
    }
}

/// The claims of `token` once one of `verifiers` accepts it; an audience mismatch moves on to
/// the next client id, any other refusal is final.
fn accepted_claims<'t>(
    token: &'t CoreIdToken,
    verifiers: &Verifiers,
) -> Result<&'t CoreIdTokenClaims, SignInError> {
    for verifier in verifiers {
        match token.claims(verifier, any_nonce) {
            Ok(claims) => return Ok(claims),
            Err(ClaimsVerificationError::InvalidAudience(_)) => continue,
            Err(e) => return Err(refusal(e)),
        }
    }
    Err(SignInError::WrongAudience)
}

/// Accepts any nonce, or none: see the module docs.
fn any_nonce(_: Option<&Nonce>) -> Result<(), String> {
    Ok(())
}

/// The [`SignInError`] for openidconnect's reason to refuse a token.
fn refusal(e: ClaimsVerificationError) -> SignInError {
    match e {
        ClaimsVerificationError::Expired(_) => SignInError::Expired,
        ClaimsVerificationError::InvalidAudience(_) => SignInError::WrongAudience,
        ClaimsVerificationError::InvalidIssuer(_) => SignInError::WrongIssuer,
        ClaimsVerificationError::SignatureVerification(e) => match e {
            SignatureVerificationError::NoMatchingKey
            | SignatureVerificationError::InvalidKey(_) => SignInError::UnknownKey,
            SignatureVerificationError::CryptoError(_) => SignInError::BadSignature,
            SignatureVerificationError::DisallowedAlg(_)
            | SignatureVerificationError::UnsupportedAlg(_) => SignInError::WrongAlgorithm {
                alg: "other than RS256".to_owned(),
            },
            SignatureVerificationError::NoSignature => SignInError::WrongAlgorithm {
                alg: "none".to_owned(),
            },
            SignatureVerificationError::AmbiguousKeyId(_) => SignInError::Malformed {
                reason: "no key id (kid) naming one signing key".to_owned(),
            },
            other => SignInError::Malformed {
                reason: other.to_string(),
            },
        },
        // Unsupported header fields (`typ`, `cty`, `crit`), a refused nonce, acr or auth_time.
        other => SignInError::Malformed {
            reason: other.to_string(),
        },
    }
}

/// `ES256`, `HS256`...: the JOSE name of `alg`.
fn alg_name(alg: &CoreJwsSigningAlgorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{alg:?}"))
}

/// A provider request failed: a temporary error (the provider may come back).
fn unavailable(what: &str, e: &DiscoveryError<reqwest::Error>) -> SignInError {
    let mut reason = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        reason.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    warn!(issuer_request = what, %reason, "identity provider request failed");
    SignInError::Unavailable { reason }
}

/// Titan's reqwest client as openidconnect's HTTP client (see the module docs).
struct Http(reqwest::Client);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, reqwest::Error>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let response = self.0.execute(request.try_into()?).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?.to_vec();
            let mut answer = HttpResponse::new(body);
            *answer.status_mut() = status;
            *answer.headers_mut() = headers;
            Ok(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    /// A verifier whose issuer is never contacted: these tokens are refused before any request.
    fn verifier() -> GoogleVerifier {
        GoogleVerifier::new(GoogleConfig {
            issuer: "http://127.0.0.1:9".to_owned(),
            client_ids: vec!["app".to_owned()],
            http_timeout: Duration::from_secs(1),
            jwks_min_refresh: Duration::ZERO,
        })
        .unwrap()
    }

    fn token(alg: &str) -> String {
        let part = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = json!({"iss": "http://127.0.0.1:9", "aud": "app", "sub": "s",
            "iat": 1_700_000_000, "exp": 4_000_000_000_u64});
        format!(
            "{}.{}.{}",
            part(json!({"alg": alg, "kid": "k1"})),
            part(claims),
            URL_SAFE_NO_PAD.encode(b"sig")
        )
    }

    /// Symmetric and unsigned tokens are refused as such, before the provider is asked.
    #[tokio::test]
    async fn only_rs256_is_accepted() {
        let v = verifier();
        for (alg, expected) in [("HS256", "HS256"), ("ES256", "ES256"), ("none", "none")] {
            match v.verify(&token(alg)).await {
                Err(SignInError::WrongAlgorithm { alg }) => assert_eq!(alg, expected),
                other => panic!("{alg}: {other:?}"),
            }
        }
    }

    /// Strings that are not ID tokens are malformed, not a provider problem.
    #[tokio::test]
    async fn garbage_is_malformed() {
        let v = verifier();
        for garbage in ["not-a-jwt", "a.b.c", ""] {
            let result = v.verify(garbage).await;
            assert!(
                matches!(result, Err(SignInError::Malformed { .. })),
                "{garbage}: {result:?}"
            );
        }
    }

    /// Each openidconnect refusal maps to the sign-in error that names it.
    #[test]
    fn refusals_map_to_precise_errors() {
        let sig = ClaimsVerificationError::SignatureVerification;
        let cases = [
            (
                ClaimsVerificationError::Expired("x".into()),
                SignInError::Expired,
            ),
            (
                ClaimsVerificationError::InvalidAudience("x".into()),
                SignInError::WrongAudience,
            ),
            (
                ClaimsVerificationError::InvalidIssuer("x".into()),
                SignInError::WrongIssuer,
            ),
            (
                sig(SignatureVerificationError::NoMatchingKey),
                SignInError::UnknownKey,
            ),
            (
                sig(SignatureVerificationError::CryptoError("x".into())),
                SignInError::BadSignature,
            ),
        ];
        for (e, expected) in cases {
            assert_eq!(refusal(e), expected);
        }
        assert!(matches!(
            refusal(sig(SignatureVerificationError::DisallowedAlg("x".into()))),
            SignInError::WrongAlgorithm { .. }
        ));
        assert!(matches!(
            refusal(ClaimsVerificationError::Unsupported("crit".into())),
            SignInError::Malformed { .. }
        ));
    }
}
