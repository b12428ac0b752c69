//! [`ReconnectingClient`]: a [`Client`](crate::Client) that survives its connection. It
//! reconnects with exponential backoff and jitter, authenticates again on every connection,
//! acknowledges what it receives, drops redeliveries by message id, and keeps every sent message
//! until the server ACKs it, sending it again after a reconnect under the same client id (the
//! server's idempotency key), so nothing is lost and nothing is stored twice.
//!
//! The connection is driven by a background task (`supervisor`); this handle only queues
//! commands and reads the stream of received messages.

mod backoff;
mod seen;
mod supervisor;

use crate::client::{ClientOptions, Outgoing};
use crate::error::{ClientError, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use titan_protocol::Message;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

pub use backoff::Backoff;

/// How a [`ReconnectingClient`] behaves.
#[derive(Debug, Clone)]
pub struct ReconnectOptions {
    /// The device to authenticate as (the server's `"default"` when `None`). Every device has
    /// its own delivery cursor: a restarted app should reuse its device name to catch up.
    pub device: Option<String>,
    /// Reconnect delays: the first retry waits about `backoff.min`, each further one up to twice
    /// as long, never more than `backoff.max`; each is jittered so clients spread out.
    pub backoff: Backoff,
    /// How many received message ids are remembered to drop redeliveries.
    pub seen_capacity: usize,
    /// Received messages held for the application (not yet acknowledged). When full, further
    /// deliveries are refused (left pending on the server, which sends them again later), never
    /// dropped.
    pub message_buffer: usize,
    /// Options of each underlying connection (`auto_ack` is ignored: acks are sent only once a
    /// message is in the buffer).
    pub client: ClientOptions,
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        Self {
            device: None,
            backoff: Backoff::default(),
            seen_capacity: 10_000,
            message_buffer: 1024,
            client: ClientOptions::default(),
        }
    }
}

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connecting and authenticating; `attempt` counts failures since the last success.
    Connecting { attempt: u32 },
    /// Connected and authenticated.
    Online,
    /// Waiting `retry_in` before the next attempt, after `reason`.
    Waiting { retry_in: Duration, reason: String },
    /// Given up for good (stopped by the application, token refused, or a close code that says
    /// not to reconnect); sends fail and the message stream has ended.
    Stopped { reason: String },
}

/// What the handle asks the supervisor task to do.
pub(crate) enum Command {
    Send {
        outgoing: Outgoing,
        reply: oneshot::Sender<Result<()>>,
    },
    Stop,
}

/// A connection to Titan that reconnects by itself. See the [module docs](self).
///
/// ```no_run
/// use titan_client::{ReconnectOptions, ReconnectingClient};
///
/// # async fn demo(token: &str) -> titan_client::Result<()> {
/// let options = ReconnectOptions { device: Some("laptop".into()), ..Default::default() };
/// let client = ReconnectingClient::start("ws://127.0.0.1:3000/ws", token, options);
/// client.send("bob", "hi").await?; // returns once the server stored it, however many reconnects
/// while let Some(message) = client.next_message().await {
///     // Each id once; acknowledged to the server once taken here.
///     tracing::info!(from = %message.from, id = %message.id, "received");
/// }
/// # Ok(())
/// # }
/// ```
pub struct ReconnectingClient {
    commands: mpsc::Sender<Command>,
    messages: Mutex<mpsc::Receiver<supervisor::Received>>,
    state: watch::Receiver<ConnectionState>,
    token: Arc<StdMutex<String>>,
    /// Prefix of this client's message ids, random per client so ids never collide.
    id_prefix: String,
    next_id: AtomicU64,
}

impl ReconnectingClient {
    /// Starts connecting to `url` (`ws://host:port/ws`) with `token` in the background. Must be
    /// called inside a tokio runtime.
    pub fn start(
        url: impl Into<String>,
        token: impl Into<String>,
        options: ReconnectOptions,
    ) -> Self {
        let (commands, command_rx) = mpsc::channel(options.client.outbound_buffer.max(1));
        let (message_tx, messages) = mpsc::channel(options.message_buffer.max(1));
        let (state_tx, state) = watch::channel(ConnectionState::Connecting { attempt: 0 });
        let token = Arc::new(StdMutex::new(token.into()));
        let supervisor =
            supervisor::Supervisor::new(url.into(), token.clone(), options, message_tx, state_tx);
        tokio::spawn(supervisor.run(command_rx));
        Self {
            commands,
            messages: Mutex::new(messages),
            state,
            token,
            id_prefix: format!("rc-{:016x}", backoff::random_u64()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Sends `message` to `to` and returns its client id once the server stored it. While the
    /// connection is down the message waits and goes out after the reconnect. Fails only when
    /// the server refuses it for good (e.g. too large) or the client stops.
    pub async fn send(&self, to: &str, message: &str) -> Result<String> {
        let id = format!(
            "{}-{}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        self.send_outgoing(Outgoing::new(to, message).with_id(id.clone()))
            .await?;
        Ok(id)
    }

    /// Sends a message with the caller's own client id (for example one kept across a restart
    /// of the app: the server stores it once however often it is sent).
    pub async fn send_outgoing(&self, outgoing: Outgoing) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.commands
            .send(Command::Send { outgoing, reply })
            .await
            .map_err(|_| self.stopped_error())?;
        done.await.map_err(|_| self.stopped_error())?
    }

    /// The next received message, each id at most once; `None` once the client has stopped and
    /// the buffer is empty. A `msg.recv` is acknowledged once every message of it has been taken
    /// here, so a crash before that gets them redelivered (at least once to the application).
    pub async fn next_message(&self) -> Option<Message> {
        let received = self.messages.lock().await.recv().await?;
        Some(received.take())
    }

    /// Like [`ReconnectingClient::next_message`], but `Ok(None)` when nothing arrives within
    /// `wait`, and `Err` once the client has stopped.
    pub async fn next_message_timeout(&self, wait: Duration) -> Result<Option<Message>> {
        match tokio::time::timeout(wait, self.next_message()).await {
            Ok(Some(message)) => Ok(Some(message)),
            Ok(None) => Err(self.stopped_error()),
            Err(_) => Ok(None),
        }
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change (for a status line in a UI).
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Waits until the client is online; fails if it stops first.
    pub async fn online(&self) -> Result<()> {
        let mut state = self.state.clone();
        let reached = state
            .wait_for(|s| matches!(s, ConnectionState::Online | ConnectionState::Stopped { .. }))
            .await
            .map(|s| s.clone());
        match reached {
            Ok(ConnectionState::Online) => Ok(()),
            _ => Err(self.stopped_error()),
        }
    }

    /// Replaces the token used from the next (re)connection on, e.g. before the old one expires.
    pub fn set_token(&self, token: impl Into<String>) {
        // A poisoned lock only means a panic elsewhere while holding a String: the value is fine.
        let mut current = self.token.lock().unwrap_or_else(|p| p.into_inner());
        *current = token.into();
    }

    /// Closes the connection (code 1000) and stops reconnecting. Sends still waiting fail.
    pub async fn stop(&self) {
        let _ = self.commands.send(Command::Stop).await;
        let mut state = self.state.clone();
        let _ = state
            .wait_for(|s| matches!(s, ConnectionState::Stopped { .. }))
            .await;
    }

    fn stopped_error(&self) -> ClientError {
        let reason = match &*self.state.borrow() {
            ConnectionState::Stopped { reason } => reason.clone(),
            _ => "client task ended".to_owned(),
        };
        ClientError::Closed { code: None, reason }
    }
}

impl std::fmt::Debug for ReconnectingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReconnectingClient")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}
