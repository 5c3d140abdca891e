//! The signing keys JWTs are checked against: a JWKS from a file or a URL,
//! or an HS256 secret.
//!
//! A URL's key set is cached. An unknown `kid` usually means the issuer has
//! rotated keys, so it triggers a refetch, but at most one per cooldown
//! (default 30 s): tokens with random kids are free to mint, and must not
//! turn tollgate into a flood of requests against the identity provider.
//! A set older than its maximum age is refetched too, so a key the issuer
//! removed stops being accepted. When a refetch fails, the old set stays in
//! use and the failure is logged.

use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;

use super::jwt::JwtConfig;
use super::{AuthError, AuthSetupError};

/// Give up on a JWKS request after this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A JWKS larger than this is not a JWKS.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Shortest HS256 secret accepted: RFC 7518 §3.2 asks for at least the hash size.
const MIN_SECRET_BYTES: usize = 32;

/// One usable verification key.
struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, when it names one: the key is then used for no other.
    alg: Option<Algorithm>,
    key: Arc<DecodingKey>,
}

/// The keys of one JWKS document, in document order.
#[derive(Default)]
pub(super) struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parse a JWKS, keeping the keys tollgate can verify with.
    ///
    /// Keys are parsed one by one, so one key of a type we don't know (or an
    /// encryption key) does not hide the others. Symmetric (`oct`) keys are
    /// dropped: a published key set holds public keys, and a shared secret
    /// there would let anyone mint tokens.
    pub(super) fn parse(bytes: &[u8]) -> Result<KeySet, String> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<serde_json::Value>,
        }
        let doc: Doc = serde_json::from_slice(bytes)
            .map_err(|e| format!("not a JWKS (a JSON object with a `keys` array): {e}"))?;
        let mut keys = Vec::new();
        for value in doc.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let alg = match &jwk.common.key_algorithm {
                None => None,
                Some(a) => match Algorithm::from_str(&a.to_string()) {
                    Ok(a) => Some(a),
                    Err(_) => continue,
                },
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
                continue;
            }
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key: Arc::new(key),
            });
        }
        Ok(KeySet { keys })
    }

    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key for a token signed with `alg` under `kid`.
    ///
    /// Without a kid, the one key that fits `alg` is used; with several,
    /// trying each would multiply the work an attacker can cause.
    fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<DecodingKey>, AuthError> {
        let fits = |k: &&Key| k.alg.is_none_or(|a| a == alg) && alg.family() == k.key.family();
        let mut candidates = self.keys.iter().filter(fits);
        match kid {
            Some(kid) => candidates
                .find(|k| k.kid.as_deref() == Some(kid))
                .map(|k| Arc::clone(&k.key))
                .ok_or(AuthError::UnknownSigningKey),
            None => match (candidates.next(), candidates.next()) {
                (Some(k), None) => Ok(Arc::clone(&k.key)),
                (None, _) => Err(AuthError::UnknownSigningKey),
                (Some(_), Some(_)) => Err(AuthError::MissingKeyId),
            },
        }
    }
}

/// Where verification keys come from.
pub(super) enum KeySource {
    /// HS256/384/512 with a shared secret.
    Secret(Arc<DecodingKey>),
    /// A JWKS file, read once at start-up.
    Fixed(KeySet),
    /// A JWKS URL, cached and refetched as described in the module doc.
    Remote(RemoteJwks),
}

impl KeySource {
    pub(super) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, AuthError> {
        match self {
            KeySource::Secret(k) => Ok(Arc::clone(k)),
            KeySource::Fixed(set) => set.select(kid, alg),
            KeySource::Remote(remote) => remote.key(kid, alg).await,
        }
    }

    /// Build the key source named in `cfg` (its caller checked exactly one is).
    /// A JWKS file is read and a JWKS URL fetched now.
    pub(super) async fn load(
        cfg: &JwtConfig,
        http: reqwest::Client,
    ) -> Result<KeySource, AuthSetupError> {
        if let Some(env) = &cfg.hs256_secret_env {
            let secret = std::env::var(env).map_err(|_| {
                AuthSetupError::config(
                    "hs256_secret_env",
                    format!("environment variable {env} is not set (or not UTF-8)"),
                )
            })?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(AuthSetupError::config(
                    "hs256_secret_env",
                    format!(
                        "the secret in {env} is {} bytes; use at least {MIN_SECRET_BYTES} random bytes",
                        secret.len()
                    ),
                ));
            }
            return Ok(KeySource::Secret(Arc::new(DecodingKey::from_secret(
                secret.as_bytes(),
            ))));
        }
        if let Some(path) = &cfg.jwks_file {
            let source_name = path.display().to_string();
            let bytes = std::fs::read(path).map_err(|e| AuthSetupError::Jwks {
                source_name: source_name.clone(),
                cause: e.to_string(),
            })?;
            let set = KeySet::parse(&bytes).map_err(|cause| AuthSetupError::Jwks {
                source_name: source_name.clone(),
                cause,
            })?;
            if set.len() == 0 {
                return Err(AuthSetupError::Jwks {
                    source_name,
                    cause: "it holds no signing key tollgate can use".into(),
                });
            }
            return Ok(KeySource::Fixed(set));
        }
        let raw = cfg.jwks_url.as_deref().unwrap_or_default();
        let url = reqwest::Url::parse(raw).map_err(|e| {
            AuthSetupError::config("jwks_url", format!("`{raw}` is not a URL: {e}"))
        })?;
        if url.scheme() != "https" && !(url.scheme() == "http" && is_loopback(&url)) {
            return Err(AuthSetupError::config(
                "jwks_url",
                "must be an https URL (http is allowed only for a loopback host)",
            ));
        }
        let remote = RemoteJwks::load(url, http, cfg.jwks_cooldown, cfg.jwks_max_age)
            .await
            .map_err(|cause| AuthSetupError::Jwks {
                source_name: raw.to_owned(),
                cause,
            })?;
        Ok(KeySource::Remote(remote))
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A JWKS URL and the key set last fetched from it.
pub(super) struct RemoteJwks {
    url: reqwest::Url,
    http: reqwest::Client,
    cooldown: Duration,
    max_age: Duration,
    state: RwLock<Cached>,
    /// Held while fetching, so concurrent misses cause one fetch, not many.
    fetching: tokio::sync::Mutex<()>,
}

struct Cached {
    set: Arc<KeySet>,
    fetched: Instant,
    /// When the last refetch was tried (success or not); the start-up fetch
    /// does not count, so a rotation right after start is picked up.
    last_refetch: Option<Instant>,
}

impl RemoteJwks {
    /// Fetch the set once; start-up fails if that does not work.
    pub(super) async fn load(
        url: reqwest::Url,
        http: reqwest::Client,
        cooldown: Duration,
        max_age: Duration,
    ) -> Result<RemoteJwks, String> {
        let set = fetch(&http, &url).await?;
        if set.len() == 0 {
            return Err("it holds no signing key tollgate can use".into());
        }
        Ok(RemoteJwks {
            url,
            http,
            cooldown,
            max_age,
            state: RwLock::new(Cached {
                set: Arc::new(set),
                fetched: Instant::now(),
                last_refetch: None,
            }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn snapshot(&self) -> (Arc<KeySet>, bool) {
        let st = self.state.read().unwrap_or_else(|p| p.into_inner());
        (Arc::clone(&st.set), st.fetched.elapsed() >= self.max_age)
    }

    async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<DecodingKey>, AuthError> {
        let (set, stale) = self.snapshot();
        match set.select(kid, alg) {
            Ok(key) if !stale => return Ok(key),
            Ok(_) | Err(AuthError::UnknownSigningKey) => {}
            Err(other) => return Err(other),
        }
        self.refetch().await;
        self.snapshot().0.select(kid, alg)
    }

    /// Refetch unless one was tried within the cooldown.
    async fn refetch(&self) {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
            if st.last_refetch.is_some_and(|t| t.elapsed() < self.cooldown) {
                return;
            }
            st.last_refetch = Some(Instant::now());
        }
        match fetch(&self.http, &self.url).await {
            Ok(set) => {
                tracing::info!(url = %self.url, keys = set.len(), "refetched the JWKS");
                let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
                st.set = Arc::new(set);
                st.fetched = Instant::now();
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "cannot refetch the JWKS; keeping the keys we have");
            }
        }
    }
}

/// GET and parse a JWKS, with a timeout and a size cap.
async fn fetch(http: &reqwest::Client, url: &reqwest::Url) -> Result<KeySet, String> {
    let mut resp = http
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    if !resp.status().is_success() {
        return Err(format!("the server answered HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!(
                "the response is larger than {MAX_JWKS_BYTES} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    KeySet::parse(&body)
}

/// A reqwest error with its causes ("error sending request" alone says little).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
