//! Checking a loaded [`Config`]: every value that would make the server misbehave is refused at
//! start, with the key that holds it (`ConfigError::Invalid`).

use std::time::Duration;

use super::{Backend, Config, ConfigError};

/// Bound on `store.cache_mb` (1 TiB), so that the size in bytes cannot overflow.
const MAX_CACHE_MB: usize = 1 << 20;

impl Config {
    /// Refuses values the server cannot run with, naming their key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        self.listen_addr()?;
        self.trusted_proxies()?;
        self.metrics_addr()?;
        if self.auth.token_ttl.is_zero() {
            return Err(invalid("auth.token_ttl", "must be more than 0s"));
        }
        self.validate_auth()?;
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
        if self.store.redis_wait_replicas > 0 && self.store.redis_wait_timeout.is_zero() {
            return Err(invalid(
                "store.redis_wait_timeout",
                "must be more than 0s when store.redis_wait_replicas is set",
            ));
        }
        if self.delivery.poll_interval.is_zero() {
            return Err(invalid("delivery.poll_interval", "must be more than 0s"));
        }
        if self.store.checkpoint_interval.is_zero() {
            return Err(invalid("store.checkpoint_interval", "must be more than 0s"));
        }
        if self.delivery.retention.is_zero() {
            return Err(invalid("delivery.retention", "must be more than 0s"));
        }
        for (key, v) in [
            ("delivery.max_pending", self.delivery.max_pending as usize),
            ("delivery.window", self.delivery.window),
            ("delivery.recv_batch", self.delivery.recv_batch),
            ("limits.max_batch", self.limits.max_batch),
            ("store.cache_mb", self.store.cache_mb),
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
        if self.store.cache_mb > MAX_CACHE_MB {
            return Err(invalid(
                "store.cache_mb",
                &format!("must be at most {MAX_CACHE_MB}"),
            ));
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
        self.validate_operations()?;
        self.push.validate()?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", &e.to_string()))?;
        Ok(())
    }

    /// The `server` keys of issue 6 (TLS, drain) and the connection limits.
    fn validate_operations(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        let s = &self.server;
        if s.tls_cert.as_os_str().is_empty() != s.tls_key.as_os_str().is_empty() {
            return Err(invalid(
                "server.tls_cert",
                "server.tls_cert and server.tls_key must be set together",
            ));
        }
        if s.backlog == 0 || i32::try_from(s.backlog).is_err() {
            return Err(invalid("server.backlog", "must be from 1 to 2147483647"));
        }
        if s.drain_timeout.is_zero() || s.drain_window > s.drain_timeout {
            return Err(invalid(
                "server.drain_timeout",
                "must be more than 0s and at least server.drain_window",
            ));
        }
        if s.allowed_origins.iter().any(|o| o.trim().is_empty()) {
            return Err(invalid(
                "server.allowed_origins",
                "entries must not be empty",
            ));
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_connections", l.max_connections),
            (
                "limits.max_connections_per_user",
                l.max_connections_per_user,
            ),
            ("limits.connection_burst", l.connection_burst as usize),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        let a = &self.auth;
        if !a.jwt_public_key.is_empty() && !a.jwt_secret.is_empty() {
            return Err(invalid(
                "auth.jwt_public_key",
                "set either auth.jwt_secret (HS256) or auth.jwt_public_key, not both",
            ));
        }
        if !a.jwks_url.is_empty() {
            if !a.jwt_public_key.is_empty() || !a.jwt_secret.is_empty() {
                return Err(invalid(
                    "auth.jwks_url",
                    "set only one of auth.jwt_secret, auth.jwt_public_key and auth.jwks_url",
                ));
            }
            if !(a.jwks_url.starts_with("https://") || a.jwks_url.starts_with("http://")) {
                return Err(invalid("auth.jwks_url", "must be an http(s) URL"));
            }
        }
        let verify_only = !a.jwt_public_key.is_empty() || !a.jwks_url.is_empty();
        if verify_only && !a.google.client_ids.is_empty() {
            return Err(invalid(
                "auth.google.client_ids",
                "auth.google returns a Titan token, which Titan cannot mint in public-key mode \
                 (auth.jwt_public_key or auth.jwks_url); leave client_ids empty or use \
                 auth.jwt_secret",
            ));
        }
        if a.revocation_refresh.is_zero() {
            return Err(invalid("auth.revocation_refresh", "must be more than 0s"));
        }
        let g = &a.google;
        if !(g.issuer.starts_with("https://") || g.issuer.starts_with("http://")) {
            return Err(invalid("auth.google.issuer", "must be an http(s) URL"));
        }
        if g.client_ids.iter().any(String::is_empty) {
            return Err(invalid("auth.google.client_ids", "must not hold empty ids"));
        }
        if g.http_timeout.is_zero() {
            return Err(invalid("auth.google.http_timeout", "must be more than 0s"));
        }
        Ok(())
    }
}
