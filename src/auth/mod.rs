//! Who is knocking: checking the credentials of HTTP requests.
//!
//! Over stdio the operator names the principal when starting tollgate; over
//! HTTP every request to `/mcp` carries `Authorization: Bearer <token>`, and
//! [`Authenticator::authenticate`] turns that header into a [`Verified`]
//! identity or an [`AuthError`]. Two kinds of token are accepted:
//!
//! - **API keys** (`tg_<id>_<secret>`), minted by `tollgate keys create` and
//!   stored hashed in SQLite ([`keys`]). The key names a principal; its roles
//!   come from the principals file.
//! - **JWT access tokens** from an OAuth 2.1 authorization server, when
//!   `auth.jwt` is configured ([`jwt`]). The token names the principal and
//!   carries its roles; tollgate is the resource server.
//!
//! The `tg_` prefix decides which check runs, so a JWT is never looked up as
//! a key and a key is never sent to JWT parsing.
//!
//! **Invariant: a token never leaves this module.** It is not logged, not put
//! in an error, not recorded; [`Verified::auth`] names the key id or the
//! issuer and subject instead.
//!
//! What this module deliberately does not do: the 401 response and its
//! `WWW-Authenticate` header, per-IP rate limiting of failures, and metrics
//! belong to the HTTP layer (`src/http/`), which reads [`AuthError::kind`].

mod cache;
mod jwks;
pub mod jwt;
pub mod keys;
mod usage;

use std::sync::Arc;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use serde::Deserialize;
use sqlx::SqlitePool;

pub use jwt::{JwtConfig, JwtVerifier};
pub use keys::{ApiKeys, KeyError, KeyInfo, KeyStatus, Revocation};

/// The `auth:` section of `tollgate.yaml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept JWT access tokens from an OAuth 2.1 authorization server.
    /// Absent: only tollgate API keys are accepted.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
}

impl AuthConfig {
    /// Make relative paths (the JWKS file) relative to `base`, the directory
    /// of the config file, as every other path in the config file is.
    pub fn rebase(&mut self, base: &std::path::Path) {
        if let Some(jwt) = &mut self.jwt {
            jwt.rebase(base);
        }
    }
}

/// A caller whose credential checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Principal name: the key's principal, or the token's principal claim.
    pub principal: String,
    /// `None`: look the principal up in the principals file (API keys).
    /// `Some`: roles vouched for by the token itself (JWT), possibly empty.
    pub roles: Option<Vec<String>>,
    /// How the caller was authenticated, recorded in receipts:
    /// `api_key:<id>` or `jwt:<iss>|<sub>`. Never the token.
    pub auth: String,
}

/// Why a request was not authenticated.
///
/// Display is one line, safe to send to the client in a 401 body and to log:
/// no variant holds a token or a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    MissingToken,
    #[error("malformed Authorization header (expected `Authorization: Bearer <token>`)")]
    MalformedHeader,
    #[error("malformed API key (expected tg_<id>_<secret>)")]
    MalformedApiKey,
    #[error("unknown API key")]
    UnknownApiKey,
    /// The id exists but the secret does not match. Worded like an unknown
    /// key so that a guesser learns nothing; `kind` tells operators apart.
    #[error("unknown API key")]
    WrongSecret,
    #[error("API key tg_{id} was revoked")]
    KeyRevoked { id: String },
    #[error("API key tg_{id} expired")]
    KeyExpired { id: String },
    /// A bearer token that is not an API key, and JWTs are not configured.
    #[error("not a tollgate API key (API keys start with tg_; JWT access tokens are not enabled)")]
    JwtDisabled,
    #[error("malformed token")]
    MalformedToken,
    #[error("token expired")]
    TokenExpired,
    #[error("token not yet valid")]
    TokenNotYetValid,
    #[error("wrong audience")]
    WrongAudience,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("bad signature")]
    BadSignature,
    #[error("unknown signing key")]
    UnknownSigningKey,
    #[error("token has no key id (kid) and the key set has more than one key")]
    MissingKeyId,
    #[error("signing algorithm {alg} is not accepted")]
    AlgorithmNotAccepted { alg: String },
    #[error("token has no `{claim}` claim")]
    MissingClaim { claim: String },
    #[error("no principal claim `{claim}`")]
    MissingPrincipal { claim: String },
    #[error("claim `{claim}` {problem}")]
    BadClaim {
        claim: String,
        problem: &'static str,
    },
    /// The check itself could not run (database error). Fail closed: the
    /// request is refused, but the client is not at fault (HTTP 503).
    #[error("cannot check credentials right now; try again")]
    Unavailable,
}

impl AuthError {
    /// A short stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing",
            AuthError::MalformedHeader => "malformed_header",
            AuthError::MalformedApiKey => "malformed_key",
            AuthError::UnknownApiKey => "unknown_key",
            AuthError::WrongSecret => "wrong_secret",
            AuthError::KeyRevoked { .. } => "revoked",
            AuthError::KeyExpired { .. } => "key_expired",
            AuthError::JwtDisabled => "jwt_disabled",
            AuthError::MalformedToken => "malformed_token",
            AuthError::TokenExpired => "expired",
            AuthError::TokenNotYetValid => "not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::BadSignature => "bad_signature",
            AuthError::UnknownSigningKey => "unknown_signing_key",
            AuthError::MissingKeyId => "missing_kid",
            AuthError::AlgorithmNotAccepted { .. } => "algorithm",
            AuthError::MissingClaim { .. } => "missing_claim",
            AuthError::MissingPrincipal { .. } => "missing_principal",
            AuthError::BadClaim { .. } => "bad_claim",
            AuthError::Unavailable => "unavailable",
        }
    }

    /// Whether the failure is on tollgate's side (answer 503, not 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::Unavailable)
    }
}

/// A problem in the `auth:` configuration, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("config field `auth.jwt.{field}`: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("cannot load the JWKS from {source_name}: {cause}")]
    Jwks { source_name: String, cause: String },
}

impl AuthSetupError {
    pub(crate) fn config(field: &'static str, message: impl Into<String>) -> AuthSetupError {
        AuthSetupError::Config {
            field,
            message: message.into(),
        }
    }
}

/// Checks credentials. Built once at start-up; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    keys: ApiKeys,
    jwt: Option<JwtVerifier>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwt", &self.inner.jwt.is_some())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Validate `cfg` and load what it names (JWKS file or URL, HS256 secret).
    ///
    /// A JWKS URL is fetched now, so a typo fails start-up instead of
    /// turning into a 401 on every request.
    pub async fn new(
        cfg: &AuthConfig,
        pool: SqlitePool,
        http: reqwest::Client,
    ) -> Result<Authenticator, AuthSetupError> {
        let jwt = match &cfg.jwt {
            Some(j) => Some(JwtVerifier::new(j, http).await?),
            None => None,
        };
        Ok(Authenticator {
            inner: Arc::new(Inner {
                keys: ApiKeys::new(pool),
                jwt,
            }),
        })
    }

    /// Check the `Authorization` header of one request.
    ///
    /// API keys are looked up in the database on every call (no cache), so a
    /// revocation takes effect on the next request, open sessions included.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Verified, AuthError> {
        let token = bearer_token(headers)?;
        if token.starts_with(keys::TOKEN_PREFIX) {
            let key = self.inner.keys.verify(token).await?;
            return Ok(Verified {
                auth: format!("api_key:{}", key.id),
                principal: key.principal,
                roles: None,
            });
        }
        match &self.inner.jwt {
            Some(jwt) => jwt.verify(token).await,
            None => Err(AuthError::JwtDisabled),
        }
    }

    /// Whether JWT access tokens are accepted.
    pub fn jwt_enabled(&self) -> bool {
        self.inner.jwt.is_some()
    }

    /// The RFC 9728 protected-resource metadata, when JWTs are accepted.
    pub fn resource_metadata(&self) -> Option<serde_json::Value> {
        self.inner
            .jwt
            .as_ref()
            .map(JwtVerifier::protected_resource_metadata)
    }

    /// Whether any API key could currently authenticate (to warn at start-up
    /// when HTTP is served with no way in). A database error counts as "no".
    pub async fn has_active_keys(&self) -> bool {
        self.inner.keys.has_active_keys().await.unwrap_or(false)
    }

    /// The API key store behind this authenticator.
    pub fn api_keys(&self) -> &ApiKeys {
        &self.inner.keys
    }

    /// Write pending `last_used` times now (call at shutdown).
    pub async fn flush(&self) {
        self.inner.keys.flush_last_used().await;
    }
}

/// The token from `Authorization: Bearer <token>`.
///
/// The scheme is case-insensitive (RFC 9110). Two `Authorization` headers are
/// malformed: which one would we believe?
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingToken)?;
    if values.next().is_some() {
        return Err(AuthError::MalformedHeader);
    }
    let value = value.to_str().map_err(|_| AuthError::MalformedHeader)?;
    let (scheme, token) = value
        .trim()
        .split_once(' ')
        .ok_or(AuthError::MalformedHeader)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedHeader);
    }
    let token = token.trim_start();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if token.contains(|c: char| c.is_ascii_whitespace()) {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["bearer  abc "])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&["BEARER abc"])), Ok("abc"));
        assert_eq!(bearer_token(&headers(&[])), Err(AuthError::MissingToken));
        assert_eq!(
            bearer_token(&headers(&["Bearer "])),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(
            bearer_token(&headers(&["Basic dXNlcjpwYXNz"])),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer a b"])),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer a", "Bearer b"])),
            Err(AuthError::MalformedHeader)
        );
    }

    #[tokio::test]
    async fn dispatch_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("t.db"))
            .await
            .unwrap();
        let auth = Authenticator::new(
            &AuthConfig::default(),
            store.pool().clone(),
            reqwest::Client::new(),
        )
        .await
        .unwrap();
        assert!(!auth.jwt_enabled());
        assert!(auth.resource_metadata().is_none());
        assert!(!auth.has_active_keys().await);
        let (info, token) = auth.api_keys().create("alice", None, None).await.unwrap();
        assert!(auth.has_active_keys().await);
        let v = auth
            .authenticate(&headers(&[&format!("Bearer {token}")]))
            .await
            .unwrap();
        assert_eq!(v.principal, "alice");
        assert_eq!(v.roles, None);
        assert_eq!(v.auth, format!("api_key:{}", info.id));
        let e = auth
            .authenticate(&headers(&["Bearer eyJhbGciOi.x.y"]))
            .await
            .unwrap_err();
        assert_eq!(e, AuthError::JwtDisabled);
    }

    #[test]
    fn errors_never_echo_the_token_and_kinds_are_distinct() {
        let all = [
            AuthError::MissingToken,
            AuthError::MalformedHeader,
            AuthError::MalformedApiKey,
            AuthError::UnknownApiKey,
            AuthError::WrongSecret,
            AuthError::KeyRevoked { id: "abc".into() },
            AuthError::KeyExpired { id: "abc".into() },
            AuthError::JwtDisabled,
            AuthError::MalformedToken,
            AuthError::TokenExpired,
            AuthError::TokenNotYetValid,
            AuthError::WrongAudience,
            AuthError::WrongIssuer,
            AuthError::BadSignature,
            AuthError::UnknownSigningKey,
            AuthError::MissingKeyId,
            AuthError::AlgorithmNotAccepted {
                alg: "HS256".into(),
            },
            AuthError::MissingClaim {
                claim: "exp".into(),
            },
            AuthError::MissingPrincipal {
                claim: "sub".into(),
            },
            AuthError::BadClaim {
                claim: "roles".into(),
                problem: "x",
            },
            AuthError::Unavailable,
        ];
        let kinds: std::collections::BTreeSet<_> = all.iter().map(AuthError::kind).collect();
        assert_eq!(kinds.len(), all.len());
        for e in &all {
            assert!(!e.to_string().contains('\n'));
        }
    }
}
