//! A loopback mock of Google's OAuth2 token endpoint and FCM HTTP v1, for the push tests.
//!
//! The token endpoint checks the RS256 assertion with the public half of a throw-away key
//! (generated with `openssl` at start; no key is committed), then issues numbered access
//! tokens. The send endpoint only accepts an issued token, records every request (the test
//! awaits them as events) and answers with the next scripted reply, or 200.
//! Runs in its own thread and actix system; stopped and joined on drop.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

/// The service account the mock trusts.
const CLIENT_EMAIL: &str = "titan-push@titan-test.iam.gserviceaccount.com";
pub const PROJECT: &str = "titan-test";
const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// One request to the send endpoint.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The `message` object of the body.
    pub message: Value,
}

impl Recorded {
    pub fn token(&self) -> &str {
        self.message["token"].as_str().unwrap_or("")
    }
    pub fn data(&self, key: &str) -> Option<&str> {
        self.message["data"][key].as_str()
    }
}

/// A scripted answer of the send endpoint.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<u64>,
}

impl Reply {
    /// FCM's answer for a dead token.
    pub fn unregistered() -> Self {
        Self::fcm_error(404, "NOT_FOUND", "UNREGISTERED")
    }

    /// The answer to an access token FCM no longer accepts.
    pub fn unauthenticated() -> Self {
        Self {
            status: 401,
            body: json!({"error": {"code": 401, "message": "expired", "status": "UNAUTHENTICATED"}}),
            retry_after: None,
        }
    }

    /// FCM's answer to a malformed message.
    pub fn invalid_argument() -> Self {
        Self {
            status: 400,
            body: json!({"error": {"code": 400, "message": "Invalid value at 'message.data'",
                "status": "INVALID_ARGUMENT"}}),
            retry_after: None,
        }
    }

    /// FCM's answer when it is overloaded.
    pub fn unavailable() -> Self {
        Self::fcm_error(503, "UNAVAILABLE", "UNAVAILABLE")
    }

    fn fcm_error(status: u16, google_status: &str, code: &str) -> Self {
        Self {
            status,
            body: json!({"error": {"code": status, "message": code, "status": google_status,
                "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                             "errorCode": code}]}}),
            retry_after: None,
        }
    }
}

#[derive(Default)]
struct State {
    public_pem: Vec<u8>,
    token_uri: String,
    token_requests: usize,
    rejected_assertions: usize,
    issued: Vec<String>,
    script: VecDeque<Reply>,
    sends: Option<mpsc::UnboundedSender<Recorded>>,
}

/// A running mock. `base` is its `http://127.0.0.1:port`.
pub struct MockFcm {
    pub base: String,
    private_pem: String,
    state: Arc<Mutex<State>>,
    sends: mpsc::UnboundedReceiver<Recorded>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _keys: tempfile::TempDir,
}

impl MockFcm {
    pub fn start() -> Self {
        let keys = tempfile::tempdir().unwrap();
        let (private_pem, public_pem) = rsa_key_pair(keys.path());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, sends) = mpsc::unbounded_channel();
        let state = Arc::new(Mutex::new(State {
            public_pem,
            token_uri: format!("{base}/token"),
            sends: Some(tx),
            ..State::default()
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(shared.clone()))
                        .route("/token", web::post().to(token))
                        .route("/v1/projects/{project}/messages:send", web::post().to(send))
                })
                .workers(1)
                .disable_signals()
                .listen(listener)
                .unwrap()
                .run();
                let handle = server.handle();
                actix_rt::spawn(async move {
                    let _ = stopped.await;
                    handle.stop(false).await;
                });
                let _ = server.await;
            });
        });
        Self {
            base,
            private_pem,
            state,
            sends,
            stop: Some(stop),
            thread: Some(thread),
            _keys: keys,
        }
    }

    /// Writes a service-account key file whose `token_uri` is this mock; returns its path.
    pub fn write_service_account(&self, dir: &Path) -> PathBuf {
        let path = dir.join("service-account.json");
        let file = json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "test",
            "private_key": self.private_pem,
            "client_email": CLIENT_EMAIL,
            "token_uri": format!("{}/token", self.base),
        });
        std::fs::write(&path, file.to_string()).unwrap();
        path
    }

    /// The next send gets `reply` (replies queue up in order).
    pub fn answer_next(&self, reply: Reply) {
        self.state.lock().unwrap().script.push_back(reply);
    }

    /// Access tokens issued so far.
    pub fn token_requests(&self) -> usize {
        self.state.lock().unwrap().token_requests
    }

    /// Assertions refused (bad signature, audience, issuer or scope).
    pub fn rejected_assertions(&self) -> usize {
        self.state.lock().unwrap().rejected_assertions
    }

    /// The next request to the send endpoint, failing the test after `common::WAIT`.
    pub async fn next_send(&mut self) -> Recorded {
        tokio::time::timeout(crate::common::WAIT, self.sends.recv())
            .await
            .expect("no push reached the mock FCM in time")
            .expect("mock FCM stopped")
    }

    /// Fails if a send arrives within `wait`.
    pub async fn assert_no_send(&mut self, wait: Duration) {
        if let Ok(Some(r)) = tokio::time::timeout(wait, self.sends.recv()).await {
            panic!("unexpected push: {}", r.message);
        }
    }
}

impl Drop for MockFcm {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A fresh 2048-bit RSA key: (private PKCS#8 PEM, public SPKI PEM).
fn rsa_key_pair(dir: &Path) -> (String, Vec<u8>) {
    let private = dir.join("key.pem");
    let public = dir.join("pub.pem");
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&private)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl must be installed (scripts/install-test-deps)");
    assert!(status.success(), "openssl genpkey failed");
    let status = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(status.success(), "openssl pkey failed");
    (
        std::fs::read_to_string(private).unwrap(),
        std::fs::read(public).unwrap(),
    )
}

#[derive(Deserialize)]
struct Claims {
    scope: String,
}

type Shared = web::Data<Arc<Mutex<State>>>;

async fn token(state: Shared, form: web::Form<HashMap<String, String>>) -> HttpResponse {
    let mut state = state.lock().unwrap();
    let grant_ok = form.get("grant_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:grant-type:jwt-bearer");
    let assertion = form.get("assertion").cloned().unwrap_or_default();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&state.public_pem).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[state.token_uri.as_str()]);
    validation.set_issuer(&[CLIENT_EMAIL]);
    let verified = jsonwebtoken::decode::<Claims>(&assertion, &key, &validation);
    match verified {
        Ok(data) if grant_ok && data.claims.scope == SCOPE => {
            state.token_requests += 1;
            let access = format!("mock-access-{}", state.token_requests);
            state.issued.push(access.clone());
            HttpResponse::Ok().json(json!({
                "access_token": access, "expires_in": 3599, "token_type": "Bearer"
            }))
        }
        _ => {
            state.rejected_assertions += 1;
            HttpResponse::BadRequest().json(json!({"error": "invalid_grant"}))
        }
    }
}

async fn send(
    state: Shared,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<Value>,
) -> HttpResponse {
    let mut state = state.lock().unwrap();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !state.issued.iter().any(|t| t == bearer) || path.as_str() != PROJECT {
        return HttpResponse::Unauthorized().json(json!({"error": {"code": 401,
            "status": "UNAUTHENTICATED", "message": "bad access token or project"}}));
    }
    if let Some(tx) = &state.sends {
        let _ = tx.send(Recorded {
            message: body["message"].clone(),
        });
    }
    match state.script.pop_front() {
        None => HttpResponse::Ok().json(json!({"name": format!("projects/{PROJECT}/messages/1")})),
        Some(reply) => {
            let mut response =
                HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap());
            if let Some(after) = reply.retry_after {
                response.insert_header(("Retry-After", after.to_string()));
            }
            response.json(reply.body)
        }
    }
}
