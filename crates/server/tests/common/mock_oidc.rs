//! A loopback OpenID provider for `auth.google` tests: serves the discovery document and a JWKS
//! whose keys the test switches (key rotation) or takes down (503), and counts JWKS fetches.
//! A plain HTTP/1.1 server on its own thread and runtime, stopped when dropped.

use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::keys::RsaKey;

/// The client id the tests' ID tokens are issued for.
pub const CLIENT_ID: &str = "test-client.apps.example";

struct Shared {
    issuer: String,
    jwks: Mutex<Vec<Value>>,
    down: AtomicBool,
    jwks_fetches: AtomicUsize,
}

/// See the module docs.
pub struct MockOidc {
    pub issuer: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MockOidc {
    /// Starts serving `keys` in the JWKS.
    pub fn start(keys: &[&RsaKey]) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            jwks: Mutex::new(keys.iter().map(|k| k.jwk()).collect()),
            down: AtomicBool::new(false),
            jwks_fetches: AtomicUsize::new(0),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            tokio::spawn(serve(socket, state.clone()));
                        }
                    }
                }
            });
        });
        Self {
            issuer,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Replaces the published keys (key rotation).
    pub fn set_keys(&self, keys: &[&RsaKey]) {
        *self.shared.jwks.lock().unwrap() = keys.iter().map(|k| k.jwk()).collect();
    }

    /// While down, every request is answered 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// How many times the JWKS was served.
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Standard claims of a valid ID token for `sub`, overridden by `extra`.
    pub fn claims(&self, sub: &str, extra: Value) -> Value {
        let mut claims = json!({
            "iss": self.issuer,
            "aud": CLIENT_ID,
            "sub": sub,
            "email": format!("{sub}@example.com"),
            "email_verified": true,
            "name": format!("User {sub}"),
            "picture": format!("https://pictures.example/{sub}.png"),
            "iat": super::keys::unix_now(0),
            "exp": super::keys::unix_now(3600),
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    }
}

impl Drop for MockOidc {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request and closes the connection.
async fn serve(mut socket: tokio::net::TcpStream, state: Arc<Shared>) {
    let mut buf = vec![0u8; 8192];
    let mut len = 0;
    // Read up to the end of the headers (GET requests carry no body). Bounded by the buffer.
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") && len < buf.len() {
        match socket.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (status, body) = if state.down.load(Ordering::SeqCst) {
        ("503 Service Unavailable", "{}".to_owned())
    } else if path == "/.well-known/openid-configuration" {
        let doc = json!({
            "issuer": state.issuer,
            "jwks_uri": format!("{}/jwks", state.issuer),
            // Required by OpenID Connect Discovery (and openidconnect's parser); unused here.
            "authorization_endpoint": format!("{}/authorize", state.issuer),
            "response_types_supported": ["code", "id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        });
        ("200 OK", doc.to_string())
    } else if path == "/jwks" {
        state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
        let keys = state.jwks.lock().unwrap().clone();
        ("200 OK", json!({ "keys": keys }).to_string())
    } else {
        ("404 Not Found", "{}".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}
