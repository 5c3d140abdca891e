//! One governed call end to end over stdio: each decision, its message and
//! its receipt. Drives the real binary through rmcp's client.

mod common;

use axum::Json;
use axum::extract::Path;
use axum::routing::get;
use common::*;
use serde_json::{Value, json};

const LIST: &str = "\
name: args_echo
description: Prints each argument on its own line.
input_schema:
  type: object
  properties:
    word: { type: string }
  required: [word]
allow: [admin]
annotations: { readOnlyHint: true }
run:
  command:
    argv: [\"printf\", \"%s\\\\n\", \"{{ args.word }}\"]
";

fn http_spec(base: &str) -> String {
    format!(
        "name: item
description: Look up an item.
input_schema:
  type: object
  properties:
    id: {{ type: string }}
  required: [id]
allow: [admin]
cost: {{ usd: 0.25 }}
run:
  http:
    url: \"{base}/items/{{{{ args.id }}}}\"
"
    )
}

const LIMITED: &str = "\
name: limited
description: Echo, at most twice per minute per caller.
input_schema:
  type: object
  properties:
    message: { type: string }
allow: [admin, support]
rate_limit:
  per_principal: { rate: 2/minute }
run:
  static:
    text: ok
";

#[tokio::test]
async fn allowed_calls_run_command_and_http_tools_and_are_receipted() {
    let app = axum::Router::new().route(
        "/items/{id}",
        get(|Path(id): Path<String>| async move { Json(json!({"id": id, "price": 42})) }),
    );
    let base = http_server(app).await;
    let f = Fixture::new();
    f.write_spec("args_echo", LIST);
    f.write_spec("item", &http_spec(&base));
    let client = f.client("alice").await;

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["args_echo", "echo", "item"]);
    let meta = tools[1].meta.as_ref().expect("tool _meta");
    assert_eq!(meta.0["tollgate/version"], json!(1));
    assert_eq!(meta.0["tollgate/spec_hash"].as_str().unwrap().len(), 64);
    let annotations = tools[0].annotations.as_ref().expect("annotations served");
    assert_eq!(annotations.read_only_hint, Some(true));
    assert_eq!(annotations.destructive_hint, None);

    let r = call(&client, "args_echo", json!({"word": "hello world"})).await;
    assert_eq!(r.is_error, Some(false));
    assert_eq!(text(&r), "hello world\n");
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["decision"], "allowed");
    assert_eq!(rec["outcome"], "ok");
    assert_eq!(rec["principal"], "alice");
    assert_eq!(rec["transport"], "stdio");
    assert_eq!(rec["auth"], "stdio");
    assert_eq!(rec["version"], 1);
    assert_eq!(rec["result_excerpt"], "hello world\n");

    let r = call(&client, "item", json!({"id": "a/b?c"})).await;
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(
        r.structured_content,
        Some(json!({"id": "a/b?c", "price": 42}))
    );
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["outcome"], "ok");
    assert_eq!(rec["cost_usd"], 0.25);
    assert_eq!(
        serde_json::from_str::<Value>(rec["args"].as_str().unwrap()).unwrap(),
        json!({"id": "a/b?c"})
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn denied_call_names_the_roles_and_is_receipted() {
    let f = Fixture::new();
    f.write_spec("args_echo", LIST);
    let client = f.client("bob").await;
    let r = call(&client, "args_echo", json!({"word": "x"})).await;
    assert_eq!(r.is_error, Some(true));
    assert_eq!(
        text(&r),
        "permission denied: no policy permits principal `bob` to call `args_echo` with these arguments"
    );
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["decision"], "denied");
    assert_eq!(rec["outcome"], "not_run");
    assert_eq!(rec["result_digest"], Value::Null);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn rate_limited_call_says_when_to_retry_and_is_receipted() {
    let f = Fixture::new();
    f.write_spec("limited", LIMITED);
    let client = f.client("bob").await;
    for _ in 0..2 {
        let r = call(&client, "limited", json!({})).await;
        assert_eq!(r.is_error, Some(false));
    }
    let r = call(&client, "limited", json!({})).await;
    assert_eq!(r.is_error, Some(true));
    let msg = text(&r);
    assert!(
        msg.starts_with(
            "rate limited: `limited` allows 2/minute (burst 2) (per principal); retry after "
        ),
        "{msg}"
    );
    let ms: u64 = msg
        .rsplit("retry after ")
        .next()
        .unwrap()
        .trim_end_matches(" ms")
        .parse()
        .unwrap();
    assert!((1..=30_000).contains(&ms), "retry after {ms} ms");
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["decision"], "rate_limited");
    assert_eq!(rec["outcome"], "not_run");
    client.cancel().await.unwrap();

    // Another principal has its own bucket.
    let other = f.client("alice").await;
    let r = call(&other, "limited", json!({})).await;
    assert_eq!(r.is_error, Some(false));
    other.cancel().await.unwrap();
}

#[tokio::test]
async fn invalid_arguments_list_each_violation_with_its_pointer() {
    let f = Fixture::new();
    let client = f.client("alice").await;
    let r = call(&client, "echo", json!({"message": 5, "extra": true})).await;
    assert_eq!(r.is_error, Some(true));
    let msg = text(&r);
    assert!(msg.starts_with("invalid arguments for `echo`:"), "{msg}");
    assert!(
        msg.contains("at /message: 5 is not of type \"string\""),
        "{msg}"
    );
    assert!(
        msg.contains("at (root): Additional properties are not allowed ('extra' was unexpected)"),
        "{msg}"
    );
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["decision"], "invalid");
    assert_eq!(rec["outcome"], "not_run");

    let r = call(&client, "echo", json!({})).await;
    assert!(
        text(&r).contains("\"message\" is a required property"),
        "{}",
        text(&r)
    );
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn unknown_tool_is_a_protocol_error_and_is_receipted() {
    let f = Fixture::new();
    let client = f.client("alice").await;
    let err = client
        .call_tool(call_params("no_such_tool", json!({})))
        .await
        .expect_err("unknown tool must be a JSON-RPC error");
    let msg = err.to_string();
    assert!(
        msg.contains("unknown tool `no_such_tool`; available tools: echo"),
        "{msg}"
    );
    let receipts = f.receipts().await;
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0]["decision"], "unknown_tool");
    assert_eq!(receipts[0]["tool"], "no_such_tool");
    assert_eq!(receipts[0]["version"], Value::Null);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn oversized_arguments_are_refused_and_not_stored() {
    let f = Fixture::new();
    std::fs::write(f.path("tollgate.yaml"), "max_args_bytes: 1000\n").unwrap();
    let client = f.client("alice").await;
    let big = "x".repeat(5000);
    let r = call(&client, "echo", json!({"message": big})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r)
            .starts_with("arguments for `echo` are 5014 bytes of JSON; the limit is 1000 bytes"),
        "{}",
        text(&r)
    );
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["decision"], "invalid");
    let args = rec["args"].as_str().unwrap();
    assert!(
        !args.contains("xxxxxxxx"),
        "oversized args must not be stored: {args}"
    );
    assert!(args.contains("sha256"));
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn shell_metacharacters_arrive_as_one_literal_argv_element() {
    let f = Fixture::new();
    f.write_spec("args_echo", LIST);
    let client = f.client("alice").await;
    for hostile in [
        "; rm -rf /",
        "$(id)",
        "`id` && echo pwned",
        "a\nb",
        "--help",
    ] {
        let r = call(&client, "args_echo", json!({"word": hostile})).await;
        assert_eq!(r.is_error, Some(false));
        assert_eq!(
            text(&r),
            format!("{hostile}\n"),
            "argument must be passed verbatim"
        );
    }
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn failing_command_is_an_error_result_with_stderr_tail() {
    let f = Fixture::new();
    f.write_spec(
        "fails",
        "name: fails\ndescription: Always fails.\ninput_schema: {type: object}\nallow: [admin]\nrun:\n  command:\n    argv: [ls, /definitely/not/here]\n",
    );
    let client = f.client("alice").await;
    let r = call(&client, "fails", json!({})).await;
    assert_eq!(r.is_error, Some(true));
    let msg = text(&r);
    assert!(msg.contains("exit status 2"), "{msg}");
    assert!(msg.contains("/definitely/not/here"), "{msg}");
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["decision"], "allowed");
    assert_eq!(rec["outcome"], "error");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn slow_command_times_out_and_is_receipted() {
    let f = Fixture::new();
    f.write_spec(
        "slow",
        "name: slow\ndescription: Sleeps.\ninput_schema: {type: object}\nallow: [admin]\ntimeout: 300ms\nrun:\n  command:\n    argv: [sleep, '30']\n",
    );
    let client = f.client("alice").await;
    let started = std::time::Instant::now();
    let r = call(&client, "slow", json!({})).await;
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("timed out after 300ms"), "{}", text(&r));
    let rec = f.receipt(&receipt_id(&r)).await;
    assert_eq!(rec["outcome"], "timeout");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_call_running_when_the_client_disconnects_still_gets_its_receipt() {
    use std::io::Write;
    let f = Fixture::new();
    // Longer than the ~5 s rmcp itself waits for handlers after end of input.
    f.write_spec(
        "nap",
        "name: nap\ndescription: Naps.\ninput_schema: {type: object}\nallow: [admin]\nrun:\n  command:\n    argv: [sleep, '6.5']\n",
    );
    let mut child = f
        .command(&["serve", "--principal", "alice"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in [
        json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}),
        json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
        json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"nap","arguments":{}}}),
    ] {
        writeln!(stdin, "{line}").unwrap();
    }
    stdin.flush().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::process::Command::new("pgrep")
        .args(["-f", "^sleep 6.5$"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        assert!(std::time::Instant::now() < deadline, "tool never started");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The client goes away mid-call: stdin closes, nobody kills tollgate.
    drop(stdin);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    let receipts = f.receipts().await;
    let nap = receipts
        .iter()
        .find(|r| r["tool"] == "nap")
        .expect("the call that ran has a receipt");
    assert_eq!(
        nap["outcome"], "ok",
        "the tool finished during the drain: {nap}"
    );
}
