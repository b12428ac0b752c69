//! Push registration on the wire: `push.register` / `push.unregister` params, the platform a
//! token belongs to, and the push token itself (validated here so every layer agrees on it).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest push token accepted, in bytes. FCM registration tokens are about 160 bytes and APNs
/// device tokens 64 hex digits; the margin allows for format changes without letting a client
/// store arbitrary blobs.
pub const MAX_PUSH_TOKEN_BYTES: usize = 4096;

/// Which push service a token belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushPlatform {
    /// Firebase Cloud Messaging (Android, and browsers through FCM).
    Fcm,
    /// Apple Push Notification service (iOS).
    Apns,
}

impl PushPlatform {
    /// The wire (and store) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fcm => "fcm",
            Self::Apns => "apns",
        }
    }

    /// The platform of a wire (or store) name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fcm" => Some(Self::Fcm),
            "apns" => Some(Self::Apns),
            _ => None,
        }
    }
}

impl fmt::Display for PushPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a push token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushTokenError {
    #[error("push token must not be empty")]
    Empty,
    #[error("push token is longer than {MAX_PUSH_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("push token must not contain whitespace or control characters")]
    Whitespace,
}

/// A device's push token as its push service issued it. Tokens become store keys, so they are
/// bounded and free of whitespace and control characters. `Debug` hides the value: tokens are
/// credentials for sending to a device and are never logged.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PushToken(String);

impl PushToken {
    /// Checks the token rules and wraps the string.
    pub fn new(s: impl Into<String>) -> Result<Self, PushTokenError> {
        let s = s.into();
        if s.is_empty() {
            return Err(PushTokenError::Empty);
        }
        if s.len() > MAX_PUSH_TOKEN_BYTES {
            return Err(PushTokenError::TooLong);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PushTokenError::Whitespace);
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PushToken {
    type Error = PushTokenError;
    fn try_from(s: String) -> Result<Self, PushTokenError> {
        Self::new(s)
    }
}

impl From<PushToken> for String {
    fn from(token: PushToken) -> String {
        token.0
    }
}

impl fmt::Debug for PushToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PushToken(<{} bytes>)", self.0.len())
    }
}

/// Params of `push.register` and `push.unregister`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushParams {
    pub platform: PushPlatform,
    pub token: PushToken,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// The documented params parse; platform names are lower-case.
    #[test]
    fn params_golden() {
        let p: PushParams =
            serde_json::from_value(json!({"platform": "fcm", "token": "abc:DEF-1_2"})).unwrap();
        assert_eq!(p.platform, PushPlatform::Fcm);
        assert_eq!(p.token.as_str(), "abc:DEF-1_2");
        let p: PushParams =
            serde_json::from_value(json!({"platform": "apns", "token": "a1b2"})).unwrap();
        assert_eq!(p.platform, PushPlatform::Apns);
        assert_eq!(
            serde_json::to_value(PushPlatform::Apns).unwrap(),
            json!("apns")
        );
    }

    /// Unknown platforms, empty or spaced tokens and extra members are refused.
    #[test]
    fn bad_params_are_refused() {
        for bad in [
            json!({"platform": "gcm", "token": "t"}),
            json!({"platform": "FCM", "token": "t"}),
            json!({"platform": "fcm", "token": ""}),
            json!({"platform": "fcm", "token": "a b"}),
            json!({"platform": "fcm", "token": "a\nb"}),
            json!({"platform": "fcm", "token": "x".repeat(MAX_PUSH_TOKEN_BYTES + 1)}),
            json!({"platform": "fcm"}),
            json!({"platform": "fcm", "token": "t", "extra": 1}),
        ] {
            assert!(
                serde_json::from_value::<PushParams>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    /// A token's Debug form never shows the token.
    #[test]
    fn token_debug_hides_the_value() {
        let t = PushToken::new("secret-token").unwrap();
        assert!(!format!("{t:?}").contains("secret"));
    }
}
