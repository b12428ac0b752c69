//! A scripted Titan stand-in for the client's tests: it accepts one WebSocket on 127.0.0.1:0 and
//! runs the test's script against it, so each test states exactly what the server does.

// Each test binary uses a different subset of these helpers; they are test code, where a failed
// unwrap is the test failure.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::future::Future;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Upper bound on any single wait in a test; reaching it is a failure, never the expected path.
pub const LIMIT: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test if it takes longer than [`LIMIT`].
pub async fn within<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .expect("timed out waiting")
}

/// A running script and the URL to connect to.
pub struct Scripted {
    pub url: String,
    task: JoinHandle<()>,
}

impl Scripted {
    /// Binds a port and runs `script` on the first connection.
    pub async fn start<F, Fut>(script: F) -> Self
    where
        F: FnOnce(Peer) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            script(Peer { ws }).await;
        });
        Self { url, task }
    }

    /// Waits for the script to end, failing the test with the script's own panic.
    pub async fn finish(self) {
        if let Err(e) = within(self.task).await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// The server side of the connection.
pub struct Peer {
    pub ws: WebSocketStream<TcpStream>,
}

impl Peer {
    /// The next frame of any kind; `None` when the socket ended.
    pub async fn next(&mut self) -> Option<Message> {
        within(self.ws.next()).await.map(|r| r.unwrap())
    }

    /// The next text frame as JSON, skipping pings and pongs.
    pub async fn recv(&mut self) -> Value {
        loop {
            match self.next().await {
                Some(Message::Text(text)) => return serde_json::from_str(&text).unwrap(),
                Some(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads a request, checks its method and returns it.
    pub async fn expect_request(&mut self, method: &str) -> Value {
        let request = self.recv().await;
        assert_eq!(request["jsonrpc"], "2.0", "{request}");
        assert_eq!(request["method"], method, "{request}");
        request
    }

    pub async fn send(&mut self, value: Value) {
        within(self.ws.send(Message::text(value.to_string())))
            .await
            .unwrap();
    }

    /// Answers `request` with `result`.
    pub async fn reply(&mut self, request: &Value, result: Value) {
        self.send(json!({"jsonrpc": "2.0", "result": result, "id": request["id"]}))
            .await;
    }

    /// Sends a `msg.recv` request with one message per `(id, body)`.
    pub async fn deliver(&mut self, request_id: u64, messages: &[(&str, &str)]) {
        let messages: Vec<Value> = messages
            .iter()
            .map(|(id, body)| {
                json!({"id": id, "from": "alice", "to": "bob",
                       "time": "2025-01-01T00:00:00Z", "message": body})
            })
            .collect();
        self.send(
            json!({"jsonrpc": "2.0", "method": "msg.recv", "params": messages, "id": request_id}),
        )
        .await;
    }

    /// Sends a close frame and completes the handshake (reads until the client's reply).
    pub async fn close(&mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.into(),
        };
        within(self.ws.close(Some(frame))).await.unwrap();
        self.drain().await;
    }

    /// Reads until the socket ends, discarding frames.
    pub async fn drain(&mut self) {
        while let Some(Ok(_)) = within(self.ws.next()).await {}
    }

    /// Reads until the client's close frame and returns its code.
    pub async fn expect_client_close(&mut self) -> u16 {
        loop {
            match self.next().await {
                Some(Message::Close(frame)) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    self.drain().await;
                    return code;
                }
                Some(_) => {}
                None => panic!("socket ended without a close frame"),
            }
        }
    }
}
