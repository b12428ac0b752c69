//! The APNs provider: `POST {api_base}/3/device/{token}` over HTTP/2 (reqwest) with token
//! authentication: an ES256 provider token signed with the `.p8` key ([`ProviderTokens`]).
//!
//! Not through the `a2` crate the design named: a2's endpoint is a closed Production/Sandbox
//! enum behind a private HTTPS-only connector, so it could not be pointed at a loopback mock, and
//! it brought a second rustls (0.22) and `ring` into the build. Here the endpoint comes from
//! config (`push.apns.api_base`), and the push tests run this code against a mock APNs.
//!
//! Every request is HTTP/2 (APNs speaks nothing else): over TLS negotiated as `h2`, and to a
//! plain `http://` base (a test's mock) as HTTP/2 with prior knowledge.
//!
//! Error classification follows Apple's documented reasons, falling back to the status: 410
//! (`Unregistered`, with Apple's timestamp) forgets the token, as do `BadDeviceToken` and
//! `DeviceTokenNotForTopic`; 429 and 5xx retry; `ExpiredProviderToken` signs a new provider
//! token and retries once; other 403s are Titan's credentials refused; other 4xx are not
//! retried.

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use titan_protocol::{Message, PushPlatform};

use super::fcm::retry_after;
use super::provider::{COLLAPSE_KEY, Notification, PAYLOAD_LIMIT, PushError, PushProvider, Sent};
use crate::error::DeliveryError;

/// Apple's production host.
pub const PRODUCTION_API_BASE: &str = "https://api.push.apple.com";
/// Apple's development host.
pub const SANDBOX_API_BASE: &str = "https://api.sandbox.push.apple.com";

/// How long a provider token is used. Apple refuses tokens older than an hour
/// (`ExpiredProviderToken`) and more than one new token per connection every 20 minutes
/// (`TooManyProviderTokenUpdates`).
const PROVIDER_TOKEN_TTL: Duration = Duration::from_secs(50 * 60);

/// How the APNs provider is set up (`[push.apns]`).
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// The `.p8` signing key (PKCS#8 PEM, P-256) from the Apple developer account.
    pub key_file: PathBuf,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// Scheme and host of APNs: [`PRODUCTION_API_BASE`], [`SANDBOX_API_BASE`], or a test's mock.
    pub api_base: String,
    /// How long APNs keeps trying an undelivered notification (`apns-expiration`): the inbox
    /// retention, after which the message itself is gone.
    pub expiration: Duration,
    /// Bound on one request to APNs.
    pub request_timeout: Duration,
}

/// Sends through APNs. One HTTP/2 client (requests multiplexed on its connection) and one
/// provider token serve every send.
pub struct ApnsProvider {
    http: reqwest::Client,
    tokens: ProviderTokens,
    api_base: String,
    topic: String,
    expiration: Duration,
}

impl ApnsProvider {
    /// Reads the key and builds the client; fails naming the file or key when the configuration
    /// cannot work.
    pub fn new(config: &ApnsConfig) -> Result<Self, DeliveryError> {
        let setup = |reason: String| DeliveryError::PushSetup { reason };
        for (key, value) in [
            ("push.apns.key_id", &config.key_id),
            ("push.apns.team_id", &config.team_id),
            ("push.apns.topic", &config.topic),
        ] {
            if value.is_empty() {
                return Err(setup(format!("{key} must be set when APNs is enabled")));
            }
        }
        if HeaderValue::from_str(&config.topic).is_err() {
            return Err(setup(format!(
                "push.apns.topic {:?} is not a bundle id",
                config.topic
            )));
        }
        let base = config.api_base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(setup(format!(
                "push.apns.api_base {base:?} is not an http(s) URL"
            )));
        }
        let pem = std::fs::read(&config.key_file).map_err(|e| {
            setup(format!(
                "push.apns.key_file {}: {e}",
                config.key_file.display()
            ))
        })?;
        let not_a_key = |e: &dyn std::fmt::Display| {
            setup(format!(
                "push.apns.key_file {} is not a usable .p8 key: {e}",
                config.key_file.display()
            ))
        };
        let key = EncodingKey::from_ec_pem(&pem).map_err(|e| not_a_key(&e))?;
        let tokens = ProviderTokens::new(key, &config.key_id, &config.team_id);
        // Signing once now refuses a file that parses as PEM but cannot sign ES256.
        tokens.get().map_err(|e| not_a_key(&e))?;
        let http = reqwest::Client::builder()
            .http2_prior_knowledge()
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| setup(format!("cannot build the APNs HTTP client: {e}")))?;
        tracing::info!(topic = %config.topic, api_base = base, "APNs push enabled");
        Ok(Self {
            http,
            tokens,
            api_base: base.to_owned(),
            topic: config.topic.clone(),
            expiration: config.expiration,
        })
    }

    /// One POST of `request` with the current provider token.
    async fn post(&self, token: &str, request: &Request) -> Result<(), Failure> {
        let bearer = self.tokens.get().map_err(Failure::Push)?;
        let url = format!("{}/3/device/{token}", self.api_base);
        let mut post = self
            .http
            .post(url)
            .header(AUTHORIZATION, format!("bearer {bearer}"))
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            .header("apns-priority", "10")
            .header("apns-expiration", request.expires_unix.to_string());
        if request.collapse {
            post = post.header("apns-collapse-id", COLLAPSE_KEY);
        }
        let response = post.body(request.body.clone()).send().await.map_err(|e| {
            Failure::Push(PushError::Retry {
                after: None,
                reason: format!("APNs unreachable: {e}"),
            })
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = retry_after(response.headers());
        let error: ErrorBody = response.json().await.unwrap_or_default();
        Err(classify(status.as_u16(), after, error, bearer))
    }
}

#[async_trait]
impl PushProvider for ApnsProvider {
    fn platform(&self) -> PushPlatform {
        PushPlatform::Apns
    }

    async fn send(&self, notification: &Notification) -> Result<Sent, PushError> {
        let expires = SystemTime::now() + self.expiration;
        let expires_unix = expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (request, sent) = request(notification.content.as_ref(), expires_unix);
        let token = notification.token.as_str();
        match self.post(token, &request).await {
            Ok(()) => Ok(sent),
            Err(Failure::Push(e)) => Err(e),
            Err(Failure::ExpiredProviderToken { stale }) => {
                self.tokens.invalidate(&stale);
                match self.post(token, &request).await {
                    Ok(()) => Ok(sent),
                    Err(Failure::Push(e)) => Err(e),
                    Err(Failure::ExpiredProviderToken { .. }) => Err(PushError::Auth {
                        reason: "APNs refused a freshly signed provider token as expired (is \
                                 this machine's clock right?)"
                            .to_owned(),
                    }),
                }
            }
        }
    }
}

/// What one notification sends, apart from the device token.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The JSON payload.
    pub body: String,
    /// Sent with `apns-collapse-id` (the content-free form).
    pub collapse: bool,
    /// `apns-expiration`, seconds since the epoch.
    pub expires_unix: u64,
}

/// The request for one notification: the message as an alert (title = sender, body = text)
/// plus `titan` data {type, id, from, time} when the payload fits 4096 bytes, else the
/// content-free form with the collapse id.
pub fn request(content: Option<&Message>, expires_unix: u64) -> (Request, Sent) {
    if let Some(m) = content {
        let body = json!({
            "aps": {"alert": {"title": m.from.as_str(), "body": m.message},
                    "sound": "default", "mutable-content": 1},
            "titan": {"type": "message", "id": m.id.as_str(), "from": m.from.as_str(),
                      "time": m.time},
        })
        .to_string();
        if body.len() <= PAYLOAD_LIMIT {
            let request = Request {
                body,
                collapse: false,
                expires_unix,
            };
            return (request, Sent::Content);
        }
    }
    let body = json!({
        "aps": {"alert": "New messages", "sound": "default", "mutable-content": 1},
        "titan": {"type": "new_messages"},
    })
    .to_string();
    let request = Request {
        body,
        collapse: true,
        expires_unix,
    };
    (request, Sent::ContentFree)
}

/// The body of an APNs error answer.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub reason: String,
    /// With 410: when APNs learned the token was no longer valid, in milliseconds since the epoch.
    #[serde(default)]
    pub timestamp: Option<u64>,
}

/// A failed send: classified, or one whose provider token APNs found expired.
#[derive(Debug)]
pub enum Failure {
    Push(PushError),
    ExpiredProviderToken { stale: String },
}

/// Classifies a non-2xx answer by its reason, else by its status.
pub fn classify(status: u16, after: Option<Duration>, error: ErrorBody, bearer: String) -> Failure {
    let reason = if error.reason.is_empty() {
        format!("{status}: no reason given")
    } else {
        format!("{status} {}", error.reason)
    };
    let e = match (status, error.reason.as_str()) {
        (_, "ExpiredProviderToken") => return Failure::ExpiredProviderToken { stale: bearer },
        (410, _) | (_, "Unregistered" | "ExpiredToken") => PushError::Unregistered {
            at: error
                .timestamp
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        },
        (_, "BadDeviceToken" | "DeviceTokenNotForTopic") => PushError::BadToken { reason },
        (
            _,
            "TooManyRequests"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "Shutdown"
            | "IdleTimeout"
            | "TooManyProviderTokenUpdates",
        )
        | (429 | 500..=599, _) => PushError::Retry { after, reason },
        (403, _) | (_, "BadTopic" | "TopicDisallowed" | "MissingProviderToken") => {
            PushError::Auth { reason }
        }
        _ => PushError::Invalid { reason },
    };
    Failure::Push(e)
}

/// The provider token: an ES256 JWT (`kid` = key id; `iss` = team id, `iat`), signed once and
/// reused for [`PROVIDER_TOKEN_TTL`], shared by every send.
pub struct ProviderTokens {
    key: EncodingKey,
    header: Header,
    team_id: String,
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

impl ProviderTokens {
    pub fn new(key: EncodingKey, key_id: &str, team_id: &str) -> Self {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key_id.to_owned());
        Self {
            key,
            header,
            team_id: team_id.to_owned(),
            cached: Mutex::new(None),
        }
    }

    /// The current token, or a fresh one when it is older than [`PROVIDER_TOKEN_TTL`].
    pub fn get(&self) -> Result<String, PushError> {
        // A panic elsewhere while holding the lock leaves at worst a stale entry, which the
        // age check replaces.
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, signed)) = cached.as_ref()
            && signed.elapsed() < PROVIDER_TOKEN_TTL
        {
            return Ok(token.clone());
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            iss: &self.team_id,
            iat,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| {
            PushError::Auth {
                reason: format!("cannot sign the APNs provider token: {e}"),
            }
        })?;
        *cached = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    /// Forgets `stale` (APNs answered `ExpiredProviderToken`) unless it was already replaced.
    pub fn invalidate(&self, stale: &str) {
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cached.as_ref().is_some_and(|(token, _)| token == stale) {
            *cached = None;
        }
    }
}

#[cfg(test)]
#[path = "apns_tests.rs"]
mod tests;
