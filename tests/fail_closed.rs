//! Fail closed: when receipts cannot be written, no call runs, every call
//! gets a clear error, /readyz turns red, and tollgate recovers by itself
//! once storage is back. Storage is taken away the way it goes away in
//! production: another process holds the database's write lock. (A
//! read-only file or a full disk fail the same transaction the same way; a
//! test cannot make them happen here, as CI runs as root in a container that
//! may not mount a small filesystem.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A tool that is not read-only and leaves a trace outside tollgate, so a
/// test can tell whether it ran.
fn touch_spec(marker: &std::path::Path) -> String {
    format!(
        "name: touch\ndescription: Appends a line to a file.\ninput_schema: {{type: object, properties: {{n: {{type: integer}}}}, required: [n], additionalProperties: false}}\nannotations: {{readOnlyHint: false}}\nallow: [admin]\nrun:\n  command:\n    argv: [sh, -c, 'echo ran >> {}']\n",
        marker.display()
    )
}

async fn readyz(server: &HttpTollgate) -> (u16, String) {
    let r = reqwest::get(format!("{}/readyz", server.base))
        .await
        .expect("readyz");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

async fn call_touch(server: &HttpTollgate, token: &str, n: i64) -> serde_json::Value {
    let body = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
        "params": {"name": "touch", "arguments": {"n": n}}});
    let r = post_mcp(server, Some(token), body.to_string(), &[]).await;
    r.json().await.expect("JSON reply")
}

fn lines(p: &std::path::Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_locked_database_refuses_calls_turns_readyz_red_and_recovers() {
    let f = Fixture::new();
    let marker = f.path("ran.txt");
    f.write_spec("touch", &touch_spec(&marker));
    std::fs::write(f.path("tollgate.yaml"), "http: {json_response: true}\n").unwrap();
    let (_, token) = f.create_key("alice", &[]);
    let server = HttpTollgate::start(&f, &["--config", "tollgate.yaml"]).await;
    let ok = call_touch(&server, &token, 1).await;
    assert_eq!(ok["result"]["isError"], json!(false), "{ok}");
    assert_eq!(lines(&marker), 1);
    assert_eq!(readyz(&server).await.0, 200);

    // Another process takes the write lock and keeps it.
    let db = f.db();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        conn.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();

    // The first call finds out the hard way (it waits the busy timeout);
    // its intent cannot be committed, so the tool does not run.
    let refused = call_touch(&server, &token, 2).await;
    let text = refused.to_string();
    assert!(
        text.contains("cannot write receipts") || text.contains("could not be committed"),
        "{refused}"
    );
    assert_eq!(lines(&marker), 1, "the tool ran without a record");
    let (status, why) = readyz(&server).await;
    assert_eq!(status, 503, "{why}");
    assert!(why.starts_with("receipts cannot be written"), "{why}");

    // While red, calls are refused at once with the reason.
    let started = Instant::now();
    let refused = call_touch(&server, &token, 3).await;
    assert!(
        refused
            .to_string()
            .contains("tollgate cannot write receipts right now"),
        "{refused}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "refusal waited {:?}",
        started.elapsed()
    );
    assert_eq!(lines(&marker), 1);

    // Storage comes back: tollgate notices by itself (writer heartbeat).
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(&server).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "readyz stayed red after the lock was released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ok = call_touch(&server, &token, 4).await;
    assert_eq!(ok["result"]["isError"], json!(false), "{ok}");
    assert_eq!(lines(&marker), 2);

    // Nothing was lost or forged: every committed receipt chains.
    drop(server);
    let out = f.run(&["receipts", "verify"]);
    assert!(out.status.success(), "{}", stdout(&out));
}
