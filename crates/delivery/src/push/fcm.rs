//! The FCM HTTP v1 provider: `POST {api_base}/v1/projects/{project}/messages:send` with an
//! OAuth2 access token from the service account ([`super::service_account`]).
//!
//! Error classification follows FCM's documented `FcmError` codes, falling back to the HTTP
//! status: `UNREGISTERED`/404 and `SENDER_ID_MISMATCH`/403 forget the token, 429 and 5xx retry
//! (honouring `Retry-After`), 400 `INVALID_ARGUMENT` is not retried, and 401 refreshes the
//! access token once before giving up.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use titan_protocol::{Message, PushPlatform};

use super::provider::{COLLAPSE_KEY, Notification, PAYLOAD_LIMIT, PushError, PushProvider, Sent};
use super::service_account::{AccessTokens, ServiceAccount};
use crate::error::DeliveryError;

/// The real FCM host.
pub const DEFAULT_API_BASE: &str = "https://fcm.googleapis.com";

/// How the FCM provider is set up (`[push.fcm]`).
#[derive(Debug, Clone)]
pub struct FcmConfig {
    /// The Google service-account key file (JSON).
    pub service_account_file: PathBuf,
    /// Scheme and host of the FCM API; tests point it at a loopback mock.
    pub api_base: String,
    /// Bound on one HTTP request (token fetch or send).
    pub request_timeout: Duration,
}

/// Sends through FCM HTTP v1. Cheap to share; one HTTP client (HTTP/2 multiplexed) and one
/// access-token cache serve every send.
pub struct FcmProvider {
    http: reqwest::Client,
    tokens: AccessTokens,
    send_url: String,
}

impl FcmProvider {
    /// Loads the service account and builds the client. Fails with a message naming the file or
    /// key when the configuration cannot work.
    pub fn new(config: &FcmConfig) -> Result<Self, DeliveryError> {
        let account = ServiceAccount::load(&config.service_account_file)?;
        let base = config.api_base.trim_end_matches('/');
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(DeliveryError::PushSetup {
                reason: format!("push.fcm.api_base {base:?} is not an http(s) URL"),
            });
        }
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DeliveryError::PushSetup {
                reason: format!("cannot build the FCM HTTP client: {e}"),
            })?;
        let send_url = format!("{base}/v1/projects/{}/messages:send", account.project_id);
        tracing::info!(project = %account.project_id, "FCM push enabled");
        Ok(Self {
            tokens: AccessTokens::new(account, http.clone()),
            http,
            send_url,
        })
    }

    /// One POST of `body` with the current access token.
    async fn post(&self, body: &Value) -> Result<(), Failure> {
        let access = self.tokens.get().await.map_err(Failure::Push)?;
        let response = self
            .http
            .post(&self.send_url)
            .bearer_auth(&access)
            .json(body)
            .send()
            .await
            .map_err(|e| {
                Failure::Push(PushError::Retry {
                    after: None,
                    reason: format!("FCM unreachable: {e}"),
                })
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let after = retry_after(response.headers());
        let error: Value = response.json().await.unwrap_or(Value::Null);
        Err(classify(status.as_u16(), after, &error, access))
    }
}

/// A failed send: classified, or a 401 whose access token must be refreshed first.
enum Failure {
    Push(PushError),
    Unauthenticated { stale: String },
}

#[async_trait]
impl PushProvider for FcmProvider {
    fn platform(&self) -> PushPlatform {
        PushPlatform::Fcm
    }

    async fn send(&self, notification: &Notification) -> Result<Sent, PushError> {
        let (body, sent) = message_body(notification);
        match self.post(&body).await {
            Ok(()) => Ok(sent),
            Err(Failure::Push(e)) => Err(e),
            Err(Failure::Unauthenticated { stale }) => {
                self.tokens.invalidate(&stale).await;
                match self.post(&body).await {
                    Ok(()) => Ok(sent),
                    Err(Failure::Push(e)) => Err(e),
                    Err(Failure::Unauthenticated { .. }) => Err(PushError::Auth {
                        reason: "FCM refused a freshly fetched access token (401)".to_owned(),
                    }),
                }
            }
        }
    }
}

/// The `messages:send` body: the message as data when it fits, else the content-free form.
pub fn message_body(notification: &Notification) -> (Value, Sent) {
    let token = notification.token.as_str();
    if let Some(message) = &notification.content {
        let data = content_data(message);
        if data_size(&data) <= PAYLOAD_LIMIT {
            let body = json!({"message": {
                "token": token,
                "data": data,
                "android": {"priority": "high"},
            }});
            return (body, Sent::Content);
        }
    }
    let body = json!({"message": {
        "token": token,
        "notification": {"title": "New messages"},
        "data": {"type": "new_messages"},
        "android": {
            "priority": "high",
            "collapse_key": COLLAPSE_KEY,
            "notification": {"tag": COLLAPSE_KEY},
        },
        "apns": {"headers": {"apns-collapse-id": COLLAPSE_KEY}},
        "webpush": {"headers": {"Topic": COLLAPSE_KEY}},
    }});
    (body, Sent::ContentFree)
}

/// FCM data values must be strings.
fn content_data(message: &Message) -> Value {
    json!({
        "type": "message",
        "id": message.id.as_str(),
        "from": message.from.as_str(),
        "time": message.time,
        "message": message.message,
    })
}

/// What FCM counts against its 4096-byte data limit: the keys and values.
fn data_size(data: &Value) -> usize {
    data.as_object().map_or(0, |fields| {
        fields
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum()
    })
}

/// A `Retry-After` given in seconds (FCM never sends the date form).
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// Classifies a non-2xx answer by its `FcmError` code, else by its status.
fn classify(status: u16, after: Option<Duration>, error: &Value, access: String) -> Failure {
    let code = error["error"]["details"]
        .as_array()
        .and_then(|details| details.iter().find_map(|d| d["errorCode"].as_str()))
        .or_else(|| error["error"]["status"].as_str())
        .unwrap_or("")
        .to_owned();
    let reason = {
        let message = error["error"]["message"].as_str().unwrap_or("");
        format!("{status} {code}: {message}")
    };
    let e = match (status, code.as_str()) {
        (_, "UNREGISTERED") | (404, _) => PushError::Unregistered { at: None },
        (_, "SENDER_ID_MISMATCH") => PushError::BadToken { reason },
        (401, _) | (_, "UNAUTHENTICATED") => return Failure::Unauthenticated { stale: access },
        (_, "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL") | (429, _) | (500..=599, _) => {
            PushError::Retry { after, reason }
        }
        (403, _) => PushError::Auth { reason },
        _ => PushError::Invalid { reason },
    };
    Failure::Push(e)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use titan_protocol::{MessageId, PushToken, UserId};

    fn notification(body: &str) -> Notification {
        Notification {
            token: PushToken::new("tok").unwrap(),
            content: Some(Message {
                id: MessageId::new("m1").unwrap(),
                from: UserId::new("alice").unwrap(),
                to: UserId::new("bob").unwrap(),
                time: "2026-01-01T00:00:00.000Z".to_owned(),
                message: body.to_owned(),
            }),
        }
    }

    fn classified(status: u16, body: Value) -> PushError {
        match classify(status, Some(Duration::from_secs(7)), &body, "a".into()) {
            Failure::Push(e) => e,
            Failure::Unauthenticated { .. } => PushError::Auth {
                reason: "401".into(),
            },
        }
    }

    /// A small message travels as data; the exact body FCM receives is pinned.
    #[test]
    fn content_body_golden() {
        let (body, sent) = message_body(&notification("hi"));
        assert_eq!(sent, Sent::Content);
        assert_eq!(
            body,
            json!({"message": {"token": "tok", "data": {"type": "message", "id": "m1",
                "from": "alice", "time": "2026-01-01T00:00:00.000Z", "message": "hi"},
                "android": {"priority": "high"}}})
        );
    }

    /// Over 4 KiB of data, or without content, the content-free form with a collapse key goes.
    #[test]
    fn large_or_private_messages_go_content_free() {
        let (body, sent) = message_body(&notification(&"x".repeat(4096)));
        assert_eq!(sent, Sent::ContentFree);
        assert_eq!(body["message"]["android"]["collapse_key"], COLLAPSE_KEY);
        assert!(body.to_string().len() < 1024, "no content in {body}");
        let mut private = notification("hi");
        private.content = None;
        assert_eq!(message_body(&private).1, Sent::ContentFree);
    }

    /// FCM error answers map to what the pusher must do.
    #[test]
    fn errors_are_classified() {
        let fcm = |code: &str| {
            json!({"error": {"message": "m", "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]}})
        };
        assert_eq!(
            classified(404, fcm("UNREGISTERED")),
            PushError::Unregistered { at: None }
        );
        assert!(matches!(
            classified(403, fcm("SENDER_ID_MISMATCH")),
            PushError::BadToken { .. }
        ));
        assert!(matches!(
            classified(429, fcm("QUOTA_EXCEEDED")),
            PushError::Retry { after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classified(503, Value::Null),
            PushError::Retry { .. }
        ));
        assert!(matches!(
            classified(400, json!({"error": {"status": "INVALID_ARGUMENT", "message": "bad"}})),
            PushError::Invalid { reason } if reason.contains("bad")
        ));
        assert!(matches!(
            classify(401, None, &Value::Null, "stale".into()),
            Failure::Unauthenticated { stale } if stale == "stale"
        ));
    }
}
