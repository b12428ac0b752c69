//! The `[push]` configuration section and what it builds: the push providers (enabled only when
//! configured; their key files are read and checked at start) and the pusher's tuning.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use titan_delivery::DeliveryError;
use titan_delivery::push::{
    ApnsConfig, ApnsProvider, FcmConfig, FcmProvider, PushConfig, PushProvider, apns,
};

use crate::config::ConfigError;

/// `[push]`: offline delivery through FCM and APNs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSection {
    pub include_content: bool,
    pub max_in_flight: usize,
    pub max_queued: usize,
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// 0: off. See [`PushSection::after_unacked`].
    #[serde(with = "humantime_serde")]
    pub after_unacked: Duration,
    pub fcm: FcmSection,
    pub apns: ApnsSection,
}

/// `[push.fcm]`; enabled when `service_account_file` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmSection {
    pub service_account_file: PathBuf,
    pub api_base: String,
}

/// `[push.apns]`; enabled when `key_file` is set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsSection {
    pub key_file: PathBuf,
    pub key_id: String,
    pub team_id: String,
    pub topic: String,
    pub sandbox: bool,
    /// Empty: Apple's host, chosen by `sandbox` ([`ApnsSection::api_base`]).
    pub api_base: String,
}

impl ApnsSection {
    /// Scheme and host of APNs: `api_base` when set (a test's mock), else Apple's production
    /// or development host.
    pub fn api_base(&self) -> &str {
        match (self.api_base.is_empty(), self.sandbox) {
            (false, _) => &self.api_base,
            (true, false) => apns::PRODUCTION_API_BASE,
            (true, true) => apns::SANDBOX_API_BASE,
        }
    }
}

impl PushSection {
    /// Checks the values that need no file access (files are checked when providers start).
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| ConfigError::Invalid {
            key,
            reason: reason.to_owned(),
        };
        for (key, v) in [
            ("push.max_in_flight", self.max_in_flight),
            ("push.max_queued", self.max_queued),
            ("push.max_attempts", self.max_attempts as usize),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.initial_backoff.is_zero() {
            return Err(invalid("push.initial_backoff", "must be more than 0s"));
        }
        if self.max_backoff < self.initial_backoff {
            return Err(invalid(
                "push.max_backoff",
                "must be at least push.initial_backoff",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(invalid("push.request_timeout", "must be more than 0s"));
        }
        if !self.after_unacked.is_zero() && self.after_unacked < Duration::from_secs(1) {
            // Shorter would push most messages to connected devices before their ack is back.
            return Err(invalid(
                "push.after_unacked",
                "must be 0s (off) or at least 1s",
            ));
        }
        let base = &self.fcm.api_base;
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(invalid("push.fcm.api_base", "must be an http(s) URL"));
        }
        let base = &self.apns.api_base;
        if !(base.is_empty() || base.starts_with("https://") || base.starts_with("http://")) {
            return Err(invalid(
                "push.apns.api_base",
                "must be empty (Apple's host) or an http(s) URL",
            ));
        }
        if self.apns_enabled() {
            for (key, v) in [
                ("push.apns.key_id", &self.apns.key_id),
                ("push.apns.team_id", &self.apns.team_id),
                ("push.apns.topic", &self.apns.topic),
            ] {
                if v.is_empty() {
                    return Err(invalid(key, "must be set when push.apns.key_file is"));
                }
            }
        }
        Ok(())
    }

    /// How long a connected device may leave a message unacked before it is pushed to it
    /// (`None`: never; the Dispatcher's `push_after_unacked`).
    pub fn after_unacked(&self) -> Option<Duration> {
        (!self.after_unacked.is_zero()).then_some(self.after_unacked)
    }

    pub fn fcm_enabled(&self) -> bool {
        !self.fcm.service_account_file.as_os_str().is_empty()
    }

    pub fn apns_enabled(&self) -> bool {
        !self.apns.key_file.as_os_str().is_empty()
    }

    /// The pusher's tuning.
    pub fn pusher_config(&self) -> PushConfig {
        PushConfig {
            include_content: self.include_content,
            max_in_flight: self.max_in_flight,
            max_queued: self.max_queued,
            max_attempts: self.max_attempts,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
        }
    }

    /// The configured providers, their key files read and checked. `retention` bounds how
    /// long APNs keeps retrying a notification (the message is gone after it anyway).
    pub fn providers(
        &self,
        retention: Duration,
    ) -> Result<Vec<Arc<dyn PushProvider>>, DeliveryError> {
        let mut providers: Vec<Arc<dyn PushProvider>> = Vec::new();
        if self.fcm_enabled() {
            providers.push(Arc::new(FcmProvider::new(&FcmConfig {
                service_account_file: self.fcm.service_account_file.clone(),
                api_base: self.fcm.api_base.clone(),
                request_timeout: self.request_timeout,
            })?));
        }
        if self.apns_enabled() {
            providers.push(Arc::new(ApnsProvider::new(&ApnsConfig {
                key_file: self.apns.key_file.clone(),
                key_id: self.apns.key_id.clone(),
                team_id: self.apns.team_id.clone(),
                topic: self.apns.topic.clone(),
                api_base: self.apns.api_base().to_owned(),
                expiration: retention,
                request_timeout: self.request_timeout,
            })?));
        }
        Ok(providers)
    }
}
