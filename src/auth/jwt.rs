//! JWT access tokens: tollgate as an OAuth 2.1 resource server.
//!
//! An authorization server (the identity provider) issues the token; tollgate
//! checks, in this order, that the signature is from one of the issuer's keys
//! ([`super::jwks`]), then `iss`, `aud` (this server's resource URI, so a token
//! minted for another service is refused, RFC 8707), `exp` and `nbf` with a
//! small leeway for clock skew. The signature comes first, so nothing about
//! an unsigned token's claims is ever reported back.
//!
//! The principal and its roles come from two configurable claims. Roles are
//! accepted as an array of strings, or as one space-separated string (the
//! shape of OAuth's `scope`).
//!
//! ```yaml
//! auth:
//!   jwt:
//!     issuer: https://idp.example.com
//!     audience: https://tollgate.example.com/mcp
//!     jwks_url: https://idp.example.com/.well-known/jwks.json
//!     roles_claim: roles
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwks::KeySource;
use super::{AuthError, AuthSetupError, Verified};

/// `auth.jwt` in `tollgate.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry: the authorization server's issuer
    /// identifier, exactly as it writes it.
    pub issuer: String,
    /// This server's resource URI (e.g. `https://tollgate.example.com/mcp`).
    /// Tokens must name it in `aud`.
    pub audience: String,
    /// Where the issuer publishes its public keys. Must be https, except on
    /// a loopback host.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWKS file, read at start-up (relative to the config file).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// HS256 for small setups: the NAME of an environment variable that holds
    /// the shared secret. The secret itself never goes in the config file.
    #[serde(default)]
    pub hs256_secret_env: Option<String>,
    /// Accepted signing algorithms. Default: RS256 and ES256 with a JWKS,
    /// HS256 with a secret. An algorithm not listed is refused, whatever the
    /// token's header says.
    #[serde(default)]
    pub algorithms: Option<Vec<Algorithm>>,
    /// The claim that names the principal.
    #[serde(default = "default_principal_claim")]
    pub principal_claim: String,
    /// The claim that lists the roles (array, or space-separated string).
    /// A dotted path such as `realm_access.roles` reaches into an object when
    /// no claim has that exact name.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway", deserialize_with = "duration")]
    pub leeway: Duration,
    /// An unknown `kid` refetches the JWKS URL at most once per this long.
    #[serde(default = "default_cooldown", deserialize_with = "duration")]
    pub jwks_cooldown: Duration,
    /// A JWKS fetched longer ago than this is refetched when next needed, so
    /// keys the issuer withdrew stop working.
    #[serde(default = "default_max_age", deserialize_with = "duration")]
    pub jwks_max_age: Duration,
    /// Authorization servers to advertise in the protected-resource metadata
    /// (RFC 9728). Default: the issuer.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Scopes to advertise in the protected-resource metadata.
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
}

fn default_principal_claim() -> String {
    "sub".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(30)
}
fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}

/// A human duration (`30s`, `5m`, `1h`).
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not a duration like 30s: {e}")))
}

impl JwtConfig {
    /// Resolve a relative `jwks_file` against `base`.
    pub fn rebase(&mut self, base: &Path) {
        if let Some(f) = &mut self.jwks_file
            && f.is_relative()
        {
            *f = base.join(&*f);
        }
    }
}

/// Checks JWT access tokens. Built once from a [`JwtConfig`].
pub struct JwtVerifier {
    source: KeySource,
    /// Issuer, audience, leeway and required claims; `algorithms` is set per
    /// token to the one its header names, after checking it is accepted.
    validation: Validation,
    accepted: Vec<Algorithm>,
    issuer: String,
    principal_claim: String,
    roles_claim: String,
    metadata: Value,
}

/// Not derived: the key source may hold the HS256 secret.
impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.issuer)
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Check `cfg` and load its key source. A JWKS URL is fetched now.
    pub async fn new(
        cfg: &JwtConfig,
        http: reqwest::Client,
    ) -> Result<JwtVerifier, AuthSetupError> {
        if cfg.issuer.trim().is_empty() {
            return Err(AuthSetupError::config("issuer", "must not be empty"));
        }
        if cfg.audience.trim().is_empty() {
            return Err(AuthSetupError::config(
                "audience",
                "must not be empty (it is this server's resource URI)",
            ));
        }
        let given: Vec<&'static str> = [
            ("jwks_url", cfg.jwks_url.is_some()),
            ("jwks_file", cfg.jwks_file.is_some()),
            ("hs256_secret_env", cfg.hs256_secret_env.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        if given.len() != 1 {
            let found = if given.is_empty() {
                "none".to_owned()
            } else {
                given.join(" and ")
            };
            return Err(AuthSetupError::config(
                given.get(1).copied().unwrap_or("jwks_url"),
                format!(
                    "give exactly one key source: jwks_url, jwks_file or hs256_secret_env (found {found})"
                ),
            ));
        }
        let symmetric = cfg.hs256_secret_env.is_some();
        let accepted = match &cfg.algorithms {
            None if symmetric => vec![Algorithm::HS256],
            None => vec![Algorithm::RS256, Algorithm::ES256],
            Some(list) if list.is_empty() => {
                return Err(AuthSetupError::config(
                    "algorithms",
                    "must list at least one algorithm",
                ));
            }
            Some(list) => list.clone(),
        };
        for alg in &accepted {
            let hmac = alg.family() == AlgorithmFamily::Hmac;
            if hmac != symmetric {
                let why = if hmac {
                    "HMAC algorithms need hs256_secret_env (a JWKS publishes public keys only)"
                } else {
                    "with hs256_secret_env only HS256, HS384 and HS512 can be used"
                };
                return Err(AuthSetupError::config(
                    "algorithms",
                    format!("{alg:?}: {why}"),
                ));
            }
        }
        let source = KeySource::load(cfg, http).await?;

        let mut validation = Validation::new(accepted[0]);
        validation.leeway = cfg.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_audience(&[&cfg.audience]);
        // jsonwebtoken checks iss and aud only when present; require them.
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);

        let servers = if cfg.authorization_servers.is_empty() {
            vec![cfg.issuer.clone()]
        } else {
            cfg.authorization_servers.clone()
        };
        let mut metadata = serde_json::json!({
            "resource": cfg.audience,
            "authorization_servers": servers,
            "bearer_methods_supported": ["header"],
        });
        if let Some(scopes) = &cfg.scopes_supported {
            metadata["scopes_supported"] = serde_json::json!(scopes);
        }
        Ok(JwtVerifier {
            source,
            validation,
            accepted,
            issuer: cfg.issuer.clone(),
            principal_claim: cfg.principal_claim.clone(),
            roles_claim: cfg.roles_claim.clone(),
            metadata,
        })
    }

    /// Check a bearer token that is not an API key.
    pub async fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::MalformedToken)?;
        if !self.accepted.contains(&header.alg) {
            return Err(AuthError::AlgorithmNotAccepted {
                alg: format!("{:?}", header.alg),
            });
        }
        let key = self.source.key(header.kid.as_deref(), header.alg).await?;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| map_error(e.into_kind()))?;
        self.identity(&data.claims)
    }

    /// RFC 9728 protected-resource metadata, served by the HTTP layer at
    /// `/.well-known/oauth-protected-resource`.
    pub fn protected_resource_metadata(&self) -> Value {
        self.metadata.clone()
    }

    /// Principal, roles and receipt label from verified claims.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Verified, AuthError> {
        let principal = match claim(claims, &self.principal_claim) {
            None | Some(Value::Null) => {
                return Err(AuthError::MissingPrincipal {
                    claim: self.principal_claim.clone(),
                });
            }
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(_) => {
                return Err(AuthError::BadClaim {
                    claim: self.principal_claim.clone(),
                    problem: "must be a non-empty string",
                });
            }
        };
        let roles = roles(claim(claims, &self.roles_claim)).ok_or_else(|| AuthError::BadClaim {
            claim: self.roles_claim.clone(),
            problem: "must be an array of strings or a space-separated string",
        })?;
        // `iss` is required and was checked equal to the configured issuer.
        let sub = match claims.get("sub") {
            Some(Value::String(s)) => s.as_str(),
            _ => principal.as_str(),
        };
        Ok(Verified {
            auth: format!("jwt:{}|{sub}", self.issuer),
            principal,
            roles: Some(roles),
        })
    }
}

/// A claim by exact name, else by dotted path into nested objects.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// Roles from a claim value; `None` when it has the wrong shape. An absent
/// claim means no roles: the principal is authenticated but may do nothing.
fn roles(value: Option<&Value>) -> Option<Vec<String>> {
    match value {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::String(s)) => Some(s.split_whitespace().map(str::to_owned).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(_) => None,
    }
}

/// jsonwebtoken's reasons, in the words of [`AuthError`].
fn map_error(kind: ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidAlgorithm => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::TokenExpired,
        ErrorKind::ImmatureSignature => AuthError::TokenNotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim { claim },
        ErrorKind::InvalidClaimFormat(claim) => AuthError::BadClaim {
            claim,
            problem: "has the wrong type",
        },
        _ => AuthError::MalformedToken,
    }
}

#[cfg(test)]
#[path = "../../tests/support/jwt.rs"]
mod test_idp;

#[cfg(test)]
mod tests {
    use super::test_idp::{self, JwksServer, TestKey};
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://idp.test";
    const AUD: &str = "https://tollgate.test/mcp";

    fn config(extra: &str) -> JwtConfig {
        let yaml = format!("issuer: {ISS}\naudience: {AUD}\n{extra}");
        serde_norway::from_str(&yaml).unwrap()
    }

    async fn verifier(extra: &str) -> Result<JwtVerifier, AuthSetupError> {
        JwtVerifier::new(&config(extra), reqwest::Client::new()).await
    }

    fn claims_with(change: impl FnOnce(&mut Value)) -> Value {
        let mut c = test_idp::claims(ISS, AUD, "alice", &["admin", "support"]);
        change(&mut c);
        c
    }

    #[tokio::test]
    async fn valid_token_gives_principal_and_roles() {
        let key = TestKey::es256("k1");
        let idp = JwksServer::start(test_idp::jwks(&[&key])).await;
        let v = verifier(&format!("jwks_url: {}", idp.url)).await.unwrap();

        let ok = v.verify(&key.sign(&claims_with(|_| {}))).await.unwrap();
        assert_eq!(ok.principal, "alice");
        assert_eq!(
            ok.roles,
            Some(vec!["admin".to_owned(), "support".to_owned()])
        );
        assert_eq!(ok.auth, format!("jwt:{ISS}|alice"));

        let spaced = claims_with(|c| c["roles"] = json!("admin  viewer"));
        let ok = v.verify(&key.sign(&spaced)).await.unwrap();
        assert_eq!(
            ok.roles,
            Some(vec!["admin".to_owned(), "viewer".to_owned()])
        );

        let none = claims_with(|c| {
            c.as_object_mut().unwrap().remove("roles");
        });
        assert_eq!(
            v.verify(&key.sign(&none)).await.unwrap().roles,
            Some(vec![])
        );

        let bad = claims_with(|c| c["roles"] = json!([1, 2]));
        let e = v.verify(&key.sign(&bad)).await.unwrap_err();
        assert_eq!(e.kind(), "bad_claim");

        // No kid, one key in the set: that key.
        assert!(
            v.verify(&key.sign_with_kid(None, &claims_with(|_| {})))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn time_issuer_audience_and_signature_are_checked() {
        let key = TestKey::es256("k1");
        let impostor = TestKey::es256("k1");
        let idp = JwksServer::start(test_idp::jwks(&[&key])).await;
        let v = verifier(&format!("jwks_url: {}\nleeway: 30s", idp.url))
            .await
            .unwrap();
        let now = test_idp::now();
        let cases = [
            (
                claims_with(|c| c["exp"] = json!(now - 120)),
                AuthError::TokenExpired,
            ),
            (
                claims_with(|c| c["nbf"] = json!(now + 120)),
                AuthError::TokenNotYetValid,
            ),
            (
                claims_with(|c| c["aud"] = json!("https://other.test")),
                AuthError::WrongAudience,
            ),
            (
                claims_with(|c| c["iss"] = json!("https://evil.test")),
                AuthError::WrongIssuer,
            ),
            (
                claims_with(|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
                AuthError::MissingClaim {
                    claim: "aud".into(),
                },
            ),
            (
                claims_with(|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
                AuthError::MissingPrincipal {
                    claim: "sub".into(),
                },
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(
                v.verify(&key.sign(&claims)).await.unwrap_err(),
                want,
                "{claims}"
            );
        }
        // Within the leeway.
        let late = claims_with(|c| c["exp"] = json!(now - 10));
        assert!(v.verify(&key.sign(&late)).await.is_ok());
        // Same kid, another key: the signature does not verify, and claims
        // are not even looked at (this one is also expired).
        let forged = impostor.sign(&claims_with(|c| c["exp"] = json!(now - 120)));
        assert_eq!(
            v.verify(&forged).await.unwrap_err(),
            AuthError::BadSignature
        );
        // Tampered payload.
        let good = key.sign(&claims_with(|_| {}));
        let mut parts: Vec<&str> = good.split('.').collect();
        let other = key.sign(&claims_with(|c| c["sub"] = json!("mallory")));
        parts[1] = other.split('.').nth(1).unwrap();
        assert_eq!(
            v.verify(&parts.join(".")).await.unwrap_err(),
            AuthError::BadSignature
        );
        assert_eq!(
            v.verify("not-a-jwt").await.unwrap_err(),
            AuthError::MalformedToken
        );
        // An HS256 token against a JWKS verifier: refused by algorithm,
        // before any key is chosen (no algorithm confusion).
        let hs = test_idp::sign_hs256(&[7u8; 32], &claims_with(|_| {}));
        assert_eq!(v.verify(&hs).await.unwrap_err().kind(), "algorithm");
    }

    #[tokio::test]
    async fn unknown_kid_refetches_at_most_once_per_cooldown() {
        let k1 = TestKey::es256("k1");
        let k2 = TestKey::es256("k2");
        let idp = JwksServer::start(test_idp::jwks(&[&k1])).await;
        let v = verifier(&format!("jwks_url: {}\njwks_cooldown: 1s", idp.url))
            .await
            .unwrap();
        assert_eq!(idp.hits(), 1, "fetched once at start-up");

        // The issuer rotates in k2: the first k2 token refetches and passes.
        idp.set(test_idp::jwks(&[&k1, &k2]));
        assert!(v.verify(&k2.sign(&claims_with(|_| {}))).await.is_ok());
        assert_eq!(idp.hits(), 2);

        // Random kids within the cooldown: no more fetches.
        for i in 0..5 {
            let t = k1.sign_with_kid(Some(&format!("random-{i}")), &claims_with(|_| {}));
            assert_eq!(
                v.verify(&t).await.unwrap_err(),
                AuthError::UnknownSigningKey
            );
        }
        assert_eq!(idp.hits(), 2);
        // Known keys keep working without fetching.
        assert!(v.verify(&k1.sign(&claims_with(|_| {}))).await.is_ok());
        assert_eq!(idp.hits(), 2);

        tokio::time::sleep(Duration::from_millis(1100)).await;
        let t = k1.sign_with_kid(Some("random-x"), &claims_with(|_| {}));
        assert_eq!(
            v.verify(&t).await.unwrap_err(),
            AuthError::UnknownSigningKey
        );
        assert_eq!(idp.hits(), 3, "one refetch after the cooldown");
    }

    #[tokio::test]
    async fn rs256_and_es256_side_by_side() {
        let rsa = TestKey::rs256("r1");
        let ec = TestKey::es256("e1");
        let idp = JwksServer::start(test_idp::jwks(&[&rsa, &ec])).await;
        let v = verifier(&format!("jwks_url: {}", idp.url)).await.unwrap();
        for key in [&rsa, &ec] {
            let ok = v.verify(&key.sign(&claims_with(|_| {}))).await.unwrap();
            assert_eq!(ok.principal, "alice");
        }
        // A kid naming the RSA key on an ES256 token is not that key.
        let mixed = ec.sign_with_kid(Some("r1"), &claims_with(|_| {}));
        assert_eq!(
            v.verify(&mixed).await.unwrap_err(),
            AuthError::UnknownSigningKey
        );
        // Without a kid, two keys could fit an RS256 or ES256 token only
        // if both families matched; here each family has one key.
        assert!(
            v.verify(&rsa.sign_with_kid(None, &claims_with(|_| {})))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn jwks_file_and_metadata() {
        let key = TestKey::es256("k1");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("jwks.json"),
            test_idp::jwks(&[&key]).to_string(),
        )
        .unwrap();
        let mut cfg = config("jwks_file: jwks.json\nscopes_supported: [tools]");
        cfg.rebase(dir.path());
        let v = JwtVerifier::new(&cfg, reqwest::Client::new())
            .await
            .unwrap();
        assert!(v.verify(&key.sign(&claims_with(|_| {}))).await.is_ok());
        assert_eq!(
            v.protected_resource_metadata(),
            json!({
                "resource": AUD,
                "authorization_servers": [ISS],
                "bearer_methods_supported": ["header"],
                "scopes_supported": ["tools"],
            })
        );
    }

    #[tokio::test]
    async fn hs256_with_a_secret_from_the_environment() {
        let secret = "an-hs256-secret-of-at-least-32-bytes!!";
        // SAFETY: a variable no other test reads or writes.
        unsafe { std::env::set_var("TOLLGATE_TEST_JWT_SECRET_OK", secret) };
        let v = verifier("hs256_secret_env: TOLLGATE_TEST_JWT_SECRET_OK\nprincipal_claim: email")
            .await
            .unwrap();
        let claims = claims_with(|c| c["email"] = json!("alice@example.com"));
        let ok = v
            .verify(&test_idp::sign_hs256(secret.as_bytes(), &claims))
            .await
            .unwrap();
        assert_eq!(ok.principal, "alice@example.com");
        assert_eq!(ok.auth, format!("jwt:{ISS}|alice"));
        let wrong = test_idp::sign_hs256(&[1u8; 40], &claims);
        assert_eq!(v.verify(&wrong).await.unwrap_err(), AuthError::BadSignature);
    }

    #[tokio::test]
    async fn configuration_mistakes_are_named() {
        let field = |r: Result<JwtVerifier, AuthSetupError>| match r {
            Err(AuthSetupError::Config { field, message }) => format!("{field}: {message}"),
            Err(other) => panic!("unexpected: {other}"),
            Ok(_) => panic!("accepted"),
        };
        assert!(field(verifier("").await).contains("found none"));
        let two = field(verifier("jwks_url: https://x.test/j\njwks_file: j.json").await);
        assert!(
            two.starts_with("jwks_file:") && two.contains("jwks_url and jwks_file"),
            "{two}"
        );
        let plain = field(verifier("jwks_url: http://idp.test/jwks.json").await);
        assert!(
            plain.starts_with("jwks_url:") && plain.contains("https"),
            "{plain}"
        );
        let mixed = field(verifier("jwks_file: j.json\nalgorithms: [HS256]").await);
        assert!(mixed.starts_with("algorithms:"), "{mixed}");
        assert!(
            field(verifier("hs256_secret_env: TOLLGATE_TEST_UNSET_VAR").await).contains("not set")
        );
        // SAFETY: a variable no other test reads or writes.
        unsafe { std::env::set_var("TOLLGATE_TEST_JWT_SECRET_SHORT", "short") };
        let short = field(verifier("hs256_secret_env: TOLLGATE_TEST_JWT_SECRET_SHORT").await);
        assert!(short.contains("at least 32"), "{short}");

        let unknown = serde_norway::from_str::<JwtConfig>(&format!(
            "issuer: {ISS}\naudience: {AUD}\njwks: x"
        ));
        assert!(unknown.unwrap_err().to_string().contains("unknown field"));
        let bad_leeway = serde_norway::from_str::<JwtConfig>(&format!(
            "issuer: {ISS}\naudience: {AUD}\nleeway: soon"
        ));
        assert!(
            bad_leeway
                .unwrap_err()
                .to_string()
                .contains("not a duration")
        );
        let defaults = config("jwks_file: j.json");
        assert_eq!(
            (
                defaults.principal_claim.as_str(),
                defaults.roles_claim.as_str()
            ),
            ("sub", "roles")
        );
        assert_eq!(defaults.leeway, Duration::from_secs(30));
    }

    #[test]
    fn claim_paths_and_role_shapes() {
        let c = json!({"realm_access": {"roles": ["a", "b"]}, "https://x.test/roles": "c d"});
        let c = c.as_object().unwrap();
        assert_eq!(
            roles(claim(c, "realm_access.roles")),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            roles(claim(c, "https://x.test/roles")),
            Some(vec!["c".into(), "d".into()])
        );
        assert_eq!(roles(claim(c, "missing")), Some(vec![]));
        assert_eq!(roles(Some(&json!(3))), None);
    }
}
