//! The bounded outbound queue of a session. The actor never writes to the socket itself: it
//! `try_send`s frames into this queue and a writer task drains it in order. A full queue means
//! the client is not reading; the session then closes it as a slow consumer rather than buffer
//! without limit. A close frame is queued like any other frame, so responses queued before it
//! (such as the error that explains the close) reach the client first. When the queue is full
//! there is no room for the close frame: the writer is then told to drop its backlog and send
//! the close frame next (see [`Outbound::close`]).

use actix_ws::{CloseReason, Session as WsSocket};
use titan_protocol::CloseCode;
use tokio::sync::{mpsc, watch};
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
    /// Set when the connection must close while the queue is full. A separate channel because
    /// the close cannot wait behind a backlog the client is not reading, and because closing the
    /// socket from another task raced with the writer, which could close first without a code.
    abort: watch::Sender<Option<CloseCode>>,
}

impl Outbound {
    /// Creates the queue and spawns its writer on the current arbiter.
    pub fn start(socket: WsSocket, capacity: usize) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (abort, aborted) = watch::channel(None);
        actix_web::rt::spawn(write_loop(socket, rx, aborted));
        Self { tx, abort }
    }

    pub fn push(&self, frame: Frame) -> Result<(), QueueError> {
        self.tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
        })
    }

    /// Queues a close after what is already queued; when the queue is full, the writer drops
    /// the queued frames and sends this close next.
    pub fn close(&self, code: CloseCode) {
        if self.push(Frame::Close(code)) == Err(QueueError::Full) {
            self.abort.send_replace(Some(code));
        }
    }
}

fn reason(code: CloseCode) -> CloseReason {
    CloseReason {
        code: actix_ws::CloseCode::Other(code.code()),
        description: Some(code.reason().to_owned()),
    }
}

/// Resolves with the close code once [`Outbound::close`] found the queue full; never resolves
/// otherwise (a dropped sender without a code means "no abort").
async fn aborted(abort: &mut watch::Receiver<Option<CloseCode>>) -> CloseCode {
    loop {
        if let Some(code) = *abort.borrow_and_update() {
            return code;
        }
        if abort.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Writes one frame; `Ok(false)` after a close frame.
async fn write(socket: &mut WsSocket, frame: Frame) -> Result<bool, actix_ws::Closed> {
    match frame {
        Frame::Text(text) => socket.text(text).await.map(|()| true),
        Frame::Ping => socket.ping(b"").await.map(|()| true),
        Frame::Pong(data) => socket.pong(&data).await.map(|()| true),
        Frame::Close(code) => socket
            .clone()
            .close(Some(reason(code)))
            .await
            .map(|()| false),
    }
}

async fn close_now(socket: WsSocket, code: CloseCode) {
    debug!(code = code.code(), "closing at once; queued frames dropped");
    // An error means the socket is already gone, which is what closing wants.
    let _ = socket.close(Some(reason(code))).await;
}

async fn write_loop(
    mut socket: WsSocket,
    mut rx: mpsc::Receiver<Frame>,
    mut abort: watch::Receiver<Option<CloseCode>>,
) {
    loop {
        // `biased`: an abort wins over queued frames, including over the end of the queue that
        // follows it when the session stops.
        let frame = tokio::select! {
            biased;
            code = aborted(&mut abort) => return close_now(socket, code).await,
            frame = rx.recv() => frame,
        };
        let Some(frame) = frame else { break };
        // A write blocks while the client does not read; an abort must not wait behind it.
        let written = tokio::select! {
            biased;
            code = aborted(&mut abort) => return close_now(socket, code).await,
            written = write(&mut socket, frame) => written,
        };
        match written {
            Ok(true) => {}
            Ok(false) => return,
            Err(_) => {
                debug!("socket closed while writing");
                return;
            }
        }
    }
    // The session dropped its sender without a close frame: end the connection.
    let _ = socket.close(None).await;
}
