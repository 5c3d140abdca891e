//! API keys: long-lived bearer tokens minted by `tollgate keys create`.
//!
//! A token is `tg_<id>_<secret>`: `id` is 12 lowercase hex characters that
//! name the key in lists, logs and receipts; `secret` is 32 bytes from the
//! operating system's random source, base64url without padding. The token
//! is shown once; the database keeps only `SHA-256(secret)`.
//!
//! Why SHA-256 and not a password hash (argon2, bcrypt): those exist to slow
//! down guessing of *low-entropy* secrets chosen by people. A 256-bit random
//! secret cannot be guessed at any speed, so a slow hash would only add
//! milliseconds to every request. The stored hash is compared in constant
//! time anyway, so response timing says nothing about how much of a guess
//! was right.
//!
//! Verification reads the row the first time a key is seen and then trusts
//! it from memory while the database's *revocation epoch* is unchanged (see
//! [`super::cache`]): `tollgate keys revoke` bumps the epoch, so a revocation
//! still takes effect on the next request, even in another process and for
//! sessions that are already open.
//! `last_used` is the one thing not written per request: uses are noted in
//! memory and written in one transaction at most every [`FLUSH_EVERY`].

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SubsecRound, Utc};
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;
use subtle::ConstantTimeEq;

use super::AuthError;
use super::cache::{Lookup, VerifiedKeys};
use super::usage::UsageLog;
use crate::store::{Doing, StoreError};

/// Every API key starts with this, which is how a request's bearer token is
/// told apart from a JWT (and how secret scanners can spot a leaked one).
pub const TOKEN_PREFIX: &str = "tg_";

/// Random bytes in a key id: 48 bits, 12 hex characters. Ids are public, so
/// they only need to be unique, and the primary key makes sure they are.
const ID_BYTES: usize = 6;

/// Random bytes in a secret: 256 bits, which nobody can guess.
const SECRET_BYTES: usize = 32;

/// Longest secret accepted when parsing; longer input is not ours.
const MAX_SECRET_CHARS: usize = 128;

/// How often pending `last_used` times are written to the database.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// An error managing keys (the `tollgate keys` commands).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no API key with id `{id}`; `tollgate keys list` shows the known keys")]
    UnknownId { id: String },
    #[error("the operating system could not provide random bytes: {0}")]
    Random(String),
    #[error("the expiry is too far in the future")]
    ExpiryTooFar,
    #[error("API key {id} has an unreadable {field} in the database ({value:?})")]
    Corrupt {
        id: String,
        field: &'static str,
        value: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Everything about a key except its secret, which is not stored, and its
/// hash, which never leaves this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub principal: String,
    pub created: DateTime<Utc>,
    /// `None`: never expires.
    pub expires: Option<DateTime<Utc>>,
    pub note: Option<String>,
    pub revoked: Option<DateTime<Utc>>,
    /// Last successful use; up to [`FLUSH_EVERY`] late when read from
    /// another process.
    pub last_used: Option<DateTime<Utc>>,
}

/// Whether a key can be used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Active,
    Expired,
    Revoked,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
        }
    }
}

impl KeyInfo {
    /// The key's status at `now`. Revocation wins over expiry: it is the
    /// more deliberate fact.
    pub fn status(&self, now: DateTime<Utc>) -> KeyStatus {
        if self.revoked.is_some() {
            KeyStatus::Revoked
        } else if self.expires.is_some_and(|e| e <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }
}

/// What `revoke` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    Revoked(KeyInfo),
    /// The key had been revoked before; nothing changed.
    AlreadyRevoked(KeyInfo),
}

/// The API key store. Cheap to clone; clones share pending `last_used` times.
#[derive(Debug, Clone)]
pub struct ApiKeys {
    pool: SqlitePool,
    usage: UsageLog,
    verified: VerifiedKeys,
}

/// The columns of a key row, in `SELECT` order.
const COLUMNS: &str = "id, principal, created_at, expires_at, note, revoked_at, last_used";
type Row = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);
/// A [`Row`] followed by `secret_hash`: only verification reads the hash.
type RowWithHash = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
);

impl ApiKeys {
    pub fn new(pool: SqlitePool) -> ApiKeys {
        // A database file that exists gets the shared revocation epoch
        // beside it; an in-memory one gets no cache.
        let db = pool.connect_options().get_filename().to_path_buf();
        let verified = VerifiedKeys::new(db.is_file().then_some(db.as_path()));
        ApiKeys {
            usage: UsageLog::new(pool.clone(), FLUSH_EVERY),
            pool,
            verified,
        }
    }

    /// Mint a key for `principal`. Returns its info and the token, which is
    /// not stored anywhere and cannot be shown again.
    ///
    /// The caller checks that the principal exists (the library does not
    /// know where the principals file is).
    pub async fn create(
        &self,
        principal: &str,
        expires: Option<Duration>,
        note: Option<&str>,
    ) -> Result<(KeyInfo, String), KeyError> {
        // Stored with microseconds; truncate so the returned info matches a later read.
        let created = Utc::now().trunc_subsecs(6);
        let expires = expires
            .map(|d| {
                chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| created.checked_add_signed(d))
                    .ok_or(KeyError::ExpiryTooFar)
            })
            .transpose()?;
        let secret = URL_SAFE_NO_PAD.encode(random::<SECRET_BYTES>()?);
        // A 48-bit id collides about never; retrying keeps "about" honest.
        let mut attempts = 0;
        let id = loop {
            let id = hex::encode(random::<ID_BYTES>()?);
            let inserted = sqlx::query(
                "INSERT INTO api_keys (id, principal, secret_hash, created_at, expires_at, note)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&id)
            .bind(principal)
            .bind(hash_secret(&secret))
            .bind(ts(created))
            .bind(expires.map(ts))
            .bind(note)
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => break id,
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempts < 3 => {
                    attempts += 1;
                }
                Err(source) => {
                    let action = "store the new API key";
                    return Err(StoreError::Sql { action, source }.into());
                }
            }
        };
        let token = format!("{TOKEN_PREFIX}{id}_{secret}");
        let info = KeyInfo {
            id,
            principal: principal.to_owned(),
            created,
            expires,
            note: note.map(str::to_owned),
            revoked: None,
            last_used: None,
        };
        Ok((info, token))
    }

    /// Every key, oldest first, with uses not yet written merged in.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id");
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await
            .doing("list API keys")?;
        let pending = self.usage.pending();
        rows.into_iter()
            .map(|r| {
                let mut info = to_info(r)?;
                if let Some(&t) = pending.get(&info.id) {
                    info.last_used = info.last_used.max(Some(t));
                }
                Ok(info)
            })
            .collect()
    }

    /// The key with this id, if any.
    pub async fn get(&self, id: &str) -> Result<Option<KeyInfo>, KeyError> {
        self.row(id).await?.map(|(r, _)| to_info(r)).transpose()
    }

    /// Revoke key `id` (also accepted as `tg_<id>`). Idempotent: revoking a
    /// revoked key changes nothing and says so.
    pub async fn revoke(&self, id: &str) -> Result<Revocation, KeyError> {
        let id = id.strip_prefix(TOKEN_PREFIX).unwrap_or(id);
        let done =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ts(Utc::now()))
                .bind(id)
                .execute(&self.pool)
                .await
                .doing("revoke the API key")?;
        if done.rows_affected() == 1 {
            self.verified.revoked(id);
        }
        let info = self
            .get(id)
            .await?
            .ok_or_else(|| KeyError::UnknownId { id: id.to_owned() })?;
        Ok(if done.rows_affected() == 1 {
            Revocation::Revoked(info)
        } else {
            Revocation::AlreadyRevoked(info)
        })
    }

    /// Whether any key is neither revoked nor expired.
    pub async fn has_active_keys(&self) -> Result<bool, KeyError> {
        let active: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM api_keys
             WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?))",
        )
        .bind(ts(Utc::now()))
        .fetch_one(&self.pool)
        .await
        .doing("look for active API keys")?;
        Ok(active)
    }

    /// Check a `tg_…` token against the database.
    ///
    /// The secret is checked before the key's state, so only the holder of
    /// the real secret learns that a key is revoked or expired.
    pub async fn verify(&self, token: &str) -> Result<KeyInfo, AuthError> {
        let (id, secret) = parse_token(token).ok_or(AuthError::MalformedApiKey)?;
        let presented = hash_secret(secret);
        let (stored_hash, info) = match self.verified.lookup(id) {
            Lookup::Hit { secret_hash, info } => (secret_hash, info),
            Lookup::Miss { epoch } => {
                let (stored_hash, info) = self.read(id).await?;
                // Only a key that verifies is remembered, so the cache holds
                // at most the keys that exist.
                if same_hash(&presented, &stored_hash)
                    && info.status(Utc::now()) == KeyStatus::Active
                {
                    self.verified
                        .remember(epoch, stored_hash.clone(), info.clone());
                }
                (stored_hash, info)
            }
        };
        if !same_hash(&presented, &stored_hash) {
            return Err(AuthError::WrongSecret);
        }
        let now = Utc::now();
        match info.status(now) {
            KeyStatus::Revoked => return Err(AuthError::KeyRevoked { id: info.id }),
            KeyStatus::Expired => return Err(AuthError::KeyExpired { id: info.id }),
            KeyStatus::Active => {}
        }
        self.usage.note(&info.id, now);
        Ok(info)
    }

    /// The key's stored secret hash and info, from the database.
    async fn read(&self, id: &str) -> Result<(String, KeyInfo), AuthError> {
        let found = self.row(id).await.map_err(|e| {
            tracing::error!(error = %e, "cannot read API keys");
            AuthError::Unavailable
        })?;
        let (row, stored_hash) = found.ok_or(AuthError::UnknownApiKey)?;
        let info = to_info(row).map_err(|e| {
            tracing::error!(error = %e, "unreadable API key row");
            AuthError::Unavailable
        })?;
        Ok((stored_hash, info))
    }

    /// Write every pending `last_used` now. The background flusher calls
    /// this every [`FLUSH_EVERY`]; call it at shutdown too, or the last few
    /// seconds of uses are not recorded.
    pub async fn flush_last_used(&self) {
        self.usage.flush().await;
    }

    async fn row(&self, id: &str) -> Result<Option<(Row, String)>, StoreError> {
        let sql = format!("SELECT {COLUMNS}, secret_hash FROM api_keys WHERE id = ?");
        let found: Option<RowWithHash> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .doing("look up the API key")?;
        Ok(found.map(|(a, b, c, d, e, f, g, hash)| ((a, b, c, d, e, f, g), hash)))
    }
}

/// Split `tg_<id>_<secret>`, checking the shape before anything is looked up.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    let id_ok = id.len() == ID_BYTES * 2
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let min = (SECRET_BYTES * 8).div_ceil(6);
    let secret_ok = (min..=MAX_SECRET_CHARS).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

/// Hex SHA-256 of the secret's text (see the module doc for why SHA-256).
fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compare two hashes in constant time: how long it takes says nothing about
/// how many leading characters matched.
fn same_hash(given: &str, stored: &str) -> bool {
    given.as_bytes().ct_eq(stored.as_bytes()).into()
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(buf)
}

/// Timestamps as in the rest of the schema: fixed width, so they sort as text.
const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.format(TS_FORMAT).to_string()
}

fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn to_info(r: Row) -> Result<KeyInfo, KeyError> {
    let (id, principal, created, expires, note, revoked, last_used) = r;
    let parse = |field: &'static str, v: Option<String>| match v {
        None => Ok(None),
        Some(v) => parse_ts(&v).map(Some).ok_or_else(|| KeyError::Corrupt {
            id: id.clone(),
            field,
            value: v,
        }),
    };
    Ok(KeyInfo {
        created: parse("created_at", Some(created))?.unwrap_or_default(),
        expires: parse("expires_at", expires)?,
        revoked: parse("revoked_at", revoked)?,
        last_used: parse("last_used", last_used)?,
        id,
        principal,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn keys() -> (tempfile::TempDir, crate::store::Store, ApiKeys) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("t.db"))
            .await
            .unwrap();
        let keys = ApiKeys::new(store.pool().clone());
        (dir, store, keys)
    }

    #[tokio::test]
    async fn create_then_verify() {
        let (_dir, _store, keys) = keys().await;
        let (info, token) = keys
            .create("alice", Some(Duration::from_secs(90 * 86_400)), Some("ci"))
            .await
            .unwrap();
        let (id, secret) = parse_token(&token).expect("well-formed token");
        assert_eq!(id, info.id);
        assert_eq!(id.len(), 12);
        assert_eq!(URL_SAFE_NO_PAD.decode(secret).unwrap().len(), 32);
        assert_eq!(info.status(Utc::now()), KeyStatus::Active);
        assert!(info.expires.unwrap() > info.created + chrono::Duration::days(89));

        let verified = keys.verify(&token).await.unwrap();
        assert_eq!(verified.principal, "alice");
        assert_eq!(verified.note.as_deref(), Some("ci"));
        let (_, again) = keys.create("alice", None, None).await.unwrap();
        assert_ne!(token, again, "every token is fresh");
        assert_eq!(
            keys.get(&info.id).await.unwrap().unwrap().created,
            info.created
        );
    }

    #[tokio::test]
    async fn wrong_secret_unknown_id_and_malformed() {
        let (_dir, _store, keys) = keys().await;
        let (info, token) = keys.create("alice", None, None).await.unwrap();
        let other_secret = URL_SAFE_NO_PAD.encode([9u8; 32]);
        let wrong = format!("tg_{}_{other_secret}", info.id);
        assert_eq!(keys.verify(&wrong).await, Err(AuthError::WrongSecret));
        let unknown = format!("tg_000000000000_{other_secret}");
        assert_eq!(keys.verify(&unknown).await, Err(AuthError::UnknownApiKey));
        let secret = parse_token(&token).unwrap().1;
        for bad in [
            "tg_".to_owned(),
            "tg_abc".to_owned(),
            format!("tg_{}", info.id),
            format!("tg_{}_", info.id),
            format!("tg_{}_short", info.id),
            format!("tg_{}_{secret}", info.id.to_uppercase()),
            format!("tg_{}x_{secret}", info.id),
            format!("tg_{}_{secret}!", info.id),
            format!("tg_{}_{}", info.id, "a".repeat(200)),
            format!("xx_{}_{secret}", info.id),
        ] {
            assert_eq!(
                keys.verify(&bad).await,
                Err(AuthError::MalformedApiKey),
                "{bad}"
            );
        }
        assert!(same_hash(&hash_secret("x"), &hash_secret("x")));
        assert!(!same_hash(&hash_secret("x"), &hash_secret("y")));
    }

    #[tokio::test]
    async fn revocation_takes_effect_on_the_next_request() {
        let (_dir, store, keys) = keys().await;
        let (info, token) = keys.create("bob", None, None).await.unwrap();
        assert!(keys.verify(&token).await.is_ok());
        // Revoked through another handle, as `tollgate keys revoke` would.
        let admin = ApiKeys::new(store.pool().clone());
        let done = admin.revoke(&format!("tg_{}", info.id)).await.unwrap();
        assert!(matches!(done, Revocation::Revoked(ref k) if k.revoked.is_some()));
        let refused = keys.verify(&token).await.unwrap_err();
        assert_eq!(
            refused,
            AuthError::KeyRevoked {
                id: info.id.clone()
            }
        );
        assert_eq!(
            refused.to_string(),
            format!("API key tg_{} was revoked", info.id)
        );
        assert!(matches!(
            admin.revoke(&info.id).await.unwrap(),
            Revocation::AlreadyRevoked(_)
        ));
        assert!(matches!(
            admin.revoke("ffffffffffff").await,
            Err(KeyError::UnknownId { .. })
        ));
        assert!(!keys.has_active_keys().await.unwrap());
    }

    /// The cache is real (a row edited behind its back is not re-read at
    /// once) and bounded (it is re-read within MAX_AGE).
    #[tokio::test]
    async fn a_verified_key_is_served_from_memory_for_at_most_max_age() {
        let (_dir, store, keys) = keys().await;
        let (info, token) = keys.create("bob", None, None).await.unwrap();
        assert!(keys.verify(&token).await.is_ok());
        // Revoked by hand, without announcing it through the epoch file.
        sqlx::query("UPDATE api_keys SET revoked_at = '2026-01-01T00:00:00Z'")
            .execute(store.pool())
            .await
            .unwrap();
        assert!(keys.verify(&token).await.is_ok(), "served from memory");
        tokio::time::sleep(super::super::cache::MAX_AGE + Duration::from_millis(50)).await;
        assert_eq!(
            keys.verify(&token).await,
            Err(AuthError::KeyRevoked { id: info.id })
        );
    }

    #[tokio::test]
    async fn expired_keys_are_refused() {
        let (_dir, _store, keys) = keys().await;
        let (info, token) = keys
            .create("bob", Some(Duration::ZERO), None)
            .await
            .unwrap();
        assert_eq!(
            keys.verify(&token).await,
            Err(AuthError::KeyExpired { id: info.id })
        );
        assert!(!keys.has_active_keys().await.unwrap());
        let listed = keys.list().await.unwrap();
        assert_eq!(listed[0].status(Utc::now()), KeyStatus::Expired);
        // Revocation wins over expiry.
        keys.revoke(&listed[0].id).await.unwrap();
        let listed = keys.list().await.unwrap();
        assert_eq!(listed[0].status(Utc::now()), KeyStatus::Revoked);
        // The wrong secret does not learn that the key expired.
        let wrong = format!("tg_{}_{}", listed[0].id, URL_SAFE_NO_PAD.encode([1u8; 32]));
        assert_eq!(keys.verify(&wrong).await, Err(AuthError::WrongSecret));
    }

    #[tokio::test]
    async fn list_shows_no_hash_and_last_use_is_written_in_batches() {
        let (_dir, store, keys) = keys().await;
        let (info, token) = keys.create("alice", None, Some("laptop")).await.unwrap();
        let hash: String = sqlx::query_scalar("SELECT secret_hash FROM api_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(hash, hash_secret(parse_token(&token).unwrap().1));
        assert!(!hash.contains(&token) && !token.contains(&hash));
        assert_eq!(keys.list().await.unwrap()[0].last_used, None);

        keys.verify(&token).await.unwrap();
        let stored = || async {
            sqlx::query_scalar::<_, Option<String>>("SELECT last_used FROM api_keys")
                .fetch_one(store.pool())
                .await
                .unwrap()
        };
        assert_eq!(stored().await, None, "no write on the request path");
        let listed = keys.list().await.unwrap();
        assert!(listed[0].last_used.is_some(), "pending use shown by list");
        assert!(!format!("{listed:?}").contains(&hash));
        assert_eq!(listed[0].note.as_deref(), Some("laptop"));

        keys.flush_last_used().await;
        assert!(stored().await.is_some());
        let fresh = ApiKeys::new(store.pool().clone());
        assert_eq!(
            fresh.get(&info.id).await.unwrap().unwrap().last_used,
            listed[0].last_used.map(|t| t.trunc_subsecs(6))
        );
    }
}
