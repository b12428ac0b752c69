//! Executing client commands that do not touch session state: echo and msg.send. (Auth changes
//! the session itself and lives in the actor.)

use actix::Addr;
use serde_json::Value;
use std::future::Future;
use titan_delivery::{DeliveryError, Dispatcher, Submit};
use titan_protocol::{OutgoingMessage, UserId};

use crate::error::SessionError;

/// The result of every successful command that has nothing else to say.
pub fn ack() -> Value {
    Value::String("ACK".to_owned())
}

/// Checks `msg.send`'s bodies against `limit` bytes, then hands the batch to the dispatcher.
/// The returned future resolves once every message is durably stored.
pub fn send(
    dispatcher: &Addr<Dispatcher>,
    from: UserId,
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
    let request = dispatcher.send(Submit { from, messages });
    Ok(async move {
        match request.await {
            Ok(Ok(())) => Ok(ack()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(DeliveryError::Stopped.into()),
        }
    })
}
