//! Where the benchmark's tokens come from: a command that prints one (`titan-server token
//! {user} --config F`, so the server's own secret is used), or minted here from the HS256 secret
//! with the same claims as the server's `auth.rs` (`sub`, `userid`, `iat`, `exp`).

use crate::error::BenchError;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lifetime of minted tokens: longer than any run.
const MINTED_TTL: Duration = Duration::from_secs(24 * 3600);

/// How to get a token for a user.
pub enum TokenSource {
    /// A shell command; `{user}` is replaced by the user id and the trimmed standard output is
    /// the token.
    Command(String),
    /// HS256 with this secret.
    Secret(EncodingKey),
    /// None given: enough for servers that take no token (`p2p --protocol mqtt`).
    Missing,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Command(cmd) => f.debug_tuple("Command").field(cmd).finish(),
            Self::Secret(_) => f.write_str("Secret(..)"),
            Self::Missing => f.write_str("Missing"),
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    userid: &'a str,
    iat: u64,
    exp: u64,
}

impl TokenSource {
    /// Mints tokens with `secret`.
    pub fn secret(secret: &str) -> Result<Self, BenchError> {
        if secret.is_empty() {
            return Err(BenchError::Options("--jwt-secret must not be empty".into()));
        }
        EncodingKey::from_secret(secret.as_bytes())
            .map(Self::Secret)
            .map_err(|e| BenchError::Options(format!("bad --jwt-secret: {e}")))
    }

    /// A token for `user` (user ids made by the benchmark are letters, digits and `-`, so they
    /// are safe to put in a shell command).
    pub async fn token(&self, user: &str) -> Result<String, BenchError> {
        let fail = |reason: String| BenchError::Token {
            user: user.to_owned(),
            reason,
        };
        match self {
            Self::Missing => Err(fail(
                "give --token-cmd or --jwt-secret (or TITAN_BENCH_JWT_SECRET)".to_owned(),
            )),
            Self::Secret(key) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let claims = Claims {
                    sub: user,
                    userid: user,
                    iat: now,
                    exp: now + MINTED_TTL.as_secs(),
                };
                jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
                    .map_err(|e| fail(e.to_string()))
            }
            Self::Command(template) => {
                let command = template.replace("{user}", user);
                let output = tokio::process::Command::new("sh")
                    .arg("-c")
                    .arg(&command)
                    .output()
                    .await
                    .map_err(|e| fail(e.to_string()))?;
                if !output.status.success() {
                    return Err(fail(format!(
                        "--token-cmd exited with {}: {}",
                        output.status,
                        String::from_utf8_lossy(&output.stderr).trim()
                    )));
                }
                let token = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                if token.is_empty() {
                    return Err(fail("--token-cmd printed nothing".into()));
                }
                Ok(token)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--token-cmd` substitutes the user and returns the command's trimmed output; a failing
    /// command is an error that names the user.
    #[tokio::test]
    async fn token_command_output_and_failure() {
        let ok = TokenSource::Command("printf ' tok-{user}\\n'".into());
        assert_eq!(ok.token("alice").await.unwrap(), "tok-alice");
        let failing = TokenSource::Command("exit 3".into());
        let err = failing.token("bob").await.unwrap_err().to_string();
        assert!(err.contains("bob"), "{err}");
    }
}
