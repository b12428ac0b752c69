//! The Redis backend's [`PushRegistry`].
//!
//! - `{prefix}:{<user>}:push`: a hash device -> `"<platform> <registered ms> <token>"` (tokens
//!   hold no whitespace), in the user's slot like every other key of the user.
//! - `{prefix}:pushtoken:<platform>:<token>`: who holds a token, `"<push hash>\n<device>"`, so
//!   registering the token elsewhere removes it from its previous holder. Outside the user's
//!   slot, like the inbox registry.
//!
//! On a standalone Redis, register and remove are Lua scripts (`lua/push_register.lua`,
//! `lua/push_remove.lua`), so each is atomic; listing is one HGETALL. On a Redis Cluster the
//! hash and the owner keys live in different slots, so each operation is a few single-slot
//! steps (`push_bind`, `push_unbind`, `del_if_equal` and `SET .. GET`), ordered so that an
//! interrupted register leaves at worst a token still bound to its previous holder too; the
//! client sees the error and registers again, which completes it.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::SystemTime;

use ::redis::{AsyncCommands, Script};
use async_trait::async_trait;
use titan_protocol::{DeviceId, PushPlatform, PushToken, UserId};

use super::RedisStore;
use crate::error::StoreError;
use crate::push_tokens::{DevicePush, PushRegistry, decode_binding};

static REGISTER: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/push_register.lua")));
static REMOVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/push_remove.lua")));
static BIND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/push_bind.lua")));
static UNBIND: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/push_unbind.lua")));
static DEL_IF_EQUAL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/del_if_equal.lua")));

/// A stored binding's (platform, registered ms, token).
fn split_binding(binding: &str) -> Option<(&str, &str, &str)> {
    let mut parts = binding.splitn(3, ' ');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// Milliseconds since the Unix epoch; times before it count as 0.
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RedisStore {
    /// Cluster steps of `register_push`: bind the device, take the token's owner key, then
    /// unbind the token from its previous holder and free the device's previous token.
    async fn register_push_in_steps(
        &self,
        user: &UserId,
        device: &DeviceId,
        binding: String,
        owner_key: String,
    ) -> Result<(), StoreError> {
        let keys = &self.shared.keys;
        let owner = self.push_owner(user, device);
        let mut bind = BIND.prepare_invoke();
        bind.key(keys.push(user.as_str()))
            .arg(device.as_str())
            .arg(&binding);
        let previous: Option<String> = self
            .run("register a push token", |mut conn| async move {
                bind.invoke_async(&mut conn).await
            })
            .await?;
        let holder: Option<String> = self
            .run("register a push token", |mut conn| {
                let (key, owner) = (owner_key.clone(), owner.clone());
                async move {
                    ::redis::cmd("SET")
                        .arg(key)
                        .arg(owner)
                        .arg("GET")
                        .query_async(&mut conn)
                        .await
                }
            })
            .await?;
        if let Some((holder_hash, holder_device)) = holder
            .as_deref()
            .filter(|h| *h != owner)
            .and_then(|h| h.split_once('\n'))
            && let Some((platform, _, token)) = split_binding(&binding)
        {
            let mut unbind = UNBIND.prepare_invoke();
            unbind
                .key(holder_hash)
                .arg(holder_device)
                .arg(platform)
                .arg(token)
                .arg("");
            self.run("register a push token", |mut conn| async move {
                unbind.invoke_async::<i64>(&mut conn).await
            })
            .await?;
        }
        if let Some((platform, _, token)) = previous.as_deref().and_then(split_binding) {
            let old_key = keys.push_owner(platform, token);
            if old_key != owner_key {
                self.del_if_equal(old_key, owner).await?;
            }
        }
        Ok(())
    }

    /// Cluster steps of `remove_push`: unbind the device, then free the token's owner key.
    async fn remove_push_in_steps(
        &self,
        user: &UserId,
        device: &DeviceId,
        platform: PushPlatform,
        token: &PushToken,
        before: String,
    ) -> Result<bool, StoreError> {
        let keys = &self.shared.keys;
        let mut unbind = UNBIND.prepare_invoke();
        unbind
            .key(keys.push(user.as_str()))
            .arg(device.as_str())
            .arg(platform.as_str())
            .arg(token.as_str())
            .arg(before);
        let removed: i64 = self
            .run("remove a push token", |mut conn| async move {
                unbind.invoke_async(&mut conn).await
            })
            .await?;
        if removed == 1 {
            let owner_key = keys.push_owner(platform.as_str(), token.as_str());
            self.del_if_equal(owner_key, self.push_owner(user, device))
                .await?;
        }
        Ok(removed == 1)
    }

    async fn del_if_equal(&self, key: String, value: String) -> Result<(), StoreError> {
        let mut call = DEL_IF_EQUAL.prepare_invoke();
        call.key(key).arg(value);
        self.run("free a push token", |mut conn| async move {
            call.invoke_async::<i64>(&mut conn).await
        })
        .await?;
        Ok(())
    }

    /// The value of a token's owner key for (user, device).
    fn push_owner(&self, user: &UserId, device: &DeviceId) -> String {
        format!(
            "{}\n{}",
            self.shared.keys.push(user.as_str()),
            device.as_str()
        )
    }
}

#[async_trait]
impl PushRegistry for RedisStore {
    async fn register_push(
        &self,
        user: &UserId,
        device: &DeviceId,
        platform: PushPlatform,
        token: &PushToken,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let keys = &self.shared.keys;
        let binding = format!("{platform} {} {}", unix_ms(at), token.as_str());
        let owner_key = keys.push_owner(platform.as_str(), token.as_str());
        if self.conn.is_cluster() {
            return self
                .register_push_in_steps(user, device, binding, owner_key)
                .await;
        }
        let mut call = REGISTER.prepare_invoke();
        call.key(keys.push(user.as_str()))
            .key(owner_key)
            .arg(device.as_str())
            .arg(binding)
            .arg(self.push_owner(user, device))
            .arg(keys.push_owner_prefix());
        self.run("register a push token", |mut conn| async move {
            call.invoke_async::<i64>(&mut conn).await
        })
        .await?;
        Ok(())
    }

    async fn remove_push(
        &self,
        user: &UserId,
        device: &DeviceId,
        platform: PushPlatform,
        token: &PushToken,
        registered_before: Option<SystemTime>,
    ) -> Result<bool, StoreError> {
        let keys = &self.shared.keys;
        let before = registered_before.map_or_else(String::new, |t| unix_ms(t).to_string());
        if self.conn.is_cluster() {
            return self
                .remove_push_in_steps(user, device, platform, token, before)
                .await;
        }
        let mut call = REMOVE.prepare_invoke();
        call.key(keys.push(user.as_str()))
            .key(keys.push_owner(platform.as_str(), token.as_str()))
            .arg(device.as_str())
            .arg(platform.as_str())
            .arg(token.as_str())
            .arg(before)
            .arg(self.push_owner(user, device));
        let removed: i64 = self
            .run("remove a push token", |mut conn| async move {
                call.invoke_async(&mut conn).await
            })
            .await?;
        Ok(removed == 1)
    }

    async fn push_devices(&self, user: &UserId) -> Result<Vec<DevicePush>, StoreError> {
        let key = self.shared.keys.push(user.as_str());
        let all: BTreeMap<String, String> = self
            .run("list push tokens", |mut conn| async move {
                conn.hgetall(key).await
            })
            .await?;
        all.iter()
            .map(|(device, binding)| {
                let mut parts = binding.splitn(3, ' ');
                let (Some(platform), Some(ms), Some(token)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(StoreError::Corrupt {
                        reason: "invalid stored push binding".to_owned(),
                    });
                };
                let ms = ms.parse().map_err(|_| StoreError::Corrupt {
                    reason: "invalid stored push registration time".to_owned(),
                })?;
                decode_binding(device, platform, token, ms)
            })
            .collect()
    }
}
