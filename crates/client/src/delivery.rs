//! A `msg.recv` request from the server, waiting for the application's answer. Answering with
//! success acknowledges every message in it; answering with an error (or not at all) leaves them
//! pending on the server, which redelivers them later with the same ids.

use crate::error::Result;
use crate::link::Link;
use serde_json::json;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use titan_protocol::{ErrorCode, Id, Message, Response, RpcError};

/// One `msg.recv` request. It holds its own handle to the connection, so it can be answered after
/// the [`Client`](crate::Client) that produced it is borrowed elsewhere or even dropped (the
/// answer then fails with [`ClientError::Closed`](crate::ClientError::Closed) once the socket is
/// gone).
pub struct Delivery {
    /// The JSON-RPC id of the server's request; the answer must carry it.
    pub request_id: Id,
    /// The delivered messages, in the order the server sent them.
    pub messages: Vec<Message>,
    link: Link,
    /// Set once an answer was sent (by the application or by auto-ack): the server expects one.
    answered: AtomicBool,
}

impl Delivery {
    pub(crate) fn new(request_id: Id, messages: Vec<Message>, link: Link, answered: bool) -> Self {
        Self {
            request_id,
            messages,
            link,
            answered: AtomicBool::new(answered),
        }
    }

    /// Acknowledges every message: answers `{"result":"ACK","id":request_id}`. Returns once the
    /// answer is written to the socket. Does nothing when the delivery was already answered.
    pub async fn ack(&self) -> Result<()> {
        self.answer(Response::ok(self.request_id.clone(), json!("ACK")))
            .await
    }

    /// Refuses the delivery with an error response, so the messages stay pending.
    pub async fn reject(&self) -> Result<()> {
        let error = RpcError::with_message(ErrorCode::InternalError, "rejected by client");
        self.reject_with(error).await
    }

    /// Refuses the delivery with a chosen error object.
    pub async fn reject_with(&self, error: RpcError) -> Result<()> {
        self.answer(Response::error(self.request_id.clone(), error))
            .await
    }

    /// True once an answer was sent (always true under
    /// [`ClientOptions::auto_ack`](crate::ClientOptions::auto_ack)).
    pub fn is_answered(&self) -> bool {
        self.answered.load(Ordering::Acquire)
    }

    /// The ids of the delivered messages, in order.
    pub fn message_ids(&self) -> Vec<&str> {
        self.messages.iter().map(|m| m.id.as_str()).collect()
    }

    async fn answer(&self, response: Response) -> Result<()> {
        if self.answered.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.link.write(response.to_text()).await
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("request_id", &self.request_id)
            .field("messages", &self.messages)
            .field("answered", &self.is_answered())
            .finish_non_exhaustive()
    }
}
