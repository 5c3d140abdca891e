//! Test helper: an identity provider in a few lines.
//!
//! ES256 and RS256 keys made on the spot, their JWKS, tokens signed with them, and a
//! JWKS endpoint on 127.0.0.1 that counts its requests. Used by tollgate's
//! own unit tests (`src/auth/jwt.rs`) and by integration tests:
//!
//! ```ignore
//! #[path = "support/jwt.rs"]
//! mod jwt;
//! let key = jwt::TestKey::es256("k1");
//! let idp = jwt::JwksServer::start(jwt::jwks(&[&key])).await;
//! let token = key.sign(&jwt::claims("https://idp.test", "https://tollgate.test/mcp", "alice", &["admin"]));
//! ```
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use serde_json::{Value, json};

/// A signing key (ES256 or RS256) with its key id.
pub struct TestKey {
    pub kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl TestKey {
    /// A fresh P-256 key pair. Two calls with the same kid give two different
    /// keys under one name (for "signed by the wrong key" tests).
    pub fn es256(kid: &str) -> TestKey {
        let secret = loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).expect("OS randomness");
            // Fails only for the ~2^-128 of values outside the curve order.
            if let Ok(k) = p256::SecretKey::from_slice(&bytes) {
                break k;
            }
        };
        let der = secret.to_pkcs8_der().expect("PKCS#8 encoding");
        Self::new(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(der.as_bytes()),
        )
    }

    /// A fresh 2048-bit RSA key pair (about a second to make in a debug build).
    pub fn rs256(kid: &str) -> TestKey {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key");
        let der = private.to_pkcs1_der().expect("PKCS#1 encoding");
        Self::new(
            kid,
            Algorithm::RS256,
            EncodingKey::from_rsa_der(der.as_bytes()),
        )
    }

    fn new(kid: &str, alg: Algorithm, encoding: EncodingKey) -> TestKey {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("public JWK");
        jwk.common.key_id = Some(kid.to_owned());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        TestKey {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk,
        }
    }

    /// The public key as a JWK (JSON).
    pub fn jwk(&self) -> Value {
        serde_json::to_value(&self.jwk).expect("JWK to JSON")
    }

    /// A token with these claims, its header naming this key's kid.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_kid(Some(&self.kid), claims)
    }

    /// A token whose header names `kid` (or none), signed with this key.
    pub fn sign_with_kid(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

/// A JWKS document holding the public halves of `keys`.
pub fn jwks(keys: &[&TestKey]) -> Value {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() })
}

/// An HS256 token signed with `secret`.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Claims valid for an hour: `iss`, `aud`, `sub`, `roles`, `iat`, `exp`.
pub fn claims(iss: &str, aud: &str, sub: &str, roles: &[&str]) -> Value {
    json!({
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "roles": roles,
        "iat": now(),
        "exp": now() + 3600,
    })
}

/// A JWKS endpoint on 127.0.0.1 whose document can be swapped, and which
/// counts how often it was fetched.
pub struct JwksServer {
    /// `http://127.0.0.1:<port>/jwks.json`
    pub url: String,
    doc: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(doc: Value) -> JwksServer {
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (Arc::clone(&doc), Arc::clone(&hits));
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (d, h) = (Arc::clone(&d), Arc::clone(&h));
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    axum::Json(d.lock().unwrap().clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        JwksServer {
            url,
            doc,
            hits,
            task,
        }
    }

    /// Serve `doc` from now on (a key rotation).
    pub fn set(&self, doc: Value) {
        *self.doc.lock().unwrap() = doc;
    }

    /// How many times the JWKS was fetched.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
