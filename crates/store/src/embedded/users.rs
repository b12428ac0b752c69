//! [`Users`] on the embedded store: three tables, written through the same writer thread as
//! the inboxes (so one transaction owner, and sign-ins are group-committed durably).

use redb::{ReadableTable, StorageError, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use titan_protocol::UserId;

use super::writer::Reply;
use crate::error::StoreError;
use crate::users::{SignInProfile, SignedInUser, new_user_id};

/// `user id -> profile JSON` ([`StoredUser`]).
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// `(issuer, subject) -> user id`: how a sign-in finds its user.
const SUBJECTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("user_subjects");
/// `user id -> ms`: tokens issued before this time are revoked.
const REVOCATIONS: TableDefinition<&str, u64> = TableDefinition::new("revocations");

/// What is kept per user.
#[derive(Serialize, Deserialize)]
struct StoredUser {
    issuer: String,
    subject: String,
    email: String,
    name: Option<String>,
    picture: Option<String>,
}

/// A users operation for the writer thread.
pub(in crate::embedded) enum UserOp {
    SignIn {
        profile: SignInProfile,
        reply: Reply<SignedInUser>,
    },
    Revoke {
        user: UserId,
        at_ms: u64,
        reply: Reply<()>,
    },
    RevokedBefore {
        user: UserId,
        reply: Reply<Option<u64>>,
    },
    Revocations {
        reply: Reply<Vec<(UserId, u64)>>,
    },
}

impl UserOp {
    /// True for the operations that must be on disk before they are answered.
    pub(in crate::embedded) fn is_durable_write(&self) -> bool {
        matches!(self, Self::SignIn { .. } | Self::Revoke { .. })
    }

    /// True when the operation writes nothing.
    pub(in crate::embedded) fn is_read(&self) -> bool {
        matches!(self, Self::RevokedBefore { .. } | Self::Revocations { .. })
    }

    /// Answers an operation that never ran.
    pub(in crate::embedded) fn fail(self, err: StoreError) {
        match self {
            Self::SignIn { reply, .. } => drop(reply.send(Err(err))),
            Self::Revoke { reply, .. } => drop(reply.send(Err(err))),
            Self::RevokedBefore { reply, .. } => drop(reply.send(Err(err))),
            Self::Revocations { reply } => drop(reply.send(Err(err))),
        }
    }
}

/// Creates the tables at open time, so read-only operations find them.
pub(in crate::embedded) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(USERS)?;
    txn.open_table(SUBJECTS)?;
    txn.open_table(REVOCATIONS)?;
    Ok(())
}

/// The user of the profile's (issuer, subject), created if new, with the profile stored.
pub(in crate::embedded) fn sign_in(
    txn: &WriteTransaction,
    profile: &SignInProfile,
) -> Result<Result<SignedInUser, StoreError>, StorageError> {
    let mut subjects = txn.open_table(SUBJECTS).map_err(table_error)?;
    let mut users = txn.open_table(USERS).map_err(table_error)?;
    let key = (profile.issuer.as_str(), profile.subject.as_str());
    let existing = subjects.get(key)?.map(|g| g.value().to_owned());
    let (id, created) = match existing {
        Some(id) => match UserId::new(id) {
            Ok(id) => (id, false),
            Err(e) => {
                return Ok(Err(StoreError::Corrupt {
                    reason: format!("stored user id unreadable: {e}"),
                }));
            }
        },
        None => match new_user_id() {
            Ok(id) => {
                subjects.insert(key, id.as_str())?;
                (id, true)
            }
            Err(e) => return Ok(Err(e)),
        },
    };
    let stored = StoredUser {
        issuer: profile.issuer.clone(),
        subject: profile.subject.clone(),
        email: profile.email.clone(),
        name: profile.name.clone(),
        picture: profile.picture.clone(),
    };
    let json = match serde_json::to_vec(&stored) {
        Ok(json) => json,
        Err(e) => return Ok(Err(StoreError::unavailable(e))),
    };
    users.insert(id.as_str(), json.as_slice())?;
    Ok(Ok(SignedInUser {
        id,
        email: stored.email,
        name: stored.name,
        picture: stored.picture,
        created,
    }))
}

/// Moves the user's revocation time forward to `at_ms` (never back).
pub(in crate::embedded) fn revoke(
    txn: &WriteTransaction,
    user: &UserId,
    at_ms: u64,
) -> Result<Result<(), StoreError>, StorageError> {
    let mut table = txn.open_table(REVOCATIONS).map_err(table_error)?;
    let current = table.get(user.as_str())?.map_or(0, |g| g.value());
    if at_ms > current {
        table.insert(user.as_str(), at_ms)?;
    }
    Ok(Ok(()))
}

pub(in crate::embedded) fn revoked_before(
    txn: &WriteTransaction,
    user: &UserId,
) -> Result<Result<Option<u64>, StoreError>, StorageError> {
    let table = txn.open_table(REVOCATIONS).map_err(table_error)?;
    Ok(Ok(table.get(user.as_str())?.map(|g| g.value())))
}

pub(in crate::embedded) fn revocations(
    txn: &WriteTransaction,
) -> Result<Result<Vec<(UserId, u64)>, StoreError>, StorageError> {
    let table = txn.open_table(REVOCATIONS).map_err(table_error)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (user, ms) = entry?;
        match UserId::new(user.value()) {
            Ok(user) => out.push((user, ms.value())),
            Err(e) => {
                return Ok(Err(StoreError::Corrupt {
                    reason: format!("revoked user id unreadable: {e}"),
                }));
            }
        }
    }
    Ok(Ok(out))
}

/// A table that cannot be opened inside a transaction is a storage failure of that transaction.
fn table_error(e: redb::TableError) -> StorageError {
    match e {
        redb::TableError::Storage(s) => s,
        other => StorageError::Io(std::io::Error::other(other.to_string())),
    }
}
