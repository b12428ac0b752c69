//! [`Client`]: a JSON-RPC connection to Titan. Calls are matched to responses by id; `msg.recv`
//! requests from the server come out of [`Client::next_delivery`].

use crate::connection::{self, Handles};
use crate::delivery::Delivery;
use crate::error::{ClientError, Result};
use crate::link::{Link, Outbound};
use crate::transport::{self, DEFAULT_CONNECT_TIMEOUT};
use serde::Serialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use titan_protocol::Id;
use titan_protocol::jsonrpc::ServerRequest;
use tokio::sync::{Mutex, mpsc, oneshot};

/// How a [`Client`] behaves. `ClientOptions { auto_ack: true, ..Default::default() }`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Answer every `msg.recv` with `"ACK"` as soon as it arrives; the [`Delivery`] is still
    /// handed over, already answered. Off by default: tests ack explicitly. Mind that this acks
    /// before your code has taken the delivery: deliveries still buffered when the client is
    /// closed are acked but never seen. For at-least-once, ack with [`Delivery::ack`] after
    /// handling (or use [`crate::ReconnectingClient`]).
    pub auto_ack: bool,
    /// Upper bound on one [`Client::call`], so a silent server fails a test instead of hanging it.
    pub call_timeout: Duration,
    /// Upper bound on TCP connect plus the WebSocket handshake.
    pub connect_timeout: Duration,
    /// Deliveries held for the application; when full, further `msg.recv` requests are refused
    /// (the messages stay pending on the server).
    pub delivery_buffer: usize,
    /// Frames queued for the connection task; callers wait when it is full.
    pub outbound_buffer: usize,
    /// For `wss://`: PEM certificates of the only CAs to trust (a test's own CA). `None` trusts
    /// the system's roots.
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            auto_ack: false,
            call_timeout: Duration::from_secs(30),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            delivery_buffer: 4096,
            outbound_buffer: 1024,
            tls_ca_pem: None,
        }
    }
}

/// One element of `msg.send`. Plain strings, so tests can also send ids the server must refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outgoing {
    pub to: String,
    pub message: String,
    /// Client-chosen id that makes the send idempotent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Outgoing {
    pub fn new(to: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            to: to.into(),
            message: message.into(),
            id: None,
        }
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }
}

/// A connection to a Titan server, driven by a background task. Every method takes `&self`, so
/// calls can run concurrently with [`Client::next_delivery`]. Dropping the client closes the
/// connection (code 1000).
pub struct Client {
    link: Link,
    deliveries: Mutex<mpsc::Receiver<Delivery>>,
    next_id: AtomicU64,
    options: ClientOptions,
    /// Dropped with the client, which tells the task to close the socket.
    _drop_guard: oneshot::Sender<()>,
}

impl Client {
    /// Connects with default options.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// Connects to `url` (`ws://127.0.0.1:port/path`).
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Self> {
        let ws =
            transport::connect(url, options.connect_timeout, options.tls_ca_pem.as_deref()).await?;
        Ok(Self::over(ws, url, options))
    }

    /// Connects to `url` (`ws://IP:port/path`) from the local address `local`, e.g. one of
    /// 127.0.0.x, so a load generator can open more connections than one source address has
    /// ephemeral ports.
    pub async fn connect_from(
        url: &str,
        local: std::net::IpAddr,
        options: ClientOptions,
    ) -> Result<Self> {
        let ws = transport::connect_from(url, local, options.connect_timeout).await?;
        Ok(Self::over(ws, url, options))
    }

    /// A client over an open WebSocket to `url`: starts its connection task.
    fn over(ws: transport::WsStream, url: &str, options: ClientOptions) -> Self {
        let Handles {
            link,
            deliveries,
            drop_guard,
        } = connection::spawn(ws, &options, url);
        Self {
            link,
            deliveries: Mutex::new(deliveries),
            next_id: AtomicU64::new(1),
            options,
            _drop_guard: drop_guard,
        }
    }

    /// Calls `method` and waits for its result. `Value::Null` params are left out of the request.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.call_text(|id| request_text(Some(id), method, params))
            .await
    }

    /// Sends the request `text` writes for the next request id and waits for its response.
    async fn call_text(&self, text: impl FnOnce(u64) -> String) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text = text(id);
        let (reply, response) = oneshot::channel();
        let waiting = async {
            self.link.push(Outbound::Call { id, text, reply }).await?;
            response.await.map_err(|_| self.link.closed_error())?
        };
        tokio::time::timeout(self.options.call_timeout, waiting)
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Sends a notification (no id, no response). Returns once it is written.
    pub async fn notify(&self, method: &str, params: Value) -> Result<()> {
        self.link.write(request_text(None, method, params)).await
    }

    /// Writes one raw text frame. A response to it reaches no call; use
    /// [`RawSocket`](crate::RawSocket) to read answers to hand-made frames.
    pub async fn send_text(&self, text: impl Into<String>) -> Result<()> {
        self.link.write(text.into()).await
    }

    /// `auth.jwt`; succeeds when the server answers `"ACK"`.
    pub async fn authenticate(&self, token: &str, device: Option<&str>) -> Result<()> {
        let params = match device {
            Some(device) => json!({"token": token, "device": device}),
            None => json!({"token": token}),
        };
        expect_ack(self.call("auth.jwt", params).await?)
    }

    /// `echo`: returns what the server sent back.
    pub async fn echo(&self, params: Value) -> Result<Value> {
        self.call("echo", params).await
    }

    /// Sends one message; succeeds once the server stored it.
    pub async fn send(&self, to: &str, message: &str) -> Result<()> {
        self.send_many(&[Outgoing::new(to, message)]).await
    }

    /// Sends a batch in one `msg.send`; succeeds once the server stored all of it.
    pub async fn send_many(&self, messages: &[Outgoing]) -> Result<()> {
        // Serialised from the messages as they are: no `Value` built on the way (the load
        // generator shares the machine with the server it measures).
        let text = |id: u64| ServerRequest::new(Some(Id::from(id)), "msg.send", messages).to_text();
        expect_ack(self.call_text(text).await?)
    }

    /// The next `msg.recv` from the server; `None` once the connection is over and every
    /// delivery was taken.
    pub async fn next_delivery(&self) -> Option<Delivery> {
        self.deliveries.lock().await.recv().await
    }

    /// Like [`Client::next_delivery`], but `Ok(None)` when nothing arrives within `wait` (for
    /// asserting silence) and `Err(Closed)` when the connection is over.
    pub async fn next_delivery_timeout(&self, wait: Duration) -> Result<Option<Delivery>> {
        match tokio::time::timeout(wait, self.next_delivery()).await {
            Ok(Some(delivery)) => Ok(Some(delivery)),
            Ok(None) => Err(self.link.closed_error()),
            Err(_) => Ok(None),
        }
    }

    /// Closes the connection with code 1000 and waits until it is over (at most
    /// [`CLOSE_HANDSHAKE_TIMEOUT`](crate::CLOSE_HANDSHAKE_TIMEOUT) after the close frame).
    pub async fn close(&self) -> Result<()> {
        // A failed push means the connection is already over, which is what was asked.
        let _ = self.link.push(Outbound::Close).await;
        self.link.closed().await;
        Ok(())
    }

    /// Waits until the connection is over; returns the server's close code and reason (code
    /// 1005 for a close frame without one), or `None` when the socket ended without a close frame.
    pub async fn closed(&self) -> Option<(u16, String)> {
        self.link.closed().await
    }

    /// [`Client::closed`], code only.
    pub async fn close_code(&self) -> Option<u16> {
        self.closed().await.map(|(code, _)| code)
    }

    /// True once the connection is over (close frame seen or socket ended).
    pub fn is_closed(&self) -> bool {
        self.link.ended.borrow().is_some()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("closed", &self.is_closed())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A request (or, without id, a notification). JSON-RPC params must be an array or an object,
/// so null params are expressed by leaving the member out.
fn request_text(id: Option<u64>, method: &str, params: Value) -> String {
    let id = id.map(Id::from);
    match (params, id) {
        (Value::Null, Some(id)) => {
            json!({"jsonrpc": "2.0", "method": method, "id": id}).to_string()
        }
        (Value::Null, None) => json!({"jsonrpc": "2.0", "method": method}).to_string(),
        (params, id) => ServerRequest::new(id, method, params).to_text(),
    }
}

fn expect_ack(result: Value) -> Result<()> {
    match result.as_str() {
        Some("ACK") => Ok(()),
        _ => Err(ClientError::Protocol(format!(
            "expected \"ACK\", got {result}"
        ))),
    }
}
