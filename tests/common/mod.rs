//! Test harness: a temporary tollgate installation (specs, principals, db)
//! driven through the real binary and rmcp's real client over stdio.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

pub const PRINCIPALS: &str = "\
roles:
  admin: operators
  support: support agents
  viewer: read only
principals:
  alice: { roles: [admin, support] }
  bob: { roles: [support] }
  carol: { roles: [viewer] }
";

pub const ECHO: &str = "\
name: echo
description: Echo the message.
input_schema:
  type: object
  properties:
    message: { type: string }
  required: [message]
  additionalProperties: false
allow: [admin, support, viewer]
run:
  static:
    text: \"{{ args.message }}\"
";

pub type Client = RunningService<RoleClient, ()>;

/// A scratch directory holding specs, principals and a database.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// Principals as above, the `echo` spec, and an empty database.
    pub fn new() -> Fixture {
        let f = Fixture::empty();
        f.write_spec("echo", ECHO);
        f
    }

    /// Principals only, no specs.
    pub fn empty() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("specs")).expect("mkdir specs");
        std::fs::write(dir.path().join("principals.yaml"), PRINCIPALS).expect("principals");
        Fixture { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn db(&self) -> PathBuf {
        self.path("tollgate.db")
    }

    pub fn write_spec(&self, name: &str, yaml: &str) {
        std::fs::write(self.path(&format!("specs/{name}.yaml")), yaml).expect("write spec");
    }

    /// A `tollgate` command with --db/--specs/--principals pointing here,
    /// run in the fixture directory with a clean TOLLGATE_* environment.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        self.prepare(&mut cmd);
        cmd.args(args);
        cmd
    }

    fn prepare(&self, cmd: &mut std::process::Command) {
        cmd.current_dir(self.dir.path())
            .env_remove("TOLLGATE_CONFIG")
            .env_remove("TOLLGATE_PRINCIPAL")
            .env_remove("TOLLGATE_POLICIES")
            .env("TOLLGATE_DB", self.db())
            .env("TOLLGATE_SPECS", self.path("specs"))
            .env("TOLLGATE_PRINCIPALS", self.path("principals.yaml"));
    }

    /// Run `tollgate ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run tollgate")
    }

    /// Start `tollgate serve --principal P` and connect rmcp's client to it.
    pub async fn client(&self, principal: &str) -> Client {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        self.prepare(&mut cmd);
        cmd.args(["serve", "--principal", principal]);
        let (transport, _) = TokioChildProcess::builder(tokio::process::Command::from(cmd))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn tollgate serve");
        ().serve(transport)
            .await
            .expect("MCP handshake with tollgate")
    }

    /// All receipts in chain order, as JSON objects keyed by column name.
    pub async fn receipts(&self) -> Vec<Value> {
        let pool = self.pool().await;
        let rows = sqlx::query(
            "SELECT seq, id, principal, roles, auth, transport, session, tool, version, spec_hash, \
             args, decision, reason, outcome, result_digest, result_excerpt, duration_us, cost_usd, \
             prev_hash, hash FROM receipts ORDER BY seq",
        )
        .fetch_all(&pool)
        .await
        .expect("query receipts");
        rows.iter()
            .map(|r| {
                serde_json::json!({
                    "seq": r.get::<i64, _>("seq"),
                    "id": r.get::<String, _>("id"),
                    "principal": r.get::<Option<String>, _>("principal"),
                    "roles": r.get::<String, _>("roles"),
                    "auth": r.get::<String, _>("auth"),
                    "transport": r.get::<String, _>("transport"),
                    "session": r.get::<Option<String>, _>("session"),
                    "tool": r.get::<String, _>("tool"),
                    "version": r.get::<Option<i64>, _>("version"),
                    "spec_hash": r.get::<Option<String>, _>("spec_hash"),
                    "args": r.get::<String, _>("args"),
                    "decision": r.get::<String, _>("decision"),
                    "reason": r.get::<Option<String>, _>("reason"),
                    "outcome": r.get::<String, _>("outcome"),
                    "result_digest": r.get::<Option<String>, _>("result_digest"),
                    "result_excerpt": r.get::<Option<String>, _>("result_excerpt"),
                    "duration_us": r.get::<i64, _>("duration_us"),
                    "cost_usd": r.get::<Option<f64>, _>("cost_usd"),
                    "prev_hash": r.get::<String, _>("prev_hash"),
                    "hash": r.get::<String, _>("hash"),
                })
            })
            .collect()
    }

    /// The receipt with `id`.
    pub async fn receipt(&self, id: &str) -> Value {
        self.receipts()
            .await
            .into_iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no receipt {id}"))
    }

    /// A direct connection to the database file, as an auditor (or attacker) would have.
    pub async fn pool(&self) -> sqlx::SqlitePool {
        let opts = SqliteConnectOptions::new().filename(self.db());
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .expect("open db")
    }
}

/// `tools/call` NAME with ARGS (a JSON object).
pub async fn call(client: &Client, name: &str, args: Value) -> CallToolResult {
    client
        .call_tool(call_params(name, args))
        .await
        .expect("tools/call transport")
}

pub fn call_params(name: &str, args: Value) -> CallToolRequestParams {
    let map: Map<String, Value> = match args {
        Value::Object(m) => m,
        _ => panic!("args must be an object"),
    };
    CallToolRequestParams::new(name.to_string()).with_arguments(map)
}

/// The text of a result's first content block.
pub fn text(result: &CallToolResult) -> String {
    result
        .content
        .first()
        .and_then(|c| c.as_text())
        .map(|t| t.text.clone())
        .unwrap_or_default()
}

/// The receipt id carried in a result's `_meta`.
pub fn receipt_id(result: &CallToolResult) -> String {
    result
        .meta
        .as_ref()
        .and_then(|m| m.0.get("tollgate/receipt_id"))
        .and_then(|v| v.as_str())
        .expect("result _meta carries tollgate/receipt_id")
        .to_string()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Start an HTTP server on 127.0.0.1 with `app`; returns its base URL.
pub async fn http_server(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// A `tollgate serve --http` process on a free loopback port.
pub struct HttpTollgate {
    pub child: std::process::Child,
    pub base: String,
    pub addr: String,
}

impl HttpTollgate {
    /// Start `tollgate serve --http 127.0.0.1:PORT EXTRA…` and wait until /healthz answers.
    pub async fn start(f: &Fixture, extra: &[&str]) -> HttpTollgate {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["serve", "--http", addr.as_str()];
        args.extend_from_slice(extra);
        let child = f
            .command(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn tollgate serve --http");
        let base = format!("http://{addr}");
        let mut server = HttpTollgate { child, base, addr };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("{}/healthz", server.base)).await
                && r.status().is_success()
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = server.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("tollgate exited early ({status}): {err}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "tollgate did not come up"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn mcp_url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    /// Connect rmcp's Streamable HTTP client with `Authorization: Bearer TOKEN`.
    pub async fn client(&self, token: &str) -> Result<HttpClient, String> {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let config = StreamableHttpClientTransportConfig::with_uri(self.mcp_url())
            .auth_header(token.to_string());
        let transport = StreamableHttpClientTransport::from_config(config);
        ().serve(transport).await.map_err(|e| e.to_string())
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status();
        let status = self.child.wait().expect("wait for tollgate");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        (status, err)
    }
}

impl Drop for HttpTollgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub type HttpClient = RunningService<RoleClient, ()>;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Fixture {
    /// `tollgate keys create --principal P`; returns (key id, token).
    pub fn create_key(&self, principal: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["keys", "create", "--principal", principal];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(out.status.success(), "keys create: {}", stderr(&out));
        let token = stdout(&out).trim().to_string();
        assert!(token.starts_with("tg_"), "token: {token}");
        let id = token.split('_').nth(1).expect("key id").to_string();
        (id, token)
    }
}

/// `tollgate serve --principal P` over stdio, driven with raw bytes: for
/// malformed messages that rmcp's client would never send.
pub struct RawStdio {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl RawStdio {
    /// Start the server and complete the MCP handshake (initialize, initialized).
    pub async fn start(f: &Fixture, principal: &str) -> RawStdio {
        use tokio::io::AsyncBufReadExt;
        let mut cmd =
            tokio::process::Command::from(f.command(&["serve", "--principal", principal]));
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn tollgate serve");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let mut io = RawStdio {
            _child: child,
            stdin,
            lines: tokio::io::BufReader::new(stdout).lines(),
        };
        let init = serde_json::json!({"jsonrpc": "2.0", "id": "init", "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}});
        io.send(init.to_string().as_bytes()).await;
        let reply = io
            .recv(std::time::Duration::from_secs(20))
            .await
            .expect("initialize answered");
        assert_eq!(reply["id"], "init", "{reply}");
        io.send(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            .await;
        io
    }

    /// Write `bytes` and a newline.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(bytes)
            .await
            .expect("write to tollgate");
        self.stdin
            .write_all(b"\n")
            .await
            .expect("write to tollgate");
        self.stdin.flush().await.expect("flush to tollgate");
    }

    /// The next message the server writes, or `None` after `within` (or at EOF).
    pub async fn recv(&mut self, within: std::time::Duration) -> Option<Value> {
        match tokio::time::timeout(within, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Some(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("tollgate wrote a non-JSON line ({e}): {line}")),
            ),
            _ => None,
        }
    }
}

/// POST `body` to `/mcp` as a JSON-RPC client would, with an optional
/// bearer token and extra headers (appended, so a name may repeat).
pub async fn post_mcp(
    server: &HttpTollgate,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(server.mcp_url())
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.expect("HTTP request")
}
