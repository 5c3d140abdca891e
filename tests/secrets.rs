//! Server-side secrets end to end, through the real binary: values reach the
//! upstream, never the client, the receipts, the logs or `tools/list`; a
//! missing secret stops `check` and `serve`; a rotated secret file is used
//! without a restart.

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{any, get};
use axum::{Json, Router};
use common::*;
use rmcp::ServiceExt;
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

/// From the secrets directory; characters that URL encoding changes, so the
/// encoded forms an upstream echoes back must be caught as well.
const PAYMENTS_KEY: &str = "sk_live_4f9a+b/c=d7Q";
const PAYMENTS_KEY_ROTATED: &str = "sk_live_rotated_88Zx";
/// From the environment.
const PATH_TOKEN: &str = "path/tok 9c1e";
/// Also from the environment, deliberately short (warned about at load).
const PIN: &str = "4711";
const CARD: &str = "4111111111111111";

/// An upstream that echoes what it received and remembers each
/// Authorization header.
async fn upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    async fn echo(
        State(seen): State<Arc<Mutex<Vec<String>>>>,
        headers: HeaderMap,
        OriginalUri(uri): OriginalUri,
    ) -> Json<Value> {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        seen.lock().unwrap().push(auth.clone());
        Json(json!({"authorization": auth, "path": uri.path(), "query": uri.query()}))
    }
    let app = Router::new()
        .route("/echo/{*rest}", any(echo))
        .route(
            "/deny",
            get(|OriginalUri(uri): OriginalUri| async move {
                (StatusCode::FORBIDDEN, format!("bad key in {uri}"))
            }),
        )
        .with_state(seen.clone());
    (http_server(app).await, seen)
}

fn pay_spec(base: &str) -> String {
    format!(
        "name: pay
description: Charges a card through the payments API.
input_schema:
  type: object
  properties:
    card: {{ type: string, x-sensitive: true }}
    note: {{ type: string }}
  required: [card]
allow: [admin]
run:
  http:
    method: POST
    url: \"{base}/echo/{{{{ secret.PATH_TOKEN }}}}?k={{{{ secret.PAYMENTS_KEY }}}}\"
    headers: {{ Authorization: \"Bearer {{{{ secret.PAYMENTS_KEY }}}}\" }}
    body: {{ card: \"{{{{ args.card }}}}\", note: \"{{{{ args.note }}}}\" }}
"
    )
}

fn denied_spec(base: &str) -> String {
    format!(
        "name: pay_denied
description: An upstream that refuses and echoes the URL.
input_schema: {{ type: object }}
allow: [admin]
run:
  http:
    url: \"{base}/deny\"
    query: {{ k: \"{{{{ secret.PAYMENTS_KEY }}}}\" }}
"
    )
}

const SCRIPT: &str = "\
name: script
description: A program that prints its secret, on stdout and on failure.
input_schema:
  type: object
  properties:
    fail: { type: boolean }
allow: [admin]
run:
  command:
    argv: [sh, -c, 'echo \"token=$TOKEN pin=$PIN\"; [ \"$1\" = true ] && echo \"leaked $TOKEN\" >&2 && exit 3; exit 0', sh, '{{ args.fail }}']
    set_env: { TOKEN: '{{ secret.PAYMENTS_KEY }}', PIN: '{{ secret.PIN }}' }
";

/// A fixture with the three tools, `secrets_dir: secrets` in its config file
/// and PAYMENTS_KEY in that directory.
async fn fixture() -> (Fixture, Arc<Mutex<Vec<String>>>) {
    let (base, seen) = upstream().await;
    let f = Fixture::new();
    f.write_spec("pay", &pay_spec(&base));
    f.write_spec("pay_denied", &denied_spec(&base));
    f.write_spec("script", SCRIPT);
    std::fs::write(f.path("tollgate.yaml"), "secrets_dir: secrets\n").unwrap();
    std::fs::create_dir(f.path("secrets")).unwrap();
    std::fs::write(f.path("secrets/PAYMENTS_KEY"), format!("{PAYMENTS_KEY}\n")).unwrap();
    (f, seen)
}

/// `tollgate ARGS` with the environment secrets set.
fn command(f: &Fixture, args: &[&str]) -> std::process::Command {
    let mut cmd = f.command(args);
    cmd.env("TOLLGATE_SECRET_PATH_TOKEN", PATH_TOKEN)
        .env("TOLLGATE_SECRET_PIN", PIN)
        .env("TOLLGATE_LOG", "debug");
    cmd
}

/// `tollgate serve --principal alice` with its log written to `log`.
async fn serve(f: &Fixture, log: &std::path::Path) -> Client {
    let cmd = command(f, &["serve", "--principal", "alice"]);
    let file = std::fs::File::create(log).unwrap();
    let (transport, _) = TokioChildProcess::builder(tokio::process::Command::from(cmd))
        .stderr(std::process::Stdio::from(file))
        .spawn()
        .expect("spawn tollgate serve");
    ().serve(transport).await.expect("MCP handshake")
}

/// Every byte of the database, including its write-ahead log.
fn db_bytes(f: &Fixture) -> Vec<u8> {
    let mut bytes = std::fs::read(f.db()).unwrap();
    if let Ok(wal) = std::fs::read(f.path("tollgate.db-wal")) {
        bytes.extend(wal);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The secret values and their encoded forms, none of which may show.
fn forbidden() -> Vec<&'static str> {
    vec![
        PAYMENTS_KEY,
        PAYMENTS_KEY_ROTATED,
        "sk_live_4f9a%2Bb%2Fc%3Dd7Q",
        PATH_TOKEN,
        "path%2Ftok%209c1e",
    ]
}

#[tokio::test]
async fn secrets_reach_the_upstream_but_never_the_client_receipts_or_logs() {
    let (f, seen) = fixture().await;
    let log = f.path("serve.log");
    let client = serve(&f, &log).await;

    let tools = client.list_all_tools().await.unwrap();
    let listed = serde_json::to_string(&tools).unwrap();
    assert!(listed.contains("\"pay\""), "{listed}");
    for value in forbidden() {
        assert!(!listed.contains(value), "tools/list shows {value}");
    }

    // http: header, path and query carry secrets; the echo comes back redacted.
    let r = call(&client, "pay", json!({"card": CARD, "note": "n"})).await;
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        &format!("Bearer {PAYMENTS_KEY}")
    );
    let got = r.structured_content.clone().expect("structured echo");
    assert_eq!(got["authorization"], "Bearer [redacted:PAYMENTS_KEY]");
    assert_eq!(got["path"], "/echo/[redacted:PATH_TOKEN]");
    assert_eq!(got["query"], "k=[redacted:PAYMENTS_KEY]");
    assert!(
        text(&r).contains("Bearer [redacted:PAYMENTS_KEY]"),
        "{}",
        text(&r)
    );

    // An upstream error that echoes the URL (with the form-encoded key).
    let r = call(&client, "pay_denied", json!({})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).contains("bad key in /deny?k=[redacted:PAYMENTS_KEY]"),
        "{}",
        text(&r)
    );

    // command: set_env carries secrets; stdout and the failure message are redacted.
    let r = call(&client, "script", json!({"fail": false})).await;
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(
        text(&r),
        "token=[redacted:PAYMENTS_KEY] pin=[redacted:PIN]\n"
    );
    let r = call(&client, "script", json!({"fail": true})).await;
    assert_eq!(r.is_error, Some(true));
    assert!(
        text(&r).ends_with("leaked [redacted:PAYMENTS_KEY]"),
        "{}",
        text(&r)
    );

    // Rotation: the new file content is used by the next call, no restart.
    let tmp = f.path("secrets/.PAYMENTS_KEY.tmp");
    std::fs::write(&tmp, PAYMENTS_KEY_ROTATED).unwrap();
    std::fs::rename(&tmp, f.path("secrets/PAYMENTS_KEY")).unwrap();
    let r = call(&client, "pay", json!({"card": CARD})).await;
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        &format!("Bearer {PAYMENTS_KEY_ROTATED}")
    );
    assert_eq!(
        r.structured_content.unwrap()["authorization"],
        "Bearer [redacted:PAYMENTS_KEY]"
    );
    client.cancel().await.unwrap();

    let receipts = f.receipts().await;
    assert_eq!(receipts.len(), 5);
    let all = serde_json::to_string(&receipts).unwrap();
    assert!(all.contains("[redacted:PAYMENTS_KEY]"), "{all}");
    let bytes = db_bytes(&f);
    // Wait for the server to exit (and its log to be complete).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("call recorded"), "{logged}");
    assert!(
        logged.contains("PIN") && logged.contains("shorter than 8 bytes"),
        "{logged}"
    );
    for value in forbidden() {
        assert!(!all.contains(value), "a receipt holds {value}");
        assert!(!contains(&bytes, value), "the database file holds {value}");
        assert!(!logged.contains(value), "the log holds {value}:\n{logged}");
    }
}

#[tokio::test]
async fn check_lists_secrets_and_undefined_ones_stop_check_and_serve() {
    let (f, _) = fixture().await;
    let out = command(&f, &["check"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&out);
    assert!(
        listed.contains("secrets: PATH_TOKEN (defined), PAYMENTS_KEY (defined)"),
        "{listed}"
    );
    for value in forbidden() {
        assert!(!listed.contains(value) && !stderr(&out).contains(value));
    }

    std::fs::remove_file(f.path("secrets/PAYMENTS_KEY")).unwrap();
    // `secrets_dir` is relative to the config file, here ./tollgate.yaml.
    let hint = "hint: set TOLLGATE_SECRET_PAYMENTS_KEY or create secrets/PAYMENTS_KEY";
    let out = command(&f, &["check"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(
            "pay.yaml: field `run.http.headers.Authorization`: secret `PAYMENTS_KEY` is not defined"
        ),
        "{err}"
    );
    assert!(err.contains(hint), "{err}");
    assert!(
        err.contains("pay: secrets: PATH_TOKEN (defined), PAYMENTS_KEY (undefined)"),
        "{err}"
    );

    let out = command(&f, &["serve", "--principal", "alice"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("secret `PAYMENTS_KEY` is not defined") && err.contains("refusing to start"),
        "{err}"
    );
    // The environment alone is enough.
    let out = command(&f, &["check"])
        .env("TOLLGATE_SECRET_PAYMENTS_KEY", "from-the-environment")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn a_secret_may_not_choose_the_host() {
    let f = Fixture::new();
    f.write_spec(
        "hook",
        "name: hook\ndescription: d\ninput_schema: {type: object}\nallow: [admin]\nrun: {http: {url: 'https://{{ secret.HOST }}/x'}}\n",
    );
    let out = f
        .command(&["check"])
        .env("TOLLGATE_SECRET_HOST", "example.com")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("puts a placeholder in the scheme, host or port"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn sensitive_arguments_are_stored_as_keyed_hashes() {
    let (f, _) = fixture().await;
    let client = serve(&f, &f.path("serve.log")).await;
    let r = call(&client, "pay", json!({"card": CARD, "note": "visible"})).await;
    let id = receipt_id(&r);
    client.cancel().await.unwrap();
    let receipt = f.receipt(&id).await;
    let args: Value = serde_json::from_str(receipt["args"].as_str().unwrap()).unwrap();
    assert!(
        args["card"].as_str().unwrap().starts_with("hmac-sha256:"),
        "{args}"
    );
    assert_eq!(args["note"], "visible");
    assert!(!receipt["args"].as_str().unwrap().contains(CARD));
    assert!(
        !contains(&db_bytes(&f), CARD),
        "the database file holds the card"
    );
    let key = f.path("tollgate.db.hmac-key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(&key).unwrap().len(), 32);
}
