//! The closed set of client methods. A request's method and params are turned into a
//! [`ClientCommand`] here, once; an unknown method or wrong params become the error to send.

use crate::error::{ErrorCode, RpcError};
use crate::ids::DeviceId;
use crate::message::OutgoingMessage;
use crate::push::PushParams;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Most messages one `msg.send` may carry.
pub const MAX_SEND_BATCH: usize = 100;

/// Params of `auth.jwt`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuthJwtParams {
    pub token: String,
    #[serde(default)]
    pub device: Option<DeviceId>,
}

/// Params of `auth.google`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuthGoogleParams {
    /// The Google ID token the app received from Google Sign-In.
    pub token: String,
    #[serde(default)]
    pub device: Option<DeviceId>,
}

/// A client command with typed params.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientCommand {
    /// `auth.jwt {"token", "device"?}` -> `"ACK"`.
    AuthJwt(AuthJwtParams),
    /// `auth.google {"token", "device"?}` -> `{"token", "id", "name", "email", "picture"}`.
    AuthGoogle(AuthGoogleParams),
    /// `auth.refresh` (no params) -> `{"token", "expires_at"}`: a fresh token for this connection.
    AuthRefresh,
    /// `echo` any params -> the same params (null when absent).
    Echo(Value),
    /// `msg.send [{"to","message","id"?}, ...]` -> `"ACK"` once all are stored.
    MsgSend(Vec<OutgoingMessage>),
    /// `push.register {"platform", "token"}` -> `"ACK"`: binds a push token to this device.
    PushRegister(PushParams),
    /// `push.unregister {"platform", "token"}` -> `"ACK"`: removes that binding if present.
    PushUnregister(PushParams),
}

impl ClientCommand {
    /// Parses a method and its params.
    pub fn parse(method: &str, params: Option<Value>) -> Result<Self, RpcError> {
        match method {
            "auth.jwt" => Ok(Self::AuthJwt(typed(Some(object(params)?))?)),
            "auth.google" => Ok(Self::AuthGoogle(typed(Some(object(params)?))?)),
            "auth.refresh" => match params {
                None => Ok(Self::AuthRefresh),
                Some(Value::Object(o)) if o.is_empty() => Ok(Self::AuthRefresh),
                Some(Value::Array(a)) if a.is_empty() => Ok(Self::AuthRefresh),
                Some(_) => Err(RpcError::with_message(
                    ErrorCode::InvalidParams,
                    "Invalid params: auth.refresh takes no params",
                )),
            },
            "echo" => Ok(Self::Echo(params.unwrap_or(Value::Null))),
            "msg.send" => parse_send(params).map(Self::MsgSend),
            "push.register" => Ok(Self::PushRegister(typed(Some(object(params)?))?)),
            "push.unregister" => Ok(Self::PushUnregister(typed(Some(object(params)?))?)),
            other => Err(RpcError::with_message(
                ErrorCode::MethodNotFound,
                format!("Method not found: {other}"),
            )),
        }
    }

    /// Every method [`ClientCommand::parse`] knows.
    pub const METHODS: [&'static str; 7] = [
        "auth.jwt",
        "auth.google",
        "auth.refresh",
        "echo",
        "msg.send",
        "push.register",
        "push.unregister",
    ];

    /// Where the method is in [`Self::METHODS`] (an index for per-method counters, whose
    /// `'static` name labels them), or `None` when Titan does not serve it.
    pub fn method_index(method: &str) -> Option<usize> {
        Self::METHODS.iter().position(|m| *m == method)
    }

    /// Methods served before the connection is authenticated (`auth.refresh` answers
    /// "not authenticated" itself).
    pub fn allowed_before_auth(method: &str) -> bool {
        method.starts_with("auth.")
    }
}

/// Params that must be a JSON object. serde would also fill a struct from an array of its
/// fields in order (`["bob", "hi"]` as a message), a shape the protocol does not define; refusing
/// it keeps what is accepted equal to what docs/protocol.md documents.
fn object(params: Option<Value>) -> Result<Value, RpcError> {
    match params {
        Some(obj @ Value::Object(_)) => Ok(obj),
        None => Err(RpcError::with_message(
            ErrorCode::InvalidParams,
            "Invalid params: params are required",
        )),
        Some(_) => Err(RpcError::with_message(
            ErrorCode::InvalidParams,
            "Invalid params: expected an object",
        )),
    }
}

fn typed<T: DeserializeOwned>(params: Option<Value>) -> Result<T, RpcError> {
    let params = params.ok_or_else(|| {
        RpcError::with_message(
            ErrorCode::InvalidParams,
            "Invalid params: params are required",
        )
    })?;
    serde_json::from_value(params).map_err(|e| {
        RpcError::with_message(ErrorCode::InvalidParams, format!("Invalid params: {e}"))
    })
}

/// `msg.send` takes an array of 1..=[`MAX_SEND_BATCH`] messages; a single object is accepted as a
/// one-message array.
fn parse_send(params: Option<Value>) -> Result<Vec<OutgoingMessage>, RpcError> {
    let messages: Vec<OutgoingMessage> = match params {
        Some(Value::Object(obj)) => vec![typed(Some(Value::Object(obj)))?],
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| typed(Some(object(Some(item))?)))
            .collect::<Result<_, _>>()?,
        other => typed(other)?,
    };
    if messages.is_empty() || messages.len() > MAX_SEND_BATCH {
        return Err(RpcError::with_message(
            ErrorCode::InvalidParams,
            format!(
                "Invalid params: msg.send takes 1 to {MAX_SEND_BATCH} messages, got {}",
                messages.len()
            ),
        ));
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `METHODS` is exactly what `parse` serves: each listed method parses (or fails on its
    /// params, not as unknown), and a name off the list is unknown.
    #[test]
    fn methods_lists_what_parse_serves() {
        for method in ClientCommand::METHODS {
            let unknown = matches!(
                ClientCommand::parse(method, None),
                Err(e) if e.kind() == Some(ErrorCode::MethodNotFound)
            );
            assert!(!unknown, "{method}");
            let index = ClientCommand::method_index(method);
            assert_eq!(index.map(|i| ClientCommand::METHODS[i]), Some(method));
        }
        for method in ["msg.recv", "auth", "Echo", ""] {
            assert!(ClientCommand::parse(method, None).is_err());
            assert_eq!(ClientCommand::method_index(method), None);
        }
    }

    #[test]
    fn parses_each_method() {
        let c = ClientCommand::parse("auth.jwt", Some(json!({"token": "t", "device": "phone"})));
        assert!(
            matches!(c, Ok(ClientCommand::AuthJwt(p)) if p.token == "t" && p.device.as_ref().map(|d| d.as_str()) == Some("phone"))
        );
        assert_eq!(
            ClientCommand::parse("echo", Some(json!([1, 2]))),
            Ok(ClientCommand::Echo(json!([1, 2])))
        );
        let c = ClientCommand::parse("msg.send", Some(json!([{"to": "bob", "message": "hi"}])));
        assert!(matches!(c, Ok(ClientCommand::MsgSend(m)) if m.len() == 1 && m[0].id.is_none()));
    }

    #[test]
    fn rejects_bad_params_with_invalid_params() {
        for params in [
            None,
            Some(json!([])),
            Some(json!([{"to": "bob"}])),
            Some(json!([{"to": "", "message": "x"}])),
            Some(json!([{"to": 5, "message": "x"}])),
            Some(json!(vec![
                json!({"to": "b", "message": "x"});
                MAX_SEND_BATCH + 1
            ])),
            Some(json!([["bob", "x"]])),
            Some(json!(["bob"])),
        ] {
            let err = ClientCommand::parse("msg.send", params.clone()).unwrap_err();
            assert_eq!(err.code, -32602, "{params:?}");
        }
        assert_eq!(
            ClientCommand::parse("auth.jwt", Some(json!({})))
                .unwrap_err()
                .code,
            -32602
        );
        assert_eq!(
            ClientCommand::parse("auth.jwt", Some(json!(["t"])))
                .unwrap_err()
                .code,
            -32602
        );
    }

    /// auth.google needs an object with a token; auth.refresh takes nothing.
    #[test]
    fn parses_sign_in_methods() {
        let c = ClientCommand::parse("auth.google", Some(json!({"token": "g", "device": "tab"})));
        assert!(matches!(c, Ok(ClientCommand::AuthGoogle(p)) if p.token == "g"));
        for bad in [None, Some(json!({})), Some(json!(["g"]))] {
            assert_eq!(
                ClientCommand::parse("auth.google", bad).unwrap_err().code,
                -32602
            );
        }
        assert_eq!(
            ClientCommand::parse("auth.refresh", None),
            Ok(ClientCommand::AuthRefresh)
        );
        assert_eq!(
            ClientCommand::parse("auth.refresh", Some(json!({"x": 1})))
                .unwrap_err()
                .code,
            -32602
        );
    }

    /// `push.register` and `push.unregister` parse their object params; anything else is -32602.
    #[test]
    fn parses_push_methods() {
        let c = ClientCommand::parse(
            "push.register",
            Some(json!({"platform": "fcm", "token": "tok"})),
        );
        assert!(
            matches!(c, Ok(ClientCommand::PushRegister(p)) if p.platform == crate::PushPlatform::Fcm && p.token.as_str() == "tok")
        );
        let c = ClientCommand::parse(
            "push.unregister",
            Some(json!({"platform": "apns", "token": "tok"})),
        );
        assert!(matches!(c, Ok(ClientCommand::PushUnregister(_))));
        for params in [
            None,
            Some(json!(["fcm", "tok"])),
            Some(json!({"platform": "sms", "token": "tok"})),
            Some(json!({"platform": "fcm", "token": ""})),
        ] {
            let err = ClientCommand::parse("push.register", params.clone()).unwrap_err();
            assert_eq!(err.code, -32602, "{params:?}");
        }
    }

    #[test]
    fn unknown_method_is_method_not_found() {
        assert_eq!(ClientCommand::parse("nope", None).unwrap_err().code, -32601);
    }
}
