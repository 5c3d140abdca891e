//! MCP over Streamable HTTP against the real binary: API keys, rejection of
//! bad credentials, DNS-rebinding and size limits, malformed JSON-RPC,
//! metrics, readiness, and graceful shutdown with receipts intact.

mod common;

use common::*;
use serde_json::{Value, json};

const SLOW: &str = "name: slow\ndescription: Sleeps for a long time.\ninput_schema: {type: object}\nallow: [admin, support]\ntimeout: 60s\nrun:\n  command:\n    argv: [sleep, '30']\n";

#[tokio::test]
async fn api_key_client_lists_and_calls_and_the_receipt_names_the_key() {
    let f = Fixture::new();
    let (key_id, token) = f.create_key("bob", &["--note", "ci"]);
    let server = HttpTollgate::start(&f, &[]).await;
    let client = server.client(&token).await.expect("connect with API key");
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0].meta.as_ref().unwrap().0["tollgate/version"], 1);
    let r = client
        .call_tool(call_params("echo", json!({"message": "over http"})))
        .await
        .unwrap();
    assert_eq!(text(&r), "over http");
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["transport"], "http");
    assert_eq!(rec["principal"], "bob");
    assert_eq!(rec["auth"], format!("api_key:{key_id}"));
    assert!(
        rec["session"].as_str().is_some_and(|s| !s.is_empty()),
        "session id recorded: {rec}"
    );
    // Refusals travel the same pipeline as over stdio.
    let r = client
        .call_tool(call_params("echo", json!({})))
        .await
        .unwrap();
    assert_eq!(r.is_error, Some(true));
    assert_eq!(f.receipt(&receipt_id(&r)).await["decision"], "invalid");
    client.cancel().await.unwrap();
}

use common::post_mcp as post;

fn initialize() -> String {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}})
    .to_string()
}

#[tokio::test]
async fn missing_wrong_and_revoked_credentials_get_401_and_run_nothing() {
    let f = Fixture::new();
    let (key_id, token) = f.create_key("alice", &[]);
    let (_, expired) = f.create_key("alice", &["--expires", "1s"]);
    let server = HttpTollgate::start(&f, &[]).await;

    let r = post(&server, None, initialize(), &[]).await;
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(r.text().await.unwrap().contains("missing"));

    let forged = format!("tg_{key_id}_{}", "A".repeat(43));
    for bad in [
        forged.as_str(),
        "tg_nosuchkey_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "not-a-token",
    ] {
        let r = post(&server, Some(bad), initialize(), &[]).await;
        assert_eq!(r.status(), 401, "{bad}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains(bad),
            "the 401 must not echo the token: {body}"
        );
    }

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = post(&server, Some(&expired), initialize(), &[]).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("expired"));

    // Revocation takes effect on the next request of an open session.
    let client = server.client(&token).await.expect("connect");
    let ok = client
        .call_tool(call_params("echo", json!({"message": "before"})))
        .await
        .unwrap();
    assert_eq!(text(&ok), "before");
    let out = f.run(&["keys", "revoke", &key_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = client
        .call_tool(call_params("echo", json!({"message": "after"})))
        .await;
    assert!(after.is_err(), "a revoked key must not call: {after:?}");
    let r = post(&server, Some(&token), initialize(), &[]).await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("revoked"));

    let receipts = f.receipts().await;
    assert_eq!(
        receipts.len(),
        1,
        "only the authenticated call ran and was receipted"
    );
}

#[tokio::test]
async fn repeated_auth_failures_from_one_address_are_throttled() {
    let f = Fixture::new();
    std::fs::write(
        f.path("tollgate.yaml"),
        "http:\n  auth_failures_per_minute: 3\n",
    )
    .unwrap();
    let (_, token) = f.create_key("alice", &[]);
    let server = HttpTollgate::start(&f, &[]).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            post(
                &server,
                Some("tg_guess_guessguessguessguessguessguessguessguess"),
                initialize(),
                &[],
            )
            .await
            .status()
            .as_u16(),
        );
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // While throttled, even a good key is refused without being checked.
    let r = post(&server, Some(&token), initialize(), &[]).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn foreign_origin_gets_403_and_huge_body_gets_413() {
    let f = Fixture::new();
    let (_, token) = f.create_key("alice", &[]);
    let server = HttpTollgate::start(&f, &[]).await;
    let r = post(
        &server,
        Some(&token),
        initialize(),
        &[("origin", "http://evil.example.com")],
    )
    .await;
    assert_eq!(r.status(), 403);
    let local_origin = format!("http://{}", server.addr);
    let r = post(
        &server,
        Some(&token),
        initialize(),
        &[("origin", local_origin.as_str())],
    )
    .await;
    assert_eq!(r.status(), 200, "the server's own origin is allowed");
    let r = post(
        &server,
        Some(&token),
        initialize(),
        &[("host", "evil.example.com")],
    )
    .await;
    assert_eq!(r.status(), 403, "foreign Host (DNS rebinding) is refused");

    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{}"}}}}}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let r = post(&server, Some(&token), huge, &[]).await;
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn malformed_json_rpc_gets_a_json_rpc_error() {
    let f = Fixture::new();
    let (_, token) = f.create_key("alice", &[]);
    let server = HttpTollgate::start(&f, &[]).await;
    for garbage in [
        "{not json",
        "[]",
        r#"{"jsonrpc":"2.0","id":1}"#,
        "\u{0}\u{1}binary",
    ] {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            post(&server, Some(&token), garbage.to_string(), &[]),
        )
        .await
        .expect("answered, no hang");
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert!(
            (400..500).contains(&status),
            "{garbage:?} → {status} {body}"
        );
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|_| panic!("JSON-RPC error body for {garbage:?}: {body}"));
        let code = v["error"]["code"].as_i64().unwrap_or_default();
        assert!(
            [-32700, -32600, -32602].contains(&code),
            "{garbage:?} → {body}"
        );
    }
    // The server is still healthy afterwards.
    assert_eq!(
        reqwest::get(format!("{}/healthz", server.base))
            .await
            .unwrap()
            .status(),
        200
    );
}

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_move_after_calls_and_readyz_reports_ready() {
    let f = Fixture::new();
    let (_, token) = f.create_key("alice", &[]);
    let server = HttpTollgate::start(&f, &[]).await;
    assert_eq!(
        reqwest::get(format!("{}/readyz", server.base))
            .await
            .unwrap()
            .status(),
        200
    );
    let scrape = || async {
        reqwest::get(format!("{}/metrics", server.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let before = scrape().await;
    let client = server.client(&token).await.unwrap();
    for _ in 0..3 {
        client
            .call_tool(call_params("echo", json!({"message": "m"})))
            .await
            .unwrap();
    }
    client
        .call_tool(call_params("echo", json!({})))
        .await
        .unwrap();
    let _ = post(&server, Some("tg_bad_bad"), initialize(), &[]).await;
    let after = scrape().await;
    let ok = [("tool", "echo"), ("decision", "allowed"), ("outcome", "ok")];
    assert_eq!(
        metric(&after, "tollgate_calls_total", &ok) - metric(&before, "tollgate_calls_total", &ok),
        3.0,
        "{after}"
    );
    let invalid = [("tool", "echo"), ("decision", "invalid")];
    assert_eq!(metric(&after, "tollgate_calls_total", &invalid), 1.0);
    assert!(
        metric(
            &after,
            "tollgate_call_duration_seconds_count",
            &[("tool", "echo")]
        ) >= 4.0,
        "{after}"
    );
    assert!(
        metric(&after, "tollgate_receipt_batch_size_count", &[]) >= 1.0,
        "{after}"
    );
    assert!(
        metric(&after, "tollgate_auth_failures_total", &[]) >= 1.0,
        "{after}"
    );
    assert!(
        metric(&after, "tollgate_active_sessions", &[]) >= 1.0,
        "{after}"
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn sigterm_during_a_slow_call_leaves_an_interrupted_receipt_and_a_valid_chain() {
    let f = Fixture::new();
    f.write_spec("slow", SLOW);
    std::fs::write(f.path("tollgate.yaml"), "http:\n  drain_timeout: 300ms\n").unwrap();
    let (_, token) = f.create_key("alice", &[]);
    let server = HttpTollgate::start(&f, &[]).await;
    let client = server.client(&token).await.unwrap();
    let done = client
        .call_tool(call_params("echo", json!({"message": "first"})))
        .await
        .unwrap();
    assert_eq!(text(&done), "first");
    let peer = client.peer().clone();
    let slow = tokio::spawn(async move { peer.call_tool(call_params("slow", json!({}))).await });
    // Let the slow call start running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::process::Command::new("pgrep")
        .args(["-f", "^sleep 30$"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "slow tool never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    let (status, logs) = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit 0 after SIGTERM: {status} {logs}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "drain is bounded"
    );
    // The interrupted call's reply reaches the client before the session closes.
    let reply = tokio::time::timeout(std::time::Duration::from_secs(5), slow)
        .await
        .expect("the slow call is answered, not left hanging")
        .unwrap()
        .expect("answered as a result");
    assert_eq!(reply.is_error, Some(true));
    assert!(
        text(&reply).contains("interrupted because tollgate is shutting down"),
        "{}",
        text(&reply)
    );
    let receipts = f.receipts().await;
    assert_eq!(receipts.len(), 2, "{receipts:?}");
    let slow_rec = receipts
        .iter()
        .find(|r| r["tool"] == "slow")
        .expect("slow call receipted");
    assert_eq!(slow_rec["outcome"], "interrupted");
    assert_eq!(slow_rec["decision"], "allowed");
    let out = f.run(&["receipts", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[tokio::test]
async fn unsafe_bindings_are_refused() {
    let f = Fixture::new();
    let port = free_port().to_string();
    let addr = format!("0.0.0.0:{port}");
    let out = f.run(&[
        "serve",
        "--http",
        &addr,
        "--insecure-no-auth",
        "--principal",
        "alice",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refusing --insecure-no-auth on 0.0.0.0"),
        "{}",
        stderr(&out)
    );
    let out = f.run(&["serve", "--http", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no credential could ever be accepted"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn insecure_no_auth_on_loopback_calls_as_the_given_principal() {
    let f = Fixture::new();
    let server = HttpTollgate::start(&f, &["--insecure-no-auth", "--principal", "carol"]).await;
    let client = server.client("ignored").await.unwrap();
    let r = client
        .call_tool(call_params("echo", json!({"message": "hi"})))
        .await
        .unwrap();
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["principal"], "carol");
    assert_eq!(rec["auth"], "none");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn json_response_mode_answers_with_plain_json() {
    let f = Fixture::new();
    std::fs::write(f.path("tollgate.yaml"), "http:\n  json_response: true\n").unwrap();
    let (_, token) = f.create_key("alice", &[]);
    let server = HttpTollgate::start(&f, &[]).await;
    let r = post(&server, Some(&token), initialize(), &[]).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let call = json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"plain"}}});
    let r = post(
        &server,
        Some(&token),
        call.to_string(),
        &[("mcp-protocol-version", "2025-06-18")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "plain", "{v}");
    let id = v["result"]["_meta"]["tollgate/receipt_id"]
        .as_str()
        .unwrap();
    assert_eq!(f.receipt(id).await["decision"], "allowed");
    // rmcp's own client works in this mode too.
    let client = server.client(&token).await.unwrap();
    let r = client
        .call_tool(call_params("echo", json!({"message": "rmcp"})))
        .await
        .unwrap();
    assert_eq!(text(&r), "rmcp");
}

#[tokio::test]
async fn metrics_can_be_served_on_their_own_address() {
    let f = Fixture::new();
    let (_, token) = f.create_key("alice", &[]);
    let maddr = format!("127.0.0.1:{}", free_port());
    let server = HttpTollgate::start(&f, &["--metrics", &maddr]).await;
    let client = server.client(&token).await.unwrap();
    client
        .call_tool(call_params("echo", json!({"message": "m"})))
        .await
        .unwrap();
    let body = reqwest::get(format!("http://{maddr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(&body, "tollgate_calls_total", &[("tool", "echo")]) >= 1.0,
        "{body}"
    );
    let main = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap();
    assert_eq!(
        main.status(),
        404,
        "not on the MCP address when --metrics is given"
    );
}

#[tokio::test]
async fn a_session_belongs_to_the_principal_that_opened_it() {
    let f = Fixture::new();
    let (_, alice) = f.create_key("alice", &[]);
    let (_, bob) = f.create_key("bob", &[]);
    let server = HttpTollgate::start(&f, &[]).await;
    let r = post(&server, Some(&alice), initialize(), &[]).await;
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let list = json!({"jsonrpc":"2.0","id":2,"method":"tools/list"}).to_string();
    let headers = [
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    let r = post(&server, Some(&bob), list.clone(), &headers).await;
    assert_eq!(r.status(), 404, "bob cannot use alice's session");
    let r = post(&server, Some(&alice), list, &headers).await;
    assert_eq!(r.status(), 200, "alice can");
}
