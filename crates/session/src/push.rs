//! `push.register` and `push.unregister`: binding the connection's (user, device) to a push
//! token in the store, so offline delivery can reach the device.

use futures_util::future::LocalBoxFuture;
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;
use titan_protocol::{
    DeviceId, ErrorCode, Id, PushParams, PushPlatform, Response, RpcError, UserId,
};
use titan_store::PushRegistry;
use tracing::debug;

use crate::command::ack;
use crate::error::{SessionError, to_rpc};

/// What sessions need for push registration.
#[derive(Clone)]
pub struct PushDeps {
    pub registry: Arc<dyn PushRegistry>,
    /// Platforms with a configured provider; registering for another one is refused, so an app
    /// learns at once that this server cannot push to it.
    pub platforms: Arc<[PushPlatform]>,
}

/// Which of the two methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAction {
    Register,
    Unregister,
}

/// The response to a `push.*` request from `who` (`None` before authentication: -32001).
pub fn respond(
    deps: &PushDeps,
    who: Option<(&UserId, &DeviceId)>,
    action: PushAction,
    params: PushParams,
    id: Option<Id>,
) -> LocalBoxFuture<'static, Option<Response>> {
    let Some((user, device)) = who else {
        let error = RpcError::from(ErrorCode::NotAuthenticated);
        return Box::pin(async move { id.map(|id| Response::error(id, error)) });
    };
    let fut = execute(deps, user.clone(), device.clone(), action, params);
    Box::pin(async move {
        let outcome = fut.await.map_err(|e| to_rpc(&e));
        id.map(|id| Response { id, outcome })
    })
}

/// Runs the method for (user, device); resolves to `"ACK"` once the store has it. Unregistering
/// a token the device does not hold is not an error (the end state is the one asked for).
pub fn execute(
    deps: &PushDeps,
    user: UserId,
    device: DeviceId,
    action: PushAction,
    params: PushParams,
) -> impl Future<Output = Result<Value, SessionError>> + 'static {
    let deps = deps.clone();
    async move {
        let PushParams { platform, token } = params;
        match action {
            PushAction::Register => {
                if !deps.platforms.contains(&platform) {
                    return Err(SessionError::PushPlatformDisabled {
                        platform: platform.to_string(),
                    });
                }
                deps.registry
                    .register_push(&user, &device, platform, &token, SystemTime::now())
                    .await?;
                debug!(%user, %device, %platform, "push token registered");
            }
            PushAction::Unregister => {
                let removed = deps
                    .registry
                    .unregister_push(&user, &device, platform, &token)
                    .await?;
                debug!(%user, %device, %platform, removed, "push token unregistered");
            }
        }
        Ok(ack())
    }
}
