//! The [`Users`] behaviour every backend must show: sign-in finds or creates by (issuer,
//! subject) with a stable opaque id and refreshes the profile; revocations only move forward.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::users::{SignInProfile, Users};

fn profile(issuer: &str, subject: &str, email: &str) -> SignInProfile {
    SignInProfile {
        issuer: issuer.to_owned(),
        subject: subject.to_owned(),
        email: email.to_owned(),
        name: Some(format!("name of {subject}")),
        picture: None,
    }
}

/// Runs every users check on `users` (one fresh store; the checks use distinct subjects).
pub async fn run_users(users: Arc<dyn Users>) {
    first_sign_in_creates_then_finds(users.as_ref()).await;
    subjects_are_per_issuer(users.as_ref()).await;
    concurrent_first_sign_ins_agree(users.clone()).await;
    revocations_only_move_forward(users.as_ref()).await;
}

/// A subject gets one opaque id on first sign-in, the same id afterwards, and every sign-in
/// refreshes the profile.
pub async fn first_sign_in_creates_then_finds(users: &dyn Users) {
    let first = users
        .sign_in(&profile("https://issuer.test", "s-1", "old@example.com"))
        .await
        .unwrap();
    assert!(first.created);
    assert_ne!(first.id.as_str(), "s-1", "the id is not the subject");
    assert!(!first.id.as_str().contains("example.com"), "nor the email");
    let mut changed = profile("https://issuer.test", "s-1", "new@example.com");
    changed.picture = Some("https://pictures.test/1.png".to_owned());
    let again = users.sign_in(&changed).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.id, first.id);
    assert_eq!(again.email, "new@example.com");
    assert_eq!(
        again.picture.as_deref(),
        Some("https://pictures.test/1.png")
    );
    let other = users
        .sign_in(&profile("https://issuer.test", "s-2", "new@example.com"))
        .await
        .unwrap();
    assert!(
        other.created,
        "the same email under another subject is another user"
    );
    assert_ne!(other.id, first.id);
}

/// The same subject at two issuers is two users.
pub async fn subjects_are_per_issuer(users: &dyn Users) {
    let a = users
        .sign_in(&profile("https://a.test", "same", "a@example.com"))
        .await
        .unwrap();
    let b = users
        .sign_in(&profile("https://b.test", "same", "b@example.com"))
        .await
        .unwrap();
    assert_ne!(a.id, b.id);
}

/// Simultaneous first sign-ins of one subject all get the same id.
pub async fn concurrent_first_sign_ins_agree(users: Arc<dyn Users>) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let users = users.clone();
            tokio::spawn(async move {
                users
                    .sign_in(&profile("https://issuer.test", "racer", "r@example.com"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut created = 0;
    for task in tasks {
        let user = task.await.unwrap();
        created += usize::from(user.created);
        ids.push(user.id);
    }
    assert_eq!(created, 1, "exactly one sign-in created the user");
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

/// A revocation is read back (at millisecond precision), listed, and never moved back.
pub async fn revocations_only_move_forward(users: &dyn Users) {
    let alice = super::user("revoked-alice");
    assert_eq!(users.revoked_before(&alice).await.unwrap(), None);
    let at = UNIX_EPOCH + Duration::from_millis(1_800_000_000_123);
    users.revoke(&alice, at).await.unwrap();
    assert_eq!(users.revoked_before(&alice).await.unwrap(), Some(at));
    users
        .revoke(&alice, at - Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(users.revoked_before(&alice).await.unwrap(), Some(at));
    let later = at + Duration::from_secs(1);
    users.revoke(&alice, later).await.unwrap();
    assert_eq!(users.revoked_before(&alice).await.unwrap(), Some(later));
    let bob = super::user("revoked-bob");
    users.revoke(&bob, SystemTime::now()).await.unwrap();
    let mut all: Vec<_> = users
        .revocations()
        .await
        .unwrap()
        .into_iter()
        .map(|(u, _)| u.to_string())
        .collect();
    all.sort();
    assert_eq!(all, ["revoked-alice", "revoked-bob"]);
}
