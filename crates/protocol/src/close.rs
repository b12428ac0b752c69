//! WebSocket close codes. Titan always sends a JSON-RPC error before closing for a reason a
//! client can act on; the close code then says whether reconnecting makes sense.

/// A close code with its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: normal close (the server is shutting down the connection on request).
    Normal,
    /// 1002: the client broke the WebSocket protocol. Reconnect.
    ProtocolError,
    /// 1007: a text frame was not valid UTF-8 (RFC 6455 requires failing the connection). Reconnect.
    InvalidPayload,
    /// 1009: a frame was larger than `limits.max_frame_bytes`. Reconnect, send smaller frames.
    FrameTooLarge,
    /// 1011: the server hit an internal fault. Reconnect with backoff.
    InternalError,
    /// 4000: no traffic (not even a pong) within `limits.idle_timeout`. Reconnect.
    IdleTimeout,
    /// 4001: no successful `auth.*` within `limits.auth_timeout`. Reconnect and authenticate at once.
    AuthTimeout,
    /// 4002: the same (user, device) connected again; this older connection lost. Do NOT
    /// reconnect automatically, or two clients will take the device from each other forever.
    Replaced,
    /// 4003: the client did not read its messages fast enough (outbound queue full).
    /// Reconnect; unacked messages are redelivered.
    SlowConsumer,
    /// 4004: the connection's token expired. Re-authenticate with a fresh token.
    TokenExpired,
    /// 4005: too many failed authentication attempts on this connection. Get a valid token first.
    TooManyAuthFailures,
    /// 4006: the server is draining for a restart. Reconnect (to another instance) after a short,
    /// jittered delay.
    Draining,
    /// 4007: the user's tokens were revoked. Do not reconnect with the same token.
    Revoked,
    /// 4008: the user already has `limits.max_connections_per_user` connections on this
    /// instance (sent after a `-32004` error). Reconnect later, with backoff.
    TooManyConnections,
}

impl CloseCode {
    pub const fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::ProtocolError => 1002,
            Self::InvalidPayload => 1007,
            Self::FrameTooLarge => 1009,
            Self::InternalError => 1011,
            Self::IdleTimeout => 4000,
            Self::AuthTimeout => 4001,
            Self::Replaced => 4002,
            Self::SlowConsumer => 4003,
            Self::TokenExpired => 4004,
            Self::TooManyAuthFailures => 4005,
            Self::Draining => 4006,
            Self::Revoked => 4007,
            Self::TooManyConnections => 4008,
        }
    }

    /// The short reason sent in the close frame.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Normal => "bye",
            Self::ProtocolError => "protocol error",
            Self::InvalidPayload => "invalid utf-8",
            Self::FrameTooLarge => "frame too large",
            Self::InternalError => "internal error",
            Self::IdleTimeout => "idle timeout",
            Self::AuthTimeout => "authentication timeout",
            Self::Replaced => "replaced by a newer session",
            Self::SlowConsumer => "slow consumer",
            Self::TokenExpired => "token expired",
            Self::TooManyAuthFailures => "too many authentication failures",
            Self::Draining => "server draining, reconnect",
            Self::Revoked => "tokens revoked",
            Self::TooManyConnections => "too many connections for this user",
        }
    }

    /// Whether a client should reconnect on its own after this close.
    pub const fn should_reconnect(self) -> bool {
        !matches!(
            self,
            Self::Replaced | Self::TooManyAuthFailures | Self::Revoked
        )
    }

    pub fn from_code(code: u16) -> Option<Self> {
        [
            Self::Normal,
            Self::ProtocolError,
            Self::InvalidPayload,
            Self::FrameTooLarge,
            Self::InternalError,
            Self::IdleTimeout,
            Self::AuthTimeout,
            Self::Replaced,
            Self::SlowConsumer,
            Self::TokenExpired,
            Self::TooManyAuthFailures,
            Self::Draining,
            Self::Revoked,
            Self::TooManyConnections,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}
