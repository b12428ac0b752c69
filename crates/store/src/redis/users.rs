//! [`Users`] on Redis.
//!
//! - `{prefix}:subject:{<issuer> <subject>}` -> user id, set once with `SET NX`: the first
//!   sign-in of a subject creates its id; a concurrent one on another instance finds the id
//!   the winner set, so a subject never gets two users. Never deleted.
//! - `{prefix}:{<user>}:profile`: hash of the last sign-in's profile, rewritten on each one.
//! - `{prefix}:revocations`: hash user -> ms, only ever moved forward (`lua/revoke.lua`).

use ::redis::{AsyncCommands, Script};
use async_trait::async_trait;
use std::collections::HashMap;
use std::time::SystemTime;
use titan_protocol::UserId;

use super::RedisStore;
use crate::error::StoreError;
use crate::users::{SignInProfile, SignedInUser, Users, from_ms, new_user_id, to_ms};

/// Sets the revocation time of ARGV[1] to ARGV[2] unless a later one is stored.
const REVOKE: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > current then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
";

fn corrupt_id(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        reason: format!("stored user id unreadable: {e}"),
    }
}

#[async_trait]
impl Users for RedisStore {
    async fn sign_in(&self, profile: &SignInProfile) -> Result<SignedInUser, StoreError> {
        let keys = &self.shared.keys;
        let subject_key = keys.subject(&profile.issuer, &profile.subject);
        let fresh = new_user_id()?;
        let (created, id): (bool, String) = self
            .run("find or create a user", |mut conn| {
                let (key, fresh) = (subject_key.clone(), fresh.to_string());
                async move {
                    let set: Option<String> = ::redis::cmd("SET")
                        .arg(&key)
                        .arg(&fresh)
                        .arg("NX")
                        .query_async(&mut conn)
                        .await?;
                    if set.is_some() {
                        return Ok((true, fresh));
                    }
                    let id: String = conn.get(&key).await?;
                    Ok((false, id))
                }
            })
            .await?;
        let id = UserId::new(id).map_err(corrupt_id)?;
        let mut fields = vec![
            ("issuer", profile.issuer.clone()),
            ("subject", profile.subject.clone()),
            ("email", profile.email.clone()),
        ];
        fields.extend(profile.name.clone().map(|n| ("name", n)));
        fields.extend(profile.picture.clone().map(|p| ("picture", p)));
        let profile_key = keys.profile(id.as_str());
        self.run("store a user profile", |mut conn| async move {
            let mut pipe = ::redis::pipe();
            pipe.atomic()
                .del(&profile_key)
                .ignore()
                .hset_multiple(&profile_key, &fields)
                .ignore();
            pipe.query_async::<()>(&mut conn).await
        })
        .await?;
        Ok(SignedInUser {
            id,
            email: profile.email.clone(),
            name: profile.name.clone(),
            picture: profile.picture.clone(),
            created,
        })
    }

    async fn revoke(&self, user: &UserId, at: SystemTime) -> Result<(), StoreError> {
        let key = self.shared.keys.revocations();
        let (user, ms) = (user.to_string(), to_ms(at));
        self.run("store a revocation", |mut conn| async move {
            Script::new(REVOKE)
                .key(&key)
                .arg(&user)
                .arg(ms)
                .invoke_async::<i64>(&mut conn)
                .await
        })
        .await?;
        Ok(())
    }

    async fn revoked_before(&self, user: &UserId) -> Result<Option<SystemTime>, StoreError> {
        let key = self.shared.keys.revocations();
        let user = user.to_string();
        let ms: Option<u64> = self
            .run("read a revocation", |mut conn| async move {
                conn.hget(&key, &user).await
            })
            .await?;
        Ok(ms.map(from_ms))
    }

    async fn revocations(&self) -> Result<Vec<(UserId, SystemTime)>, StoreError> {
        let key = self.shared.keys.revocations();
        let all: HashMap<String, u64> = self
            .run("read the revocations", |mut conn| async move {
                conn.hgetall(&key).await
            })
            .await?;
        all.into_iter()
            .map(|(u, ms)| Ok((UserId::new(u).map_err(corrupt_id)?, from_ms(ms))))
            .collect()
    }
}
