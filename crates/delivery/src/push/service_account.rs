//! Google OAuth2 for FCM: the service-account key file, and the access token obtained with an
//! RS256-signed assertion (the JWT bearer grant), cached and shared by every send.
//!
//! The cache is behind an async mutex held while fetching, so a burst of sends that find no
//! valid token waits for ONE fetch instead of each posting its own assertion.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

use super::provider::PushError;
use crate::error::DeliveryError;

/// The OAuth2 scope FCM HTTP v1 needs.
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Lifetime asked for in the assertion (Google's maximum).
const ASSERTION_TTL: Duration = Duration::from_secs(3600);
/// A cached token is replaced this long before it expires, so no send uses one that expires
/// in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(120);

/// The fields of a Google service-account key file that Titan uses.
#[derive(Deserialize)]
struct KeyFile {
    client_email: String,
    private_key: String,
    token_uri: String,
    project_id: String,
}

/// A loaded service account: who signs, where tokens come from, which project sends.
pub struct ServiceAccount {
    pub client_email: String,
    pub token_uri: String,
    pub project_id: String,
    key: EncodingKey,
}

impl std::fmt::Debug for ServiceAccount {
    /// Hides the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// Reads and checks the key file: every field present, the private key an RSA PEM key.
    pub fn load(path: &Path) -> Result<Self, DeliveryError> {
        let invalid = |reason: String| DeliveryError::PushSetup {
            reason: format!("push.fcm.service_account_file {}: {reason}", path.display()),
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|e| invalid(format!("not a service-account key file: {e}")))?;
        let key = EncodingKey::from_rsa_pem(file.private_key.as_bytes())
            .map_err(|e| invalid(format!("private_key is not an RSA PEM key: {e}")))?;
        if !(file.token_uri.starts_with("https://") || file.token_uri.starts_with("http://")) {
            return Err(invalid("token_uri is not an http(s) URL".to_owned()));
        }
        if file.project_id.is_empty() || file.client_email.is_empty() {
            return Err(invalid(
                "project_id and client_email must be set".to_owned(),
            ));
        }
        Ok(Self {
            client_email: file.client_email,
            token_uri: file.token_uri,
            project_id: file.project_id,
            key,
        })
    }

    /// A signed assertion asking for an FCM access token.
    fn assertion(&self) -> Result<String, PushError> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat: now,
            exp: now + ASSERTION_TTL.as_secs(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key).map_err(|e| {
            PushError::Auth {
                reason: format!("cannot sign the FCM assertion: {e}"),
            }
        })
    }
}

/// A token from the token endpoint.
#[derive(Clone)]
struct Cached {
    token: String,
    refresh_at: Instant,
}

/// The shared access-token cache of one FCM provider.
pub struct AccessTokens {
    account: ServiceAccount,
    http: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

impl AccessTokens {
    pub fn new(account: ServiceAccount, http: reqwest::Client) -> Self {
        Self {
            account,
            http,
            cached: Mutex::new(None),
        }
    }

    pub fn project_id(&self) -> &str {
        &self.account.project_id
    }

    /// A valid access token: the cached one, or a fresh one fetched by exactly one caller.
    pub async fn get(&self) -> Result<String, PushError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets `stale` (FCM refused it with 401) unless it was already replaced.
    pub async fn invalidate(&self, stale: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == stale) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<Cached, PushError> {
        let assertion = self.account.assertion()?;
        let started = Instant::now();
        let response = self
            .http
            .post(&self.account.token_uri)
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| PushError::Retry {
                after: None,
                reason: format!("FCM token endpoint unreachable: {e}"),
            })?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(PushError::Retry {
                after: super::fcm::retry_after(response.headers()),
                reason: format!("FCM token endpoint answered {status}"),
            });
        }
        if !status.is_success() {
            // The body names the OAuth error (invalid_grant...), never a secret.
            let body = response.text().await.unwrap_or_default();
            return Err(PushError::Auth {
                reason: format!(
                    "FCM token endpoint refused the assertion ({status}): {}",
                    body.chars().take(300).collect::<String>()
                ),
            });
        }
        let token: TokenResponse = response.json().await.map_err(|e| PushError::Retry {
            after: None,
            reason: format!("unreadable FCM token response: {e}"),
        })?;
        let lifetime = Duration::from_secs(token.expires_in).saturating_sub(REFRESH_MARGIN);
        tracing::debug!(expires_in = token.expires_in, "FCM access token fetched");
        Ok(Cached {
            token: token.access_token,
            refresh_at: started + lifetime,
        })
    }
}
