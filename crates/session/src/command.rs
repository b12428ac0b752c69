//! Executing client commands that do not touch session state: echo and msg.send. (Auth changes
//! the session itself and lives in the actor.)
//!
//! `msg.send` requests are not handed to the dispatcher one by one: the session queues those
//! that arrive together (the frames of one read of the socket, see `FlushSends` in the session)
//! and [`submit`]s them as one [`SubmitMany`]. They are then stored in one store call and
//! answered together, so their answers leave in one write instead of one system call each
//! (docs/benchmarks.md, fifth set). Each request is still stored and refused on its own.
//!
//! A request that came alone in its frame (nearly every one under load) is answered straight
//! from the dispatcher's results by the session ([`Answer::Direct`]); one inside a JSON-RPC
//! batch through a future that the batch's answer waits for ([`Answer::Reply`]).

use actix::Addr;
use serde_json::Value;
use std::future::Future;
use titan_delivery::{DeliveryError, Dispatcher, SubmitMany};
use titan_protocol::{Id, OutgoingMessage, Response, UserId};
use tokio::sync::oneshot;

use crate::error::{SessionError, to_rpc};

/// The result of every successful command that has nothing else to say.
pub fn ack() -> Value {
    Value::String("ACK".to_owned())
}

/// One `msg.send` waiting for the others of its read to be submitted with it.
pub struct QueuedSend {
    messages: Vec<OutgoingMessage>,
    answer: Answer,
}

/// Where a queued `msg.send`'s result goes.
pub enum Answer {
    /// To the future [`queue`] returned.
    Reply(oneshot::Sender<Result<(), DeliveryError>>),
    /// Into a response to request `id`, which [`submit`]'s future returns for the session to
    /// write.
    Direct { id: Id },
}

/// Refuses a `msg.send` with a message over `limit` bytes.
pub fn check_sizes(messages: &[OutgoingMessage], limit: usize) -> Result<(), SessionError> {
    match messages
        .iter()
        .enumerate()
        .find(|(_, m)| m.message.len() > limit)
    {
        Some((index, m)) => Err(SessionError::MessageTooLarge {
            index,
            size: m.message.len(),
            limit,
        }),
        None => Ok(()),
    }
}

/// Queues a `msg.send` whose sizes were checked ([`check_sizes`]). The returned future resolves
/// once every message is durably stored (after [`submit`]).
pub fn queue(
    queue: &mut Vec<QueuedSend>,
    messages: Vec<OutgoingMessage>,
) -> impl Future<Output = Result<Value, SessionError>> + 'static {
    let (answer, answered) = oneshot::channel();
    queue.push(QueuedSend {
        messages,
        answer: Answer::Reply(answer),
    });
    async move {
        match answered.await {
            Ok(Ok(())) => Ok(ack()),
            Ok(Err(e)) => Err(e.into()),
            // The session or the dispatcher stopped before the request was stored.
            Err(_) => Err(DeliveryError::Stopped.into()),
        }
    }
}

/// Queues request `id`, whose sizes were checked, to be answered by the session itself with
/// the response [`submit`]'s future returns.
pub fn queue_direct(queue: &mut Vec<QueuedSend>, messages: Vec<OutgoingMessage>, id: Id) {
    queue.push(QueuedSend {
        messages,
        answer: Answer::Direct { id },
    });
}

/// Hands the requests `from` queued to the dispatcher as one [`SubmitMany`], in their order.
/// The returned future answers each [`Answer::Reply`] request from its own result and resolves
/// to the responses of the [`Answer::Direct`] ones, in order.
pub fn submit(
    dispatcher: &Addr<Dispatcher>,
    from: UserId,
    queued: Vec<QueuedSend>,
) -> impl Future<Output = Vec<Response>> + 'static {
    let (requests, answers): (Vec<_>, Vec<_>) =
        queued.into_iter().map(|q| (q.messages, q.answer)).unzip();
    // `send` queues the message now, so requests reach the dispatcher in order.
    let request = dispatcher.send(SubmitMany { from, requests });
    async move {
        let mut results = request.await.ok().map(Vec::into_iter);
        let mut responses = Vec::new();
        for answer in answers {
            let result = results
                .as_mut()
                .and_then(Iterator::next)
                .unwrap_or(Err(DeliveryError::Stopped));
            match answer {
                // The request's future may be gone with its session; nothing to answer then.
                Answer::Reply(reply) => {
                    let _ = reply.send(result);
                }
                Answer::Direct { id } => responses.push(Response {
                    id,
                    outcome: result.map(|()| ack()).map_err(|e| to_rpc(&e.into())),
                }),
            }
        }
        responses
    }
}
