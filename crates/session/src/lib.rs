//! One actix actor per WebSocket connection.
//!
//! - [`session`]: the [`Session`] actor: frames in, JSON-RPC dispatch, heartbeat, the
//!   authentication gate, `msg.recv` out and its acknowledgements.
//! - [`command`]: executing a parsed client command (auth, echo, msg.send).
//! - [`push`]: `push.register` / `push.unregister` ([`PushDeps`]).
//! - [`outbound`]: the bounded outbound queue and the writer task that drains it into the socket.
//! - [`auth`]: [`Authenticator`]: minting and verifying Titan's JWTs.
//! - [`limits`]: [`SessionConfig`], the per-connection limits and timings.
//! - [`error`]: [`SessionError`] and the one function that turns internal errors into client codes.
//!
//! [`start`] upgrades an HTTP request and starts the actor.

pub mod auth;
pub mod command;
pub mod error;
pub mod limits;
pub mod outbound;
pub mod push;
pub mod session;

pub use auth::{AuthError, Authenticator, Identity};
pub use error::SessionError;
pub use limits::SessionConfig;
pub use push::PushDeps;
pub use session::{Session, SessionDeps, start};
