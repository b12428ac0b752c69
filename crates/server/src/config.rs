//! The configuration tree: the embedded default (`config/titan.toml`), then `--config FILE`,
//! then environment variables (`TITAN__SECTION__KEY`, and `PORT`). Unknown keys and invalid
//! values are rejected at start with a message naming the key.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use titan_session::TrustedProxies;

/// The default configuration, complete and commented.
pub const DEFAULT_TOML: &str = include_str!("../../../config/titan.toml");

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Figment's message already names the key and where it came from, so it is the whole text
    /// (not also a `source`, which would print it twice).
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("configuration key {key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerSection,
    pub auth: AuthSection,
    pub store: StoreSection,
    pub delivery: DeliverySection,
    pub limits: LimitsSection,
    pub log: LogSection,
    pub push: crate::push_config::PushSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: String,
    pub workers: usize,
    /// The listening socket's accept queue (listen(2) backlog), set by `run` on the listener it
    /// is given: the standard library listens with 128, which a reconnect storm overflows, and
    /// each connection the kernel then drops waits a second or more for TCP's retransmission.
    pub backlog: u32,
    /// PEM certificate chain and private key: both set serves `wss://`/`https://`; both empty
    /// serves plain `ws://` (behind a TLS-terminating proxy).
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// Browser origins (`Origin` header) allowed to connect; empty allows all.
    pub allowed_origins: Vec<String>,
    /// Where `/metrics` and `/debug/vars` are served: empty, on `listen` with everything else;
    /// an address (`127.0.0.1:9090`, an internal interface), there only, off the public port.
    pub metrics_listen: String,
    /// Reverse proxies (addresses or CIDR networks) whose `X-Forwarded-For` names the client;
    /// empty: every connection counts as coming from its TCP peer.
    pub trusted_proxies: Vec<String>,
    /// On SIGTERM/SIGINT, sessions are closed (4006) at random points within this window.
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
    /// The process exits at most this long after the signal, drained or not.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// Holds a secret: `Debug` hides it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub jwt_secret: String,
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// Serves `POST /dev/token` (a token for any user name) to loopback peers, for the chat
    /// page's local demo. Off by default: it lets anyone on this machine be anyone.
    pub dev_tokens: bool,
    /// Public-key mode: an RS256 or ES256 public key (PEM text, or the path of a PEM file).
    /// Titan then only verifies tokens an app backend mints. Empty: HS256 mode.
    pub jwt_public_key: String,
    /// JWKS mode: the URL of the app backend's published keys (verify only, keys by `kid`).
    pub jwks_url: String,
    /// Least time between two fetches of `jwks_url` triggered by unknown key ids.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh: Duration,
    /// Required `iss` of Titan tokens (and set in minted ones). Empty: not checked.
    pub issuer: String,
    /// Required `aud` of Titan tokens (and set in minted ones). Empty: not checked.
    pub audience: String,
    /// How often each instance reloads every revocation from the store (repairs a lost
    /// broadcast between instances).
    #[serde(with = "humantime_serde")]
    pub revocation_refresh: Duration,
    pub google: GoogleSection,
}

/// `[auth.google]`: sign-in with Google ID tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoogleSection {
    pub issuer: String,
    /// Accepted OAuth client ids (the token's `aud`). Empty: `auth.google` is disabled.
    pub client_ids: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub http_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub jwks_min_refresh: Duration,
}

impl std::fmt::Debug for AuthSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSection")
            .field(
                "jwt_secret",
                &if self.jwt_secret.is_empty() {
                    ""
                } else {
                    "<hidden>"
                },
            )
            .field("token_ttl", &self.token_ttl)
            .field("dev_tokens", &self.dev_tokens)
            .field("jwt_public_key", &!self.jwt_public_key.is_empty())
            .field("jwks_url", &self.jwks_url)
            .field("jwks_min_refresh", &self.jwks_min_refresh)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("revocation_refresh", &self.revocation_refresh)
            .field("google", &self.google)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Embedded,
    Memory,
    Redis,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub backend: Backend,
    pub path: PathBuf,
    /// Holds a password when there is one: hidden in `Debug` and check-config.
    pub redis_url: String,
    pub key_prefix: String,
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// Replicas that must have an append before it is answered (Redis `WAIT`); 0: off.
    pub redis_wait_replicas: u32,
    #[serde(with = "humantime_serde")]
    pub redis_wait_timeout: Duration,
    /// Page cache of the embedded store, in MiB.
    pub cache_mb: usize,
    /// Longest time between the embedded store's checkpoints (durable commits of its file).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
}

impl std::fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSection")
            .field("backend", &self.backend)
            .field("path", &self.path)
            .field("redis_url", &hide_password(&self.redis_url))
            .field("key_prefix", &self.key_prefix)
            .field("redis_timeout", &self.redis_timeout)
            .field("redis_wait_replicas", &self.redis_wait_replicas)
            .field("redis_wait_timeout", &self.redis_wait_timeout)
            .field("cache_mb", &self.cache_mb)
            .field("checkpoint_interval", &self.checkpoint_interval)
            .finish()
    }
}

/// `redis://user:secret@host` -> `redis://user:<hidden>@host`.
pub fn hide_password(urls: &str) -> String {
    // A Redis Cluster is given as several comma-separated node URLs.
    urls.split(',').map(hide_one).collect::<Vec<_>>().join(",")
}

fn hide_one(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            let shown = if creds.contains(':') {
                format!("{user}:<hidden>")
            } else {
                "<hidden>".to_owned()
            };
            format!("{}{shown}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySection {
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    pub max_pending: u64,
    pub window: usize,
    pub recv_batch: usize,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    pub max_batch: usize,
    #[serde(with = "humantime_serde")]
    pub auth_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub outbound_queue: usize,
    pub requests_per_second: u32,
    pub request_burst: u32,
    pub max_inflight_requests: usize,
    pub max_auth_failures: u32,
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub connections_per_ip_per_second: u32,
    pub connection_burst: u32,
    pub messages_per_minute: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub level: String,
    pub format: LogFormat,
}

impl From<Box<figment::Error>> for ConfigError {
    fn from(e: Box<figment::Error>) -> Self {
        Self::Load(e)
    }
}

impl Config {
    /// The embedded default alone: no file and no environment. Tests start from it, so a
    /// `TITAN__` variable in the process (set by a developer, or by another test running
    /// alongside) cannot change the server they start.
    pub fn defaults() -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the embedded default, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File {
                    path: path.to_owned(),
                    reason: "no such file".to_owned(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("TITAN__").split("__"));
        let mut config: Config = figment.extract().map_err(Box::new)?;
        if let Ok(port) = std::env::var("PORT")
            && std::env::var_os("TITAN__SERVER__LISTEN").is_none()
        {
            config.server.listen = format!("0.0.0.0:{port}");
        }
        config.validate()?;
        Ok(config)
    }

    /// `server.trusted_proxies`, parsed.
    pub fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        TrustedProxies::parse(&self.server.trusted_proxies).map_err(|entry| ConfigError::Invalid {
            key: "server.trusted_proxies",
            reason: format!("{entry:?} is not an IP address or a CIDR network"),
        })
    }

    /// `server.metrics_listen`, parsed: `None` when the metrics are served on `listen`.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        let text = self.server.metrics_listen.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let invalid = |reason: String| ConfigError::Invalid {
            key: "server.metrics_listen",
            reason,
        };
        let addr: SocketAddr = text
            .parse()
            .map_err(|e| invalid(format!("{text:?} is not host:port ({e})")))?;
        if addr == self.listen_addr()? {
            return Err(invalid(
                "must differ from server.listen (leave it empty to serve the metrics there)".into(),
            ));
        }
        Ok(Some(addr))
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server
            .listen
            .parse()
            .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                key: "server.listen",
                reason: format!("{:?} is not host:port ({e})", self.server.listen),
            })
    }

    /// The effective configuration as TOML, with secrets hidden.
    pub fn to_display_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.auth.jwt_secret.is_empty() {
            shown.auth.jwt_secret = "<hidden>".to_owned();
        }
        shown.store.redis_url = hide_password(&shown.store.redis_url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot display: {e}"))
    }
}

mod validation;

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
