//! A catalogue of hostile and broken inputs: each row names the input, the
//! error it must get (exact text or a precise prefix or substring) and the
//! receipt it must leave, or that it must leave none. Nothing may panic, hang
//! past its timeout or hold unbounded memory; every table checks afterwards
//! that the server still answers.
//!
//! `docs/bad-inputs.md` is the same catalogue as one table: keep the two in
//! sync. Rows whose current behaviour is a bug live in `#[ignore = "BUG: …"]`
//! tests that assert the behaviour we want.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, Uri, header};
use axum::routing::get;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::Digest;

// ---------------------------------------------------------------------------
// Shared expectations

/// How a message must match.
#[derive(Debug, Clone)]
enum Text {
    Exact(String),
    Prefix(String),
    /// Every part, anywhere.
    Contains(Vec<String>),
    /// A property of the text, with its description for failure messages.
    Satisfies(fn(&str) -> bool, &'static str),
}

fn exact(s: impl Into<String>) -> Text {
    Text::Exact(s.into())
}

fn prefix(s: impl Into<String>) -> Text {
    Text::Prefix(s.into())
}

fn contains(parts: &[&str]) -> Text {
    Text::Contains(parts.iter().map(|p| p.to_string()).collect())
}

impl Text {
    fn check(&self, case: &str, actual: &str) {
        let ok = match self {
            Text::Exact(s) => actual == s,
            Text::Prefix(s) => actual.starts_with(s.as_str()),
            Text::Contains(parts) => parts.iter().all(|p| actual.contains(p.as_str())),
            Text::Satisfies(f, _) => f(actual),
        };
        let want = match self {
            Text::Satisfies(_, what) => format!("text that is {what}"),
            other => format!("{other:?}"),
        };
        assert!(ok, "{case}: expected {want}\n  got {:?}", clip(actual));
    }
}

/// At most 600 characters of `s`, for failure messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(600) {
        Some((cut, _)) => format!("{}… ({} bytes)", &s[..cut], s.len()),
        None => s.to_string(),
    }
}

/// The receipt a row must leave.
#[derive(Debug, Clone, Copy)]
enum Receipt {
    /// No call was attempted (or it never reached the pipeline).
    None,
    /// Exactly one receipt with this decision and outcome.
    Written(&'static str, &'static str),
}

use Receipt::Written;

/// What a JSON-RPC exchange must answer.
#[derive(Debug, Clone)]
enum Reply {
    /// Nothing at all; the server keeps serving.
    Nothing,
    /// A JSON-RPC error. `echoes_id`: the request's id, else `null`.
    Error {
        code: i64,
        message: Text,
        echoes_id: bool,
    },
    /// A `tools/call` result with `isError` and its first text block.
    Result { is_error: bool, text: Text },
    /// A body that is not JSON-RPC at all (HTTP only), e.g. a 413.
    Plain(Text),
}

fn rpc_error(code: i64, message: Text, echoes_id: bool) -> Reply {
    Reply::Error {
        code,
        message,
        echoes_id,
    }
}

fn result(is_error: bool, text: Text) -> Reply {
    Reply::Result { is_error, text }
}

impl Reply {
    /// Whether the reply carries the request's id (so we wait for it).
    fn has_id(&self) -> bool {
        matches!(
            self,
            Reply::Result { .. }
                | Reply::Error {
                    echoes_id: true,
                    ..
                }
        )
    }

    /// Check the JSON-RPC messages received for request `id`; returns the
    /// receipt id they carry, if any.
    fn check(&self, case: &str, id: &str, got: &[Value]) -> Option<String> {
        if let Reply::Nothing = self {
            assert!(got.is_empty(), "{case}: expected no reply, got {got:?}");
            return None;
        }
        assert_eq!(got.len(), 1, "{case}: expected one reply, got {got:?}");
        let m = &got[0];
        assert_eq!(m["jsonrpc"], "2.0", "{case}: {m}");
        match self {
            Reply::Error {
                code,
                message,
                echoes_id,
            } => {
                assert_eq!(m["error"]["code"], *code, "{case}: {m}");
                message.check(case, m["error"]["message"].as_str().unwrap_or_default());
                if *echoes_id {
                    assert_eq!(m["id"], id, "{case}: {m}");
                } else {
                    assert!(m["id"].is_null(), "{case}: id must be null: {m}");
                }
                m["error"]["data"]["tollgate/receipt_id"]
                    .as_str()
                    .map(str::to_string)
            }
            Reply::Result { is_error, text } => {
                assert_eq!(m["id"], id, "{case}: {m}");
                assert_eq!(m["result"]["isError"], *is_error, "{case}: {m}");
                text.check(
                    case,
                    m["result"]["content"][0]["text"]
                        .as_str()
                        .unwrap_or_default(),
                );
                m["result"]["_meta"]["tollgate/receipt_id"]
                    .as_str()
                    .map(str::to_string)
            }
            Reply::Nothing | Reply::Plain(_) => unreachable!("{case}: not a JSON-RPC reply"),
        }
    }
}

/// Check that exactly the expected receipt was added since `before`.
async fn check_receipt(f: &Fixture, case: &str, before: usize, id: Option<String>, want: Receipt) {
    let receipts = f.receipts().await;
    match want {
        Receipt::None => {
            assert_eq!(receipts.len(), before, "{case}: no receipt expected");
            assert_eq!(id, None, "{case}: a reply without a receipt names none");
        }
        Written(decision, outcome) => {
            assert_eq!(receipts.len(), before + 1, "{case}: one receipt expected");
            let r = receipts.last().unwrap();
            assert_eq!(
                Some(r["id"].as_str().unwrap().to_string()),
                id,
                "{case}: the reply names its receipt"
            );
            assert_eq!(r["decision"], decision, "{case}: {r}");
            assert_eq!(r["outcome"], outcome, "{case}: {r}");
        }
    }
}

/// Replace the placeholder id `"ID"` in `line` with the row's name.
fn with_id(line: &[u8], id: &str) -> Vec<u8> {
    let (from, to) = (b"\"ID\"".as_slice(), format!("\"{id}\""));
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i..].starts_with(from) {
            out.extend_from_slice(to.as_bytes());
            i += from.len();
        } else {
            out.push(line[i]);
            i += 1;
        }
    }
    out
}

/// `tools/call` NAME with ARGS as one JSON-RPC line with id `"ID"`.
fn call_line(name: &str, args: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "id": "ID", "method": "tools/call",
           "params": {"name": name, "arguments": args}})
    .to_string()
    .into_bytes()
}

/// `depth` nested arrays around `"x"`.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("x"), |v, _| json!([v]))
}

/// How deeply `v` nests arrays and objects.
fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

const TYPED: &str = "\
name: typed
description: Typed arguments.
input_schema:
  type: object
  properties:
    s: { type: string }
    n: { type: number }
    i: { type: integer }
    tags: { type: array, items: { type: string } }
    deep: {}
  required: [s]
  additionalProperties: false
allow: [admin]
run:
  static:
    text: \"{{ args.s }}\"
";

// ---------------------------------------------------------------------------
// Malformed JSON-RPC over stdio

struct RawCase {
    name: &'static str,
    /// One line as sent (a newline is added); `"ID"` becomes the row's name.
    line: Vec<u8>,
    reply: Reply,
    receipt: Receipt,
    /// The receipt's `args` column, exactly, when the row checks it.
    stored_args: Option<&'static str>,
}

fn raw(name: &'static str, line: impl Into<Vec<u8>>, reply: Reply, receipt: Receipt) -> RawCase {
    RawCase {
        name,
        line: line.into(),
        reply,
        receipt,
        stored_args: None,
    }
}

/// Send one row's line, then a ping; collect every message until the ping's
/// reply (and the row's own reply, if it carries the id) has arrived.
async fn exchange(io: &mut RawStdio, line: &[u8], id: &str, wait_for_id: bool) -> Vec<Value> {
    io.send(line).await;
    let probe = format!("probe-{id}");
    io.send(
        json!({"jsonrpc": "2.0", "id": probe, "method": "ping"})
            .to_string()
            .as_bytes(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut got, mut probed) = (Vec::new(), false);
    while !(probed && (!wait_for_id || got.iter().any(|m: &Value| m["id"] == id))) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(msg) = io.recv(left).await else {
            panic!("{id}: the server stopped answering (got {got:?})");
        };
        if msg["id"] == probe.as_str() {
            probed = true;
        } else {
            got.push(msg);
        }
    }
    got
}

async fn run_raw_cases(cases: Vec<RawCase>) {
    let f = Fixture::new();
    f.write_spec("typed", TYPED);
    let mut io = RawStdio::start(&f, "alice").await;
    for case in &cases {
        let before = f.receipts().await.len();
        let line = with_id(&case.line, case.name);
        let got = exchange(&mut io, &line, case.name, case.reply.has_id()).await;
        let id = case.reply.check(case.name, case.name, &got);
        check_receipt(&f, case.name, before, id, case.receipt).await;
        if let Some(args) = case.stored_args {
            let r = f.receipts().await.pop().unwrap();
            assert_eq!(r["args"], args, "{}", case.name);
        }
    }
}

#[tokio::test]
async fn stdio_malformed_json_rpc() {
    let invalid_request = || rpc_error(-32600, exact("Invalid request"), false);
    // Lines that are not JSON get -32700 with id null (tollgate's stdio shim;
    // rmcp alone would drop them and leave the client waiting).
    let parse_error = |detail: &str| {
        rpc_error(
            -32700,
            prefix(format!("Parse error: the line is not valid JSON ({detail}")),
            false,
        )
    };
    let mut over_16_mib =
        b"{\"jsonrpc\":\"2.0\",\"id\":\"ID\",\"method\":\"ping\",\"params\":{\"pad\":\"".to_vec();
    over_16_mib.resize(over_16_mib.len() + 17 * 1024 * 1024, b'x');
    over_16_mib.extend_from_slice(b"\"}}");
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend(call_line("echo", json!({"message": "bom"})));
    let mut crlf = call_line("echo", json!({"message": "crlf"}));
    crlf.push(b'\r');
    let mut bignum = call_line("typed", json!({"s": "a", "i": 0}));
    let at = bignum.windows(5).position(|w| w == b"\"i\":0").unwrap();
    bignum.splice(at + 4..at + 5, *b"123456789012345678901234567890");

    let cases = vec![
        raw(
            "not_json",
            "this is not json",
            parse_error("expected ident at line 1 column 2"),
            Receipt::None,
        ),
        raw("whitespace_only", "   \t ", Reply::Nothing, Receipt::None),
        raw(
            "nan_literal",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":"echo","arguments":{"message":NaN}}}"#,
            parse_error("expected value"),
            Receipt::None,
        ),
        raw(
            "invalid_utf8_in_string",
            b"{\"jsonrpc\":\"2.0\",\"id\":\"ID\",\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"\xff\xfe\"}}}".to_vec(),
            parse_error("invalid unicode code point"),
            Receipt::None,
        ),
        raw("line_over_16_mib", over_16_mib, Reply::Nothing, Receipt::None),
        raw(
            "wrong_jsonrpc_version",
            r#"{"jsonrpc":"1.0","id":"ID","method":"ping"}"#,
            invalid_request(),
            Receipt::None,
        ),
        raw(
            "missing_jsonrpc",
            r#"{"id":"ID","method":"ping"}"#,
            invalid_request(),
            Receipt::None,
        ),
        raw(
            "batch_array",
            r#"[{"jsonrpc":"2.0","id":"ID","method":"ping"}]"#,
            invalid_request(),
            Receipt::None,
        ),
        raw(
            "id_is_an_object",
            r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#,
            invalid_request(),
            Receipt::None,
        ),
        raw(
            "params_is_a_string",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":"echo"}"#,
            invalid_request(),
            Receipt::None,
        ),
        raw(
            "tools_call_as_notification",
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}"#,
            Reply::Nothing,
            Receipt::None,
        ),
        raw(
            "unsolicited_response",
            r#"{"jsonrpc":"2.0","id":"ID","result":{}}"#,
            Reply::Nothing,
            Receipt::None,
        ),
        raw(
            "unknown_method",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/destroy","params":{}}"#,
            rpc_error(-32601, exact("tools/destroy"), true),
            Receipt::None,
        ),
        raw(
            "arguments_null",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":"echo","arguments":null}}"#,
            result(
                true,
                exact("invalid arguments for `echo`:\n  - at (root): \"message\" is a required property"),
            ),
            Written("invalid", "not_run"),
        ),
        raw(
            "empty_tool_name",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":""}}"#,
            rpc_error(-32602, exact("unknown tool ``; available tools: echo, typed"), true),
            Written("unknown_tool", "not_run"),
        ),
        raw(
            "utf8_bom_prefix",
            bom,
            result(false, exact("bom")),
            Written("allowed", "ok"),
        ),
        raw(
            "crlf_line_end",
            crlf,
            result(false, exact("crlf")),
            Written("allowed", "ok"),
        ),
        RawCase {
            stored_args: Some(r#"{"i":1.2345678901234568e+29,"s":"a"}"#),
            ..raw(
                "integer_beyond_u64",
                bignum,
                // Policies see `i` as a Cedar Long; a value it cannot hold
                // is refused (fail closed) rather than judged on partial facts.
                result(true, exact("permission denied: argument `i` (1.2345678901234568e+29) does not fit a 64-bit integer, so policies cannot judge it")),
                Written("denied", "not_run"),
            )
        },
    ];
    run_raw_cases(cases).await;
}

#[tokio::test]
async fn stdio_valid_json_that_serde_refuses_gets_a_parse_error() {
    let parse_error = || rpc_error(-32700, prefix("Parse error"), false);
    let cases = vec![
        raw(
            "number_out_of_range",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":"echo","arguments":{"message":1e400}}}"#,
            parse_error(),
            Receipt::None,
        ),
        raw(
            "nested_130_levels",
            call_line("typed", json!({"s": "a", "deep": nested(130)})),
            parse_error(),
            Receipt::None,
        ),
        raw(
            "lone_surrogate_escape",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":"echo","arguments":{"message":"\ud800"}}}"#,
            parse_error(),
            Receipt::None,
        ),
    ];
    run_raw_cases(cases).await;
}

/// Malformed `tools/call` params that rmcp cannot decode: one table for
/// both transports, since the answer comes from the same handler.
fn malformed_call_params() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("missing_name", r#"{"arguments":{}}"#, "name"),
        ("name_is_a_number", r#"{"name":5}"#, "name"),
        (
            "arguments_array",
            r#"{"name":"echo","arguments":[1]}"#,
            "arguments",
        ),
        (
            "arguments_string",
            r#"{"name":"echo","arguments":"hi"}"#,
            "arguments",
        ),
    ]
}

#[tokio::test]
async fn stdio_malformed_tools_call_params_are_invalid_params() {
    let cases = malformed_call_params()
        .into_iter()
        .map(|(name, params, field)| {
            raw(
                name,
                format!(r#"{{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{params}}}"#),
                rpc_error(-32602, contains(&["malformed tools/call", field]), true),
                Written("invalid", "not_run"),
            )
        })
        .collect();
    run_raw_cases(cases).await;
}

// ---------------------------------------------------------------------------
// Malformed JSON-RPC over HTTP

struct HttpCase {
    name: &'static str,
    /// The request body; `"ID"` becomes the row's name.
    body: Vec<u8>,
    status: u16,
    reply: Reply,
    receipt: Receipt,
}

fn http_case(
    name: &'static str,
    body: impl Into<Vec<u8>>,
    status: u16,
    reply: Reply,
    receipt: Receipt,
) -> HttpCase {
    HttpCase {
        name,
        body: body.into(),
        status,
        reply,
        receipt,
    }
}

/// A server in stateless mode (plain JSON replies), so every row is one
/// self-contained POST; auth failures are not throttled.
async fn json_mode_server(f: &Fixture) -> (HttpTollgate, String) {
    std::fs::write(
        f.path("tollgate.yaml"),
        "http:\n  json_response: true\n  auth_failures_per_minute: 10000\n",
    )
    .unwrap();
    let (_, token) = f.create_key("alice", &[]);
    (HttpTollgate::start(f, &[]).await, token)
}

async fn run_http_cases(cases: Vec<HttpCase>) {
    let f = Fixture::new();
    let (server, token) = json_mode_server(&f).await;
    for case in &cases {
        let before = f.receipts().await.len();
        let body = with_id(&case.body, case.name);
        let r = tokio::time::timeout(
            Duration::from_secs(15),
            post_mcp(
                &server,
                Some(&token),
                body,
                &[("mcp-protocol-version", "2025-06-18")],
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: no answer", case.name));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, case.status, "{}: {}", case.name, clip(&text));
        let id = match &case.reply {
            Reply::Plain(want) => {
                want.check(case.name, &text);
                None
            }
            reply => {
                let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                    panic!("{}: not a JSON-RPC body: {}", case.name, clip(&text))
                });
                reply.check(case.name, case.name, &[v])
            }
        };
        check_receipt(&f, case.name, before, id, case.receipt).await;
    }
    let health = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "still serving");
}

#[tokio::test]
async fn http_malformed_json_rpc() {
    let parse_error = |detail: &str| {
        rpc_error(
            -32700,
            prefix(format!("Parse error: the body is not valid JSON ({detail}")),
            false,
        )
    };
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{}"}}}}}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let cases = vec![
        http_case(
            "not_json",
            "this is not json",
            400,
            parse_error("expected ident at line 1 column 2"),
            Receipt::None,
        ),
        http_case(
            "empty_body",
            "",
            400,
            parse_error("EOF while parsing a value"),
            Receipt::None,
        ),
        http_case(
            "nan_literal",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":"echo","arguments":{"message":NaN}}}"#,
            400,
            parse_error("expected value"),
            Receipt::None,
        ),
        http_case(
            "number_out_of_range",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":"echo","arguments":{"message":1e400}}}"#,
            400,
            parse_error("number out of range"),
            Receipt::None,
        ),
        http_case(
            "nested_200_levels",
            call_line("typed", json!({"s": "a", "deep": nested(200)})),
            400,
            parse_error("recursion limit exceeded"),
            Receipt::None,
        ),
        http_case(
            "lone_surrogate_escape",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":"echo","arguments":{"message":"\ud800"}}}"#,
            400,
            parse_error("unexpected end of hex escape"),
            Receipt::None,
        ),
        http_case(
            "invalid_utf8_in_string",
            b"{\"jsonrpc\":\"2.0\",\"id\":\"ID\",\"method\":\"ping\",\"params\":{\"x\":\"\xff\xfe\"}}".to_vec(),
            400,
            parse_error("invalid unicode code point"),
            Receipt::None,
        ),
        http_case(
            "wrong_jsonrpc_version",
            r#"{"jsonrpc":"1.0","id":"ID","method":"ping"}"#,
            400,
            rpc_error(-32600, exact("Invalid Request: `jsonrpc` must be \"2.0\""), false),
            Receipt::None,
        ),
        http_case(
            "batch_array",
            r#"[{"jsonrpc":"2.0","id":"ID","method":"ping"}]"#,
            400,
            rpc_error(
                -32600,
                exact("Invalid Request: expected one JSON-RPC message object (batches are not supported)"),
                false,
            ),
            Receipt::None,
        ),
        http_case(
            "neither_request_nor_response",
            r#"{"jsonrpc":"2.0","id":"ID"}"#,
            400,
            rpc_error(
                -32600,
                prefix("Invalid Request: a message needs a string `method`"),
                false,
            ),
            Receipt::None,
        ),
        http_case(
            "unknown_method",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/destroy","params":{}}"#,
            200,
            rpc_error(-32601, exact("tools/destroy"), true),
            Receipt::None,
        ),
        http_case(
            "arguments_null",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":"echo","arguments":null}}"#,
            200,
            result(
                true,
                exact("invalid arguments for `echo`:\n  - at (root): \"message\" is a required property"),
            ),
            Written("invalid", "not_run"),
        ),
        http_case(
            "empty_tool_name",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{"name":""}}"#,
            200,
            rpc_error(-32602, exact("unknown tool ``; available tools: echo"), true),
            Written("unknown_tool", "not_run"),
        ),
        http_case(
            "body_over_4_mib",
            big,
            413,
            Reply::Plain(prefix("request body exceeds 4194304 bytes")),
            Receipt::None,
        ),
    ];
    run_http_cases(cases).await;
}

#[tokio::test]
async fn http_undecodable_envelope_gets_invalid_request() {
    let invalid = || rpc_error(-32600, prefix("Invalid Request"), false);
    let cases = vec![
        http_case(
            "params_is_a_string",
            r#"{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":"echo"}"#,
            400,
            invalid(),
            Receipt::None,
        ),
        http_case(
            "id_is_an_object",
            r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ping"}"#,
            400,
            invalid(),
            Receipt::None,
        ),
        http_case(
            "ping_params_is_a_string",
            r#"{"jsonrpc":"2.0","id":"ID","method":"ping","params":"x"}"#,
            400,
            invalid(),
            Receipt::None,
        ),
    ];
    run_http_cases(cases).await;
}

#[tokio::test]
async fn http_malformed_tools_call_params_are_invalid_params() {
    let cases = malformed_call_params()
        .into_iter()
        .map(|(name, params, field)| {
            http_case(
                name,
                format!(r#"{{"jsonrpc":"2.0","id":"ID","method":"tools/call","params":{params}}}"#),
                200,
                rpc_error(-32602, contains(&["malformed tools/call", field]), true),
                Written("invalid", "not_run"),
            )
        })
        .collect();
    run_http_cases(cases).await;
}

// ---------------------------------------------------------------------------
// Hostile arguments, through rmcp's client over stdio

/// What a receipt's `args` column must hold.
#[derive(Debug, Clone, Copy)]
enum Stored {
    /// Exactly the arguments sent.
    AsSent,
    /// A digest instead: `{"_tollgate_omitted": …, "sha256": …}` of the JSON sent.
    Digest,
}

struct CallCase {
    name: &'static str,
    tool: &'static str,
    args: Value,
    is_error: bool,
    text: Text,
    receipt: (&'static str, &'static str),
    stored: Stored,
}

fn call_case(
    name: &'static str,
    tool: &'static str,
    args: Value,
    is_error: bool,
    text: Text,
    receipt: (&'static str, &'static str),
) -> CallCase {
    CallCase {
        name,
        tool,
        args,
        is_error,
        text,
        receipt,
        stored: Stored::AsSent,
    }
}

const INVALID: (&str, &str) = ("invalid", "not_run");
const OK: (&str, &str) = ("allowed", "ok");
const FAILED: (&str, &str) = ("allowed", "error");
const TIMED_OUT: (&str, &str) = ("allowed", "timeout");
/// Allowed, but the tool could not start: nothing was sent or run.
const NOT_STARTED: (&str, &str) = ("allowed", "not_run");

/// Call each row's tool over one stdio session and check reply and receipt.
async fn run_call_cases(f: &Fixture, cases: Vec<CallCase>) {
    let client = f.client("alice").await;
    for case in &cases {
        let r = tokio::time::timeout(
            Duration::from_secs(15),
            call(&client, case.tool, case.args.clone()),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: no answer", case.name));
        assert_eq!(
            r.is_error,
            Some(case.is_error),
            "{}: {}",
            case.name,
            clip(&text(&r))
        );
        case.text.check(case.name, &text(&r));
        let rec = f.receipt(&receipt_id(&r)).await;
        assert_eq!(rec["tool"], case.tool, "{}", case.name);
        assert_eq!(rec["decision"], case.receipt.0, "{}: {rec}", case.name);
        assert_eq!(rec["outcome"], case.receipt.1, "{}: {rec}", case.name);
        let stored: Value = serde_json::from_str(rec["args"].as_str().unwrap()).unwrap();
        match case.stored {
            Stored::AsSent => assert!(stored == case.args, "{}: args stored as sent", case.name),
            Stored::Digest => {
                let raw = serde_json::to_string(&case.args).unwrap();
                let sha = hex::encode(sha2::Sha256::digest(raw.as_bytes()));
                assert_eq!(
                    stored,
                    json!({
                        "_tollgate_omitted": format!("{} bytes of arguments, over the limit", raw.len()),
                        "sha256": sha,
                    }),
                    "{}",
                    case.name
                );
                assert!(rec["args"].as_str().unwrap().len() < 200, "{}", case.name);
            }
        }
    }
    // Still serving.
    let r = call(&client, "echo", json!({"message": "still here"})).await;
    assert_eq!(text(&r), "still here");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn hostile_arguments() {
    let f = Fixture::new();
    f.write_spec("typed", TYPED);
    f.write_spec(
        "argv_echo",
        "name: argv_echo\ndescription: printf %s ARG.\ninput_schema:\n  type: object\n  properties:\n    s: {type: string}\nallow: [admin]\nrun:\n  command:\n    argv: [printf, '%s', '{{ args.s }}']\n",
    );
    let invalid = |lines: &str| exact(format!("invalid arguments for `typed`:\n{lines}"));
    let hostile_text = "\u{202e}evil\u{200f} ✓ 🦀 שלום \u{0} end \u{feff}";
    let ten_mib = "x".repeat(10 * 1024 * 1024);
    let tags: Vec<u32> = (0..30).collect();
    let cases = vec![
        call_case(
            "wrong_type",
            "typed",
            json!({"s": 5}),
            true,
            invalid("  - at /s: 5 is not of type \"string\""),
            INVALID,
        ),
        call_case(
            "array_for_string",
            "typed",
            json!({"s": ["a"]}),
            true,
            invalid("  - at /s: [\"a\"] is not of type \"string\""),
            INVALID,
        ),
        call_case(
            "missing_required",
            "typed",
            json!({}),
            true,
            invalid("  - at (root): \"s\" is a required property"),
            INVALID,
        ),
        call_case(
            "extra_field",
            "typed",
            json!({"s": "a", "x": 1}),
            true,
            invalid("  - at (root): Additional properties are not allowed ('x' was unexpected)"),
            INVALID,
        ),
        call_case(
            "extra_field_emoji_name",
            "typed",
            json!({"s": "a", "🦀": 1}),
            true,
            invalid("  - at (root): Additional properties are not allowed ('🦀' was unexpected)"),
            INVALID,
        ),
        call_case(
            "float_for_integer",
            "typed",
            json!({"s": "a", "i": 1.5}),
            true,
            invalid("  - at /i: 1.5 is not of type \"integer\""),
            INVALID,
        ),
        call_case(
            "nan_string_for_number",
            "typed",
            json!({"s": "a", "n": "NaN"}),
            true,
            invalid("  - at /n: \"NaN\" is not of type \"number\""),
            INVALID,
        ),
        call_case(
            "infinity_string_for_number",
            "typed",
            json!({"s": "a", "n": "-Infinity"}),
            true,
            invalid("  - at /n: \"-Infinity\" is not of type \"number\""),
            INVALID,
        ),
        call_case(
            "1e400_string_for_number",
            "typed",
            json!({"s": "a", "n": "1e400"}),
            true,
            invalid("  - at /n: \"1e400\" is not of type \"number\""),
            INVALID,
        ),
        call_case(
            "largest_f64",
            "typed",
            json!({"s": "a", "n": f64::MAX}),
            false,
            exact("a"),
            OK,
        ),
        call_case(
            "thirty_violations",
            "typed",
            json!({"s": "a", "tags": tags}),
            true,
            Text::Satisfies(
                |t| {
                    t.starts_with("invalid arguments for `typed`:\n  - at /tags/0: 0 is not of type \"string\"")
                        && t.ends_with("\n  - at /tags/19: 19 is not of type \"string\"\n  - at (root): … and 10 more")
                        && t.lines().count() == 22
                },
                "20 violations listed, then `… and 10 more`",
            ),
            INVALID,
        ),
        call_case(
            "nested_100_levels",
            "typed",
            json!({"s": "deep", "deep": nested(100)}),
            false,
            exact("deep"),
            OK,
        ),
        call_case(
            "nested_100_levels_wrong_type",
            "echo",
            json!({"message": nested(100)}),
            true,
            Text::Satisfies(
                |t| {
                    t.starts_with("invalid arguments for `echo`:\n  - at /message: [[[[")
                        && t.ends_with("]]]] is not of type \"string\"")
                },
                "the nested value is not a string",
            ),
            INVALID,
        ),
        call_case(
            "unicode_rtl_emoji_nul_bom",
            "echo",
            json!({"message": hostile_text}),
            false,
            exact(hostile_text),
            OK,
        ),
        call_case(
            "nul_to_static_text",
            "echo",
            json!({"message": "a\u{0}b"}),
            false,
            exact("a\u{0}b"),
            OK,
        ),
        call_case(
            "nul_to_command_argv",
            "argv_echo",
            json!({"s": "a\u{0}b"}),
            true,
            exact(
                "tool `argv_echo` failed: argv[2] contains a NUL byte, which cannot be passed to a program",
            ),
            FAILED,
        ),
        CallCase {
            stored: Stored::Digest,
            ..call_case(
                "ten_mib_string",
                "echo",
                json!({"message": ten_mib}),
                true,
                prefix(
                    "arguments for `echo` are 10485774 bytes of JSON; the limit is 1048576 bytes",
                ),
                INVALID,
            )
        },
    ];
    run_call_cases(&f, cases).await;
    // Deep nesting survives the receipt round trip.
    let receipts = f.receipts().await;
    let deep = receipts
        .iter()
        .find(|r| r["result_excerpt"] == "deep")
        .expect("deep call receipted");
    let args: Value = serde_json::from_str(deep["args"].as_str().unwrap()).unwrap();
    assert_eq!(depth(&args["deep"]), 100);
    // NUL, RTL marks and emoji do not break the hash chain.
    let out = f.run(&["receipts", "verify"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

// ---------------------------------------------------------------------------
// Command tools: hostile output, hanging programs, path-looking arguments

/// A command tool spec; `extra` is more YAML under `run.command` (indented 4).
/// `sleeper` times out after 300ms; `stubborn` and `daemonizer` after 1s (long
/// enough for pgrep to see their children); others after 10s.
fn command_spec(name: &str, argv: &str, props: &str, extra: &str) -> String {
    let timeout = match name {
        "sleeper" => "300ms",
        "stubborn" | "daemonizer" => "1s",
        _ => "10s",
    };
    format!(
        "name: {name}\ndescription: A command.\ninput_schema:\n  type: object\n  properties: {{{props}}}\nallow: [admin]\ntimeout: {timeout}\nrun:\n  command:\n    argv: {argv}\n{extra}"
    )
}

#[tokio::test]
async fn command_output_and_arguments() {
    let f = Fixture::new();
    let specs = [
        ("random_bytes", "[head, -c, '64', /dev/urandom]", "", ""),
        ("not_utf8", r"[printf, '\377\376']", "", ""),
        ("nul_bytes", "[head, -c, '8', /dev/zero]", "", ""),
        (
            "stderr_not_utf8",
            r"[sh, -c, 'printf ''\377'' >&2; exit 3']",
            "",
            "",
        ),
        (
            "flood",
            "[head, -c, '10000000', /dev/zero]",
            "",
            "    max_output_bytes: 1000\n",
        ),
        ("bad_json", r#"[printf, '{"a":']"#, "", "    output: json\n"),
        ("no_program", "[/no/such/program]", "", ""),
        ("sleeper", "[sleep, '30']", "", ""),
        (
            "printf_arg",
            "[printf, '%s', '{{ args.path }}']",
            "path: {type: string}",
            "",
        ),
        (
            "ls_arg",
            "[ls, -1, --, '{{ args.path }}']",
            "path: {type: string}",
            "    cwd: CWD\n",
        ),
    ];
    // `ls` runs in jail/a/b, where ../../etc/passwd is jail/etc/passwd.
    std::fs::create_dir_all(f.path("jail/a/b")).unwrap();
    std::fs::create_dir_all(f.path("jail/etc")).unwrap();
    std::fs::write(f.path("jail/etc/passwd"), "not the real one\n").unwrap();
    let cwd = f.path("jail/a/b").display().to_string();
    for (name, argv, props, extra) in specs {
        f.write_spec(
            name,
            &command_spec(name, argv, props, &extra.replace("CWD", &cwd)),
        );
    }
    f.write_spec(
        "ls_safe",
        &command_spec(
            "ls_safe",
            "[ls, -1, --, '{{ args.path }}']",
            "path: {type: string, pattern: '^[A-Za-z0-9_][A-Za-z0-9_.-]*$'}",
            "",
        ),
    );
    let path = |p: &str| json!({"path": p});
    let cases = vec![
        call_case(
            "binary_output",
            "random_bytes",
            json!({}),
            false,
            Text::Satisfies(
                |t| (1..=64).contains(&t.chars().count()),
                "64 random bytes, decoded lossily to 1..=64 characters",
            ),
            OK,
        ),
        call_case(
            "invalid_utf8_output",
            "not_utf8",
            json!({}),
            false,
            exact("\u{fffd}\u{fffd}"),
            OK,
        ),
        call_case(
            "nul_bytes_output",
            "nul_bytes",
            json!({}),
            false,
            exact("\0".repeat(8)),
            OK,
        ),
        call_case(
            "invalid_utf8_stderr_and_exit_3",
            "stderr_not_utf8",
            json!({}),
            true,
            exact("exit status 3\nstderr:\n\u{fffd}"),
            FAILED,
        ),
        call_case(
            "ten_mb_of_output",
            "flood",
            json!({}),
            false,
            exact(format!(
                "{}\n[output truncated at 1000 bytes]",
                "\0".repeat(1000)
            )),
            OK,
        ),
        call_case(
            "invalid_json_output",
            "bad_json",
            json!({}),
            true,
            exact(
                "the command's output is not valid JSON (EOF while parsing a value at line 1 column 5), but the tool declares `output: json`",
            ),
            FAILED,
        ),
        call_case(
            "program_not_found",
            "no_program",
            json!({}),
            true,
            exact(
                "tool `no_program` did not start: could not start `/no/such/program`: No such file or directory; nothing was sent or run, so it is safe to retry",
            ),
            NOT_STARTED,
        ),
        call_case(
            "never_exits",
            "sleeper",
            json!({}),
            true,
            exact("tool `sleeper` timed out after 300ms and was stopped"),
            TIMED_OUT,
        ),
        call_case(
            "dot_dot_slash_is_one_literal_argument",
            "printf_arg",
            path("../../etc/passwd"),
            false,
            exact("../../etc/passwd"),
            OK,
        ),
        call_case(
            "percent_encoded_dots_are_not_decoded",
            "printf_arg",
            path("%2e%2e%2f"),
            false,
            exact("%2e%2e%2f"),
            OK,
        ),
        call_case(
            "absolute_path_is_passed_verbatim",
            "printf_arg",
            path("/etc/shadow"),
            false,
            exact("/etc/shadow"),
            OK,
        ),
        call_case(
            "ls_resolves_dot_dot_relative_to_cwd",
            "ls_arg",
            path("../../etc/passwd"),
            false,
            exact("../../etc/passwd\n"),
            OK,
        ),
        call_case(
            "ls_gets_percent_escapes_literally",
            "ls_arg",
            path("%2e%2e%2f"),
            true,
            exact(
                "exit status 2\nstderr:\nls: cannot access '%2e%2e%2f': No such file or directory",
            ),
            FAILED,
        ),
        call_case(
            "option_after_double_dash_is_a_file_name",
            "ls_arg",
            path("--help"),
            true,
            exact("exit status 2\nstderr:\nls: cannot access '--help': No such file or directory"),
            FAILED,
        ),
        call_case(
            "schema_pattern_refuses_traversal",
            "ls_safe",
            path("../../etc/passwd"),
            true,
            exact(
                "invalid arguments for `ls_safe`:\n  - at /path: \"../../etc/passwd\" does not match \"^[A-Za-z0-9_][A-Za-z0-9_.-]*$\"",
            ),
            INVALID,
        ),
    ];
    let started = Instant::now();
    run_call_cases(&f, cases).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let receipts = f.receipts().await;
    let binary = receipts
        .iter()
        .find(|r| r["tool"] == "random_bytes")
        .unwrap();
    assert_eq!(binary["result_digest"].as_str().unwrap().len(), 64);
}

/// Live processes whose command line is exactly `cmdline`.
fn running(cmdline: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-f", &format!("^{cmdline}$")])
        .output()
        .map(|o| o.status.success())
        .expect("pgrep")
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn children_that_ignore_sigterm_or_hold_stdout_leave_nothing_running() {
    let f = Fixture::new();
    // Unique durations, so pgrep finds only this test's processes.
    // (name, sleeper, argv, expected text, expected outcome)
    let cases = [
        (
            "stubborn",
            "sleep 31.4159",
            "[sh, -c, 'trap \"\" TERM; sleep 31.4159 & sleep 31.4159']",
            "tool `stubborn` timed out after 1s and was stopped",
            "timeout",
        ),
        (
            // Exits at once but leaves a child holding stdout: the result
            // comes back when the command exits (not at the timeout) and the
            // child is killed with the rest of its group.
            "daemonizer",
            "sleep 31.2718",
            "[sh, -c, 'sleep 31.2718 & echo started']",
            "started\n",
            "ok",
        ),
    ];
    for (name, _, argv, _, _) in cases {
        f.write_spec(name, &command_spec(name, argv, "", ""));
    }
    let client = f.client("alice").await;
    for (name, sleeper, _, want_text, want_outcome) in cases {
        let peer = client.peer().clone();
        let started = Instant::now();
        let r = peer
            .call_tool(call_params(name, json!({})))
            .await
            .expect("answered");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name}: {:?}",
            started.elapsed()
        );
        assert_eq!(r.is_error, Some(want_outcome != "ok"), "{name}");
        assert_eq!(text(&r), want_text, "{name}");
        let rec = f.receipt(&receipt_id(&r)).await;
        assert_eq!(
            (rec["decision"].as_str(), rec["outcome"].as_str()),
            (Some("allowed"), Some(want_outcome)),
            "{name}"
        );
        wait_until(
            &format!("no `{sleeper}` is left"),
            Duration::from_secs(3),
            || !running(sleeper),
        )
        .await;
    }
    client.cancel().await.unwrap();
}

// ---------------------------------------------------------------------------
// HTTP tools against a hostile upstream

const GIB: u64 = 1 << 30;

/// An upstream that misbehaves on purpose; `sent` counts the bytes the
/// 1 GiB routes actually produced. Any other path echoes its raw URI.
async fn hostile_upstream(sent: Arc<AtomicU64>) -> String {
    let gib_stream = move |sent: Arc<AtomicU64>| {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        futures::stream::iter(0..GIB / chunk.len() as u64).map(move |_| {
            sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            Ok::<_, Infallible>(chunk.clone())
        })
    };
    let (s1, s2) = (sent.clone(), sent);
    let app = axum::Router::new()
        .route("/hang", get(std::future::pending::<&'static str>))
        .route(
            "/stall",
            get(|| async {
                let first = futures::stream::once(async {
                    Ok::<_, Infallible>(Bytes::from_static(b"{\"partial\":"))
                });
                Body::from_stream(first.chain(futures::stream::pending()))
            }),
        )
        .route(
            "/gib",
            get(move || {
                let body = Body::from_stream(gib_stream(s1.clone()));
                async move { ([(header::CONTENT_TYPE, "application/json")], body) }
            }),
        )
        .route(
            "/gib-declared",
            get(move || {
                let body = Body::from_stream(gib_stream(s2.clone()));
                async move { ([(header::CONTENT_LENGTH, GIB.to_string())], body) }
            }),
        )
        .route(
            "/bad-json",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    "{\"unterminated\": ",
                )
            }),
        )
        .route(
            "/fail",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/binary",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    Bytes::from_static(b"\xff\xfe\x00\x01"),
                )
            }),
        )
        .route(
            "/to-file",
            get(|| async { axum::response::Redirect::temporary("file:///etc/passwd") }),
        )
        .route(
            "/elsewhere",
            get(|headers: axum::http::HeaderMap| async move {
                // The same server under another name is another origin.
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
                let port = host.and_then(|h| h.rsplit(':').next()).unwrap_or_default();
                axum::response::Redirect::temporary(&format!("http://localhost:{port}/x"))
            }),
        )
        .fallback(|uri: Uri| async move { uri.to_string() });
    http_server(app).await
}

fn http_tool(name: &str, url: &str, prop: &str, timeout: &str) -> String {
    format!(
        "name: {name}\ndescription: An HTTP tool.\ninput_schema:\n  type: object\n  properties:\n    {prop}: {{type: string}}\n  required: [{prop}]\nallow: [admin]\ntimeout: {timeout}\nrun:\n  http:\n    url: \"{url}\"\n"
    )
}

#[tokio::test]
async fn hostile_http_upstream() {
    let sent = Arc::new(AtomicU64::new(0));
    let base = hostile_upstream(sent.clone()).await;
    let closed = format!("http://127.0.0.1:{}/", free_port());
    let f = Fixture::new();
    f.write_spec(
        "up",
        &http_tool(
            "up",
            &format!("{base}/{{{{ args.route }}}}"),
            "route",
            "10s",
        ),
    );
    f.write_spec(
        "up_hang",
        &http_tool(
            "up_hang",
            &format!("{base}/{{{{ args.route }}}}"),
            "route",
            "300ms",
        ),
    );
    f.write_spec(
        "items",
        &http_tool(
            "items",
            &format!("{base}/items/{{{{ args.id }}}}"),
            "id",
            "10s",
        ),
    );
    f.write_spec("fetch", &http_tool("fetch", "{{ args.url }}", "url", "10s"));
    let route = |r: &str| json!({"route": r});
    let id = |i: &str| json!({"id": i});
    let cases = vec![
        call_case(
            "upstream_never_answers",
            "up_hang",
            route("hang"),
            true,
            exact("tool `up_hang` timed out after 300ms and was stopped"),
            TIMED_OUT,
        ),
        call_case(
            "upstream_stalls_mid_body",
            "up_hang",
            route("stall"),
            true,
            exact("tool `up_hang` timed out after 300ms and was stopped"),
            TIMED_OUT,
        ),
        call_case(
            "one_gib_chunked_body",
            "up",
            route("gib"),
            true,
            prefix("tool `up` failed: response body exceeded 1048576 bytes"),
            FAILED,
        ),
        call_case(
            "one_gib_declared_content_length",
            "up",
            route("gib-declared"),
            true,
            prefix("tool `up` failed: response body exceeded 1048576 bytes"),
            FAILED,
        ),
        call_case(
            "invalid_json_with_json_content_type",
            "up",
            route("bad-json"),
            false,
            exact("{\"unterminated\": "),
            OK,
        ),
        call_case(
            "status_500",
            "up",
            route("fail"),
            true,
            exact(format!(
                "HTTP 500 Internal Server Error from GET {base}/…: boom"
            )),
            FAILED,
        ),
        call_case(
            "binary_body",
            "up",
            route("binary"),
            false,
            exact("\u{fffd}\u{fffd}\u{0}\u{1}"),
            OK,
        ),
        call_case(
            "redirect_to_file_url",
            "up",
            route("to-file"),
            true,
            exact(format!("HTTP 307 Temporary Redirect from GET {base}/…")),
            FAILED,
        ),
        call_case(
            "redirect_to_another_origin",
            "up",
            route("elsewhere"),
            true,
            prefix(format!(
                "tool `up` failed: GET {base}/… failed: redirect not followed: refusing to follow a redirect to another origin (http://localhost:"
            )),
            FAILED,
        ),
        call_case(
            "dot_dot_slash_in_path_placeholder",
            "items",
            id("../../etc/passwd"),
            false,
            exact("/items/..%2F..%2Fetc%2Fpasswd"),
            OK,
        ),
        call_case(
            "percent_escapes_in_path_placeholder",
            "items",
            id("%2e%2e%2f"),
            false,
            exact("/items/%252e%252e%252f"),
            OK,
        ),
        call_case(
            "absolute_path_in_path_placeholder",
            "items",
            id("/etc/shadow"),
            false,
            exact("/items/%2Fetc%2Fshadow"),
            OK,
        ),
        call_case(
            "query_and_fragment_in_path_placeholder",
            "items",
            id("a?b=1#c d"),
            false,
            exact("/items/a%3Fb%3D1%23c%20d"),
            OK,
        ),
        call_case(
            "emoji_and_rtl_in_path_placeholder",
            "items",
            id("🦀\u{202e}"),
            false,
            exact("/items/%F0%9F%A6%80%E2%80%AE"),
            OK,
        ),
        call_case(
            "dot_dot_as_whole_path_segment",
            "items",
            id(".."),
            true,
            exact("argument `id` is `..`, which cannot be used in the URL path"),
            FAILED,
        ),
        call_case(
            "empty_path_segment",
            "items",
            id(""),
            true,
            exact("argument `id` is empty, which cannot be used in the URL path"),
            FAILED,
        ),
        call_case(
            "file_url_for_whole_url_placeholder",
            "fetch",
            json!({"url": "file:///etc/passwd"}),
            true,
            exact("argument `url` must be an absolute http or https URL (the scheme is `file`)"),
            FAILED,
        ),
        call_case(
            "connection_refused",
            "fetch",
            json!({"url": closed}),
            true,
            prefix(format!(
                "tool `fetch` did not start: GET {closed} failed: could not connect"
            )),
            NOT_STARTED,
        ),
    ];
    let started = Instant::now();
    run_call_cases(&f, cases).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    // Both 1 GiB bodies were abandoned early: far less than 1 GiB was ever produced.
    let produced = sent.load(Ordering::Relaxed);
    assert!(produced < 64 << 20, "upstream produced {produced} bytes");
}

// ---------------------------------------------------------------------------
// Broken spec files: `check` exits 1 naming the file and the field; `serve`
// refuses to start. No call is possible, so no receipt.

const BASE: &str = "name: t\ndescription: A tool.\ninput_schema:\n  type: object\n  properties:\n    msg: {type: string}\nallow: [admin]\n";

struct SpecCase {
    name: &'static str,
    /// Under the fixture directory: the file the problem is reported in.
    file: &'static str,
    setup: fn(&Fixture),
    expect: &'static [&'static str],
}

fn write(f: &Fixture, rel: &str, bytes: impl AsRef<[u8]>) {
    std::fs::write(f.path(rel), bytes).unwrap();
}

fn base_with(run: &str) -> String {
    format!("{BASE}{run}")
}

/// A YAML "billion laughs": 9 aliases per level, 9 levels.
fn alias_bomb() -> String {
    let mut yaml = String::from(
        "name: bomb\ndescription: x\nallow: [admin]\nrun: {static: {text: hi}}\ninput_schema:\n  type: object\n  l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for i in 1..10 {
        let refs = vec![format!("*l{}", i - 1); 9].join(", ");
        yaml.push_str(&format!("  l{i}: &l{i} [{refs}]\n"));
    }
    yaml
}

fn spec_cases() -> Vec<SpecCase> {
    vec![
        SpecCase {
            name: "yaml_alias_bomb",
            file: "specs/bomb.yaml",
            setup: |f| write(f, "specs/bomb.yaml", alias_bomb()),
            expect: &["field `input_schema.l", "repetition limit exceeded"],
        },
        SpecCase {
            name: "deeply_nested_yaml",
            file: "specs/deep.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/deep.yaml",
                    format!(
                        "name: deep\ndescription: x\nrun: {{static: {{text: hi}}}}\ninput_schema: {}{}\n",
                        "[".repeat(10_000),
                        "]".repeat(10_000)
                    ),
                )
            },
            expect: &["field `input_schema", "recursion limit exceeded"],
        },
        SpecCase {
            name: "symlink_outside_the_spec_directory",
            file: "specs/link.yaml",
            setup: |f| {
                write(f, "outside.yaml", base_with("run: {static: {text: hi}}\n"));
                std::os::unix::fs::symlink(f.path("outside.yaml"), f.path("specs/link.yaml"))
                    .unwrap();
            },
            expect: &[
                "outside.yaml, outside the spec directory",
                "hint: copy the spec into the spec directory",
            ],
        },
        SpecCase {
            name: "dangling_symlink",
            file: "specs/dangling.yaml",
            setup: |f| {
                std::os::unix::fs::symlink(f.path("nowhere"), f.path("specs/dangling.yaml"))
                    .unwrap()
            },
            expect: &["cannot resolve path: No such file or directory"],
        },
        SpecCase {
            name: "directory_named_like_a_spec",
            file: "specs/dir.yaml",
            setup: |f| std::fs::create_dir(f.path("specs/dir.yaml")).unwrap(),
            expect: &["is not a regular file"],
        },
        SpecCase {
            name: "duplicate_tool_name",
            file: "specs/zz_dup.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/zz_dup.yaml",
                    base_with("run: {static: {text: hi}}\n").replace("name: t", "name: echo"),
                )
            },
            expect: &[
                "field `name`: tool name `echo` is already defined in",
                "echo.yaml",
            ],
        },
        SpecCase {
            name: "file_over_1_mib",
            file: "specs/huge.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/huge.yaml",
                    format!("{BASE}# {}\n", "x".repeat(1 << 20)),
                )
            },
            expect: &["bytes; spec files may be at most 1048576 bytes"],
        },
        SpecCase {
            name: "empty_file",
            file: "specs/empty.yaml",
            setup: |f| write(f, "specs/empty.yaml", ""),
            expect: &[
                "missing field `name`",
                "hint: `tollgate schema` lists the required fields",
            ],
        },
        SpecCase {
            name: "yaml_list",
            file: "specs/list.yaml",
            setup: |f| write(f, "specs/list.yaml", "- name: a\n- name: b\n"),
            expect: &["invalid type: sequence, expected struct ToolSpec"],
        },
        SpecCase {
            name: "yaml_scalar",
            file: "specs/scalar.yaml",
            setup: |f| write(f, "specs/scalar.yaml", "just a string\n"),
            expect: &["invalid type: string \"just a string\", expected struct ToolSpec"],
        },
        SpecCase {
            name: "non_utf8_bytes",
            file: "specs/latin1.yaml",
            setup: |f| write(f, "specs/latin1.yaml", b"name: caf\xe9\ndescription: x\n"),
            expect: &["cannot read: stream did not contain valid UTF-8"],
        },
        SpecCase {
            name: "utf16_with_bom",
            file: "specs/utf16.yaml",
            setup: |f| write(f, "specs/utf16.yaml", b"\xff\xfen\x00a\x00m\x00e\x00:\x00"),
            expect: &["cannot read: stream did not contain valid UTF-8"],
        },
        SpecCase {
            name: "tab_indented",
            file: "specs/tabs.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/tabs.yaml",
                    "name: t\ndescription: x\ninput_schema:\n\ttype: object\n",
                )
            },
            expect: &[
                "field `input_schema`: found character that cannot start any token at line 4 column 1",
            ],
        },
        SpecCase {
            name: "duplicate_key",
            file: "specs/dupkey.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/dupkey.yaml",
                    base_with("run: {static: {text: hi}}\nname: u\n"),
                )
            },
            expect: &["duplicate field `name`"],
        },
        SpecCase {
            name: "unknown_executor_kind",
            file: "specs/shell.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/shell.yaml",
                    base_with("run:\n  shell:\n    script: ls\n"),
                )
            },
            expect: &[
                "field `run`: unknown variant `shell`, expected one of `command`, `http`, `static`",
                "hint: `run` takes exactly one of: command, http, static",
            ],
        },
        SpecCase {
            name: "two_executor_kinds",
            file: "specs/two.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/two.yaml",
                    base_with("run:\n  command: {argv: [ls]}\n  static: {text: hi}\n"),
                )
            },
            expect: &[
                "field `run`: `run` takes exactly one of: command, http, static, but it also has `static`",
            ],
        },
        SpecCase {
            name: "empty_argv",
            file: "specs/argv.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/argv.yaml",
                    base_with("run:\n  command:\n    argv: []\n"),
                )
            },
            expect: &[
                "field `run.command.argv`: argv is empty; it needs at least the program to run",
            ],
        },
        SpecCase {
            name: "placeholder_as_program",
            file: "specs/argv0.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/argv0.yaml",
                    base_with("run:\n  command:\n    argv: ['{{ args.msg }}']\n"),
                )
            },
            expect: &[
                "field `run.command.argv[0]`: the program to run must be literal, not a placeholder",
            ],
        },
        SpecCase {
            name: "nul_in_set_env_value",
            file: "specs/nulenv.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/nulenv.yaml",
                    base_with("run:\n  command:\n    argv: [env]\n    set_env: {A: \"x\\0y\"}\n"),
                )
            },
            expect: &[
                "field `run.command.set_env.A`: the value contains a NUL byte, which no program can receive",
            ],
        },
        SpecCase {
            name: "url_placeholder_with_a_suffix",
            file: "specs/url.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/url.yaml",
                    base_with("run:\n  http:\n    url: \"{{ args.msg }}/items\"\n"),
                )
            },
            expect: &[
                "field `run.http.url`: `{{ args.msg }}/items` puts a placeholder in the scheme, host or port",
                "hint: placeholders may fill the path and query only",
            ],
        },
        SpecCase {
            name: "url_with_a_non_http_scheme",
            file: "specs/ftp.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/ftp.yaml",
                    base_with("run:\n  http:\n    url: \"ftp://host/{{ args.msg }}\"\n"),
                )
            },
            expect: &[
                "field `run.http.url`: `ftp://host/{{ args.msg }}` is not an absolute http or https URL (the scheme is `ftp`)",
            ],
        },
        SpecCase {
            name: "path_traversal_in_tool_name",
            file: "specs/name.yaml",
            setup: |f| {
                write(
                    f,
                    "specs/name.yaml",
                    base_with("run: {static: {text: hi}}\n").replace("name: t", "name: ../etc"),
                )
            },
            expect: &["field `name`: `../etc` is not a valid tool name"],
        },
    ]
}

fn check_spec_case(case: &SpecCase) {
    let f = Fixture::new();
    (case.setup)(&f);
    let started = Instant::now();
    let check = f.run(&["check"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{}: {:?}",
        case.name,
        started.elapsed()
    );
    let serve = f.run(&["serve", "--principal", "alice"]);
    let file = f.path(case.file).display().to_string();
    for (what, out) in [("check", &check), ("serve", &serve)] {
        let err = stderr(out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: {what} must fail: {err}",
            case.name
        );
        assert!(
            err.contains(&format!("error: {file}: ")),
            "{}: {what} names {file}: {err}",
            case.name
        );
        for needle in case.expect {
            assert!(
                err.contains(needle),
                "{}: {what}: expected `{needle}` in: {}",
                case.name,
                clip(&err)
            );
        }
        assert!(!err.contains("panicked"), "{}: {err}", case.name);
    }
    assert!(
        stderr(&check).contains("1 problem(s) found"),
        "{}: {}",
        case.name,
        stderr(&check)
    );
    assert!(
        stderr(&serve).contains("refusing to start"),
        "{}: {}",
        case.name,
        stderr(&serve)
    );
}

#[test]
fn broken_spec_files() {
    for case in spec_cases() {
        check_spec_case(&case);
    }
}

#[test]
fn placeholder_in_url_authority_is_rejected() {
    check_spec_case(&SpecCase {
        name: "placeholder_as_host",
        file: "specs/host.yaml",
        setup: |f| {
            write(
                f,
                "specs/host.yaml",
                base_with("run:\n  http:\n    url: \"https://{{ args.msg }}/x\"\n"),
            )
        },
        expect: &["field `run.http.url`"],
    });
}

// ---------------------------------------------------------------------------
// Credentials over HTTP: every refusal is a 401 (no receipt)

struct AuthCase {
    name: &'static str,
    /// `Authorization` header values, each sent; `{token}` is a valid key.
    headers: Vec<String>,
    status: u16,
    body: Text,
}

fn h(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn unauthorized(reason: &str) -> Text {
    exact(format!("unauthorized: {reason}\n"))
}

#[tokio::test]
async fn bad_credentials() {
    let f = Fixture::new();
    let (expired_id, expired) = f.create_key("alice", &["--expires", "1s"]);
    let expired_at = Instant::now() + Duration::from_millis(1100);
    let (server, token) = json_mode_server(&f).await;
    let initialized = || prefix("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{");
    let malformed = || {
        unauthorized("malformed Authorization header (expected `Authorization: Bearer <token>`)")
    };
    let cases = [
        AuthCase {
            name: "no_header",
            headers: h(&[]),
            status: 401,
            body: unauthorized("missing bearer token"),
        },
        AuthCase {
            name: "scheme_only",
            headers: h(&["Bearer"]),
            status: 401,
            body: malformed(),
        },
        AuthCase {
            name: "basic_scheme",
            headers: h(&["Basic YWxpY2U6c2VjcmV0"]),
            status: 401,
            body: malformed(),
        },
        AuthCase {
            name: "token_then_garbage_word",
            headers: h(&["Bearer {token} garbage"]),
            status: 401,
            body: malformed(),
        },
        AuthCase {
            name: "token_with_trailing_characters",
            headers: h(&["Bearer {token}xyz"]),
            status: 401,
            body: unauthorized("unknown API key"),
        },
        AuthCase {
            name: "token_with_trailing_punctuation",
            headers: h(&["Bearer {token};"]),
            status: 401,
            body: unauthorized("malformed API key (expected tg_<id>_<secret>)"),
        },
        AuthCase {
            name: "two_authorization_headers_same_token",
            headers: h(&["Bearer {token}", "Bearer {token}"]),
            status: 401,
            body: malformed(),
        },
        AuthCase {
            name: "two_authorization_headers_one_bad",
            headers: h(&["Bearer {token}", "Bearer nope"]),
            status: 401,
            body: malformed(),
        },
        AuthCase {
            name: "prefix_only",
            headers: h(&["Bearer tg_"]),
            status: 401,
            body: unauthorized("malformed API key (expected tg_<id>_<secret>)"),
        },
        AuthCase {
            name: "unsigned_jwt_without_jwt_config",
            headers: h(&["Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."]),
            status: 401,
            body: unauthorized(
                "not a tollgate API key (API keys start with tg_; JWT access tokens are not enabled)",
            ),
        },
        AuthCase {
            name: "eight_kib_token",
            headers: vec![format!("Bearer tg_{}", "A".repeat(8192))],
            status: 401,
            body: unauthorized("malformed API key (expected tg_<id>_<secret>)"),
        },
        // Controls: the same server accepts the token, whatever the scheme's case.
        AuthCase {
            name: "control_valid_token",
            headers: h(&["Bearer {token}"]),
            status: 200,
            body: initialized(),
        },
        AuthCase {
            name: "control_upper_case_scheme_extra_spaces",
            headers: h(&["BEARER   {token}  "]),
            status: 200,
            body: initialized(),
        },
    ];
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}})
    .to_string();
    for case in &cases {
        let values: Vec<String> = case
            .headers
            .iter()
            .map(|h| h.replace("{token}", &token))
            .collect();
        let headers: Vec<(&str, &str)> = values
            .iter()
            .map(|v| ("authorization", v.as_str()))
            .collect();
        let r = post_mcp(&server, None, init.clone(), &headers).await;
        let status = r.status().as_u16();
        let challenge = r
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string());
        let body = r.text().await.unwrap();
        assert_eq!(status, case.status, "{}: {}", case.name, clip(&body));
        case.body.check(case.name, &body);
        assert!(
            !body.contains(&token[3..]),
            "{}: the token is never echoed",
            case.name
        );
        if status == 401 {
            let challenge = challenge.unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer error=\"invalid_token\""),
                "{}: {challenge}",
                case.name
            );
        }
    }

    // A header value with a non-ASCII byte.
    let r = reqwest::Client::new()
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer tg_\xff").unwrap(),
        )
        .body(init.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    malformed().check("non_ascii_header_byte", &r.text().await.unwrap());

    // An expired key.
    tokio::time::sleep(expired_at.saturating_duration_since(Instant::now())).await;
    let r = post_mcp(&server, Some(&expired), init, &[]).await;
    assert_eq!(r.status(), 401);
    unauthorized(&format!("API key tg_{expired_id} expired"))
        .check("expired_key", &r.text().await.unwrap());

    assert_eq!(f.receipts().await.len(), 0, "no call ran, so no receipt");
}

#[tokio::test]
async fn key_revoked_mid_session() {
    let f = Fixture::new();
    let (key_id, token) = f.create_key("alice", &[]);
    let server = HttpTollgate::start(&f, &[]).await;
    let client = server.client(&token).await.expect("connect");
    let r = client
        .call_tool(call_params("echo", json!({"message": "before"})))
        .await
        .unwrap();
    assert_eq!(text(&r), "before");
    let out = f.run(&["keys", "revoke", &key_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let after = tokio::time::timeout(
        Duration::from_secs(10),
        client.call_tool(call_params("echo", json!({"message": "after"}))),
    )
    .await
    .expect("refused promptly, not left hanging");
    assert!(after.is_err(), "a revoked key must not call: {after:?}");
    let r = post_mcp(&server, Some(&token), "{}", &[]).await;
    assert_eq!(r.status(), 401);
    unauthorized(&format!("API key tg_{key_id} was revoked"))
        .check("revoked_key", &r.text().await.unwrap());
    let receipts = f.receipts().await;
    assert_eq!(receipts.len(), 1, "only the call before the revocation ran");
    assert_eq!(receipts[0]["result_excerpt"], "before");
}

// ---------------------------------------------------------------------------
// Unknown tool names: a JSON-RPC -32602 error naming the tools there are,
// and an `unknown_tool` receipt. A name longer than any served name (64
// characters) is shown and stored as its first 64 characters and a digest.

/// How an unknown name appears in the error and the receipt.
fn shown_name(name: &str) -> String {
    match name.char_indices().nth(64) {
        None => name.to_string(),
        Some((cut, _)) => {
            let sha = hex::encode(sha2::Sha256::digest(name.as_bytes()));
            format!("{}…(sha256:{})", &name[..cut], &sha[..16])
        }
    }
}

#[tokio::test]
async fn unknown_tool_names() {
    let f = Fixture::new();
    let client = f.client("alice").await;
    let names = [
        String::new(),
        "a/b".into(),
        "../echo".into(),
        "tools/call".into(),
        "ECHO".into(),
        " echo".into(),
        "echo\n".into(),
        "echo\u{0}".into(),
        "🦀\u{202e}ohce".into(),
        "n".repeat(64),
        "n".repeat(65),
        "é".repeat(10_000),
        "n".repeat(2 << 20),
    ];
    for name in &names {
        let case = clip(name);
        let err = client
            .call_tool(call_params(name, json!({})))
            .await
            .expect_err("unknown tool is a JSON-RPC error");
        let rmcp::ServiceError::McpError(e) = err else {
            panic!("{case}: not a JSON-RPC error: {err}");
        };
        assert_eq!(e.code.0, -32602, "{case}");
        let shown = shown_name(name);
        exact(format!("unknown tool `{shown}`; available tools: echo")).check(&case, &e.message);
        let id = e
            .data
            .as_ref()
            .and_then(|d| d["tollgate/receipt_id"].as_str())
            .expect("receipt id in data");
        let rec = f.receipt(id).await;
        assert_eq!(rec["decision"], "unknown_tool", "{case}");
        assert_eq!(rec["outcome"], "not_run", "{case}");
        assert!(
            rec["tool"] == shown.as_str(),
            "{case}: receipt tool {}",
            clip(rec["tool"].as_str().unwrap())
        );
        assert_eq!(rec["version"], Value::Null, "{case}");
    }
    assert_eq!(f.receipts().await.len(), names.len());
    client.cancel().await.unwrap();
}
