//! Executing client commands that do not touch session state: echo and msg.send. (Auth changes
//! the session itself and lives in the actor.)
//!
//! `msg.send` requests are not handed to the dispatcher one by one: the session queues those
//! that arrive together (the frames of one read of the socket, see `FlushSends` in the session)
//! and [`submit`]s them as one [`SubmitMany`]. They are then stored in one store call and
//! answered together, so their answers leave in one write instead of one system call each
//! (docs/benchmarks.md, fifth set). Each request is still stored and refused on its own.

use actix::Addr;
use serde_json::Value;
use std::future::Future;
use titan_delivery::{DeliveryError, Dispatcher, SubmitMany};
use titan_protocol::{OutgoingMessage, UserId};
use tokio::sync::oneshot;

use crate::error::SessionError;

/// The result of every successful command that has nothing else to say.
pub fn ack() -> Value {
    Value::String("ACK".to_owned())
}

/// One `msg.send` waiting for the others of its read to be submitted with it.
pub struct QueuedSend {
    messages: Vec<OutgoingMessage>,
    answer: oneshot::Sender<Result<(), DeliveryError>>,
}

/// Checks `msg.send`'s bodies against `limit` bytes and queues the request. The returned
/// future resolves once every message is durably stored (after [`submit`]).
pub fn queue(
    queue: &mut Vec<QueuedSend>,
    messages: Vec<OutgoingMessage>,
    limit: usize,
) -> Result<impl Future<Output = Result<Value, SessionError>> + 'static, SessionError> {
    if let Some((index, m)) = messages
        .iter()
        .enumerate()
        .find(|(_, m)| m.message.len() > limit)
    {
        return Err(SessionError::MessageTooLarge {
            index,
            size: m.message.len(),
            limit,
        });
    }
    let (answer, answered) = oneshot::channel();
    queue.push(QueuedSend { messages, answer });
    Ok(async move {
        match answered.await {
            Ok(Ok(())) => Ok(ack()),
            Ok(Err(e)) => Err(e.into()),
            // The session or the dispatcher stopped before the request was stored.
            Err(_) => Err(DeliveryError::Stopped.into()),
        }
    })
}

/// Hands the requests `from` queued to the dispatcher as one [`SubmitMany`], in their order,
/// and answers each from its own result.
pub fn submit(dispatcher: &Addr<Dispatcher>, from: UserId, queued: Vec<QueuedSend>) {
    let (requests, answers): (Vec<_>, Vec<_>) =
        queued.into_iter().map(|q| (q.messages, q.answer)).unzip();
    // `send` queues the message now, so requests reach the dispatcher in order.
    let request = dispatcher.send(SubmitMany { from, requests });
    actix::spawn(async move {
        let mut results = request.await.ok().map(Vec::into_iter);
        for answer in answers {
            let result = results
                .as_mut()
                .and_then(Iterator::next)
                .unwrap_or(Err(DeliveryError::Stopped));
            // The request's future may be gone with its session; nothing to answer then.
            let _ = answer.send(result);
        }
    });
}
