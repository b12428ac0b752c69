//! Frames from the server: responses go to the waiting call, `msg.recv` becomes a [`Delivery`],
//! anything else is answered or logged.

use super::{Driver, NO_STATUS_CODE};
use crate::delivery::Delivery;
use crate::error::ClientError;
use crate::link::Link;
use serde::Deserialize;
use serde_json::{Value, json};
use titan_protocol::jsonrpc::{Frame, Incoming, parse_frame};
use titan_protocol::{ErrorCode, Id, Message, Response, RpcError};
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite::Message as WsMessage;

impl Driver {
    pub(super) async fn incoming(&mut self, frame: WsMessage) {
        match frame {
            WsMessage::Text(text) => {
                if let Some((id, messages)) = recv_request(&text) {
                    return self.deliver(id, messages).await;
                }
                match parse_frame(&text, usize::MAX) {
                    Ok(Frame::Single(item)) => self.item(item).await,
                    Ok(Frame::Batch(items)) => {
                        for item in items {
                            self.item(item).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "unparseable frame from the server"),
                }
            }
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
        match messages {
            Some(Ok(messages)) => self.deliver(id, messages).await,
            Some(Err(e)) => self.invalid_params(id, e.to_string()).await,
            None => {
                self.invalid_params(id, "params are required".to_owned())
                    .await;
            }
        }
    }

    /// Hands a `msg.recv`'s messages to the application (and acks them, with auto-ack).
    async fn deliver(&mut self, id: Id, messages: Vec<Message>) {
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

/// A `msg.recv` request as the server writes it, read straight into its messages: the general
/// path ([`parse_frame`]) builds a `Value` of the params first, then converts it, and a
/// receiving client (the load generator among them) does this for every message. Anything else
/// or anything unusual (a batch, escaped member names, other params) gives `None` and takes the
/// general path, which answers errors as before.
fn recv_request(text: &str) -> Option<(Id, Vec<Message>)> {
    #[derive(Deserialize)]
    struct RecvRequest<'a> {
        jsonrpc: &'a str,
        method: &'a str,
        id: Id,
        params: Vec<Message>,
    }
    if !text.contains("\"msg.recv\"") {
        return None;
    }
    let request: RecvRequest<'_> = serde_json::from_str(text).ok()?;
    (request.jsonrpc == "2.0" && request.method == "msg.recv")
        .then_some((request.id, request.params))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MESSAGE: &str = r#"{"id":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","from":"alice","to":"bob","time":"2025-01-01T00:00:00Z","message":"hi \"bob\""}"#;

    /// A `msg.recv` as the server writes it is read straight into the messages the general
    /// path would give.
    #[test]
    fn a_msg_recv_is_read_into_its_messages() {
        let text = format!(
            r#"{{"jsonrpc":"2.0","method":"msg.recv","params":[{MESSAGE},{MESSAGE}],"id":7}}"#
        );
        let (id, messages) = recv_request(&text).expect("read directly");
        assert_eq!(id, Id::from(7));
        let Ok(Frame::Single(Incoming::Request { params, .. })) = parse_frame(&text, usize::MAX)
        else {
            panic!("a request");
        };
        let general: Vec<Message> = serde_json::from_value(params.unwrap()).unwrap();
        assert_eq!(messages, general);
        assert_eq!(messages[0].message, "hi \"bob\"");
    }

    /// Anything else is left to the general path, which answers errors.
    #[test]
    fn anything_else_takes_the_general_path() {
        for text in [
            r#"{"jsonrpc":"2.0","id":7,"result":"ACK"}"#.to_owned(),
            format!(r#"[{{"jsonrpc":"2.0","method":"msg.recv","params":[{MESSAGE}],"id":7}}]"#),
            r#"{"jsonrpc":"2.0","method":"msg.recv","params":[{"to":"bob"}],"id":7}"#.to_owned(),
            r#"{"jsonrpc":"2.0","method":"msg.recv","id":7}"#.to_owned(),
            format!(r#"{{"jsonrpc":"1.0","method":"msg.recv","params":[{MESSAGE}],"id":7}}"#),
            r#"{"jsonrpc":"2.0","method":"echo","params":["msg.recv"],"id":7}"#.to_owned(),
        ] {
            assert!(recv_request(&text).is_none(), "{text}");
        }
    }
}
