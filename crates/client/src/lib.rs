//! An async client for Titan, used by the server's black-box tests and by the benchmark.
//!
//! - [`client`] holds [`Client`] (JSON-RPC calls such as `auth.jwt`, `echo`, `msg.send`, and
//!   incoming deliveries over one WebSocket), [`ClientOptions`] and [`Outgoing`] for `msg.send`.
//! - [`delivery`] holds [`Delivery`], one `msg.recv` request, answered with `ack` or `reject`.
//! - [`connection`] is the background task that owns the socket and routes frames.
//! - `link` is the command queue and end-of-connection state shared by the handles and the task.
//! - [`raw`] holds [`RawSocket`], frame-level access for tests of malformed or oversized input.
//! - [`transport`] opens the WebSocket with generous client-side size limits.
//! - [`error`] holds [`ClientError`].
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
