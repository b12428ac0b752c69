//! The session's `auth.jwt`, `auth.google` and `auth.refresh`: a child module of the session so
//! that the actor file only dispatches to them.
//!
//! `auth.jwt` is synchronous (a following request in the same batch sees the identity), except
//! in JWKS mode for a token whose key id is not cached: the key set is then fetched off the
//! actor and the token checked again through [`RetryJwt`].
//!
//! `auth.google` verifies the ID token and finds or creates the user off the actor (HTTP and
//! store calls), then sends [`SignedIn`] to the session itself, which mints Titan's token and
//! binds the connection through the same path as `auth.jwt`: the connection is authenticated
//! when the response goes out.

use actix::prelude::*;
use serde_json::json;
use titan_delivery::CheckRevoked;
use titan_protocol::{
    AuthGoogleParams, AuthJwtParams, DeviceId, ErrorCode, Id, Response, RpcError,
};
use titan_store::{SignedInUser, StoreError};
use tracing::info;

use super::{Outcome, Session};
use crate::auth::AuthError;
use crate::command;
use crate::error::{SessionError, to_rpc};
use crate::google::SignInError;

/// The outcome of the off-actor part of `auth.google`, for the session to finish.
#[derive(Message)]
#[rtype(result = "Result<serde_json::Value, RpcError>")]
pub(super) struct SignedIn {
    pub result: Result<SignedInUser, SessionError>,
    pub device: Option<DeviceId>,
}

/// JWKS mode: the keys were (re)loaded for a token with an unknown key id; check it again.
#[derive(Message)]
#[rtype(result = "Result<serde_json::Value, RpcError>")]
pub(super) struct RetryJwt {
    pub token: String,
    pub device: Option<DeviceId>,
}

impl Session {
    pub(super) fn auth_jwt(
        &mut self,
        params: AuthJwtParams,
        id: Option<Id>,
        ctx: &mut Context<Self>,
    ) -> Outcome {
        let AuthJwtParams { token, device } = params;
        let result = match self.authenticate(&token, device.clone(), ctx) {
            Err(SessionError::Auth(AuthError::UnknownKey { kid })) => {
                if let Some(keys) = self.deps.auth.key_set().cloned() {
                    // Not a failure yet: the retry counts it if the key stays unknown.
                    self.auth_failures = self.auth_failures.saturating_sub(1);
                    let me = ctx.address();
                    return Outcome::Later(Box::pin(async move {
                        let outcome = match keys.load(&kid).await {
                            Ok(_) => me
                                .send(RetryJwt { token, device })
                                .await
                                .unwrap_or_else(|_| Err(RpcError::new(ErrorCode::InternalError))),
                            Err(e) => Err(to_rpc(&SessionError::Keys(e))),
                        };
                        id.map(|id| Response { id, outcome })
                    }));
                }
                Err(to_rpc(&AuthError::UnknownKey { kid }.into()))
            }
            other => other.map(|_| command::ack()).map_err(|e| to_rpc(&e)),
        };
        Outcome::Now(id.map(|id| Response {
            id,
            outcome: result,
        }))
    }

    pub(super) fn sign_in_google(
        &mut self,
        params: AuthGoogleParams,
        id: Option<Id>,
        ctx: &mut Context<Self>,
    ) -> Outcome {
        let google = match (&self.deps.accounts.google, self.deps.auth.can_mint()) {
            (Some(google), true) => google.clone(),
            _ => {
                let error = RpcError::with_message(
                    ErrorCode::MethodNotFound,
                    "Method not found: auth.google is not enabled on this server",
                );
                return Outcome::Now(id.map(|id| Response::error(id, error)));
            }
        };
        let users = self.deps.accounts.users.clone();
        let me = ctx.address();
        Outcome::Later(Box::pin(async move {
            let result = match google.verify(&params.token).await {
                Ok(profile) => users.sign_in(&profile).await.map_err(SessionError::from),
                Err(e) => Err(e.into()),
            };
            let signed_in = SignedIn {
                result,
                device: params.device,
            };
            let outcome = me
                .send(signed_in)
                .await
                .unwrap_or_else(|_| Err(RpcError::new(ErrorCode::InternalError)));
            id.map(|id| Response { id, outcome })
        }))
    }

    /// Verifies one of Titan's tokens, and that it was issued after any revocation of its user.
    pub(super) fn verify_token(&self, token: &str) -> Result<crate::Identity, AuthError> {
        let identity = self.deps.auth.verify(token)?;
        let revocations = &self.deps.accounts.revocations;
        if revocations.is_revoked(&identity.user, identity.issued_at) {
            return Err(AuthError::Revoked);
        }
        Ok(identity)
    }

    /// Right after a fresh [`titan_delivery::Attach`]: has the Router check the token against
    /// revocations once more (see [`CheckRevoked`]).
    pub(super) fn recheck_revocation(
        &self,
        user: titan_protocol::UserId,
        issued_at: u64,
        ctx: &mut Context<Self>,
    ) {
        self.deps.router.do_send(CheckRevoked {
            user,
            issued_at,
            kick: ctx.address().recipient(),
        });
    }

    /// `auth.refresh`: a new token for this connection's user and device, with a fresh expiry
    /// that the connection now follows too.
    pub(super) fn refresh(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> Result<serde_json::Value, RpcError> {
        let Some(me) = &self.identity else {
            return Err(RpcError::with_message(
                ErrorCode::NotAuthenticated,
                "Not authenticated: call auth.jwt or auth.google first",
            ));
        };
        if !self.deps.auth.can_mint() {
            return Err(RpcError::with_message(
                ErrorCode::MethodNotFound,
                "Method not found: auth.refresh is not available, this server only verifies tokens \
                 minted by the app backend (auth.jwt_public_key); ask the backend for a new one",
            ));
        }
        let (user, device) = (me.user.clone(), me.device.clone());
        let token = self
            .deps
            .auth
            .mint(&user, Some(&device), None)
            .map_err(|e| to_rpc(&e.into()))?;
        let identity = self
            .authenticate(&token, Some(device), ctx)
            .map_err(|e| to_rpc(&e))?;
        let expires_at = identity
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(json!({ "token": token, "expires_at": expires_at }))
    }
}

impl Handler<RetryJwt> for Session {
    type Result = Result<serde_json::Value, RpcError>;

    fn handle(&mut self, msg: RetryJwt, ctx: &mut Context<Self>) -> Self::Result {
        self.authenticate(&msg.token, msg.device, ctx)
            .map(|_| command::ack())
            .map_err(|e| to_rpc(&e))
    }
}

impl Handler<SignedIn> for Session {
    type Result = Result<serde_json::Value, RpcError>;

    fn handle(&mut self, msg: SignedIn, ctx: &mut Context<Self>) -> Self::Result {
        let user = match msg.result {
            Ok(user) => user,
            Err(e) => {
                // An unreachable provider or store is not the client's failure.
                let temporary = matches!(
                    e,
                    SessionError::SignIn(SignInError::Unavailable { .. })
                        | SessionError::Store(StoreError::Unavailable { .. })
                );
                if !temporary {
                    self.auth_failures += 1;
                }
                if let SessionError::SignIn(reason) = &e {
                    crate::observe::sign_in_failure(&self.deps.metrics, reason);
                }
                info!(conn = self.conn.0, peer = %self.peer, reason = %e, "Google sign-in failed");
                return Err(to_rpc(&e));
            }
        };
        let token = self
            .deps
            .auth
            .mint(&user.id, msg.device.as_ref(), None)
            .map_err(|e| to_rpc(&e.into()))?;
        self.authenticate(&token, msg.device, ctx)
            .map_err(|e| to_rpc(&e))?;
        info!(conn = self.conn.0, user = %user.id, created = user.created, "signed in with Google");
        Ok(json!({
            "token": token,
            "id": user.id,
            "name": user.name,
            "email": user.email,
            "picture": user.picture,
        }))
    }
}
