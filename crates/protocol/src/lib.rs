//! Titan's wire protocol: the types that cross the WebSocket, and nothing that does I/O.
//!
//! - [`ids`]: newtypes for user, device and message ids, with their validation rules.
//! - [`message`]: the [`Message`] delivered by `msg.recv` (kept and sent as its JSON text,
//!   [`MessageJson`]) and the [`OutgoingMessage`] of `msg.send`.
//! - [`jsonrpc`]: JSON-RPC 2.0 envelopes: parsing a frame (single or batch) into [`Incoming`]
//!   items, and writing responses and server requests.
//! - [`command`]: the closed set of client methods with their typed params ([`ClientCommand`]).
//! - [`send_request`]: the fast path of `msg.send`, read straight into its messages
//!   ([`parse_send_request`]); anything unusual takes the general path.
//! - [`error`]: the client-visible error code table ([`ErrorCode`], [`RpcError`]).
//! - [`push`]: `push.register` / `push.unregister` params, [`PushPlatform`] and [`PushToken`].
//! - [`close`]: the WebSocket close codes Titan uses and what a client should do on each.
//! - `one_edit` (tests only): the texts one edit away from a frame, for the fast paths' tests.
//!
//! The protocol is documented for humans in `docs/protocol.md`; the golden tests in this crate
//! pin the exact JSON.

pub mod close;
pub mod command;
pub mod error;
pub mod ids;
pub mod jsonrpc;
pub mod message;
pub mod push;
pub mod send_request;

#[cfg(test)]
mod one_edit;

pub use close::CloseCode;
pub use command::{AuthGoogleParams, AuthJwtParams, ClientCommand, MAX_SEND_BATCH};
pub use error::{ErrorCode, RpcError};
pub use ids::{DeviceId, IdError, MessageId, UserId};
pub use jsonrpc::{Frame, Id, Incoming, Response};
pub use message::{Message, MessageJson, OutgoingMessage};
pub use push::{PushParams, PushPlatform, PushToken, PushTokenError};
pub use send_request::parse_send_request;
