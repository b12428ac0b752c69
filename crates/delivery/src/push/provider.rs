//! The seam between delivery and a push service: [`PushProvider`], what a provider is asked to
//! send ([`Notification`]) and how its failures are classified ([`PushError`]), which is all the
//! [`super::Pusher`] needs to decide between done, retry and forgetting the token.

use async_trait::async_trait;
use std::time::{Duration, SystemTime};
use titan_protocol::{Message, PushPlatform, PushToken};

/// The payload limit of both FCM and APNs, in bytes.
pub const PAYLOAD_LIMIT: usize = 4096;

/// The collapse key (`collapse_key` / `apns-collapse-id`) of content-free notifications, so a
/// burst of them shows as one.
pub const COLLAPSE_KEY: &str = "titan-new-messages";

/// One push to one device.
#[derive(Debug, Clone)]
pub struct Notification {
    pub token: PushToken,
    /// The message to carry, when `push.include_content` allows it. The provider still sends
    /// the content-free form when the message does not fit its payload limit.
    pub content: Option<Message>,
}

/// Which form a provider sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The message itself (id, from, time, message).
    Content,
    /// The content-free "new messages" notification with the collapse key.
    ContentFree,
}

/// Why a push was not accepted, classified by what the pusher does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The token is no longer valid (FCM `UNREGISTERED`/404, APNs 410). `at` is when the
    /// service saw it die (APNs); a token registered again since then is kept.
    #[error("token unregistered")]
    Unregistered { at: Option<SystemTime> },
    /// The token is not usable by this sender (FCM `SENDER_ID_MISMATCH`, APNs `BadDeviceToken`).
    #[error("bad token: {reason}")]
    BadToken { reason: String },
    /// Temporary (429, 5xx, network): retry, after `after` when the service said so.
    #[error("temporary failure: {reason}")]
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// The request was refused as malformed; retrying the same request cannot help.
    #[error("invalid request: {reason}")]
    Invalid { reason: String },
    /// Titan's own credentials were refused (after one refresh): a configuration problem.
    #[error("credentials refused: {reason}")]
    Auth { reason: String },
}

/// A push service.
#[async_trait]
pub trait PushProvider: Send + Sync + 'static {
    /// The platform whose tokens this provider serves.
    fn platform(&self) -> PushPlatform;

    /// Sends one notification. Implementations choose the content-free form when the content
    /// does not fit [`PAYLOAD_LIMIT`].
    async fn send(&self, notification: &Notification) -> Result<Sent, PushError>;
}
