//! Identifier newtypes. Each wraps a string so a user id can never be passed where a device id
//! is expected; the validation rules live here so every layer agrees on them.
//!
//! The string is an `Arc<str>`: ids are cloned at every hop of a message (feed keys, store
//! calls, metrics, the push hand-off), and a clone is then a reference count, not an allocation
//! and a copy (that was a dozen allocations per delivered message).

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;

/// Longest user, device or client message id accepted, in bytes. Ids become store keys (and
/// Redis key parts later), so they are kept short and free of control characters.
pub const MAX_ID_BYTES: usize = 256;

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is longer than {MAX_ID_BYTES} bytes")]
    TooLong { kind: &'static str },
    #[error("{kind} must not contain control characters")]
    Control { kind: &'static str },
}

fn validate(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong { kind });
    }
    // Ids are nearly always ASCII, where the byte test is the same check without decoding.
    let control = if s.is_ascii() {
        s.bytes().any(|b| b.is_ascii_control())
    } else {
        s.chars().any(char::is_control)
    };
    if control {
        return Err(IdError::Control { kind });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks the id rules and wraps the string.
            pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                validate($kind, s)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(IdVisitor { kind: $kind }).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// Reads an id straight into its `Arc<str>` (one allocation, no intermediate `String`),
/// checking the id rules.
struct IdVisitor {
    kind: &'static str,
}

impl Visitor<'_> for IdVisitor {
    type Value = Arc<str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} (string)", self.kind)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Arc<str>, E> {
        validate(self.kind, s).map_err(E::custom)?;
        Ok(Arc::from(s))
    }
}

id_type!(
    /// A user, as named by the `sub` claim of its token. Case-sensitive.
    UserId,
    "user id"
);
id_type!(
    /// One of a user's devices (`"default"` when the client names none). Every device has its own
    /// delivery cursor and pending set.
    DeviceId,
    "device id"
);
id_type!(
    /// A message id: assigned by the server (time-ordered), unique per message, and the same on
    /// every redelivery so clients can dedupe.
    MessageId,
    "message id"
);

impl DeviceId {
    /// The device a connection uses when `auth.jwt` names none.
    pub fn default_device() -> Self {
        Self(Arc::from("default"))
    }
}

impl UserId {
    /// The echo bot's name: messages sent to it (in any letter case) come back from it.
    pub const ECHO: &'static str = "echo";

    /// The echo bot as a sender.
    pub fn echo() -> Self {
        Self(Arc::from(Self::ECHO))
    }

    /// True when `to` addresses the echo bot.
    pub fn is_echo(&self) -> bool {
        self.0.eq_ignore_ascii_case(Self::ECHO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(UserId::new("alice").is_ok());
        assert_eq!(UserId::new(""), Err(IdError::Empty { kind: "user id" }));
        assert!(UserId::new("a\nb").is_err());
        assert!(DeviceId::new("x".repeat(MAX_ID_BYTES + 1)).is_err());
        assert!(serde_json::from_str::<UserId>("\"\"").is_err());
    }

    #[test]
    fn echo_is_case_insensitive_but_users_are_not() {
        assert!(UserId::new("EcHo").unwrap().is_echo());
        assert!(!UserId::new("echo2").unwrap().is_echo());
        assert_ne!(UserId::new("Bob").unwrap(), UserId::new("bob").unwrap());
    }
}
