//! Titan's own tokens: JWTs with `sub`, `userid` (the same, for the old clients), `iat`,
//! `exp` and an optional `device` (plus `iss`/`aud` when `auth.issuer`/`auth.audience` are set).
//!
//! Two key modes. HS256 with `auth.jwt_secret` (the default): Titan mints and verifies. Public
//! key (`auth.jwt_public_key`, an RS256 or ES256 PEM): an app backend mints with its private key
//! and Titan only verifies, so [`Authenticator::mint`] refuses ([`AuthError::CannotMint`]).
//! JWKS mode (`auth.jwks_url`) is public-key mode with the backend's published key set: a
//! token's `kid` picks the key, and the key decides the algorithm (RSA -> RS256, P-256 ->
//! ES256). Exactly the algorithm of the key is accepted: `none` and every other algorithm (HS256
//! signed with the public key as its secret included) are refused before the signature is even
//! looked at.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use titan_protocol::{DeviceId, UserId};

use crate::jwks::JwksCache;

/// Why a token was refused (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("bad token signature")]
    BadSignature,
    #[error("token algorithm {alg:?} not accepted, only {accepted}")]
    WrongAlgorithm { alg: String, accepted: &'static str },
    #[error("token issuer is not the expected one")]
    WrongIssuer,
    #[error("token audience is not the expected one")]
    WrongAudience,
    #[error("token revoked: the user's tokens issued before a revocation are no longer valid")]
    Revoked,
    #[error("this server only verifies tokens (auth.jwt_public_key): the app backend mints them")]
    CannotMint,
    #[error("auth.jwt_public_key is neither an RSA nor a P-256 EC public key in PEM")]
    BadPublicKey,
    /// JWKS mode: the token's `kid` is not in the cached key set (which the session may then
    /// fetch again). The key id is kept for that, not shown.
    #[error("token signed with an unknown signing key")]
    UnknownKey { kid: String },
    #[error("malformed token: {reason}")]
    Malformed { reason: String },
    #[error("token is for device {token_device}, not {requested}")]
    DeviceMismatch {
        token_device: String,
        requested: String,
    },
    #[error("the signing secret must not be empty")]
    EmptySecret,
    #[error("could not sign token: {reason}")]
    Signing { reason: String },
}

/// Who a verified token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: UserId,
    /// The device the token is bound to, if it names one.
    pub device: Option<DeviceId>,
    pub expires_at: SystemTime,
    /// The token's `iat` in seconds (0 when absent), checked against revocations.
    pub issued_at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    userid: Option<String>,
    #[serde(default)]
    iat: u64,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// A string or an array of strings (RFC 7519); jsonwebtoken checks it, we only carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
}

/// Optional `iss` / `aud` every token must carry (and minted tokens get).
#[derive(Debug, Clone, Default)]
pub struct TokenScope {
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Where the verification key comes from.
enum Verifier {
    /// The one configured key (HS256 secret or PEM public key).
    Key(DecodingKey),
    /// The key of the token's `kid` in a JWKS.
    Jwks(Arc<JwksCache>),
}

/// Mints and verifies Titan tokens (see the module docs for the key modes).
pub struct Authenticator {
    /// `None` in public-key mode: Titan holds no private key.
    encoding: Option<EncodingKey>,
    verifier: Verifier,
    algorithm: Algorithm,
    validation: Validation,
    scope: TokenScope,
    default_ttl: Duration,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.algorithm)
            .field("scope", &self.scope)
            .field("default_ttl", &self.default_ttl)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn hs256(secret: &[u8], default_ttl: Duration) -> Result<Self, AuthError> {
        Self::hs256_scoped(secret, TokenScope::default(), default_ttl)
    }

    /// HS256 with `iss`/`aud` checks (and claims in minted tokens) when `scope` names them.
    pub fn hs256_scoped(
        secret: &[u8],
        scope: TokenScope,
        default_ttl: Duration,
    ) -> Result<Self, AuthError> {
        if secret.is_empty() {
            return Err(AuthError::EmptySecret);
        }
        let encoding = EncodingKey::from_secret(secret).map_err(|_| AuthError::EmptySecret)?;
        let decoding = DecodingKey::from_secret(secret).map_err(|_| AuthError::EmptySecret)?;
        Ok(Self::build(
            Some(encoding),
            Verifier::Key(decoding),
            Algorithm::HS256,
            scope,
            default_ttl,
        ))
    }

    /// Verify-only mode: tokens signed by an app backend whose public key is `pem` (RSA ->
    /// RS256, P-256 EC -> ES256; the key decides the one accepted algorithm).
    pub fn public_key(
        pem: &[u8],
        scope: TokenScope,
        default_ttl: Duration,
    ) -> Result<Self, AuthError> {
        let (decoding, algorithm) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (key, Algorithm::ES256)
        } else {
            return Err(AuthError::BadPublicKey);
        };
        Ok(Self::build(
            None,
            Verifier::Key(decoding),
            algorithm,
            scope,
            default_ttl,
        ))
    }

    /// Verify-only mode with an app backend's JWKS (see the module docs).
    pub fn jwks(keys: Arc<JwksCache>, scope: TokenScope, default_ttl: Duration) -> Self {
        Self::build(
            None,
            Verifier::Jwks(keys),
            Algorithm::RS256,
            scope,
            default_ttl,
        )
    }

    /// The key set, in JWKS mode.
    pub fn key_set(&self) -> Option<&Arc<JwksCache>> {
        match &self.verifier {
            Verifier::Jwks(keys) => Some(keys),
            Verifier::Key(_) => None,
        }
    }

    fn build(
        encoding: Option<EncodingKey>,
        verifier: Verifier,
        algorithm: Algorithm,
        scope: TokenScope,
        default_ttl: Duration,
    ) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        let mut required = vec!["exp"];
        if let Some(iss) = &scope.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &scope.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self {
            encoding,
            verifier,
            algorithm,
            validation,
            scope,
            default_ttl,
        }
    }

    /// True when this server can mint tokens (HS256 mode).
    pub fn can_mint(&self) -> bool {
        self.encoding.is_some()
    }

    /// The configured token lifetime (`auth.token_ttl`).
    pub fn default_ttl(&self) -> Duration {
        self.default_ttl
    }

    /// The key (and its one algorithm) a token must be verified with.
    fn key_for(&self, token: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        let keys = match &self.verifier {
            Verifier::Key(key) => return Ok((key.clone(), self.algorithm)),
            Verifier::Jwks(keys) => keys,
        };
        if let Some(alg) = header_alg(token)
            && alg != "RS256"
            && alg != "ES256"
        {
            return Err(AuthError::WrongAlgorithm {
                alg,
                accepted: "RS256 or ES256",
            });
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed {
            reason: "unreadable header".to_owned(),
        })?;
        let kid = header.kid.ok_or_else(|| AuthError::Malformed {
            reason: "no key id (kid) in the header".to_owned(),
        })?;
        let key = keys.get(&kid).ok_or(AuthError::UnknownKey { kid })?;
        Ok((key.decoding, key.algorithm))
    }

    /// A signed token for `user` valid for `ttl` (the configured `auth.token_ttl` when `None`).
    pub fn mint(
        &self,
        user: &UserId,
        device: Option<&DeviceId>,
        ttl: Option<Duration>,
    ) -> Result<String, AuthError> {
        let encoding = self.encoding.as_ref().ok_or(AuthError::CannotMint)?;
        let now = unix_secs(SystemTime::now());
        let claims = Claims {
            sub: Some(user.to_string()),
            userid: Some(user.to_string()),
            iat: now,
            exp: now.saturating_add(ttl.unwrap_or(self.default_ttl).as_secs()),
            device: device.map(ToString::to_string),
            iss: self.scope.issuer.clone(),
            aud: self.scope.audience.clone().map(serde_json::Value::String),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, encoding).map_err(|e| {
            AuthError::Signing {
                reason: e.to_string(),
            }
        })
    }

    /// Verifies signature, algorithm, expiry (and issuer/audience when configured); returns
    /// who the token names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let (key, algorithm) = self.key_for(token)?;
        let accepted = algorithm_name(algorithm);
        if let Some(alg) = header_alg(token)
            && alg != accepted
        {
            return Err(AuthError::WrongAlgorithm { alg, accepted });
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![algorithm];
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::WrongAlgorithm {
                    alg: header_alg(token).unwrap_or_default(),
                    accepted,
                }
            }
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            other => AuthError::Malformed {
                reason: format!("{other:?}"),
            },
        })?;
        let claims = data.claims;
        let user = claims
            .sub
            .or(claims.userid)
            .ok_or_else(|| AuthError::Malformed {
                reason: "no sub claim".into(),
            })
            .and_then(|s| {
                UserId::new(s).map_err(|e| AuthError::Malformed {
                    reason: e.to_string(),
                })
            })?;
        let device =
            claims
                .device
                .map(DeviceId::new)
                .transpose()
                .map_err(|e| AuthError::Malformed {
                    reason: e.to_string(),
                })?;
        Ok(Identity {
            user,
            device,
            expires_at: UNIX_EPOCH + Duration::from_secs(claims.exp.min(MAX_EXP)),
            issued_at: claims.iat,
        })
    }
}

/// The latest `exp` honoured (9999-12-31T23:59:59Z): a signed token may carry any `u64`, and
/// adding one that large to the epoch overflows `SystemTime` (a panic); later expiries count
/// as this one, which no session outlives.
const MAX_EXP: u64 = 253_402_300_799;

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => "HS256",
    }
}

/// The `alg` a token's header names, read before anything is verified so that the refusal can
/// say which algorithm was refused: jsonwebtoken reports a name it does not know (such as
/// `none`) only as malformed JSON. `None` when the header is not readable base64url JSON.
fn header_alg(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct AlgOnly {
        alg: String,
    }
    let header = base64url_decode(token.split('.').next()?)?;
    serde_json::from_slice::<AlgOnly>(&header)
        .ok()
        .map(|h| h.alg)
}

/// Unpadded base64url (RFC 7515), enough for a JWT header; `None` on any other character.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth() -> Authenticator {
        Authenticator::hs256(b"test-secret", Duration::from_secs(3600)).unwrap()
    }

    fn raw_token(header: serde_json::Value, claims: serde_json::Value, sig: &str) -> String {
        use base64::Engine;
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        format!("{}.{}.{sig}", b64(&header), b64(&claims))
    }

    /// A minted token verifies and names its user and device (this also proves the crypto
    /// backend is wired: jsonwebtoken panics at run time without exactly one).
    #[test]
    fn mint_and_verify() {
        let a = auth();
        let t = a
            .mint(
                &UserId::new("alice").unwrap(),
                Some(&DeviceId::new("phone").unwrap()),
                None,
            )
            .unwrap();
        let id = a.verify(&t).unwrap();
        assert_eq!(id.user.as_str(), "alice");
        assert_eq!(id.device.unwrap().as_str(), "phone");
    }

    /// Expired, badly signed, and other-secret tokens are refused.
    #[test]
    fn refuses_bad_tokens() {
        let a = auth();
        let past = unix_secs(SystemTime::now()) - 10;
        let claims = json!({"sub": "alice", "iat": past - 60, "exp": past});
        let key = EncodingKey::from_secret(b"test-secret").unwrap();
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        assert_eq!(a.verify(&t), Err(AuthError::Expired));
        let other = Authenticator::hs256(b"other", Duration::from_secs(60)).unwrap();
        let t = other
            .mint(&UserId::new("alice").unwrap(), None, None)
            .unwrap();
        assert_eq!(a.verify(&t), Err(AuthError::BadSignature));
        assert!(matches!(
            a.verify("garbage"),
            Err(AuthError::Malformed { .. })
        ));
    }

    /// `alg: none` and HS512 tokens are refused even with a plausible body.
    #[test]
    fn refuses_other_algorithms() {
        let claims = json!({"sub": "alice", "exp": 4_000_000_000u64});
        for alg in ["none", "None", "HS512", "RS256", "hs256"] {
            let token = raw_token(json!({"alg": alg, "typ": "JWT"}), claims.clone(), "");
            let refused = Err(AuthError::WrongAlgorithm {
                alg: alg.to_owned(),
                accepted: "HS256",
            });
            assert_eq!(auth().verify(&token), refused);
        }
    }

    /// The header decoder reads what the test fixture encodes, for every padding length.
    #[test]
    fn base64url_round_trip() {
        for header in [
            json!({"alg": "none"}),
            json!({"alg": "HS256", "typ": "JWT"}),
            json!({"alg": "ab"}),
        ] {
            let token = raw_token(header.clone(), json!({}), "");
            assert_eq!(header_alg(&token).as_deref(), header["alg"].as_str());
        }
        assert_eq!(header_alg("not base64!.x.y"), None);
    }

    /// A validly signed token whose `exp` is beyond what a time can hold (up to `u64::MAX`)
    /// verifies, expiring at the latest time Titan represents, rather than panicking the
    /// session that checks it.
    #[test]
    fn far_future_expiry_is_capped() {
        let a = auth();
        for exp in [u64::MAX, i64::MAX as u64, MAX_EXP + 1] {
            let claims = json!({"sub": "alice", "exp": exp});
            let t = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"test-secret").unwrap(),
            )
            .unwrap();
            let id = a.verify(&t).unwrap();
            assert_eq!(id.expires_at, UNIX_EPOCH + Duration::from_secs(MAX_EXP));
            // What the session does with it: an instant that far ahead must exist too.
            let remaining = id.expires_at.duration_since(SystemTime::now()).unwrap();
            assert!(std::time::Instant::now().checked_add(remaining).is_some());
        }
    }

    /// Old tokens that carry only `userid` still work.
    #[test]
    fn userid_claim_alone_is_accepted() {
        let a = auth();
        let claims = json!({"userid": "bob", "exp": 4_000_000_000u64});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"test-secret").unwrap(),
        )
        .unwrap();
        assert_eq!(a.verify(&t).unwrap().user.as_str(), "bob");
    }
}
