//! JSON-RPC 2.0 envelopes. A text frame is parsed once, here, into [`Frame`]; the session never
//! looks at raw JSON. Writing goes through [`Response`] and [`ServerRequest`], which always carry
//! `"jsonrpc":"2.0"`. Frames without the `jsonrpc` member are accepted because the old Go clients
//! never sent it.

use crate::error::{ErrorCode, RpcError};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

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
    // Fast path for the common frame, one well-formed object: read straight into its members,
    // without building a map of the whole object first. Anything it does not take (a batch, a
    // duplicate member, a member of the wrong JSON type, bad JSON) goes the general way below,
    // which alone decides what is invalid and how.
    if !text.trim_start().starts_with('[')
        && let Ok(members) = serde_json::from_str::<Members>(text)
    {
        return Ok(Frame::Single(members.classify()));
    }
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
    let jsonrpc = match obj.remove("jsonrpc") {
        None => Version::Absent,
        Some(Value::String(v)) if v == "2.0" => Version::Two,
        Some(_) => Version::Other,
    };
    Members {
        id: obj.remove("id"),
        jsonrpc,
        method: obj.remove("method"),
        params: obj.remove("params"),
        result: obj.remove("result"),
        error: obj.remove("error"),
    }
    .classify()
}

/// The members of one JSON-RPC object that matter, each `Some` when present (even as `null`);
/// other members are ignored. Deserialized directly by the fast path of [`parse_frame`], which
/// fails on a duplicate member (the general path lets the last one win) or a non-string
/// `jsonrpc`, and then leaves the frame to [`classify`].
#[derive(Deserialize)]
struct Members {
    #[serde(default, deserialize_with = "present")]
    id: Option<Value>,
    #[serde(default)]
    jsonrpc: Version,
    #[serde(default, deserialize_with = "present")]
    method: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    error: Option<Value>,
}

/// The `jsonrpc` member: absent, `"2.0"`, or anything else. The fast path reads only a string
/// here (borrowed when unescaped).
#[derive(Default)]
pub(crate) enum Version {
    #[default]
    Absent,
    Two,
    Other,
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Version;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Version, E> {
                Ok(if v == "2.0" {
                    Version::Two
                } else {
                    Version::Other
                })
            }
        }
        d.deserialize_str(Text)
    }
}

/// A member that is present, whatever its value (`null` included): `Option<Value>` alone
/// would read `"id": null` as absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl Members {
    fn classify(self) -> Incoming {
        let (id, id_present) = match self.id {
            None => (Id::Null, false),
            Some(raw) => match serde_json::from_value::<Id>(raw) {
                Ok(id) => (id, true),
                Err(_) => return invalid(Id::Null, "id must be a string, a number or null"),
            },
        };
        if let Version::Other = self.jsonrpc {
            return invalid(id, "jsonrpc must be \"2.0\"");
        }
        if let Some(method) = self.method {
            let Value::String(method) = method else {
                return invalid(id, "method must be a string");
            };
            let params = match self.params {
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
        response(id, self.result, self.error)
    }
}

fn response(id: Id, result: Option<Value>, error: Option<Value>) -> Incoming {
    match (result, error) {
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
    // Sized for a typical frame up front: growing from empty took five reallocations per frame.
    let mut text = Vec::with_capacity(TEXT_CAPACITY);
    serde_json::to_writer(&mut text, value)
        .ok()
        // serde_json writes only valid UTF-8, so this conversion does not fail either.
        .and_then(|()| String::from_utf8(text).ok())
        .unwrap_or_else(|| INTERNAL_ERROR_FRAME.to_owned())
}

const INTERNAL_ERROR_FRAME: &str =
    r#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error"},"id":null}"#;

/// Starting buffer of a serialised frame: an ACK or an error fits, and a `msg.recv` of one
/// short message grows once.
const TEXT_CAPACITY: usize = 256;

#[cfg(test)]
#[path = "jsonrpc_tests.rs"]
mod tests;
