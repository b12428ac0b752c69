//! The [`PushRegistry`] trait: which push token each device registered, for offline delivery.
//!
//! A (user, device) has at most one token (of one platform); registering again replaces it. A
//! token identifies one app install, so it belongs to at most one (user, device): registering
//! it elsewhere (another user signed in on the same phone, or a renamed device) removes it from
//! where it was. Every binding keeps the time it was last registered, so a provider's "this
//! token died at T" only removes a token that was not registered again after T.

use async_trait::async_trait;
use std::time::SystemTime;
use titan_protocol::{DeviceId, PushPlatform, PushToken, UserId};

use crate::error::StoreError;

/// One device's push binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicePush {
    pub device: DeviceId,
    pub platform: PushPlatform,
    pub token: PushToken,
    /// When the token was last registered (millisecond precision).
    pub registered_at: SystemTime,
}

/// Push tokens per (user, device). Every method is atomic.
#[async_trait]
pub trait PushRegistry: Send + Sync + 'static {
    /// Binds `token` to (user, device) as registered at `at`, replacing the device's previous
    /// token and removing `token` from any other (user, device) that held it.
    async fn register_push(
        &self,
        user: &UserId,
        device: &DeviceId,
        platform: PushPlatform,
        token: &PushToken,
        at: SystemTime,
    ) -> Result<(), StoreError>;

    /// Removes the device's binding if it is exactly (platform, token) and, when
    /// `registered_before` is given, was last registered before that time (a provider's
    /// "unregistered at" timestamp must not remove a token registered again since). Returns
    /// whether a binding was removed.
    async fn remove_push(
        &self,
        user: &UserId,
        device: &DeviceId,
        platform: PushPlatform,
        token: &PushToken,
        registered_before: Option<SystemTime>,
    ) -> Result<bool, StoreError>;

    /// Every device of `user` that has a push token, in device-id order.
    async fn push_devices(&self, user: &UserId) -> Result<Vec<DevicePush>, StoreError>;

    /// `push.unregister`: removes the device's binding if it is (platform, token).
    async fn unregister_push(
        &self,
        user: &UserId,
        device: &DeviceId,
        platform: PushPlatform,
        token: &PushToken,
    ) -> Result<bool, StoreError> {
        self.remove_push(user, device, platform, token, None).await
    }
}

/// Decodes a stored binding; stored data is written by this crate, so a failure is corruption.
pub(crate) fn decode_binding(
    device: &str,
    platform: &str,
    token: &str,
    registered_ms: u64,
) -> Result<DevicePush, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt {
        reason: format!("invalid stored push binding: {what}"),
    };
    Ok(DevicePush {
        device: DeviceId::new(device).map_err(|e| corrupt(&e.to_string()))?,
        platform: PushPlatform::parse(platform).ok_or_else(|| corrupt("unknown platform"))?,
        token: PushToken::new(token).map_err(|e| corrupt(&e.to_string()))?,
        registered_at: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(registered_ms),
    })
}
