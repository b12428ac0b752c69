//! The configuration tree: the embedded default (`config/titan.toml`), then `--config FILE`,
//! then environment variables (`TITAN__SECTION__KEY`, and `PORT`). Unknown keys and invalid
//! values are rejected at start with a message naming the key.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
}

/// Holds a secret: `Debug` hides it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub jwt_secret: String,
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
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
}

impl std::fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreSection")
            .field("backend", &self.backend)
            .field("path", &self.path)
            .field("redis_url", &hide_password(&self.redis_url))
            .field("key_prefix", &self.key_prefix)
            .field("redis_timeout", &self.redis_timeout)
            .finish()
    }
}

/// `redis://user:secret@host` -> `redis://user:<hidden>@host`.
pub fn hide_password(url: &str) -> String {
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

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        self.listen_addr()?;
        if self.auth.token_ttl.is_zero() {
            return Err(invalid("auth.token_ttl", "must be more than 0s"));
        }
        if self.delivery.ack_timeout < Duration::from_millis(10) {
            return Err(invalid("delivery.ack_timeout", "must be at least 10ms"));
        }
        if self.store.backend == Backend::Redis && self.store.redis_url.is_empty() {
            return Err(invalid(
                "store.redis_url",
                "must be set when store.backend = \"redis\"",
            ));
        }
        if self.store.key_prefix.is_empty() || self.store.key_prefix.contains(['{', '}']) {
            return Err(invalid(
                "store.key_prefix",
                "must be non-empty and without braces",
            ));
        }
        if self.store.redis_timeout.is_zero() {
            return Err(invalid("store.redis_timeout", "must be more than 0s"));
        }
        if self.delivery.poll_interval.is_zero() {
            return Err(invalid("delivery.poll_interval", "must be more than 0s"));
        }
        if self.delivery.retention.is_zero() {
            return Err(invalid("delivery.retention", "must be more than 0s"));
        }
        for (key, v) in [
            ("delivery.max_pending", self.delivery.max_pending as usize),
            ("delivery.window", self.delivery.window),
            ("delivery.recv_batch", self.delivery.recv_batch),
            ("limits.max_batch", self.limits.max_batch),
            ("limits.outbound_queue", self.limits.outbound_queue),
            (
                "limits.requests_per_second",
                self.limits.requests_per_second as usize,
            ),
            ("limits.request_burst", self.limits.request_burst as usize),
            (
                "limits.max_inflight_requests",
                self.limits.max_inflight_requests,
            ),
            (
                "limits.max_auth_failures",
                self.limits.max_auth_failures as usize,
            ),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.limits.max_frame_bytes < 1024 {
            return Err(invalid("limits.max_frame_bytes", "must be at least 1024"));
        }
        if self.limits.max_message_bytes == 0
            || self.limits.max_message_bytes > self.limits.max_frame_bytes
        {
            return Err(invalid(
                "limits.max_message_bytes",
                "must be at least 1 and at most limits.max_frame_bytes",
            ));
        }
        for (key, d) in [
            ("limits.auth_timeout", self.limits.auth_timeout),
            ("limits.ping_interval", self.limits.ping_interval),
            ("limits.idle_timeout", self.limits.idle_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be more than 0s"));
            }
        }
        if self.limits.outbound_queue <= self.delivery.window {
            // One catch-up can queue a frame per in-flight message; a smaller queue would close
            // even a prompt reader as a slow consumer on every reconnect.
            return Err(invalid(
                "limits.outbound_queue",
                "must be larger than delivery.window",
            ));
        }
        if self.limits.idle_timeout <= self.limits.ping_interval {
            return Err(invalid(
                "limits.idle_timeout",
                "must be longer than limits.ping_interval",
            ));
        }
        self.push.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", &e.to_string()))?;
        Ok(())
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

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
