//! Users who sign in with an external identity provider (Google), and token revocations.
//!
//! A user is found by the provider's (issuer, subject) pair, never by email (an email address
//! can change owner; the subject cannot). The first sign-in creates the user with a random,
//! opaque id (a UUID): not the email, not a counter, so ids reveal nothing and cannot be
//! guessed. Every sign-in refreshes the profile (email, name, picture) from the provider.
//!
//! A revocation records "every token of this user issued before this time is invalid". Later
//! revocations move the time forward, never back.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;
use titan_protocol::UserId;

use crate::error::StoreError;

/// What the identity provider says about the person signing in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignInProfile {
    /// The provider (the token's `iss`).
    pub issuer: String,
    /// The person at that provider (the token's `sub`): the lookup key.
    pub subject: String,
    pub email: String,
    pub name: Option<String>,
    pub picture: Option<String>,
}

/// A user as stored after a sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedInUser {
    pub id: UserId,
    pub email: String,
    pub name: Option<String>,
    pub picture: Option<String>,
    /// True when this sign-in created the user.
    pub created: bool,
}

/// Users and revocations, kept by every store backend.
#[async_trait]
pub trait Users: Send + Sync + 'static {
    /// Finds the user of `(profile.issuer, profile.subject)`, creating it with a fresh random
    /// id on first sign-in, and stores the profile's email, name and picture on it.
    async fn sign_in(&self, profile: &SignInProfile) -> Result<SignedInUser, StoreError>;

    /// Rejects every token of `user` issued before `at` (kept if a later time is stored).
    async fn revoke(&self, user: &UserId, at: SystemTime) -> Result<(), StoreError>;

    /// The time before which `user`'s tokens are revoked, if any.
    async fn revoked_before(&self, user: &UserId) -> Result<Option<SystemTime>, StoreError>;

    /// Every revocation, so each instance can hold them all in memory and check tokens without
    /// a store round trip.
    async fn revocations(&self) -> Result<Vec<(UserId, SystemTime)>, StoreError>;
}

/// A new opaque user id.
pub(crate) fn new_user_id() -> Result<UserId, StoreError> {
    UserId::new(uuid::Uuid::new_v4().simple().to_string()).map_err(|e| StoreError::Corrupt {
        reason: format!("generated user id refused: {e}"),
    })
}

/// Milliseconds since the Unix epoch (revocation times are kept at this precision; exported as
/// `unix_ms`).
pub fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
}

/// Every revocation, held in memory by each instance so that authentication checks a token
/// without a store round trip (and stays synchronous). Filled from [`Users::revocations`] at
/// start, then kept current by [`crate::BusEvent::Revoked`] and a periodic reload (which
/// repairs a lost broadcast).
#[derive(Debug, Default)]
pub struct RevocationList {
    by_user: std::sync::RwLock<std::collections::HashMap<UserId, u64>>,
}

impl RevocationList {
    /// Records that `user`'s tokens issued before `at_ms` are revoked. Returns true when this
    /// moved the user's revocation forward (it was news).
    pub fn record(&self, user: &UserId, at_ms: u64) -> bool {
        // A poisoned lock only means another thread panicked mid-insert of a plain map entry;
        // the map is still consistent, so keep using it.
        let mut map = self
            .by_user
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = map.entry(user.clone()).or_insert(0);
        if at_ms > *entry {
            *entry = at_ms;
            true
        } else {
            false
        }
    }

    /// True when a token of `user` issued at `issued_at_secs` (a JWT `iat`, whole seconds) is
    /// revoked. `iat` has no sub-second part, so a token issued in the same second as the
    /// revocation counts as revoked (erring on the safe side).
    pub fn is_revoked(&self, user: &UserId, issued_at_secs: u64) -> bool {
        let map = self
            .by_user
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(user)
            .is_some_and(|&at_ms| issued_at_secs.saturating_mul(1000) < at_ms.div_ceil(1000) * 1000)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A token is revoked when issued before the revocation's second is over: earlier seconds
    /// and the same second are revoked, the next second is not; other users are untouched and
    /// a revocation never moves back.
    #[test]
    fn revocation_list_compares_whole_seconds_safely() {
        let list = RevocationList::default();
        let alice = UserId::new("alice").unwrap();
        assert!(!list.is_revoked(&alice, 0));
        assert!(list.record(&alice, 10_950));
        assert!(list.is_revoked(&alice, 9));
        assert!(list.is_revoked(&alice, 10));
        assert!(!list.is_revoked(&alice, 11));
        assert!(!list.record(&alice, 5_000), "older revocation is no news");
        assert!(list.is_revoked(&alice, 10));
        assert!(list.record(&alice, 20_000));
        assert!(list.is_revoked(&alice, 19));
        assert!(
            !list.is_revoked(&alice, 20),
            "exactly on the second: issued after"
        );
        assert!(!list.is_revoked(&UserId::new("bob").unwrap(), 0));
    }
}
