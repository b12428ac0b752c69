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

/// Milliseconds since the Unix epoch (revocation times are kept at this precision).
pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn from_ms(ms: u64) -> SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
}
