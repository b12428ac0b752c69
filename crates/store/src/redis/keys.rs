//! The Redis key layout, and the mapping between [`Position`]s and stream ids.
//!
//! Every key of one user carries the user in a Cluster hash tag (`{...}`), so all of them hash
//! to the same slot. The user is escaped inside the tag (`%`, `{` and `}` become `%25`, `%7B`,
//! `%7D`): the tag then always ends right after the user, and two different users can never
//! produce the same key, whatever characters their ids hold.

use std::sync::OnceLock;

use super::connection::{SLOTS, slot};
use crate::error::StoreError;
use crate::inbox::Position;

/// Builds the keys of one store (one key prefix).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    /// Checks the prefix: non-empty and free of braces, so the user's hash tag is always the
    /// first `{...}` of every key.
    pub(crate) fn new(prefix: &str) -> Result<Self, StoreError> {
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            return Err(StoreError::unavailable(format!(
                "invalid redis key prefix {prefix:?}: it must be non-empty and without braces"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The user's inbox stream: `{prefix}:{<user>}:inbox`. Its consumer groups are the devices.
    pub(crate) fn inbox(&self, user: &str) -> String {
        format!("{}:{{{}}}:inbox", self.prefix, escape(user))
    }

    /// The idempotency key of a client id: `{prefix}:{<recipient>}:cid:<sender>:<client id>`,
    /// holding the message id and expiring after the retention. It lives in the recipient's
    /// slot, beside the inbox the message goes to, so the check and the XADD are one atomic
    /// script even on a Redis Cluster; a client id therefore names one message of one sender to
    /// one recipient. The sender is escaped (`:` too), so the key splits back unambiguously.
    pub(crate) fn client_id(&self, recipient: &str, sender: &str, client_id: &str) -> String {
        format!(
            "{}:{{{}}}:cid:{}:{client_id}",
            self.prefix,
            escape(recipient),
            escape(sender).replace(':', "%3A")
        )
    }

    /// Who holds each device of the user: hash device -> `"<instance> <conn>"`.
    pub(crate) fn presence(&self, user: &str) -> String {
        format!("{}:{{{}}}:presence", self.prefix, escape(user))
    }

    /// The user's push bindings: hash device -> `"<platform> <ms> <token>"`.
    pub(crate) fn push(&self, user: &str) -> String {
        format!("{}:{{{}}}:push", self.prefix, escape(user))
    }

    /// Who holds a push token: `{prefix}:pushtoken:<platform>:<token>`.
    pub(crate) fn push_owner(&self, platform: &str, token: &str) -> String {
        format!("{}{platform}:{token}", self.push_owner_prefix())
    }

    /// The prefix of every push token owner key (the scripts build old owner keys from it).
    pub(crate) fn push_owner_prefix(&self) -> String {
        format!("{}:pushtoken:", self.prefix)
    }

    /// The pub/sub channel of one instance (with an empty id: the prefix scripts append to).
    pub(crate) fn events_channel(&self, instance: &str) -> String {
        format!("{}:events:{instance}", self.prefix)
    }

    /// The pub/sub channel every instance listens to, for events meant for all of them.
    pub(crate) fn broadcast_channel(&self) -> String {
        format!("{}:broadcast", self.prefix)
    }

    /// The key an instance keeps alive while it runs (with an empty id: the prefix).
    pub(crate) fn instance_alive(&self, instance: &str) -> String {
        format!("{}:instance:{instance}", self.prefix)
    }

    /// A signed-in user's profile: hash `issuer`, `subject`, `email`, `name`, `picture`.
    pub(crate) fn profile(&self, user: &str) -> String {
        format!("{}:{{{}}}:profile", self.prefix, escape(user))
    }

    /// The user id of a provider's (issuer, subject): `{prefix}:subject:{<issuer> <subject>}`,
    /// tagged by the pair (it belongs to no user until it names one). The issuer is a URL
    /// without spaces, so the space separates the two unambiguously.
    pub(crate) fn subject(&self, issuer: &str, subject: &str) -> String {
        format!(
            "{}:subject:{{{} {}}}",
            self.prefix,
            escape(issuer),
            escape(subject)
        )
    }

    /// Every revocation: hash user -> ms. One key (like the registry) so that each instance can
    /// load all revocations in one read.
    pub(crate) fn revocations(&self) -> String {
        format!("{}:revocations", self.prefix)
    }

    /// The registry of inboxes holding messages: a sorted set of user ids scored by the time
    /// (ms) of their oldest retained message, so `trim` visits only inboxes with expired
    /// messages. On a standalone Redis there is one, outside any user's slot.
    pub(crate) fn registry(&self) -> String {
        format!("{}:inboxes", self.prefix)
    }

    /// On a Redis Cluster, one registry per hash slot, tagged to hash to that slot, so that an
    /// append registers its inbox in the same atomic script: `{prefix}:inboxes:{<tag>}`.
    pub(crate) fn slot_registry(&self, slot: u16) -> String {
        format!("{}:inboxes:{{{}}}", self.prefix, slot_tag(slot))
    }
}

/// A short hash tag for every Cluster slot: the smallest decimal number hashing to it.
fn slot_tag(wanted: u16) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); usize::from(SLOTS)];
        let mut missing = tags.len();
        // Numbers up to a few hundred thousand cover every slot (checked by a test), so this
        // finishes in milliseconds, once per process.
        for n in 0..MAX_TAG_SEARCH {
            let tag = n.to_string();
            let entry = &mut tags[usize::from(slot(&tag))];
            if entry.is_empty() {
                *entry = tag;
                missing -= 1;
                if missing == 0 {
                    break;
                }
            }
        }
        tags
    });
    &tags[usize::from(wanted % SLOTS)]
}

/// Bound of the search in [`slot_tag`]; far above what covering every slot needs.
const MAX_TAG_SEARCH: u32 = 10_000_000;

/// Makes a user id safe inside a hash tag, injectively.
fn escape(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for c in user.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    out
}

/// The stream id of a position: `<ms>-<seq>`.
pub(crate) fn stream_id(position: Position) -> String {
    format!("{}-{}", position.ms, position.seq)
}

/// The position of a stream id.
pub(crate) fn position(id: &str) -> Result<Position, StoreError> {
    let parsed = id
        .split_once('-')
        .and_then(|(ms, seq)| Some((ms.parse().ok()?, seq.parse().ok()?)));
    match parsed {
        Some((ms, seq)) => Ok(Position { ms, seq }),
        None => Err(StoreError::Corrupt {
            reason: format!("invalid stream id {id:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Keys put the user in a hash tag and escape braces so the tag cannot end early.
    #[test]
    fn keys_are_hash_tagged_and_escaped() {
        let keys = Keys::new("titan").unwrap();
        assert_eq!(keys.inbox("alice"), "titan:{alice}:inbox");
        assert_eq!(
            keys.client_id("bob", "alice", "c1"),
            "titan:{bob}:cid:alice:c1"
        );
        assert_eq!(keys.inbox("a}:x{%"), "titan:{a%7D:x%7B%25}:inbox");
        assert_ne!(
            keys.client_id("bob", "x}:cid:y", "z"),
            keys.client_id("bob", "x", "y}:cid:z")
        );
        assert_ne!(
            keys.client_id("bob", "a:b", "c"),
            keys.client_id("bob", "a", "b:c")
        );
        assert_eq!(keys.registry(), "titan:inboxes");
    }

    /// Every slot has a registry key that hashes to it, so an inbox and its registry share it.
    #[test]
    fn every_slot_has_a_registry_in_that_slot() {
        let keys = Keys::new("titan").unwrap();
        for s in 0..SLOTS {
            assert_eq!(slot(&keys.slot_registry(s)), s);
        }
        let inbox = keys.inbox("alice");
        assert_eq!(slot(&keys.slot_registry(slot(&inbox))), slot(&inbox));
    }

    /// A prefix with braces would break the hash tag, so it is refused.
    #[test]
    fn prefix_must_be_brace_free() {
        assert!(Keys::new("").is_err());
        assert!(Keys::new("ti{tan}").is_err());
        assert!(Keys::new("titan:test:1").is_ok());
    }

    /// Positions and stream ids convert both ways; malformed ids are corrupt data.
    #[test]
    fn positions_round_trip_through_stream_ids() {
        let p = Position {
            ms: 1_700_000_000_123,
            seq: 7,
        };
        assert_eq!(stream_id(p), "1700000000123-7");
        assert_eq!(position("1700000000123-7").unwrap(), p);
        for bad in ["", "12", "a-1", "1-b", "-1"] {
            assert!(
                matches!(position(bad), Err(StoreError::Corrupt { .. })),
                "{bad}"
            );
        }
    }
}
