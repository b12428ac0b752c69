//! [`RawSocket`]: frame-level access for tests of bad input (malformed JSON, binary frames,
//! oversized frames) and of exactly what the server writes. No background task: nothing is read
//! unless the test asks, which also makes it the tool for slow-reader tests.

use crate::connection::{CLOSE_HANDSHAKE_TIMEOUT, NO_STATUS_CODE};
use crate::error::{ClientError, Result};
use crate::transport::{self, DEFAULT_CONNECT_TIMEOUT, WsStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};

/// One thing read from the socket. Pings and pongs are skipped (tungstenite answers pings on the
/// next read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEvent {
    Text(String),
    Binary(Vec<u8>),
    /// The server's close frame: code (1005 when it had none) and reason.
    Close(u16, String),
    /// The socket ended.
    End,
}

/// A WebSocket with no JSON-RPC logic. The client side accepts frames up to
/// [`MAX_INCOMING_BYTES`](crate::MAX_INCOMING_BYTES) and sends frames of any size, so a test can
/// send a 1 MiB frame with [`RawSocket::send_text`].
pub struct RawSocket {
    ws: WsStream,
    close: Option<(u16, String)>,
}

impl std::fmt::Debug for RawSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSocket")
            .field("close", &self.close)
            .finish_non_exhaustive()
    }
}

impl RawSocket {
    /// Connects to `url` (`ws://127.0.0.1:port/path`).
    pub async fn connect(url: &str) -> Result<Self> {
        let ws = transport::connect(url, DEFAULT_CONNECT_TIMEOUT, None).await?;
        Ok(Self { ws, close: None })
    }

    /// Sends one text frame. When the server closes in the middle of a big frame this may fail
    /// with a write error; its close frame can still be read with [`RawSocket::next_event`].
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<()> {
        self.send_message(WsMessage::text(text.into())).await
    }

    /// Sends a JSON value as one text frame.
    pub async fn send_json(&mut self, value: &Value) -> Result<()> {
        self.send_text(value.to_string()).await
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.send_message(WsMessage::binary(bytes)).await
    }

    pub async fn send_ping(&mut self, payload: Vec<u8>) -> Result<()> {
        self.send_message(WsMessage::Ping(payload.into())).await
    }

    /// Starts a close handshake with this code and reason.
    pub async fn send_close(&mut self, code: u16, reason: &str) -> Result<()> {
        self.send_message(close_message(code, reason)).await
    }

    /// Sends several text frames in one write (one flush), so the server reads them together.
    pub async fn send_texts_together(&mut self, texts: Vec<String>) -> Result<()> {
        self.send_together(texts.into_iter().map(WsMessage::text))
            .await
    }

    /// Sends text frames and then a close frame in one write (one flush), so the server reads
    /// the close together with the frames before it.
    pub async fn send_texts_then_close(
        &mut self,
        texts: Vec<String>,
        code: u16,
        reason: &str,
    ) -> Result<()> {
        let close = std::iter::once(close_message(code, reason));
        self.send_together(texts.into_iter().map(WsMessage::text).chain(close))
            .await
    }

    /// Queues `messages` and writes them with one flush.
    async fn send_together(&mut self, messages: impl IntoIterator<Item = WsMessage>) -> Result<()> {
        for message in messages {
            self.ws.feed(message).await?;
        }
        Ok(self.ws.flush().await?)
    }

    /// Sends any tungstenite message (e.g. a hand-built [`Frame`](crate::tungstenite::protocol::frame::Frame)).
    pub async fn send_message(&mut self, message: WsMessage) -> Result<()> {
        Ok(self.ws.send(message).await?)
    }

    /// The next text, binary, close or end. After the close frame was seen, a socket error
    /// counts as the end (the server may reset instead of finishing the TCP close).
    pub async fn next_event(&mut self) -> Result<RawEvent> {
        loop {
            let frame = match self.ws.next().await {
                None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Ok(RawEvent::End);
                }
                Some(Err(_)) if self.close.is_some() => return Ok(RawEvent::End),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(frame)) => frame,
            };
            match frame {
                WsMessage::Text(text) => return Ok(RawEvent::Text(text.to_string())),
                WsMessage::Binary(bytes) => return Ok(RawEvent::Binary(bytes.to_vec())),
                WsMessage::Close(frame) => {
                    let (code, reason) = match frame {
                        Some(f) => (u16::from(f.code), f.reason.to_string()),
                        None => (NO_STATUS_CODE, String::new()),
                    };
                    self.close = Some((code, reason.clone()));
                    // tungstenite queued the close reply; send it now rather than on the next
                    // read, which a test may never do. A failure means the socket is gone anyway.
                    let _ = self.ws.flush().await;
                    return Ok(RawEvent::Close(code, reason));
                }
                WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {}
            }
        }
    }

    /// [`RawSocket::next_event`], or `Ok(None)` when nothing arrives within `wait`.
    pub async fn next_event_timeout(&mut self, wait: Duration) -> Result<Option<RawEvent>> {
        match tokio::time::timeout(wait, self.next_event()).await {
            Ok(event) => event.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The next text frame; `None` on close or end. A binary frame is a protocol violation.
    pub async fn next_text(&mut self) -> Result<Option<String>> {
        match self.next_event().await? {
            RawEvent::Text(text) => Ok(Some(text)),
            RawEvent::Close(..) | RawEvent::End => Ok(None),
            RawEvent::Binary(_) => Err(ClientError::Protocol("unexpected binary frame".into())),
        }
    }

    /// The next text frame parsed as JSON; `None` on close or end.
    pub async fn next_json(&mut self) -> Result<Option<Value>> {
        let Some(text) = self.next_text().await? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("server sent invalid JSON: {e}")))
    }

    /// The server's close frame, once [`RawSocket::next_event`] has seen it.
    pub fn close_frame(&self) -> Option<(u16, String)> {
        self.close.clone()
    }

    /// Closes with code 1000 and reads until the socket ends (at most
    /// [`CLOSE_HANDSHAKE_TIMEOUT`]); returns the server's close
    /// frame. Frames the server sent before its close frame are discarded.
    pub async fn close(mut self) -> Result<Option<(u16, String)>> {
        // A failed send means the socket is closing or broken; draining reports which.
        let _ = self.send_close(1000, "bye").await;
        let drain = async {
            while self.next_event().await? != RawEvent::End {}
            Ok::<_, ClientError>(())
        };
        tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, drain)
            .await
            .map_err(|_| ClientError::Timeout)??;
        Ok(self.close)
    }
}

/// A close frame with this code and reason.
fn close_message(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}
