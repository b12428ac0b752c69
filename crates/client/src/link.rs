//! The handle a [`Client`](crate::Client) and each [`Delivery`](crate::Delivery) use to reach the
//! connection task: a bounded queue of [`Outbound`] commands and a view of how the connection
//! ended.

use crate::error::{ClientError, Result};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

/// What a handle asks the connection task to do. One queue for everything keeps the frames on the
/// wire in the order the caller issued them (an ack queued before `close` is written before it).
pub(crate) enum Outbound {
    /// Write a request and route the response with this numeric id to `reply`.
    Call {
        id: u64,
        text: String,
        reply: oneshot::Sender<Result<Value>>,
    },
    /// Write a frame that gets no response (a notification, a response to the server, raw text);
    /// `written` says whether it reached the socket.
    Frame {
        text: String,
        written: oneshot::Sender<Result<()>>,
    },
    /// Start a client-initiated close (code 1000).
    Close,
}

/// How the connection ended, as seen by the connection task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    /// The peer's close frame: code (1005 when it had none) and reason. `None` when the socket
    /// ended without one.
    pub frame: Option<(u16, String)>,
    /// Why the connection ended, for errors when there is no close frame.
    pub reason: String,
}

impl Ended {
    pub(crate) fn error(&self) -> ClientError {
        match &self.frame {
            Some((code, reason)) => ClientError::Closed {
                code: Some(*code),
                reason: reason.clone(),
            },
            None => ClientError::Closed {
                code: None,
                reason: self.reason.clone(),
            },
        }
    }
}

/// A cloneable way to talk to the connection task.
#[derive(Clone)]
pub(crate) struct Link {
    pub outbound: mpsc::Sender<Outbound>,
    pub ended: watch::Receiver<Option<Ended>>,
}

impl Link {
    /// The error to report once the task is gone or refused a command.
    pub(crate) fn closed_error(&self) -> ClientError {
        match &*self.ended.borrow() {
            Some(ended) => ended.error(),
            None => ClientError::Closed {
                code: None,
                reason: "connection task ended".to_owned(),
            },
        }
    }

    /// Queues a command; fails with the close reason when the task is gone.
    pub(crate) async fn push(&self, command: Outbound) -> Result<()> {
        self.outbound
            .send(command)
            .await
            .map_err(|_| self.closed_error())
    }

    /// Writes one frame and waits until it reached the socket (or could not).
    pub(crate) async fn write(&self, text: String) -> Result<()> {
        let (written, done) = oneshot::channel();
        self.push(Outbound::Frame { text, written }).await?;
        done.await.map_err(|_| self.closed_error())?
    }

    /// Waits until the connection has ended and returns the peer's close frame, if any.
    pub(crate) async fn closed(&self) -> Option<(u16, String)> {
        let mut ended = self.ended.clone();
        // An `Err` means the task is gone without recording an end (it panicked): report no frame.
        match ended.wait_for(Option::is_some).await {
            Ok(state) => state.as_ref().and_then(|e| e.frame.clone()),
            Err(_) => None,
        }
    }
}
