//! Opening a WebSocket, shared by [`Client`](crate::Client) and [`RawSocket`](crate::RawSocket).

use crate::error::{ClientError, Result};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The socket type both clients drive.
pub(crate) type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest frame and message this client accepts from the server. Far above anything Titan
/// sends, so a test is never cut short by the client's own limit (tests send and receive 1 MiB
/// frames on purpose).
pub const MAX_INCOMING_BYTES: usize = 64 << 20;

/// How long connecting (TCP plus the WebSocket handshake) may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_INCOMING_BYTES))
        .max_frame_size(Some(MAX_INCOMING_BYTES))
}

/// Connects to `url` (`ws://host:port/path`) with Nagle disabled: tests and the benchmark send
/// small frames and measure latency.
pub(crate) async fn connect(url: &str, timeout: Duration) -> Result<WsStream> {
    let connecting = tokio_tungstenite::connect_async_with_config(url, Some(config()), true);
    let (ws, _response) = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| ClientError::Timeout)??;
    Ok(ws)
}
