//! Test helper: the fake payments API (`examples/payments_api.rs`) as a child
//! process on a free port of 127.0.0.1, killed when the handle is dropped.
//!
//! Cargo gives integration tests the paths of binaries
//! (`CARGO_BIN_EXE_<name>`) but not of examples, so the first use builds the
//! example with the cargo that runs the tests and takes the executable's
//! path from cargo's JSON messages: that honours `CARGO_TARGET_DIR`,
//! `build.target-dir` and the like without guessing paths.
//!
//! ```ignore
//! #[path = "support/payments.rs"]
//! mod payments;
//! let api = payments::PaymentsApi::start("sk_test_1");
//! // or, with a slow POST /refunds for concurrency tests:
//! let api = payments::PaymentsApi::start_with("sk_test_1", &["--delay-ms", "300"]);
//! let url = format!("{}/refunds", api.url());   // http://127.0.0.1:PORT/refunds
//! let recorded = api.refunds().await;            // GET /refunds, as a Vec<Value>
//! ```
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

/// How long the example may take to print its port once started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What the example prints on stdout when it is ready.
const READY_PREFIX: &str = "payments_api listening on http://127.0.0.1:";

/// The built `payments_api` executable (built on first use, once per test
/// binary). Panics with cargo's output if the build fails.
pub fn binary() -> &'static Path {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BINARY.get_or_init(build) {
        Ok(path) => path,
        Err(why) => panic!("cannot build the payments_api example: {why}"),
    }
}

fn build() -> Result<PathBuf, String> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "--example",
        "payments_api",
        "--message-format=json-render-diagnostics",
        "--quiet",
    ]);
    // Build with the profile the tests were built with, so `cargo test
    // --release` does not compile every dependency a second time.
    if in_release_profile() {
        cmd.arg("--release");
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "`cargo build --example payments_api` failed:\n{stderr}"
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| {
            msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "payments_api"
        })
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo reported no payments_api executable\n{stderr}"))
}

/// Whether this test binary sits in a `release` profile directory
/// (`target/release/deps/…`).
fn in_release_profile() -> bool {
    std::env::current_exe()
        .ok()
        .as_deref()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .is_some_and(|name| name == "release")
}

/// A running `payments_api`. Dropping it kills the process.
pub struct PaymentsApi {
    child: Child,
    port: u16,
    key: String,
    stderr: Arc<Mutex<String>>,
}

impl PaymentsApi {
    /// Start the API on a free port, accepting `Authorization: Bearer KEY`.
    pub fn start(key: &str) -> PaymentsApi {
        PaymentsApi::start_with(key, &[])
    }

    /// Start the API with extra flags, e.g. `&["--delay-ms", "300"]`.
    pub fn start_with(key: &str, extra_args: &[&str]) -> PaymentsApi {
        PaymentsApi::spawn(key, 0, extra_args)
    }

    /// Stop the API: its port then refuses connections.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port and key (without the extra flags of
    /// `start_with`), with no refunds recorded.
    pub fn restart(&mut self) {
        self.stop();
        *self = PaymentsApi::spawn(&self.key, self.port, &[]);
    }

    fn spawn(key: &str, port: u16, extra_args: &[&str]) -> PaymentsApi {
        let mut child = Command::new(binary())
            .args(["--port", &port.to_string(), "--api-key", key])
            .args(extra_args)
            .env_remove("PAYMENTS_API_KEY")
            .env("PAYMENTS_API_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn payments_api");

        // Collect stderr (the logs) for failure messages and `logs()`.
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }

        // The first stdout line names the port; keep draining afterwards.
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for line in lines {
                if line.is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(START_TIMEOUT);
        let mut api = PaymentsApi {
            child,
            port: 0,
            key: key.to_owned(),
            stderr,
        };
        let port = match &first {
            Ok(Some(Ok(line))) => line
                .strip_prefix(READY_PREFIX)
                .and_then(|p| p.trim().parse::<u16>().ok()),
            _ => None,
        };
        match port {
            Some(port) => api.port = port,
            None => {
                let status = api.child.try_wait().ok().flatten();
                // Give the stderr reader a moment to catch the last words.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "payments_api did not report its port (first stdout line: {first:?}, \
                     exit status: {status:?}); stderr:\n{}",
                    api.logs()
                );
            }
        }
        api
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The API key it accepts.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value of the `Authorization` header it accepts.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    /// What it logged on stderr so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Every refund recorded so far (`GET /refunds`), oldest first.
    pub async fn refunds(&self) -> Vec<Value> {
        let response = reqwest::Client::new()
            .get(format!("{}/refunds", self.url()))
            .header("Authorization", self.bearer())
            .send()
            .await
            .expect("GET /refunds");
        assert_eq!(response.status(), 200, "GET /refunds");
        let body: Value = response.json().await.expect("GET /refunds JSON");
        body["refunds"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("GET /refunds: no `refunds` array in {body}"))
    }
}

impl Drop for PaymentsApi {
    fn drop(&mut self) {
        self.stop();
    }
}
