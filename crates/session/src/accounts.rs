//! What sign-in and revocation need from the rest of the server: the Google verifier (when
//! `auth.google` is enabled), the users store, and this instance's revocation list.

use std::sync::Arc;
use titan_store::{RevocationList, Users};

use crate::google::GoogleVerifier;

/// Shared by every session.
#[derive(Clone)]
pub struct Accounts {
    /// `None` when `auth.google.client_ids` is empty (or Titan cannot mint tokens).
    pub google: Option<Arc<GoogleVerifier>>,
    pub users: Arc<dyn Users>,
    /// Every revocation, checked synchronously on each authentication.
    pub revocations: Arc<RevocationList>,
}
