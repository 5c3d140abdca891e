//! OAuth 2.1 resource server behaviour against the real binary: JWTs signed
//! by keys the test generates, served as a JWKS from a test HTTP server.

mod common;
#[path = "support/jwt.rs"]
mod jwt;

use common::*;
use jwt::{JwksServer, TestKey, claims, jwks, now};
use serde_json::json;

const ISS: &str = "https://idp.test";
const AUD: &str = "https://tollgate.test/mcp";

async fn setup() -> (Fixture, JwksServer, TestKey) {
    let key = TestKey::es256("k1");
    let server = JwksServer::start(jwks(&[&key])).await;
    let f = Fixture::new();
    std::fs::write(
        f.path("tollgate.yaml"),
        format!("auth:\n  jwt:\n    issuer: {ISS}\n    audience: {AUD}\n    jwks_url: {}\n    roles_claim: roles\n", server.url),
    )
    .unwrap();
    (f, server, key)
}

#[tokio::test]
async fn a_valid_jwt_calls_with_the_token_roles_and_is_receipted() {
    let (f, _jwks, key) = setup().await;
    let server = HttpTollgate::start(&f, &[]).await;
    // A principal that is not in principals.yaml: its roles come from the token.
    let token = key.sign(&claims(ISS, AUD, "svc-reporting", &["viewer"]));
    let client = server.client(&token).await.expect("connect with JWT");
    let r = client
        .call_tool(call_params("echo", json!({"message": "jwt"})))
        .await
        .unwrap();
    assert_eq!(text(&r), "jwt");
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["principal"], "svc-reporting");
    assert_eq!(rec["roles"], r#"["viewer"]"#);
    assert_eq!(rec["auth"], format!("jwt:{ISS}|svc-reporting"));
    client.cancel().await.unwrap();

    // Roles the token lacks are not granted.
    let token = key.sign(&claims(ISS, AUD, "svc-x", &["nothing"]));
    let client = server.client(&token).await.unwrap();
    let r = client
        .call_tool(call_params("echo", json!({"message": "x"})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).starts_with("permission denied: no policy permits principal `svc-x`"),
        "{}",
        text(&r)
    );
    client.cancel().await.unwrap();
}

/// Decisions for role-only tools are remembered per (tool, principal,
/// roles). One subject presenting different roles in different tokens must
/// get each token's own decision, in either order, on one running server.
#[tokio::test]
async fn one_subject_with_other_roles_gets_the_other_decision() {
    let (f, _jwks, key) = setup().await;
    let server = HttpTollgate::start(&f, &[]).await;
    for roles in [&["viewer"][..], &["nothing"], &["viewer"], &["nothing"]] {
        let token = key.sign(&claims(ISS, AUD, "svc-same", roles));
        let client = server.client(&token).await.expect("connect with JWT");
        let r = client
            .call_tool(call_params("echo", json!({"message": "m"})))
            .await
            .unwrap();
        let rec = f.receipt(&receipt_id(&r)).await;
        assert_eq!(rec["principal"], "svc-same");
        assert_eq!(rec["roles"], format!(r#"["{}"]"#, roles[0]));
        if roles == ["viewer"] {
            assert_eq!(text(&r), "m", "{roles:?}");
            assert_eq!(rec["decision"], "allowed", "{roles:?}");
        } else {
            assert_eq!(r.is_error, Some(true), "{roles:?}");
            assert!(
                text(&r).starts_with("permission denied: no policy permits principal `svc-same`"),
                "{}",
                text(&r)
            );
            assert_eq!(rec["decision"], "denied", "{roles:?}");
        }
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn expired_wrong_audience_and_wrong_signature_get_401_and_run_nothing() {
    let (f, _jwks, key) = setup().await;
    let server = HttpTollgate::start(&f, &[]).await;
    let mut expired = claims(ISS, AUD, "u", &["admin"]);
    expired["exp"] = json!(now() - 3600);
    let mut wrong_aud = claims(ISS, AUD, "u", &["admin"]);
    wrong_aud["aud"] = json!("https://other.test/mcp");
    let mut wrong_iss = claims(ISS, AUD, "u", &["admin"]);
    wrong_iss["iss"] = json!("https://evil.test");
    let impostor = TestKey::es256("k1"); // same kid, different key
    let cases = [
        (key.sign(&expired), "expired"),
        (key.sign(&wrong_aud), "audience"),
        (key.sign(&wrong_iss), "issuer"),
        (
            impostor.sign(&claims(ISS, AUD, "u", &["admin"])),
            "signature",
        ),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1In0.".to_string(), ""),
    ];
    for (token, why) in cases {
        let resp = reqwest::Client::new()
            .post(server.mcp_url())
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{why}");
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.starts_with("Bearer "), "{challenge}");
        assert!(
            challenge.contains("resource_metadata=\"https://tollgate.test/.well-known/oauth-protected-resource/mcp\""),
            "{challenge}"
        );
        let body = resp.text().await.unwrap();
        assert!(body.to_lowercase().contains(why), "{why}: {body}");
        assert!(!body.contains(&token), "the token is never echoed");
        assert!(
            server.client(&token).await.is_err(),
            "{why}: rmcp client is refused too"
        );
    }
    assert!(f.receipts().await.is_empty(), "no tool ran");
}

#[tokio::test]
async fn protected_resource_metadata_is_served() {
    let (f, _jwks, _key) = setup().await;
    let server = HttpTollgate::start(&f, &[]).await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let meta: serde_json::Value = reqwest::get(format!("{}{path}", server.base))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(meta["resource"], AUD);
        assert_eq!(meta["authorization_servers"], json!([ISS]));
        assert_eq!(meta["bearer_methods_supported"], json!(["header"]));
    }
}

#[tokio::test]
async fn a_rotated_signing_key_is_picked_up_from_the_jwks() {
    let (f, jwks_server, old) = setup().await;
    let server = HttpTollgate::start(&f, &[]).await;
    let new = TestKey::es256("k2");
    jwks_server.set(jwks(&[&old, &new]));
    let token = new.sign(&claims(ISS, AUD, "rotated", &["admin"]));
    let client = server
        .client(&token)
        .await
        .expect("unknown kid triggers a JWKS refetch");
    let r = client
        .call_tool(call_params("echo", json!({"message": "k2"})))
        .await
        .unwrap();
    assert_eq!(text(&r), "k2");
    client.cancel().await.unwrap();
}
