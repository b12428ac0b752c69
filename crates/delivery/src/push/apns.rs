//! The APNs provider, through the `a2` crate with token (`.p8`) authentication. `a2` renews the
//! provider token itself and always talks to Apple's hosts (it cannot be pointed at a mock), so
//! the payloads and the error mapping are unit-tested here on a2's own types.

use a2::request::payload::{Payload, PayloadLike};
use a2::{
    CollapseId, Endpoint, ErrorReason, NotificationBuilder, NotificationOptions, Priority, PushType,
};
use async_trait::async_trait;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use titan_protocol::{Message, PushPlatform};

use super::provider::{COLLAPSE_KEY, Notification, PAYLOAD_LIMIT, PushError, PushProvider, Sent};
use crate::error::DeliveryError;

/// How the APNs provider is set up (`[push.apns]`).
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    /// The `.p8` signing key (PKCS#8 PEM, P-256) from the Apple developer account.
    pub key_file: PathBuf,
    pub key_id: String,
    pub team_id: String,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// Apple's development environment instead of production.
    pub sandbox: bool,
    /// How long APNs keeps trying an undelivered notification (`apns-expiration`): the inbox
    /// retention, after which the message itself is gone.
    pub expiration: Duration,
    /// Bound on one request to APNs (whole seconds, at least 1: a2's unit).
    pub request_timeout: Duration,
}

/// Sends through APNs.
pub struct ApnsProvider {
    client: a2::Client,
    topic: String,
    expiration: Duration,
}

impl ApnsProvider {
    /// Reads the key and builds the client; fails naming the file when the key is unusable.
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
        let pem = std::fs::read(&config.key_file).map_err(|e| {
            setup(format!(
                "push.apns.key_file {}: {e}",
                config.key_file.display()
            ))
        })?;
        let endpoint = if config.sandbox {
            Endpoint::Sandbox
        } else {
            Endpoint::Production
        };
        let client = a2::Client::token(
            pem.as_slice(),
            config.key_id.clone(),
            config.team_id.clone(),
            a2::ClientConfig {
                request_timeout_secs: Some(config.request_timeout.as_secs().max(1)),
                ..a2::ClientConfig::new(endpoint)
            },
        )
        .map_err(|e| {
            setup(format!(
                "push.apns.key_file {} is not a usable .p8 key: {e}",
                config.key_file.display()
            ))
        })?;
        tracing::info!(topic = %config.topic, sandbox = config.sandbox, "APNs push enabled");
        Ok(Self {
            client,
            topic: config.topic.clone(),
            expiration: config.expiration,
        })
    }
}

#[async_trait]
impl PushProvider for ApnsProvider {
    fn platform(&self) -> PushPlatform {
        PushPlatform::Apns
    }

    async fn send(&self, notification: &Notification) -> Result<Sent, PushError> {
        let expires = SystemTime::now() + self.expiration;
        let expires = expires
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let token = notification.token.as_str();
        let (payload, sent) = payload(token, notification.content.as_ref(), &self.topic, expires);
        match self.client.send(payload).await {
            Ok(_) => Ok(sent),
            Err(e) => Err(classify(e)),
        }
    }
}

/// The a2 payload for one notification: the message as an alert (title = sender, body = text)
/// plus `titan` data {id, from, time} when it fits 4096 bytes, else the content-free form with
/// the collapse id.
pub fn payload<'a>(
    token: &'a str,
    content: Option<&'a Message>,
    topic: &'a str,
    expires_unix: u64,
) -> (Payload<'a>, Sent) {
    if let Some(message) = content {
        let p = build(token, topic, expires_unix, Some(message));
        let fits = p
            .to_json_string()
            .is_ok_and(|json| json.len() <= PAYLOAD_LIMIT);
        if fits {
            return (p, Sent::Content);
        }
    }
    (build(token, topic, expires_unix, None), Sent::ContentFree)
}

fn build<'a>(
    token: &'a str,
    topic: &'a str,
    expires_unix: u64,
    message: Option<&'a Message>,
) -> Payload<'a> {
    let collapse = match message {
        Some(_) => None,
        // The constant is 18 bytes, under a2's 64-byte limit, so this is always Some.
        None => CollapseId::new(COLLAPSE_KEY).ok(),
    };
    let options = NotificationOptions {
        apns_push_type: Some(PushType::Alert),
        apns_priority: Some(Priority::High),
        apns_expiration: Some(expires_unix),
        apns_topic: Some(topic),
        apns_collapse_id: collapse,
        ..NotificationOptions::default()
    };
    let builder = a2::DefaultNotificationBuilder::new()
        .set_sound("default")
        .set_mutable_content();
    let (builder, data) = match message {
        Some(m) => (
            builder.set_title(m.from.as_str()).set_body(&m.message),
            json!({"type": "message", "id": m.id.as_str(), "from": m.from.as_str(), "time": m.time}),
        ),
        None => (
            builder.set_body("New messages"),
            json!({"type": "new_messages"}),
        ),
    };
    let mut payload = builder.build(token, options);
    payload.data.insert("titan", data);
    payload
}

/// Maps a2's errors onto what the pusher does next.
pub fn classify(error: a2::Error) -> PushError {
    match error {
        a2::Error::ResponseError(response) => {
            let code = response.code;
            let Some(body) = response.error else {
                return by_status(code, "no reason given".to_owned());
            };
            let reason = format!("{code} {:?}", body.reason);
            match body.reason {
                ErrorReason::Unregistered => PushError::Unregistered {
                    at: body
                        .timestamp
                        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
                },
                ErrorReason::BadDeviceToken | ErrorReason::DeviceTokenNotForTopic => {
                    PushError::BadToken { reason }
                }
                ErrorReason::TooManyRequests
                | ErrorReason::InternalServerError
                | ErrorReason::ServiceUnavailable
                | ErrorReason::Shutdown
                | ErrorReason::IdleTimeout
                | ErrorReason::ExpiredProviderToken
                | ErrorReason::TooManyProviderTokenUpdates => PushError::Retry {
                    after: None,
                    reason,
                },
                ErrorReason::InvalidProviderToken
                | ErrorReason::MissingProviderToken
                | ErrorReason::BadCertificate
                | ErrorReason::BadCertificateEnvironment
                | ErrorReason::Forbidden
                | ErrorReason::TopicDisallowed
                | ErrorReason::BadTopic => PushError::Auth { reason },
                _ => PushError::Invalid { reason },
            }
        }
        a2::Error::ConnectionError(_)
        | a2::Error::ClientError(_)
        | a2::Error::RequestTimeout(_) => PushError::Retry {
            after: None,
            reason: error.to_string(),
        },
        a2::Error::SignerError(_) => PushError::Auth {
            reason: error.to_string(),
        },
        other => PushError::Invalid {
            reason: other.to_string(),
        },
    }
}

fn by_status(code: u16, reason: String) -> PushError {
    match code {
        410 => PushError::Unregistered { at: None },
        429 | 500..=599 => PushError::Retry {
            after: None,
            reason: format!("{code}: {reason}"),
        },
        _ => PushError::Invalid {
            reason: format!("{code}: {reason}"),
        },
    }
}

#[cfg(test)]
#[path = "apns_tests.rs"]
mod tests;
