//! Raw JSON-RPC over stdio: what a third-party client sees, byte for byte.
//! Unknown methods must get an error promptly, never silence.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

struct Raw {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Raw {
    fn start(f: &Fixture) -> Raw {
        let mut child = f
            .command(&["serve", "--principal", "alice"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Raw { child, out }
    }

    fn send(&mut self, msg: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(msg.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    fn recv(&mut self) -> Value {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("stdout is not JSON-RPC ({e}): {line:?}"))
    }

    fn initialize(&mut self) {
        self.send(&json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}).to_string());
        let init = self.recv();
        assert_eq!(init["result"]["serverInfo"]["name"], "tollgate");
        assert!(init["result"]["capabilities"]["tools"].is_object());
        self.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("server answered within 20 s")
}

#[test]
fn unknown_methods_get_method_not_found_and_the_session_goes_on() {
    let f = Fixture::new();
    let mut raw = Raw::start(&f);
    let (mut raw, f) = with_deadline(move || {
        raw.initialize();
        raw.send(r#"{"jsonrpc":"2.0","id":2,"method":"frobnicate/now","params":{}}"#);
        let reply = raw.recv();
        assert_eq!(reply["id"], 2);
        assert_eq!(reply["error"]["code"], -32601, "{reply}");
        raw.send(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#);
        let pong = raw.recv();
        assert_eq!(pong["id"], 3);
        assert!(pong["result"].is_object(), "{pong}");
        raw.send(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"echo","arguments":{"message":"still here"}}}"#);
        let call = raw.recv();
        assert_eq!(call["result"]["content"][0]["text"], "still here", "{call}");
        assert!(call["result"]["_meta"]["tollgate/receipt_id"].is_string());
        (raw, f)
    });
    raw.send("");
    drop(raw);
    drop(f);
}

#[test]
fn server_discover_opener_gets_an_answer_not_silence() {
    // The Python SDK 2.x opens with `server/discover` and falls back to
    // `initialize` on any JSON-RPC error. Either a result or an error is fine;
    // silence is not.
    let f = Fixture::new();
    let mut raw = Raw::start(&f);
    let reply = with_deadline(move || {
        raw.send(r#"{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{}}"#);
        let reply = raw.recv();
        // Fall back exactly as that client does, on the same connection.
        raw.initialize();
        reply
    });
    assert_eq!(reply["id"], 1);
    assert!(
        reply.get("result").is_some() || reply.get("error").is_some(),
        "{reply}"
    );
    drop(f);
}

#[test]
fn stdout_carries_only_protocol_even_when_logging_is_verbose() {
    let f = Fixture::new();
    let mut child = f
        .command(&["serve", "--principal", "alice"])
        .env("TOLLGATE_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut raw = Raw { child, out };
    with_deadline(move || {
        raw.initialize();
        raw.send(r#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#);
        let list = raw.recv();
        assert_eq!(list["result"]["tools"][0]["name"], "echo");
    });
    drop(f);
}

#[test]
fn json_logs_carry_the_receipt_id_of_each_call() {
    let f = Fixture::new();
    let out = f
        .command(&[
            "--log-format",
            "json",
            "call",
            "echo",
            "--principal",
            "alice",
            "--args",
            r#"{"message":"x"}"#,
        ])
        .env("TOLLGATE_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let receipt = stderr(&out)
        .lines()
        .find_map(|l| l.strip_prefix("receipt: ").map(str::to_string))
        .unwrap();
    let recorded: Vec<Value> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "call recorded")
        .collect();
    assert_eq!(recorded.len(), 1, "{}", stderr(&out));
    assert_eq!(recorded[0]["span"]["receipt_id"], receipt.as_str());
    assert_eq!(recorded[0]["fields"]["decision"], "allowed");
}
