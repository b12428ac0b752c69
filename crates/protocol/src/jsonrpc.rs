//! JSON-RPC 2.0 envelopes. A text frame is parsed once, here, into [`Frame`]; the session never
//! looks at raw JSON. Writing goes through [`Response`] and [`ServerRequest`], which always carry
//! `"jsonrpc":"2.0"`. Frames without the `jsonrpc` member are accepted because the old Go clients
//! never sent it.

use crate::error::{ErrorCode, RpcError};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// A request id, echoed back verbatim. JSON-RPC allows a string, a number or null.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Number(serde_json::Number),
    String(String),
    Null,
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::Number(n.into())
    }
}

impl Id {
    /// The id as an unsigned integer, when it is one (server request ids always are).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Id::Number(n) => n.as_u64(),
            _ => None,
        }
    }
}

/// One parsed JSON-RPC item.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A call that expects a response.
    Request {
        id: Id,
        method: String,
        params: Option<Value>,
    },
    /// A call without an id: it is executed and never answered.
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// An answer to a request the other side sent. A malformed response is kept as an error
    /// outcome: the sender of the request treats it as "not acknowledged".
    Response {
        id: Id,
        outcome: Result<Value, RpcError>,
    },
    /// Not a valid request or response; answered with this error (id null when unreadable).
    Invalid { id: Id, error: RpcError },
}

/// A parsed text frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Single(Incoming),
    /// A JSON-RPC batch; never empty.
    Batch(Vec<Incoming>),
}

/// Parses one text frame. An `Err` is the single error response for the whole frame: not JSON
/// (-32700), an empty batch or a batch longer than `max_batch` (-32600), all with id null.
pub fn parse_frame(text: &str, max_batch: usize) -> Result<Frame, RpcError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| RpcError::with_message(ErrorCode::ParseError, format!("Parse error: {e}")))?;
    match value {
        Value::Array(items) if items.is_empty() => Err(RpcError::with_message(
            ErrorCode::InvalidRequest,
            "Invalid Request: empty batch",
        )),
        Value::Array(items) if items.len() > max_batch => Err(RpcError::with_message(
            ErrorCode::InvalidRequest,
            format!(
                "Invalid Request: batch of {} items, at most {max_batch}",
                items.len()
            ),
        )),
        Value::Array(items) => Ok(Frame::Batch(items.into_iter().map(classify).collect())),
        other => Ok(Frame::Single(classify(other))),
    }
}

fn invalid(id: Id, why: &str) -> Incoming {
    Incoming::Invalid {
        id,
        error: RpcError::with_message(ErrorCode::InvalidRequest, format!("Invalid Request: {why}")),
    }
}

/// Sorts one JSON value into request, notification, response or invalid.
pub fn classify(value: Value) -> Incoming {
    let Value::Object(mut obj) = value else {
        return invalid(Id::Null, "not an object");
    };
    let (id, id_present) = match obj.remove("id") {
        None => (Id::Null, false),
        Some(raw) => match serde_json::from_value::<Id>(raw) {
            Ok(id) => (id, true),
            Err(_) => return invalid(Id::Null, "id must be a string, a number or null"),
        },
    };
    match obj.get("jsonrpc") {
        None => {}
        Some(Value::String(v)) if v == "2.0" => {}
        Some(_) => return invalid(id, "jsonrpc must be \"2.0\""),
    }
    if let Some(method) = obj.remove("method") {
        let Value::String(method) = method else {
            return invalid(id, "method must be a string");
        };
        let params = match obj.remove("params") {
            None => None,
            Some(p @ (Value::Array(_) | Value::Object(_))) => Some(p),
            Some(_) => return invalid(id, "params must be an array or an object"),
        };
        return if id_present {
            Incoming::Request { id, method, params }
        } else {
            Incoming::Notification { method, params }
        };
    }
    response(id, obj)
}

fn response(id: Id, mut obj: Map<String, Value>) -> Incoming {
    match (obj.remove("result"), obj.remove("error")) {
        (Some(result), None) => Incoming::Response {
            id,
            outcome: Ok(result),
        },
        (None, Some(error)) => {
            let error = serde_json::from_value::<RpcError>(error).unwrap_or_else(|_| {
                RpcError::with_message(ErrorCode::InvalidRequest, "malformed error object")
            });
            Incoming::Response {
                id,
                outcome: Err(error),
            }
        }
        (Some(_), Some(_)) => Incoming::Response {
            id,
            outcome: Err(RpcError::with_message(
                ErrorCode::InvalidRequest,
                "response has both result and error",
            )),
        },
        (None, None) => invalid(id, "neither a request nor a response"),
    }
}

/// A response: exactly one of result or error.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: Id,
    pub outcome: Result<Value, RpcError>,
}

impl Response {
    pub fn ok(id: Id, result: Value) -> Self {
        Self {
            id,
            outcome: Ok(result),
        }
    }

    pub fn error(id: Id, error: RpcError) -> Self {
        Self {
            id,
            outcome: Err(error),
        }
    }

    /// The frame text. Serialising these types cannot fail (string keys, no maps with
    /// non-string keys), so an error here would be a bug; it is mapped to an internal error frame.
    pub fn to_text(&self) -> String {
        to_text(self)
    }
}

impl Serialize for Response {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("jsonrpc", "2.0")?;
        match &self.outcome {
            Ok(result) => map.serialize_entry("result", result)?,
            Err(error) => map.serialize_entry("error", error)?,
        }
        map.serialize_entry("id", &self.id)?;
        map.end()
    }
}

/// A request the server sends (e.g. `msg.recv`), or a client sends (the client crate uses it).
#[derive(Debug, Clone, Serialize)]
pub struct ServerRequest<'a, P: Serialize> {
    pub jsonrpc: &'static str,
    pub method: &'a str,
    pub params: P,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
}

impl<'a, P: Serialize> ServerRequest<'a, P> {
    pub fn new(id: Option<Id>, method: &'a str, params: P) -> Self {
        Self {
            jsonrpc: "2.0",
            method,
            params,
            id,
        }
    }

    pub fn to_text(&self) -> String {
        to_text(self)
    }
}

/// Serialises a batch of responses as one frame.
pub fn batch_to_text(responses: &[Response]) -> String {
    to_text(&responses)
}

fn to_text<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| {
        r#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error"},"id":null}"#
            .to_owned()
    })
}

#[cfg(test)]
#[path = "jsonrpc_tests.rs"]
mod tests;
