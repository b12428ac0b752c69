//! The bounded outbound queue of a session. The actor never writes to the socket itself: it
//! `try_send`s frames into this queue and a writer task drains it in order. A full queue means
//! the client is not reading; the session then closes it as a slow consumer rather than buffer
//! without limit. A close frame is queued like any other frame, so responses queued before it
//! (such as the error that explains the close) reach the client first.

use actix_ws::{CloseReason, Session as WsSocket};
use tokio::sync::mpsc;
use titan_protocol::CloseCode;
use tracing::debug;

/// A frame for the writer task.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    Ping,
    Pong(bytes::Bytes),
    Close(CloseCode),
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// The client is not reading fast enough.
    Full,
    /// The writer is gone (socket closed).
    Closed,
}

/// The sending half kept by the session actor.
pub struct Outbound {
    tx: mpsc::Sender<Frame>,
    /// Kept to close the socket directly when the queue is full.
    socket: WsSocket,
}

impl Outbound {
    /// Creates the queue and spawns its writer on the current arbiter.
    pub fn start(socket: WsSocket, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        actix_web::rt::spawn(write_loop(socket.clone(), rx));
        Self { tx, socket }
    }

    pub fn push(&self, frame: Frame) -> Result<(), QueueError> {
        self.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
        })
    }

    /// Queues a close; when the queue is full, closes the socket at once instead.
    pub fn close(&self, code: CloseCode) {
        if self.push(Frame::Close(code)) == Err(QueueError::Full) {
            let socket = self.socket.clone();
            actix_web::rt::spawn(async move {
                let _ = socket.close(Some(reason(code))).await;
            });
        }
    }
}

fn reason(code: CloseCode) -> CloseReason {
    CloseReason {
        code: actix_ws::CloseCode::Other(code.code()),
        description: Some(code.reason().to_owned()),
    }
}

async fn write_loop(mut socket: WsSocket, mut rx: mpsc::Receiver<Frame>) {
    while let Some(frame) = rx.recv().await {
        let sent = match frame {
            Frame::Text(text) => socket.text(text).await,
            Frame::Ping => socket.ping(b"").await,
            Frame::Pong(data) => socket.pong(&data).await,
            Frame::Close(code) => {
                let _ = socket.close(Some(reason(code))).await;
                return;
            }
        };
        if sent.is_err() {
            debug!("socket closed while writing");
            return;
        }
    }
    // The session dropped its sender without a close frame: end the connection.
    let _ = socket.close(None).await;
}
