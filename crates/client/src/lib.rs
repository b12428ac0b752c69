//! Titan's Rust client library, and the `titan-cli` terminal client built on it.
//!
//! Two ways to talk to a Titan server:
//!
//! - [`ReconnectingClient`] for applications: it reconnects with exponential backoff and jitter,
//!   authenticates again on every connection, acknowledges what it receives, hands each message
//!   id to you once (redeliveries are dropped), and keeps every sent message until the server
//!   ACKs it, resending it after a reconnect under the same client id so it is stored once.
//! - [`Client`] for one connection with full control (the server's black-box tests use it):
//!   every JSON-RPC call, explicit [`Delivery::ack`], close codes.
//!
//! ```no_run
//! use titan_client::{ReconnectOptions, ReconnectingClient};
//!
//! # async fn demo(token: &str) -> titan_client::Result<()> {
//! let options = ReconnectOptions { device: Some("laptop".into()), ..Default::default() };
//! let bob = ReconnectingClient::start("ws://127.0.0.1:3000/ws", token, options);
//! bob.send("alice", "hi alice").await?; // returns once stored, across reconnects
//! while let Some(message) = bob.next_message().await {
//!     // Each id once; acknowledged to the server once taken here.
//!     tracing::info!(from = %message.from, id = %message.id, "received");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A complete program is `examples/reconnecting.rs`
//! (`cargo run -p titan-client --example reconnecting -- URL TOKEN PEER`).
//!
//! With the single-connection [`Client`]:
//!
//! ```no_run
//! use std::time::Duration;
//! use titan_client::Client;
//!
//! # async fn demo(url: &str, token: &str) -> titan_client::Result<()> {
//! let alice = Client::connect(url).await?;
//! alice.authenticate(token, Some("phone")).await?;
//! alice.send("bob", "hello").await?;
//! if let Some(delivery) = alice.next_delivery_timeout(Duration::from_secs(1)).await? {
//!     for message in &delivery.messages {
//!         tracing::info!(from = %message.from, "got a message");
//!     }
//!     delivery.ack().await?;
//! }
//! alice.close().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Modules:
//! - [`reconnecting`] holds [`ReconnectingClient`], [`ReconnectOptions`], [`Backoff`] and
//!   [`ConnectionState`].
//! - [`client`] holds [`Client`] (JSON-RPC calls such as `auth.jwt`, `echo`, `msg.send`, and
//!   incoming deliveries over one WebSocket), [`ClientOptions`] and [`Outgoing`] for `msg.send`.
//! - [`delivery`] holds [`Delivery`], one `msg.recv` request, answered with `ack` or `reject`.
//! - [`connection`] is the background task that owns the socket and routes frames.
//! - `link` is the command queue and end-of-connection state shared by the handles and the task.
//! - [`raw`] holds [`RawSocket`], frame-level access for tests of malformed or oversized input.
//! - [`transport`] opens the WebSocket with generous client-side size limits.
//! - [`error`] holds [`ClientError`].

pub mod client;
pub mod connection;
pub mod delivery;
pub mod error;
mod link;
pub mod raw;
pub mod reconnecting;
pub mod transport;

pub use client::{Client, ClientOptions, Outgoing};
pub use connection::{CLOSE_HANDSHAKE_TIMEOUT, NO_STATUS_CODE};
pub use delivery::Delivery;
pub use error::{ClientError, Result};
pub use raw::{RawEvent, RawSocket};
pub use reconnecting::{Backoff, ConnectionState, ReconnectOptions, ReconnectingClient};
pub use tokio_tungstenite::tungstenite;
pub use transport::{DEFAULT_CONNECT_TIMEOUT, MAX_INCOMING_BYTES};
