//! What a session records into [`Metrics`]: requests by method and outcome, refused
//! authentications by reason, closes by code. Labels only ever take values from fixed sets, never
//! raw client input, so a client cannot grow the number of series.

use titan_delivery::{ConnId, Metrics};
use titan_protocol::{ClientCommand, CloseCode, Response};
use tracing::Span;

use crate::auth::AuthError;
use crate::google::SignInError;
use crate::session::Outcome;

fn count(metrics: &Metrics, method: Option<usize>, response: Option<&Response>) {
    let error_code;
    let code = match response.map(|r| &r.outcome) {
        None => "notification",
        Some(Ok(_)) => match method {
            Some(method) => return metrics.rpc_ok(method),
            None => "ok",
        },
        Some(Err(e)) => {
            error_code = e.code.to_string();
            error_code.as_str()
        }
    };
    let label = method
        .and_then(|m| ClientCommand::METHODS.get(m))
        .copied()
        .unwrap_or("unknown");
    metrics.rpc_requests.with_label_values(&[label, code]).inc();
}

/// Counts a request of `method` answered with `response` (`None`: a notification).
pub(crate) fn answered(metrics: &Metrics, method: &str, response: Option<&Response>) {
    count(metrics, ClientCommand::method_index(method), response);
}

/// Counts the request once its answer is known (now, or when a deferred answer resolves).
pub(crate) fn request(metrics: &Metrics, method: &str, outcome: Outcome) -> Outcome {
    let method = ClientCommand::method_index(method);
    match outcome {
        Outcome::Now(response) => {
            count(metrics, method, response.as_ref());
            Outcome::Now(response)
        }
        Outcome::Later(future) => {
            let metrics = metrics.clone();
            Outcome::Later(Box::pin(async move {
                let response = future.await;
                count(&metrics, method, response.as_ref());
                response
            }))
        }
    }
}

/// The span every log line of connection `conn` carries; `user` and `device` are recorded once
/// it authenticates.
pub(crate) fn span(conn: ConnId, peer: &str) -> Span {
    tracing::info_span!(
        "conn",
        conn = conn.0,
        peer,
        user = tracing::field::Empty,
        device = tracing::field::Empty
    )
}

/// Counts a token refused because it is bound to another device than the one asked for.
pub(crate) fn device_mismatch(metrics: &Metrics) {
    metrics
        .auth_failures
        .with_label_values(&["device_mismatch"])
        .inc();
}

/// Counts a refused authentication by the kind of failure.
pub(crate) fn auth_failure(metrics: &Metrics, err: &AuthError) {
    let reason = match err {
        AuthError::Expired => "expired",
        AuthError::BadSignature => "bad_signature",
        AuthError::WrongAlgorithm { .. } => "wrong_algorithm",
        AuthError::Malformed { .. } => "malformed",
        AuthError::DeviceMismatch { .. } => "device_mismatch",
        AuthError::WrongIssuer => "wrong_issuer",
        AuthError::WrongAudience => "wrong_audience",
        AuthError::Revoked => "revoked",
        AuthError::UnknownKey { .. } => "unknown_key",
        AuthError::EmptySecret
        | AuthError::Signing { .. }
        | AuthError::CannotMint
        | AuthError::BadPublicKey => "internal",
    };
    metrics.auth_failures.with_label_values(&[reason]).inc();
}

/// Counts a refused Google sign-in by the kind of failure (`google_*` reasons).
pub(crate) fn sign_in_failure(metrics: &Metrics, err: &SignInError) {
    let reason = match err {
        SignInError::Expired => "google_expired",
        SignInError::WrongAudience => "google_wrong_audience",
        SignInError::WrongIssuer => "google_wrong_issuer",
        SignInError::UnverifiedEmail => "google_unverified_email",
        SignInError::UnknownKey => "google_unknown_key",
        SignInError::BadSignature => "google_bad_signature",
        SignInError::WrongAlgorithm { .. } => "google_wrong_algorithm",
        SignInError::Malformed { .. } => "google_malformed",
        SignInError::Unavailable { .. } => "google_unavailable",
    };
    metrics.auth_failures.with_label_values(&[reason]).inc();
}

/// Counts a close the server initiated.
pub(crate) fn close(metrics: &Metrics, code: CloseCode) {
    metrics
        .closes
        .with_label_values(&[code.code().to_string().as_str()])
        .inc();
    if code == CloseCode::SlowConsumer {
        metrics.slow_consumer_closes.inc();
    }
}
