//! One actix actor per WebSocket connection.
//!
//! - [`session`]: the [`Session`] actor: frames in, JSON-RPC dispatch, heartbeat, the
//!   authentication gate, `msg.recv` out and its acknowledgements.
//! - [`command`]: executing a parsed client command (auth, echo, msg.send).
//! - [`push`]: `push.register` / `push.unregister` ([`PushDeps`]).
//! - [`inbound`]: the WebSocket read side: frames decoded from the request payload, fragments
//!   reassembled.
//! - [`outbound`]: the bounded outbound queue and the response body that drains it into the
//!   socket.
//! - [`auth`]: [`Authenticator`]: minting and verifying Titan's JWTs (HS256 or public key).
//! - [`jwks`]: [`jwks::JwksCache`]: signing keys fetched by key id, for `auth.jwks_url`.
//! - [`google`]: [`GoogleVerifier`]: verifying Google ID tokens for `auth.google` (openidconnect).
//! - [`accounts`]: [`Accounts`]: the verifier, the users store and the revocation list.
//! - `session/signin`: the session's `auth.google` and `auth.refresh`.
//! - `session/deadlines`: the session's one timer (pings, authentication window, token
//!   expiry, drain turn).
//! - [`limits`]: [`SessionConfig`], the per-connection limits and timings.
//! - [`error`]: [`SessionError`] and the one function that turns internal errors into client codes.
//! - [`connections`]: [`Connections`], the instance-wide side: admission before the upgrade
//!   (origin, per-IP rate, capacity), per-user counts and `msg.send` quota, and the drain
//!   (which sends each session its [`connections::DrainTurn`]).
//! - [`proxies`]: [`TrustedProxies`]: the client's address behind trusted reverse proxies
//!   (`X-Forwarded-For`), for the per-IP limit, the logs and the dev-token check.
//! - `observe`: what a session records into the server's metrics.
//!
//! [`start`] upgrades an HTTP request and starts the actor.

pub mod accounts;
pub mod auth;
pub mod command;
pub mod connections;
pub mod error;
pub mod google;
pub mod inbound;
pub mod jwks;
pub mod limits;
mod observe;
pub mod outbound;
pub mod proxies;
pub mod push;
pub mod session;

pub use accounts::Accounts;
pub use auth::{AuthError, Authenticator, Identity, TokenScope};
pub use connections::{ConnectionLimits, Connections, Refusal};
pub use error::SessionError;
pub use google::{GoogleConfig, GoogleVerifier, SignInError};
pub use limits::SessionConfig;
pub use proxies::TrustedProxies;
pub use push::PushDeps;
pub use session::{Session, SessionDeps, start};
