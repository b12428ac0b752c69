//! The Redis backend's [`PushRegistry`].
//!
//! - `{prefix}:{<user>}:push`: a hash device -> `"<platform> <registered ms> <token>"` (tokens
//!   hold no whitespace), in the user's slot like every other key of the user.
//! - `{prefix}:pushtoken:<platform>:<token>`: who holds a token, `"<push hash>\n<device>"`, so
//!   registering the token elsewhere removes it from its previous holder. Outside the user's
//!   slot, like the inbox registry.
//!
//! Register and remove are Lua scripts (`lua/push_register.lua`, `lua/push_remove.lua`), so
//! each is atomic; listing is one HGETALL.

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

/// Milliseconds since the Unix epoch; times before it count as 0.
fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RedisStore {
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
        let mut call = REGISTER.prepare_invoke();
        call.key(keys.push(user.as_str()))
            .key(keys.push_owner(platform.as_str(), token.as_str()))
            .arg(device.as_str())
            .arg(format!("{platform} {} {}", unix_ms(at), token.as_str()))
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
