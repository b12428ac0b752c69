//! The background task that owns one socket. It writes what the handles queue, reads frames,
//! routes responses to waiting calls by id, hands `msg.recv` requests to the application as
//! [`Delivery`] values and records how the connection ended. Server pings are answered by
//! tungstenite itself on the next read, which this task always has pending.
//!
//! The task never stops reading, so a close frame is always seen and calls never hang. When the
//! application leaves [`ClientOptions::delivery_buffer`] deliveries untaken, further `msg.recv`
//! requests are refused with an error response: the server keeps those messages pending and
//! redelivers them later. (Tests of slow readers use [`RawSocket`](crate::RawSocket), which reads
//! only when asked.)

use crate::client::ClientOptions;
use crate::delivery::Delivery;
use crate::error::{ClientError, Result};
use crate::link::{Ended, Link, Outbound};
use crate::transport::WsStream;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Instrument;

mod inbound;

/// How long the peer gets to finish a close handshake (or a broken socket to report its end)
/// before the task drops the socket.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one write may wait for the server to read (its TCP window to open) before the
/// connection is given up: a server that stops reading must not park the task forever.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Most queued frames written before one flush. Frames queued together (a window of sends, a
/// batch of acks) then leave in one write to the socket instead of one each.
const MAX_FRAMES_PER_FLUSH: usize = 64;

/// The code reported for a close frame without a status code (RFC 6455, section 7.1.5).
pub const NO_STATUS_CODE: u16 = 1005;

/// What the [`Client`](crate::Client) keeps after spawning the task.
pub(crate) struct Handles {
    pub link: Link,
    pub deliveries: mpsc::Receiver<Delivery>,
    /// Dropped with the client: tells the task to close the connection.
    pub drop_guard: oneshot::Sender<()>,
}

/// Spawns the task for an open socket.
pub(crate) fn spawn(ws: WsStream, options: &ClientOptions, url: &str) -> Handles {
    let (outbound, commands) = mpsc::channel(options.outbound_buffer.max(1));
    let (deliveries_tx, deliveries) = mpsc::channel(options.delivery_buffer.max(1));
    let (ended_tx, ended) = watch::channel(None);
    let (drop_guard, dropped) = oneshot::channel();
    let (sink, stream) = ws.split();
    let link = Link { outbound, ended };
    let driver = Driver {
        sink,
        pending: HashMap::new(),
        deliveries: deliveries_tx,
        // Weak, so the queue closes once the client and every delivery are gone.
        outbound: link.outbound.downgrade(),
        ended_tx,
        auto_ack: options.auto_ack,
        can_write: true,
        deadline: None,
        unflushed: Vec::new(),
    };
    let span = tracing::debug_span!("titan_client", url = %url);
    tokio::spawn(driver.run(stream, commands, dropped).instrument(span));
    Handles {
        link,
        deliveries,
        drop_guard,
    }
}

struct Driver {
    sink: SplitSink<WsStream, WsMessage>,
    /// Calls waiting for their response, by request id.
    pending: HashMap<u64, oneshot::Sender<Result<Value>>>,
    deliveries: mpsc::Sender<Delivery>,
    outbound: mpsc::WeakSender<Outbound>,
    ended_tx: watch::Sender<Option<Ended>>,
    auto_ack: bool,
    /// False once a close frame was sent or received, or a write failed.
    can_write: bool,
    /// When the task gives up on a closing socket.
    deadline: Option<Instant>,
    /// `written` replies of frames handed to the socket but not flushed yet: answered by the
    /// next [`Driver::flush`].
    unflushed: Vec<oneshot::Sender<Result<()>>>,
}

impl Driver {
    async fn run(
        mut self,
        mut stream: SplitStream<WsStream>,
        mut commands: mpsc::Receiver<Outbound>,
        mut dropped: oneshot::Receiver<()>,
    ) {
        let mut client_gone = false;
        let mut commands_open = true;
        loop {
            let deadline = self.deadline;
            tokio::select! {
                command = commands.recv(), if commands_open => match command {
                    Some(command) => {
                        self.command(command).await;
                        // What else is queued already goes out with it, in one flush.
                        for _ in 1..MAX_FRAMES_PER_FLUSH {
                            let Ok(command) = commands.try_recv() else { break };
                            self.command(command).await;
                        }
                        // A failure is recorded (no more writes; the end is reported by the
                        // read side or the deadline), and the calls fail with that end.
                        let _ = self.flush().await;
                    }
                    None => commands_open = false,
                },
                _ = &mut dropped, if !client_gone => {
                    client_gone = true;
                    // Frames queued before the drop go out before the close frame.
                    while let Ok(command) = commands.try_recv() {
                        self.command(command).await;
                    }
                    let _ = self.flush().await;
                    self.start_close().await;
                }
                frame = stream.next() => match frame {
                    Some(Ok(frame)) => self.incoming(frame).await,
                    Some(Err(e)) => {
                        self.end(None, format!("websocket error: {e}"));
                        break;
                    }
                    None => {
                        self.end(None, "connection ended without a close frame".to_owned());
                        break;
                    }
                },
                () = expire(deadline) => {
                    self.end(None, "close handshake timed out".to_owned());
                    break;
                }
            }
        }
        tracing::debug!("connection task ends");
    }

    async fn command(&mut self, command: Outbound) {
        let ended = self.ended_tx.borrow().clone();
        match command {
            Outbound::Call { id, text, reply } => {
                if let Some(ended) = ended {
                    let _ = reply.send(Err(ended.error()));
                    return;
                }
                // Unwritable but not yet ended (closing): the call fails with the close code
                // once the end is known.
                self.pending.insert(id, reply);
                if self.can_write {
                    let _ = self.feed(WsMessage::text(text)).await;
                }
            }
            Outbound::Frame { text, written } => {
                let refused = match ended {
                    Some(ended) => Some(ended.error()),
                    None if !self.can_write => Some(ClientError::Closed {
                        code: None,
                        reason: "connection is closing".to_owned(),
                    }),
                    None => self.feed(WsMessage::text(text)).await.err(),
                };
                match refused {
                    Some(error) => {
                        let _ = written.send(Err(error));
                    }
                    // Answered once flushed: only then has it reached the socket.
                    None => self.unflushed.push(written),
                }
            }
            Outbound::Close => self.start_close().await,
        }
    }

    /// Sends a 1000 close frame unless the connection is already closing.
    async fn start_close(&mut self) {
        if self.can_write {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            };
            let _ = self.write(WsMessage::Close(Some(frame))).await;
            self.can_write = false;
            self.arm_deadline();
        }
    }

    /// Writes a frame and flushes it (with anything fed before it).
    async fn write(&mut self, frame: WsMessage) -> Result<()> {
        self.feed(frame).await?;
        self.flush().await
    }

    /// Hands a frame to the socket's buffer without flushing (tungstenite writes it out when its
    /// buffer fills). A failure does not end the task: the read side still holds the server's
    /// close frame, if it sent one, and reports the end within the deadline. A write that makes
    /// no progress for [`WRITE_STALL_TIMEOUT`] counts as failed.
    async fn feed(&mut self, frame: WsMessage) -> Result<()> {
        let fed = tokio::time::timeout(WRITE_STALL_TIMEOUT, self.sink.feed(frame)).await;
        self.written(fed.map_err(|_| ClientError::Timeout).and_then(|r| Ok(r?)))
    }

    /// Flushes what was fed, then answers the `written` replies waiting for it.
    async fn flush(&mut self) -> Result<()> {
        let result = if self.can_write {
            let flushed = tokio::time::timeout(WRITE_STALL_TIMEOUT, self.sink.flush()).await;
            self.written(
                flushed
                    .map_err(|_| ClientError::Timeout)
                    .and_then(|r| Ok(r?)),
            )
        } else {
            Err(ClientError::Closed {
                code: None,
                reason: "connection is closing".to_owned(),
            })
        };
        let reason = result.as_ref().err().map(ToString::to_string);
        for written in self.unflushed.drain(..) {
            let _ = written.send(match &reason {
                None => Ok(()),
                Some(reason) => Err(ClientError::Closed {
                    code: None,
                    reason: format!("write failed: {reason}"),
                }),
            });
        }
        result
    }

    /// The outcome of a socket write (a stall is [`ClientError::Timeout`]); a failure stops
    /// further writes.
    fn written(&mut self, outcome: Result<()>) -> Result<()> {
        let Err(error) = outcome else {
            return Ok(());
        };
        tracing::debug!(%error, "write failed");
        self.can_write = false;
        self.arm_deadline();
        Err(error)
    }

    fn arm_deadline(&mut self) {
        self.deadline
            .get_or_insert_with(|| Instant::now() + CLOSE_HANDSHAKE_TIMEOUT);
    }

    /// Records the end once and fails every waiting call with it.
    fn end(&mut self, frame: Option<(u16, String)>, reason: String) {
        if self.ended_tx.borrow().is_some() {
            return;
        }
        tracing::debug!(?frame, %reason, "connection ended");
        let ended = Ended { frame, reason };
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(ended.error()));
        }
        self.ended_tx.send_replace(Some(ended));
        self.can_write = false;
        self.arm_deadline();
    }
}

/// Resolves at `deadline`, never when there is none.
async fn expire(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
