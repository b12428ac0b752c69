//! The client-visible error codes. Every error a client can see is one row of [`ErrorCode`]; the
//! session maps internal failures onto these in one place.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// JSON-RPC error codes used by Titan: the five standard ones and Titan's own in -32001..=-32099.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// -32700: the frame is not JSON (or not UTF-8). The response id is null.
    ParseError,
    /// -32600: JSON, but not a JSON-RPC request or response (also: binary frames, oversized batches).
    InvalidRequest,
    /// -32601: no such method.
    MethodNotFound,
    /// -32602: the method exists but its params are wrong.
    InvalidParams,
    /// -32603: a server fault; details are in the server log, never in the response.
    InternalError,
    /// -32001: the method needs an authenticated connection; call `auth.jwt` first.
    NotAuthenticated,
    /// -32002: the token is malformed, badly signed, of another algorithm, or expired.
    BadToken,
    /// -32003: a frame or a message body is over the configured limit.
    TooLarge,
    /// -32004: too many requests; retry after `data.retry_after_ms`. Temporary.
    RateLimited,
    /// -32005: a recipient's inbox holds `delivery.max_pending` undelivered messages. Temporary.
    InboxFull,
    /// -32006: the store cannot be reached or refused the write; nothing was ACKed. Also: the
    /// identity provider (`auth.google` discovery/JWKS) cannot be reached. Temporary.
    StoreUnavailable,
}

impl ErrorCode {
    pub const fn code(self) -> i64 {
        match self {
            Self::ParseError => -32700,
            Self::InvalidRequest => -32600,
            Self::MethodNotFound => -32601,
            Self::InvalidParams => -32602,
            Self::InternalError => -32603,
            Self::NotAuthenticated => -32001,
            Self::BadToken => -32002,
            Self::TooLarge => -32003,
            Self::RateLimited => -32004,
            Self::InboxFull => -32005,
            Self::StoreUnavailable => -32006,
        }
    }

    /// The default human-readable message.
    pub const fn message(self) -> &'static str {
        match self {
            Self::ParseError => "Parse error",
            Self::InvalidRequest => "Invalid Request",
            Self::MethodNotFound => "Method not found",
            Self::InvalidParams => "Invalid params",
            Self::InternalError => "Internal error",
            Self::NotAuthenticated => "Not authenticated",
            Self::BadToken => "Bad or expired token",
            Self::TooLarge => "Frame or message too large",
            Self::RateLimited => "Rate limited",
            Self::InboxFull => "Recipient inbox full",
            Self::StoreUnavailable => "Store unavailable",
        }
    }

    /// True when the same request may succeed if retried later unchanged.
    pub const fn is_temporary(self) -> bool {
        matches!(
            self,
            Self::RateLimited | Self::InboxFull | Self::StoreUnavailable | Self::InternalError
        )
    }

    pub fn from_code(code: i64) -> Option<Self> {
        [
            Self::ParseError,
            Self::InvalidRequest,
            Self::MethodNotFound,
            Self::InvalidParams,
            Self::InternalError,
            Self::NotAuthenticated,
            Self::BadToken,
            Self::TooLarge,
            Self::RateLimited,
            Self::InboxFull,
            Self::StoreUnavailable,
        ]
        .into_iter()
        .find(|c| c.code() == code)
    }
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// The error with its table message.
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code: code.code(),
            message: code.message().to_owned(),
            data: None,
        }
    }

    /// The error with a specific message saying what was wrong.
    pub fn with_message(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.code(),
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The table entry, when the code is one of Titan's.
    pub fn kind(&self) -> Option<ErrorCode> {
        ErrorCode::from_code(self.code)
    }
}

impl From<ErrorCode> for RpcError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code)
    }
}
