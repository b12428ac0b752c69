//! The embedded store's [`PushRegistry`]: two tables in the same database, written by the same
//! writer thread (so a registration is atomic with respect to every other operation).
//!
//! Push registrations are committed without fsync, like cursor moves: a crash may lose the
//! latest one, and apps register their token again on every start anyway.

use std::time::SystemTime;

use async_trait::async_trait;
use redb::{ReadableTable, StorageError, TableDefinition};
use titan_protocol::{DeviceId, PushPlatform, PushToken, UserId};

use super::EmbeddedStore;
use super::tables::{Tables, unix_ms};
use super::writer::{Answer, Reply, ready};
use crate::error::StoreError;
use crate::push_tokens::{DevicePush, PushRegistry, decode_binding};

/// `(user, device) -> (platform, token, registered ms)`: each device's push binding.
pub(super) const PUSH_DEVICES: TableDefinition<(&str, &str), (&str, &str, u64)> =
    TableDefinition::new("push_devices");

/// `(platform, token) -> (user, device)`: who holds a token, so registering it elsewhere removes
/// it from its previous holder.
pub(super) const PUSH_OWNERS: TableDefinition<(&str, &str), (&str, &str)> =
    TableDefinition::new("push_owners");

/// A push registry request to the writer.
pub(super) enum PushOp {
    Register {
        user: UserId,
        device: DeviceId,
        platform: PushPlatform,
        token: PushToken,
        at_ms: u64,
        reply: Reply<()>,
    },
    Remove {
        user: UserId,
        device: DeviceId,
        platform: PushPlatform,
        token: PushToken,
        before_ms: Option<u64>,
        reply: Reply<bool>,
    },
    Devices {
        user: UserId,
        reply: Reply<Vec<DevicePush>>,
    },
}

impl PushOp {
    /// Runs the operation inside the writer's transaction.
    pub(super) fn apply(self, t: &mut Tables<'_>) -> Result<Box<dyn Answer>, StorageError> {
        match self {
            PushOp::Register {
                user,
                device,
                platform,
                token,
                at_ms,
                reply,
            } => ready(
                reply,
                register(t, user.as_str(), device.as_str(), platform, &token, at_ms).map(Ok),
            ),
            PushOp::Remove {
                user,
                device,
                platform,
                token,
                before_ms,
                reply,
            } => ready(
                reply,
                remove(
                    t,
                    (user.as_str(), device.as_str()),
                    platform,
                    &token,
                    before_ms,
                )
                .map(Ok),
            ),
            PushOp::Devices { user, reply } => ready(reply, devices(t, user.as_str())),
        }
    }

    /// Answers an operation that never ran.
    pub(super) fn fail(self, err: StoreError) {
        match self {
            PushOp::Register { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            PushOp::Remove { reply, .. } => {
                let _ = reply.send(Err(err));
            }
            PushOp::Devices { reply, .. } => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

fn register(
    t: &mut Tables<'_>,
    user: &str,
    device: &str,
    platform: PushPlatform,
    token: &PushToken,
    at_ms: u64,
) -> Result<(), StorageError> {
    let (platform, token) = (platform.as_str(), token.as_str());
    // The device's previous token no longer points here.
    let previous = t.push_devices.table()?.get((user, device))?.map(|g| {
        let (p, tok, _) = g.value();
        (p.to_owned(), tok.to_owned())
    });
    if let Some((p, tok)) = previous
        && (p != platform || tok != token)
    {
        t.push_owners.table()?.remove((p.as_str(), tok.as_str()))?;
    }
    // The token's previous holder loses it.
    let holder = t.push_owners.table()?.get((platform, token))?.map(|g| {
        let (u, d) = g.value();
        (u.to_owned(), d.to_owned())
    });
    if let Some((u, d)) = holder
        && (u != user || d != device)
    {
        t.push_devices.table()?.remove((u.as_str(), d.as_str()))?;
    }
    t.push_devices
        .table()?
        .insert((user, device), (platform, token, at_ms))?;
    t.push_owners
        .table()?
        .insert((platform, token), (user, device))?;
    Ok(())
}

fn remove(
    t: &mut Tables<'_>,
    (user, device): (&str, &str),
    platform: PushPlatform,
    token: &PushToken,
    before_ms: Option<u64>,
) -> Result<bool, StorageError> {
    let matches = t
        .push_devices
        .table()?
        .get((user, device))?
        .is_some_and(|g| {
            let (p, tok, registered_ms) = g.value();
            p == platform.as_str()
                && tok == token.as_str()
                && before_ms.is_none_or(|before| registered_ms < before)
        });
    if !matches {
        return Ok(false);
    }
    t.push_devices.table()?.remove((user, device))?;
    t.push_owners
        .table()?
        .remove((platform.as_str(), token.as_str()))?;
    Ok(true)
}

fn devices(
    t: &mut Tables<'_>,
    user: &str,
) -> Result<Result<Vec<DevicePush>, StoreError>, StorageError> {
    let mut out = Vec::new();
    // ("user", "") is the smallest key of this user: tuples compare element by element.
    for entry in t.push_devices.table()?.range((user, "")..)? {
        let (key, value) = entry?;
        let (owner, device) = key.value();
        if owner != user {
            break;
        }
        let (platform, token, registered_ms) = value.value();
        match decode_binding(device, platform, token, registered_ms) {
            Ok(binding) => out.push(binding),
            Err(e) => return Ok(Err(e)),
        }
    }
    Ok(Ok(out))
}

#[async_trait]
impl PushRegistry for EmbeddedStore {
    async fn register_push(
        &self,
        user: &UserId,
        device: &DeviceId,
        platform: PushPlatform,
        token: &PushToken,
        at: SystemTime,
    ) -> Result<(), StoreError> {
        let (user, device, token) = (user.clone(), device.clone(), token.clone());
        self.call(|reply| {
            super::writer::Op::Push(PushOp::Register {
                user,
                device,
                platform,
                token,
                at_ms: unix_ms(at),
                reply,
            })
        })
        .await
    }

    async fn remove_push(
        &self,
        user: &UserId,
        device: &DeviceId,
        platform: PushPlatform,
        token: &PushToken,
        registered_before: Option<SystemTime>,
    ) -> Result<bool, StoreError> {
        let (user, device, token) = (user.clone(), device.clone(), token.clone());
        self.call(|reply| {
            super::writer::Op::Push(PushOp::Remove {
                user,
                device,
                platform,
                token,
                before_ms: registered_before.map(unix_ms),
                reply,
            })
        })
        .await
    }

    async fn push_devices(&self, user: &UserId) -> Result<Vec<DevicePush>, StoreError> {
        let user = user.clone();
        self.call(|reply| super::writer::Op::Push(PushOp::Devices { user, reply }))
            .await
    }
}
