//! The session's error type, and [`to_rpc`]: the one place where an internal failure becomes
//! the error code a client sees. Details go to the log, not to the client. [`protocol_error`]
//! does the same for WebSocket-level failures, which also end the connection.

use titan_delivery::DeliveryError;
use titan_protocol::{CloseCode, ErrorCode, RpcError};
use titan_store::StoreError;
use tracing::warn;

use crate::auth::AuthError;
use crate::google::SignInError;
use crate::inbound::{ProtocolError, TOO_LARGE};
use crate::jwks::FetchError;

/// Why a client request failed inside the session.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("message {index} is {size} bytes, over the limit of {limit}")]
    MessageTooLarge {
        index: usize,
        size: usize,
        limit: usize,
    },
    #[error("connection is already authenticated as {user}/{device}")]
    AlreadyAuthenticated { user: String, device: String },
    /// The user has `limits.max_connections_per_user` connections on this instance already.
    #[error("too many connections for this user")]
    TooManyConnections,
    /// The user's `limits.messages_per_minute` is used up for now.
    #[error("too many messages per minute")]
    SendQuota { retry_after: std::time::Duration },
    #[error(transparent)]
    SignIn(#[from] SignInError),
    /// JWKS mode: the app backend's key set could not be fetched.
    #[error(transparent)]
    Keys(#[from] FetchError),
    /// The users store failed during a sign-in.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("push platform {platform} is not enabled on this server")]
    PushPlatformDisabled { platform: String },
}

/// Maps an internal error to the client-visible error. Logs what the client is not told.
pub fn to_rpc(err: &SessionError) -> RpcError {
    match err {
        SessionError::Auth(e) => {
            RpcError::with_message(ErrorCode::BadToken, format!("Bad token: {e}"))
        }
        SessionError::SignIn(SignInError::Unavailable { reason }) => {
            warn!(
                reason,
                "identity provider unavailable; sign-in not possible"
            );
            RpcError::with_message(
                ErrorCode::StoreUnavailable,
                "Identity provider unavailable, retry later",
            )
        }
        SessionError::Keys(e) => {
            warn!(error = %e, "token key set unavailable");
            RpcError::with_message(
                ErrorCode::StoreUnavailable,
                "Token key server unavailable, retry later",
            )
        }
        SessionError::SignIn(e) => {
            RpcError::with_message(ErrorCode::BadToken, format!("Sign-in failed: {e}"))
        }
        SessionError::Store(e @ StoreError::Unavailable { .. }) => {
            warn!(error = %e, "store unavailable; sign-in or push registration not done");
            RpcError::with_message(
                ErrorCode::StoreUnavailable,
                "Store unavailable, retry later",
            )
        }
        SessionError::Store(e) => {
            warn!(error = %e, "store error during sign-in or push registration");
            RpcError::new(ErrorCode::InternalError)
        }
        SessionError::MessageTooLarge { .. } => {
            RpcError::with_message(ErrorCode::TooLarge, format!("Message too large: {err}"))
        }
        SessionError::AlreadyAuthenticated { .. } => {
            RpcError::with_message(ErrorCode::InvalidParams, format!("Invalid params: {err}"))
        }
        SessionError::TooManyConnections => RpcError::with_message(
            ErrorCode::RateLimited,
            "Rate limited: too many connections for this user",
        )
        .with_data(serde_json::json!({ "retry_after_ms": 1000 })),
        SessionError::SendQuota { retry_after } => RpcError::with_message(
            ErrorCode::RateLimited,
            "Rate limited: too many messages per minute",
        )
        .with_data(serde_json::json!({ "retry_after_ms": retry_after.as_millis().max(1) })),
        SessionError::Delivery(DeliveryError::Store(StoreError::InboxFull {
            user,
            max_pending,
        })) => RpcError::with_message(
            ErrorCode::InboxFull,
            format!("Recipient inbox full: {user} has {max_pending} pending messages"),
        )
        .with_data(serde_json::json!({ "user": user })),
        SessionError::Delivery(DeliveryError::Store(e @ StoreError::Unavailable { .. })) => {
            warn!(error = %e, "store unavailable; msg.send not acknowledged");
            RpcError::with_message(
                ErrorCode::StoreUnavailable,
                "Store unavailable, retry later",
            )
        }
        SessionError::Delivery(e) => {
            warn!(error = %e, "internal error in msg.send");
            RpcError::new(ErrorCode::InternalError)
        }
        SessionError::PushPlatformDisabled { .. } => {
            RpcError::with_message(ErrorCode::InvalidParams, format!("Invalid params: {err}"))
        }
    }
}

/// The error response and close code for a WebSocket-level failure: an oversized frame or
/// reassembled message (-32003, 1009), a text frame that is not UTF-8 (-32700, 1007), anything
/// else (-32600, 1002). The response goes out before the close (docs/protocol.md).
pub fn protocol_error(err: &ProtocolError, max_frame_bytes: usize) -> (RpcError, CloseCode) {
    match err {
        ProtocolError::Overflow => (
            RpcError::with_message(
                ErrorCode::TooLarge,
                format!("Frame too large: the limit is {max_frame_bytes} bytes"),
            ),
            CloseCode::FrameTooLarge,
        ),
        ProtocolError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => (
            RpcError::with_message(
                ErrorCode::ParseError,
                "Parse error: text frame is not valid UTF-8",
            ),
            CloseCode::InvalidPayload,
        ),
        // An oversized reassembled message (`inbound`): actix-http's error type has no variant
        // for it, so it is an io error with this text, as in actix-ws.
        ProtocolError::Io(e) if e.to_string() == TOO_LARGE => (
            RpcError::with_message(
                ErrorCode::TooLarge,
                format!("Message too large: the limit is {max_frame_bytes} bytes"),
            ),
            CloseCode::FrameTooLarge,
        ),
        _ => (
            RpcError::with_message(
                ErrorCode::InvalidRequest,
                format!("WebSocket protocol error: {err}"),
            ),
            CloseCode::ProtocolError,
        ),
    }
}
