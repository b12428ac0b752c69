//! Frames from the server: responses go to the waiting call, `msg.recv` becomes a [`Delivery`],
//! anything else is answered or logged.

use super::{Driver, NO_STATUS_CODE};
use crate::delivery::Delivery;
use crate::error::ClientError;
use crate::link::Link;
use serde_json::{Value, json};
use titan_protocol::jsonrpc::{Frame, Incoming, parse_frame};
use titan_protocol::{ErrorCode, Id, Message, Response, RpcError};
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Message as WsMessage;

impl Driver {
    pub(super) async fn incoming(&mut self, frame: WsMessage) {
        match frame {
            WsMessage::Text(text) => match parse_frame(&text, usize::MAX) {
                Ok(Frame::Single(item)) => self.item(item).await,
                Ok(Frame::Batch(items)) => {
                    for item in items {
                        self.item(item).await;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "unparseable frame from the server"),
            },
            WsMessage::Close(frame) => {
                let frame = match frame {
                    Some(f) => (u16::from(f.code), f.reason.to_string()),
                    None => (NO_STATUS_CODE, String::new()),
                };
                self.end(Some(frame), "closed by the server".to_owned());
            }
            WsMessage::Binary(_) => tracing::warn!("ignoring a binary frame from the server"),
            WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {}
        }
    }

    async fn item(&mut self, item: Incoming) {
        match item {
            Incoming::Response { id, outcome } => {
                match id.as_u64().and_then(|id| self.pending.remove(&id)) {
                    Some(reply) => {
                        let _ = reply.send(outcome.map_err(ClientError::Rpc));
                    }
                    None => tracing::debug!(?id, "response to no waiting call"),
                }
            }
            Incoming::Request { id, method, params } if method == "msg.recv" => {
                self.recv(id, params).await;
            }
            Incoming::Request { id, method, .. } => {
                tracing::warn!(%method, "unknown server method");
                let error = RpcError::with_message(
                    ErrorCode::MethodNotFound,
                    format!("Method not found: {method}"),
                );
                self.respond(Response::error(id, error)).await;
            }
            Incoming::Notification { method, .. } => {
                tracing::debug!(%method, "ignoring a server notification");
            }
            Incoming::Invalid { error, .. } => {
                tracing::warn!(%error, "invalid JSON-RPC item from the server");
            }
        }
    }

    async fn recv(&mut self, id: Id, params: Option<Value>) {
        let messages = params.map(serde_json::from_value::<Vec<Message>>);
        let messages = match messages {
            Some(Ok(messages)) => messages,
            Some(Err(e)) => return self.invalid_params(id, e.to_string()).await,
            None => {
                return self
                    .invalid_params(id, "params are required".to_owned())
                    .await;
            }
        };
        let Some(outbound) = self.outbound.upgrade() else {
            return; // The client and all its deliveries are gone: leave the messages pending.
        };
        let link = Link {
            outbound,
            ended: self.ended_tx.subscribe(),
        };
        let auto_ack = self.auto_ack && self.can_write;
        match self
            .deliveries
            .try_send(Delivery::new(id.clone(), messages, link, auto_ack))
        {
            Ok(()) if auto_ack => self.respond(Response::ok(id, json!("ACK"))).await,
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(_)) => {
                tracing::warn!("delivery buffer full, refusing msg.recv");
                let error =
                    RpcError::with_message(ErrorCode::InternalError, "client delivery buffer full");
                self.respond(Response::error(id, error)).await;
            }
        }
    }

    async fn invalid_params(&mut self, id: Id, why: String) {
        tracing::warn!(%why, "bad msg.recv params");
        let error =
            RpcError::with_message(ErrorCode::InvalidParams, format!("Invalid params: {why}"));
        self.respond(Response::error(id, error)).await;
    }

    async fn respond(&mut self, response: Response) {
        if self.can_write {
            let _ = self.write(WsMessage::text(response.to_text())).await;
        }
    }
}
