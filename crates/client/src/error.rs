//! The crate's one error type. A test usually matches on [`ClientError::Rpc`] (the server said
//! no) or [`ClientError::Closed`] (the server hung up, with its close code).

use titan_protocol::RpcError;
use tokio_tungstenite::tungstenite;

/// Shorthand used throughout the crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Everything a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a JSON-RPC error object.
    #[error("server error: {0}")]
    Rpc(#[from] RpcError),
    /// The connection is over. `code` is the close code of the server's close frame (1005 when the
    /// frame carried none), `None` when the socket ended without a close frame.
    #[error("connection closed (code {code:?}): {reason}")]
    Closed { code: Option<u16>, reason: String },
    /// Connecting, reading or writing the WebSocket failed.
    #[error("websocket error: {0}")]
    WebSocket(#[from] Box<tungstenite::Error>),
    /// The server sent something this client cannot make sense of (e.g. `"NOPE"` where `"ACK"`
    /// was due).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// No answer within the configured time.
    #[error("timed out")]
    Timeout,
    /// The trusted certificates given for `wss://` could not be used.
    #[error("tls configuration: {0}")]
    Tls(String),
}

impl ClientError {
    /// The JSON-RPC error code, when the server answered with an error.
    pub fn rpc_code(&self) -> Option<i64> {
        match self {
            Self::Rpc(e) => Some(e.code),
            _ => None,
        }
    }

    /// The server's close code, when the connection was closed with one.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Self::Closed { code, .. } => *code,
            _ => None,
        }
    }
}

impl From<tungstenite::Error> for ClientError {
    fn from(e: tungstenite::Error) -> Self {
        Self::WebSocket(Box::new(e))
    }
}
