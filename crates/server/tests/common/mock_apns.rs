//! A loopback mock of APNs (HTTP/2 without TLS), for the push tests.
//!
//! It holds the public half of a throw-away P-256 key (generated at start; no key is
//! committed) and checks every request's provider token with it (ES256, `kid`, `iss`), as
//! APNs does: a bad token is answered 403 `InvalidProviderToken` and counted. Accepted requests
//! are recorded (the test awaits them as events) and answered with the next scripted reply, or
//! 200 with an `apns-id`. Runs in its own thread and tokio runtime; stopped and joined on drop.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

pub const KEY_ID: &str = "TESTKEYID1";
pub const TEAM_ID: &str = "TESTTEAM01";
pub const TOPIC: &str = "com.example.titan";

/// One request APNs accepted for processing.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The device token from the path.
    pub token: String,
    /// The request's `apns-*` headers, by name.
    pub headers: Vec<(String, String)>,
    pub payload: Value,
    /// The provider token it carried.
    pub bearer: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn titan(&self, key: &str) -> Option<&str> {
        self.payload["titan"][key].as_str()
    }
}

/// A scripted answer: an error status with APNs' JSON reason.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub reason: &'static str,
    pub timestamp: Option<u64>,
}

impl Reply {
    /// APNs' answer for a token that is no longer valid, with when it stopped being valid.
    pub fn unregistered(at_ms: u64) -> Self {
        Self {
            status: 410,
            reason: "Unregistered",
            timestamp: Some(at_ms),
        }
    }

    pub fn expired_provider_token() -> Self {
        Self {
            status: 403,
            reason: "ExpiredProviderToken",
            timestamp: None,
        }
    }

    pub fn service_unavailable() -> Self {
        Self {
            status: 503,
            reason: "ServiceUnavailable",
            timestamp: None,
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    iat: u64,
}

struct State {
    public_pem: Vec<u8>,
    script: VecDeque<Reply>,
    rejected_tokens: usize,
    sends: mpsc::UnboundedSender<Recorded>,
}

/// A running mock. `base` is its `http://127.0.0.1:port`.
pub struct MockApns {
    pub base: String,
    key_file: PathBuf,
    state: Arc<Mutex<State>>,
    sends: mpsc::UnboundedReceiver<Recorded>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _keys: tempfile::TempDir,
}

impl MockApns {
    pub fn start() -> Self {
        let keys = tempfile::tempdir().unwrap();
        let (key_file, public_pem) = ec_key_pair(keys.path());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, sends) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(State {
            public_pem,
            script: VecDeque::new(),
            rejected_tokens: 0,
            sends: tx,
        }));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let stream = tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => stream,
                            Err(_) => continue,
                        },
                    };
                    let state = shared.clone();
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, hyper::Error>(handle(&state, request).await) }
                    });
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            // Dropping the runtime ends the connection tasks.
        });
        Self {
            base,
            key_file,
            state,
            sends,
            stop: Some(stop),
            thread: Some(thread),
            _keys: keys,
        }
    }

    /// The `.p8` key whose public half this mock trusts.
    pub fn key_file(&self) -> PathBuf {
        self.key_file.clone()
    }

    /// The next request gets `reply` (replies queue up in order).
    pub fn answer_next(&self, reply: Reply) {
        self.state.lock().unwrap().script.push_back(reply);
    }

    /// Requests refused for their provider token.
    pub fn rejected_tokens(&self) -> usize {
        self.state.lock().unwrap().rejected_tokens
    }

    /// The next accepted request, failing the test after `common::WAIT`.
    pub async fn next_send(&mut self) -> Recorded {
        tokio::time::timeout(crate::common::WAIT, self.sends.recv())
            .await
            .expect("no push reached the mock APNs in time")
            .expect("mock APNs stopped")
    }

    /// Fails if a request arrives within `wait`.
    pub async fn assert_no_send(&mut self, wait: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(wait, self.sends.recv()).await {
            panic!("unexpected push: {}", r.payload);
        }
    }
}

impl Drop for MockApns {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

async fn handle(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(token) = request.uri().path().strip_prefix("/3/device/") else {
        return answer(404, json!({"reason": "BadPath"}));
    };
    let token = token.to_owned();
    if request.method() != hyper::Method::POST {
        return answer(405, json!({"reason": "MethodNotAllowed"}));
    }
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("apns-"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_owned()))
        .collect();
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bearer "))
        .unwrap_or("")
        .to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return answer(400, json!({"reason": "PayloadEmpty"}));
    };
    let mut state = state.lock().unwrap();
    if !token_is_valid(&state.public_pem, &bearer) {
        state.rejected_tokens += 1;
        return answer(403, json!({"reason": "InvalidProviderToken"}));
    }
    let _ = state.sends.send(Recorded {
        token,
        headers,
        payload,
        bearer,
    });
    match state.script.pop_front() {
        Some(reply) => {
            let mut body = json!({"reason": reply.reason});
            if let Some(at) = reply.timestamp {
                body["timestamp"] = json!(at);
            }
            answer(reply.status, body)
        }
        None => Response::builder()
            .status(200)
            .header("apns-id", "00000000-0000-0000-0000-000000000001")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    }
}

/// ES256, signed by the mock's key, `kid` and `iss` as configured, issued within the hour.
fn token_is_valid(public_pem: &[u8], bearer: &str) -> bool {
    let Ok(key) = DecodingKey::from_ec_pem(public_pem) else {
        return false;
    };
    let Ok(header) = jsonwebtoken::decode_header(bearer) else {
        return false;
    };
    if header.kid.as_deref() != Some(KEY_ID) {
        return false;
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let Ok(data) = jsonwebtoken::decode::<Claims>(bearer, &key, &validation) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    data.claims.iss == TEAM_ID && data.claims.iat <= now + 60 && now < data.claims.iat + 3600
}

/// A fresh P-256 key: the `.p8` (PKCS#8 PEM) file, and the public key PEM.
fn ec_key_pair(dir: &Path) -> (PathBuf, Vec<u8>) {
    let key = crate::common::keys::EcKey::generate();
    let path = dir.join("AuthKey_TESTKEYID1.p8");
    std::fs::write(&path, key.private_pem()).unwrap();
    (path, key.public_pem().into_bytes())
}
