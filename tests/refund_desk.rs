//! The refund-desk example (`examples/refund-desk/`) end to end: the proof of
//! issue "[governance]".
//!
//! Each test copies the example into a scratch directory, points its tool
//! specs at a real `payments_api` (the example binary, on a free port), runs
//! the real `tollgate --config <copy>/tollgate.yaml` and drives it through
//! rmcp's client over stdio and through the CLI (`approvals`, `receipts`,
//! `costs`, `policies`, `check`). Every claim is checked against the payments
//! API's own list of refunds, which never deduplicates: a refund tollgate let
//! through twice would show up there twice.

mod common;
#[path = "support/payments.rs"]
mod payments;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use common::{Client, call_params, receipt_id, stderr, stdout, text};
use payments::PaymentsApi;
use rmcp::ServiceExt;
use rmcp::model::{CallToolResult, MetaObject, RequestMetaObject};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

/// The example as shipped.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/refund-desk");
/// Where the shipped specs send requests; rewritten to the test API's port.
const SHIPPED_API: &str = "127.0.0.1:8088";
/// `db:` in the example's tollgate.yaml.
const DB_FILE: &str = "refund-desk.db";

// ---------------------------------------------------------------------------
// The desk: a copy of the example, its payments API and its secret.
// ---------------------------------------------------------------------------

/// A private copy of the refund desk wired to its own payments API.
struct Desk {
    dir: tempfile::TempDir,
    api: PaymentsApi,
    /// The payments API key, given to tollgate only as
    /// `TOLLGATE_SECRET_PAYMENTS_KEY`.
    key: String,
}

impl Desk {
    /// The example unchanged (apart from the API's port).
    fn start() -> Desk {
        Desk::start_with(&[], |_| {})
    }

    /// The example with `api_args` for the payments API and `edit` applied
    /// to the copied directory before anything runs.
    fn start_with(api_args: &[&str], edit: impl FnOnce(&Path)) -> Desk {
        let key = random_key();
        let api = PaymentsApi::start_with(&key, api_args);
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(Path::new(EXAMPLE), dir.path());
        let specs = dir.path().join("tool-specs");
        let port = format!("127.0.0.1:{}", api.port());
        for entry in std::fs::read_dir(&specs).expect("read tool-specs") {
            let path = entry.expect("dir entry").path();
            let yaml = std::fs::read_to_string(&path).expect("read spec");
            assert!(
                yaml.contains(SHIPPED_API),
                "{} no longer names {SHIPPED_API}",
                path.display()
            );
            std::fs::write(&path, yaml.replace(SHIPPED_API, &port)).expect("write spec");
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(dir.path().join(format!("{DB_FILE}{suffix}")));
        }
        edit(dir.path());
        Desk { dir, api, key }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self) -> PathBuf {
        self.path("tollgate.yaml")
    }

    fn db(&self) -> PathBuf {
        self.path(DB_FILE)
    }

    /// `tollgate --config <desk>/tollgate.yaml ARGS`, run from the desk with
    /// no TOLLGATE_* variable but the payments key.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.current_dir(self.dir.path());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TOLLGATE_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("TOLLGATE_SECRET_PAYMENTS_KEY", &self.key)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run tollgate")
    }

    /// Run and parse stdout as JSON; the command must succeed.
    fn run_json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tollgate {args:?} failed: {}",
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("tollgate {args:?}: not JSON ({e}): {}", stdout(&out)))
    }

    /// `serve --principal P` connected to rmcp's client; stderr discarded.
    async fn client(&self, principal: &str) -> Client {
        self.spawn_client(principal, false).await.0
    }

    /// Like [`Desk::client`] with `TOLLGATE_LOG=debug`; the handle yields
    /// everything the server wrote on stderr once it has exited.
    async fn logged_client(&self, principal: &str) -> (Client, tokio::task::JoinHandle<String>) {
        let (client, log) = self.spawn_client(principal, true).await;
        (client, log.expect("stderr captured"))
    }

    async fn spawn_client(
        &self,
        principal: &str,
        logged: bool,
    ) -> (Client, Option<tokio::task::JoinHandle<String>>) {
        let mut cmd = self.command(&["serve", "--principal", principal]);
        if logged {
            cmd.env("TOLLGATE_LOG", "debug")
                .env("TOLLGATE_LOG_FORMAT", "pretty");
        }
        let (transport, err) = TokioChildProcess::builder(tokio::process::Command::from(cmd))
            .stderr(if logged {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn tollgate serve");
        let log = err.map(|mut pipe| {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes).await;
                String::from_utf8_lossy(&bytes).into_owned()
            })
        });
        let client = ().serve(transport).await.expect("MCP handshake with tollgate");
        (client, log)
    }

    /// How many refunds the payments API recorded for `order`.
    async fn refunds_for(&self, order: &str) -> usize {
        self.api
            .refunds()
            .await
            .iter()
            .filter(|r| r["order_id"] == order)
            .count()
    }

    /// Every receipt in chain order, read straight from the SQLite file, with
    /// the governance columns.
    async fn receipts(&self) -> Vec<Value> {
        let opts = SqliteConnectOptions::new()
            .filename(self.db())
            .read_only(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .expect("open db");
        let rows = sqlx::query(
            "SELECT seq, id, principal, tool, args, decision, reason, outcome, result_excerpt, \
             cost_usd, policy_set, policies, approval_id, replay_of FROM receipts ORDER BY seq",
        )
        .fetch_all(&pool)
        .await
        .expect("query receipts");
        pool.close().await;
        rows.iter()
            .map(|r| {
                let policies = r
                    .get::<Option<String>, _>("policies")
                    .map(|p| serde_json::from_str::<Value>(&p).expect("policies is JSON"));
                json!({
                    "seq": r.get::<i64, _>("seq"),
                    "id": r.get::<String, _>("id"),
                    "principal": r.get::<Option<String>, _>("principal"),
                    "tool": r.get::<String, _>("tool"),
                    "args": r.get::<String, _>("args"),
                    "decision": r.get::<String, _>("decision"),
                    "reason": r.get::<Option<String>, _>("reason"),
                    "outcome": r.get::<String, _>("outcome"),
                    "result_excerpt": r.get::<Option<String>, _>("result_excerpt"),
                    "cost_usd": r.get::<Option<f64>, _>("cost_usd"),
                    "policy_set": r.get::<Option<String>, _>("policy_set"),
                    "policies": policies,
                    "approval_id": r.get::<Option<String>, _>("approval_id"),
                    "replay_of": r.get::<Option<String>, _>("replay_of"),
                })
            })
            .collect()
    }

    async fn receipt(&self, id: &str) -> Value {
        self.receipts()
            .await
            .into_iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no receipt {id}"))
    }

    /// The hash `tollgate policies history` reports; there must be exactly one.
    fn policy_set(&self) -> String {
        let history = self.run_json(&["policies", "history", "--json"]);
        let sets = history.as_array().expect("history is an array");
        assert_eq!(sets.len(), 1, "one policy set served: {history}");
        sets[0]["hash"].as_str().expect("hash").to_owned()
    }
}

/// The row of budget `name` in `tollgate costs --json` output.
fn budget_row(costs: &Value, name: &str) -> Value {
    costs["budgets"]
        .as_array()
        .expect("budgets")
        .iter()
        .find(|b| b["budget"] == name)
        .unwrap_or_else(|| panic!("no {name} budget: {costs}"))
        .clone()
}

/// `sk_test_` and 24 random hex digits: long and distinctive, so finding it
/// anywhere is a leak, not a coincidence.
fn random_key() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("random bytes");
    format!("sk_test_{}", hex::encode(bytes))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read example dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// MCP helpers.
// ---------------------------------------------------------------------------

async fn call(client: &Client, tool: &str, args: Value) -> CallToolResult {
    client
        .call_tool(call_params(tool, args))
        .await
        .expect("tools/call transport")
}

/// `tools/call` with a request `_meta` object.
async fn call_meta(client: &Client, tool: &str, args: Value, meta: Value) -> CallToolResult {
    let mut params = call_params(tool, args);
    let Value::Object(meta) = meta else {
        panic!("_meta must be an object")
    };
    params.meta = Some(RequestMetaObject(MetaObject(meta)));
    client
        .call_tool(params)
        .await
        .expect("tools/call transport")
}

async fn refund(client: &Client, order: &str, cents: u64) -> CallToolResult {
    call(
        client,
        "issue_refund",
        json!({"order_id": order, "amount_cents": cents, "reason": "Damaged in transit"}),
    )
    .await
}

/// A `_meta` string of the result.
fn meta<'a>(result: &'a CallToolResult, key: &str) -> Option<&'a str> {
    result.meta.as_ref()?.0.get(key)?.as_str()
}

/// `_meta["tollgate/decision"]`, which every result carries.
fn decision(result: &CallToolResult) -> &str {
    meta(result, "tollgate/decision")
        .unwrap_or_else(|| panic!("no tollgate/decision in {result:?}"))
}

fn is_error(result: &CallToolResult) -> bool {
    result.is_error == Some(true)
}

/// The refund the payments API answered with, as the client saw it.
fn refund_id(result: &CallToolResult) -> String {
    let structured = result
        .structured_content
        .as_ref()
        .unwrap_or_else(|| panic!("no structured content in {result:?}"));
    structured["refund_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no refund_id in {structured}"))
        .to_owned()
}

/// A successful refund result: not an error, decision `allowed`.
#[track_caller]
fn assert_refunded(result: &CallToolResult) -> String {
    assert!(!is_error(result), "refund failed: {}", text(result));
    assert_eq!(decision(result), "allowed", "{}", text(result));
    refund_id(result)
}

/// An error result whose text starts with `prefix`, under `decision`.
#[track_caller]
fn assert_refused(result: &CallToolResult, want_decision: &str, prefix: &str) {
    assert!(
        is_error(result),
        "expected a refusal, got: {}",
        text(result)
    );
    assert_eq!(decision(result), want_decision, "{}", text(result));
    assert!(
        text(result).starts_with(prefix),
        "expected `{prefix}…`, got: {}",
        text(result)
    );
}

// ---------------------------------------------------------------------------
// Idempotency.
// ---------------------------------------------------------------------------

/// A refund whose request never left (the payments API is down) is not
/// remembered under its idempotency key: the retry, once the API is back,
/// pays it, once.
#[tokio::test]
async fn a_refund_that_never_reached_the_api_is_paid_on_retry() {
    let mut desk = Desk::start();
    let agent = desk.client("agent-1").await;
    let args = json!({"order_id": "ord_1500", "amount_cents": 900, "reason": "Late delivery"});
    desk.api.stop();

    let down = call(&agent, "issue_refund", args.clone()).await;
    assert!(is_error(&down), "{}", text(&down));
    assert_eq!(decision(&down), "allowed");
    assert!(
        text(&down).starts_with("tool `issue_refund` did not start: POST http://127.0.0.1:")
            && text(&down).ends_with(
                "failed: could not connect: Connection refused; nothing was sent or run, so it is safe to retry"
            ),
        "{}",
        text(&down)
    );
    let receipt = desk.receipt(&receipt_id(&down)).await;
    assert_eq!(receipt["decision"], "allowed", "{receipt}");
    assert_eq!(receipt["outcome"], "not_run", "{receipt}");
    assert_eq!(
        receipt["cost_usd"],
        Value::Null,
        "nothing was charged: {receipt}"
    );

    // Back up: the same order is refunded now (the key was given back)…
    desk.api.restart();
    let paid = call(&agent, "issue_refund", args.clone()).await;
    assert_eq!(decision(&paid), "allowed", "{}", text(&paid));
    assert_refunded(&paid);
    assert_eq!(desk.receipt(&receipt_id(&paid)).await["outcome"], "ok");
    // …and only once: from here on the key holds this result.
    let again = call(&agent, "issue_refund", args).await;
    assert_eq!(decision(&again), "replayed", "{}", text(&again));
    assert_eq!(
        meta(&again, "tollgate/replay_of"),
        Some(receipt_id(&paid).as_str())
    );
    assert_eq!(desk.refunds_for("ord_1500").await, 1);
    // The call that never started costs nothing and uses no budget: one
    // refund's fee and one call, in the totals and in the budget.
    let costs = desk.run_json(&["costs", "--by", "principal", "--json"]);
    let rows = costs["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{costs}");
    assert_eq!(rows[0]["key"], "agent-1", "{costs}");
    assert_eq!(rows[0]["calls"], 1, "{costs}");
    assert!(
        (rows[0]["usd"].as_f64().expect("usd") - 0.3).abs() < 1e-9,
        "{costs}"
    );
    let budget = budget_row(&costs, "support-refunds");
    assert_eq!(budget["calls"], 1, "{budget}");
}

#[tokio::test]
async fn a_retried_refund_is_paid_once() {
    let desk = Desk::start();
    let agent = desk.client("agent-1").await;
    let args =
        json!({"order_id": "ord_1001", "amount_cents": 1200, "reason": "Damaged in transit"});

    let first = call(&agent, "issue_refund", args.clone()).await;
    let re = assert_refunded(&first);
    assert_eq!(meta(&first, "tollgate/replay_of"), None);

    // The agent retries (a timeout, say): the first result comes back.
    let second = call(&agent, "issue_refund", args.clone()).await;
    assert!(!is_error(&second), "{}", text(&second));
    assert_eq!(decision(&second), "replayed");
    assert_eq!(
        meta(&second, "tollgate/replay_of"),
        Some(receipt_id(&first).as_str())
    );
    assert_ne!(
        receipt_id(&second),
        receipt_id(&first),
        "a receipt of its own"
    );
    assert_eq!(text(&second), text(&first));
    assert_eq!(second.structured_content, first.structured_content);
    assert_eq!(refund_id(&second), re);
    assert_eq!(
        desk.refunds_for("ord_1001").await,
        1,
        "the API saw one refund"
    );

    // Same order, another amount: refused, not a second refund.
    let other = call(
        &agent,
        "issue_refund",
        json!({"order_id": "ord_1001", "amount_cents": 1300, "reason": "Damaged in transit"}),
    )
    .await;
    assert_refused(&other, "conflict", "idempotency conflict:");
    assert!(
        text(&other).contains(&receipt_id(&first)),
        "names the earlier receipt: {}",
        text(&other)
    );
    assert_eq!(desk.refunds_for("ord_1001").await, 1);

    // The spec's key (order_id) wins over a client key: a fresh client key
    // does not buy a second refund.
    let keyed = call_meta(
        &agent,
        "issue_refund",
        args.clone(),
        json!({"tollgate/idempotency_key": "a-new-key"}),
    )
    .await;
    assert_eq!(decision(&keyed), "replayed", "{}", text(&keyed));
    assert_eq!(
        meta(&keyed, "tollgate/replay_of"),
        Some(receipt_id(&first).as_str())
    );

    // Another principal retrying the same order gets the same answer: the
    // spec's key is scoped to the tool, not to the caller.
    let agent2 = desk.client("agent-2").await;
    let theirs = call(&agent2, "issue_refund", args).await;
    assert_eq!(decision(&theirs), "replayed", "{}", text(&theirs));
    assert_eq!(refund_id(&theirs), re);
    assert_eq!(desk.refunds_for("ord_1001").await, 1);

    // The receipts tell the same story.
    let r = desk.receipt(&receipt_id(&first)).await;
    assert_eq!(r["decision"], "allowed");
    assert_eq!(r["outcome"], "ok");
    assert_eq!(r["cost_usd"], 0.3);
    assert_eq!(r["replay_of"], Value::Null);
    for replay in [&second, &keyed, &theirs] {
        let r = desk.receipt(&receipt_id(replay)).await;
        assert_eq!(r["decision"], "replayed");
        assert_eq!(r["outcome"], "not_run");
        assert_eq!(r["cost_usd"], Value::Null, "a replay costs nothing");
        assert_eq!(r["replay_of"], receipt_id(&first));
    }
    let r = desk.receipt(&receipt_id(&other)).await;
    assert_eq!(r["decision"], "conflict");
    assert_eq!(r["outcome"], "not_run");
    assert_eq!(desk.api.refunds().await.len(), 1, "ord_1001, once");
    agent.cancel().await.ok();
    agent2.cancel().await.ok();
}

/// A client's own key (`_meta["tollgate/idempotency_key"]`), scoped to
/// principal and tool. Regression: rmcp moves a request's `_meta` into
/// `RequestContext::meta` when it decodes it, and `call_tool` once read only
/// `request.meta` (always empty), so every `_meta` key was ignored.
#[tokio::test]
async fn a_client_idempotency_key_replays_a_tool_without_a_spec_key() {
    let desk = Desk::start();
    let agent = desk.client("agent-1").await;
    let agent2 = desk.client("agent-2").await;
    assert_refunded(&refund(&agent, "ord_1001", 1200).await);
    // list_refunds once with key k1; the same key then returns the stored
    // list even after a new refund.
    let k1 = json!({"tollgate/idempotency_key": "k1"});
    let listed = call_meta(&agent, "list_refunds", json!({}), k1.clone()).await;
    assert_eq!(decision(&listed), "allowed", "{}", text(&listed));
    assert_eq!(listed_refunds(&listed), 1);
    assert_refunded(&refund(&agent, "ord_1002", 800).await);
    let again = call_meta(&agent, "list_refunds", json!({}), k1.clone()).await;
    assert_eq!(decision(&again), "replayed", "{}", text(&again));
    assert_eq!(
        meta(&again, "tollgate/replay_of"),
        Some(receipt_id(&listed).as_str())
    );
    assert_eq!(text(&again), text(&listed), "the stored list, one refund");
    assert_eq!(
        desk.receipt(&receipt_id(&again)).await["replay_of"],
        receipt_id(&listed)
    );
    // Without the key the list is fresh.
    let fresh = call(&agent, "list_refunds", json!({})).await;
    assert_eq!(decision(&fresh), "allowed");
    assert_eq!(listed_refunds(&fresh), 2);
    // Client keys are per principal: agent-2's k1 is its own.
    let theirs = call_meta(&agent2, "list_refunds", json!({}), k1).await;
    assert_eq!(decision(&theirs), "allowed", "{}", text(&theirs));
    assert_eq!(listed_refunds(&theirs), 2);
    // An empty key is refused.
    let empty = call_meta(
        &agent,
        "list_refunds",
        json!({}),
        json!({"tollgate/idempotency_key": ""}),
    )
    .await;
    assert!(is_error(&empty), "{}", text(&empty));
    assert!(
        text(&empty).contains("must be 1 to 255 bytes"),
        "{}",
        text(&empty)
    );
    agent.cancel().await.ok();
    agent2.cancel().await.ok();
}

/// How many refunds a `list_refunds` result lists.
fn listed_refunds(result: &CallToolResult) -> usize {
    result
        .structured_content
        .as_ref()
        .and_then(|s| s["refunds"].as_array())
        .unwrap_or_else(|| panic!("no refunds list in {}", text(result)))
        .len()
}

/// Send the same refund through `one` and `two` at the same moment.
async fn race(one: &Client, two: &Client, order: &str) -> [CallToolResult; 2] {
    let args = json!({"order_id": order, "amount_cents": 900, "reason": "Late delivery"});
    let (a, b) = tokio::join!(
        call(one, "issue_refund", args.clone()),
        call(two, "issue_refund", args)
    );
    [a, b]
}

/// The decisions of a race, sorted.
fn decisions(results: &[CallToolResult; 2]) -> [&str; 2] {
    let mut d = [decision(&results[0]), decision(&results[1])];
    d.sort_unstable();
    d
}

/// Two identical refunds at the same moment, from one client and from two
/// tollgate processes on one database: the payments API is paid once; one
/// call runs and the other waits for it and gets its result.
#[tokio::test]
async fn concurrent_identical_refunds_reach_the_api_once() {
    // The API takes 300 ms per refund, so the second call arrives while the
    // first is still running and must wait for it.
    let desk = Desk::start_with(&["--delay-ms", "300"], |_| {});
    let agent = desk.client("agent-1").await;
    let agent2 = desk.client("agent-2").await;
    for (order, other) in [("ord_race1", &agent), ("ord_race2", &agent2)] {
        let results = race(&agent, other, order).await;
        assert_eq!(
            decisions(&results),
            ["allowed", "replayed"],
            "{} / {}",
            text(&results[0]),
            text(&results[1])
        );
        let (ran, waited) = if decision(&results[0]) == "allowed" {
            (&results[0], &results[1])
        } else {
            (&results[1], &results[0])
        };
        assert!(!is_error(ran), "{}", text(ran));
        assert!(!is_error(waited), "{}", text(waited));
        assert_eq!(refund_id(waited), refund_id(ran));
        assert_eq!(
            meta(waited, "tollgate/replay_of"),
            Some(receipt_id(ran).as_str())
        );
        assert_eq!(desk.refunds_for(order).await, 1, "{order}");
    }
    assert_eq!(desk.api.refunds().await.len(), 2);
    agent.cancel().await.ok();
    agent2.cancel().await.ok();
}

/// Regression, 20 races: `dedupe::claim` reads the key (`running`), then
/// separately asks whether the key's receipt exists. If the first call
/// stored its result and committed its receipt in between, the duplicate
/// once concluded that call was *interrupted* (`idempotency conflict: an
/// earlier call with this idempotency key (receipt …) was interrupted`)
/// although it had finished fine: about 1 race in 100 on a loaded machine.
#[tokio::test]
async fn a_concurrent_duplicate_gets_the_running_calls_result() {
    let desk = Desk::start_with(&["--delay-ms", "300"], |_| {});
    let agent = desk.client("agent-1").await;
    let agent2 = desk.client("agent-2").await;
    for round in 0..10 {
        for (order, other) in [
            (format!("ord_same{round}"), &agent),
            (format!("ord_cross{round}"), &agent2),
        ] {
            let results = race(&agent, other, &order).await;
            assert_eq!(
                decisions(&results),
                ["allowed", "replayed"],
                "{order}: {} / {}",
                text(&results[0]),
                text(&results[1])
            );
            assert_eq!(refund_id(&results[0]), refund_id(&results[1]));
        }
    }
    assert_eq!(desk.api.refunds().await.len(), 20);
    agent.cancel().await.ok();
    agent2.cancel().await.ok();
}

// ---------------------------------------------------------------------------
// Approvals.
// ---------------------------------------------------------------------------

/// An approved refund whose request never reached the API does not use the
/// approval up: it is pending again, and the next approval pays it once.
#[tokio::test]
async fn an_approved_refund_that_could_not_start_is_pending_again() {
    let mut desk = Desk::start();
    let agent = desk.client("agent-1").await;
    let args = json!({"order_id": "ord_2500", "amount_cents": 8000, "reason": "Never arrived"});
    let asked = call(&agent, "issue_refund", args.clone()).await;
    assert_eq!(decision(&asked), "pending_approval", "{}", text(&asked));
    let approval = meta(&asked, "tollgate/approval_id")
        .expect("approval id")
        .to_owned();

    desk.api.stop();
    let first = desk.run(&["approvals", "approve", &approval, "--as", "fin-1"]);
    assert_eq!(
        first.status.code(),
        Some(1),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    let out = stdout(&first);
    assert!(out.contains("the call did not start; receipt: "), "{out}");
    assert!(
        out.contains("could not connect: Connection refused"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{approval} is pending again (until ")),
        "{out}"
    );
    let shown = desk.run_json(&["approvals", "show", &approval, "--json"]);
    assert_eq!(shown["status"], "pending", "{shown}");
    assert_eq!(shown["run_receipt"], Value::Null, "{shown}");
    // The requester hears that it still waits, not a stored failure.
    let waiting = call(&agent, "issue_refund", args.clone()).await;
    assert_eq!(decision(&waiting), "pending_approval", "{}", text(&waiting));

    desk.api.restart();
    let second = desk.run(&["approvals", "approve", &approval, "--as", "fin-1"]);
    assert_eq!(
        second.status.code(),
        Some(0),
        "{}{}",
        stdout(&second),
        stderr(&second)
    );
    assert_eq!(desk.refunds_for("ord_2500").await, 1);
    let repeat = call(&agent, "issue_refund", args).await;
    assert_eq!(decision(&repeat), "replayed", "{}", text(&repeat));
    assert_eq!(desk.refunds_for("ord_2500").await, 1);

    // The story keeps both attempts: approved, not started, approved, paid.
    let story = desk.run_json(&["receipts", "show", &receipt_id(&asked), "--json"]);
    let steps: Vec<(String, String)> = story["approval_story"]
        .as_array()
        .expect("approval_story")
        .iter()
        .map(|r| (r["decision"].to_string(), r["outcome"].to_string()))
        .collect();
    let want: Vec<(String, String)> = [
        ("pending_approval", "not_run"),
        ("approved", "not_run"),
        ("allowed", "not_run"),
        ("pending_approval", "not_run"),
        ("approved", "not_run"),
        ("allowed", "ok"),
        ("replayed", "not_run"),
    ]
    .iter()
    .map(|(d, o)| (format!("\"{d}\""), format!("\"{o}\"")))
    .collect();
    assert_eq!(steps, want);
}

#[tokio::test]
async fn a_large_refund_waits_for_finance() {
    let desk = Desk::start();
    let agent = desk.client("agent-1").await;
    let args =
        json!({"order_id": "ord_2002", "amount_cents": 7500, "reason": "Order never arrived"});

    let asked = call(&agent, "issue_refund", args.clone()).await;
    assert!(
        !is_error(&asked),
        "a normal result, not an error: {}",
        text(&asked)
    );
    assert_eq!(decision(&asked), "pending_approval");
    let approval = meta(&asked, "tollgate/approval_id")
        .expect("tollgate/approval_id in _meta")
        .to_owned();
    assert!(approval.starts_with("ap_"), "{approval}");
    let structured = asked
        .structured_content
        .clone()
        .expect("structured content");
    assert_eq!(structured["approval_id"], approval.as_str());
    assert_eq!(structured["status"], "pending_approval");
    assert_eq!(structured["approver_role"], "finance");
    assert!(text(&asked).contains("`finance`"), "{}", text(&asked));
    assert!(text(&asked).contains(&approval), "{}", text(&asked));
    assert_eq!(desk.refunds_for("ord_2002").await, 0, "nothing paid yet");

    // Asking again finds the same request.
    let again = call(&agent, "issue_refund", args.clone()).await;
    assert_eq!(decision(&again), "pending_approval");
    assert_eq!(
        meta(&again, "tollgate/approval_id"),
        Some(approval.as_str())
    );
    let list = desk.run_json(&["approvals", "list", "--json"]);
    let rows = list.as_array().expect("approvals array");
    assert_eq!(rows.len(), 1, "one request, not two: {list}");
    assert_eq!(rows[0]["id"], approval.as_str());
    assert_eq!(rows[0]["status"], "pending");
    assert_eq!(rows[0]["principal"], "agent-1");
    assert_eq!(rows[0]["approver_role"], "finance");
    assert_eq!(rows[0]["request_receipt"], receipt_id(&asked));

    // Four eyes: the requester cannot approve their own request…
    let own = desk.run(&["approvals", "approve", &approval, "--as", "agent-1"]);
    assert_eq!(own.status.code(), Some(1), "{}", stderr(&own));
    assert!(stderr(&own).contains("four eyes"), "{}", stderr(&own));
    // …nor can another support agent.
    let peer = desk.run(&["approvals", "approve", &approval, "--as", "agent-2"]);
    assert_eq!(peer.status.code(), Some(1), "{}", stderr(&peer));
    assert!(stderr(&peer).contains("`finance`"), "{}", stderr(&peer));
    assert_eq!(desk.refunds_for("ord_2002").await, 0);
    // Each refused attempt is evidence: a receipt named in the error.
    let mut refused = Vec::new();
    for (out, who) in [(&own, "agent-1"), (&peer, "agent-2")] {
        let err = stderr(out);
        let id = err
            .trim_end()
            .rsplit_once("this attempt is receipt ")
            .map(|(_, id)| id.to_owned())
            .unwrap_or_else(|| panic!("the refusal names its receipt: {err}"));
        let r = desk.run_json(&["receipts", "show", &id, "--json"]);
        assert_eq!(r["decision"], "approval_refused", "{r}");
        assert_eq!(r["outcome"], "not_run", "{r}");
        assert_eq!(r["principal"], who, "{r}");
        assert_eq!(r["approval_id"], approval.as_str(), "{r}");
        refused.push(id);
    }
    assert_eq!(
        desk.run_json(&["approvals", "list", "--json"])[0]["status"],
        "pending"
    );

    // Finance approves: the refund runs once, now.
    let ok = desk.run(&[
        "approvals",
        "approve",
        &approval,
        "--as",
        "fin-1",
        "--note",
        "ok",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    assert_eq!(desk.refunds_for("ord_2002").await, 1);
    let shown = desk.run_json(&["approvals", "show", &approval, "--json"]);
    assert_eq!(shown["status"], "approved");
    assert_eq!(shown["decided_by"], "fin-1");
    assert_eq!(shown["note"], "ok");
    let run_receipt = shown["run_receipt"]
        .as_str()
        .expect("run receipt")
        .to_owned();

    // The requester repeats the call and gets the stored result.
    let result = call(&agent, "issue_refund", args.clone()).await;
    assert!(!is_error(&result), "{}", text(&result));
    assert_eq!(decision(&result), "replayed");
    assert_eq!(
        meta(&result, "tollgate/replay_of"),
        Some(run_receipt.as_str())
    );
    assert_eq!(
        meta(&result, "tollgate/approval_id"),
        Some(approval.as_str())
    );
    let paid = desk.api.refunds().await;
    assert_eq!(paid.len(), 1);
    assert_eq!(refund_id(&result), paid[0]["refund_id"].as_str().unwrap());
    assert_eq!(paid[0]["amount_cents"], 7500);

    // The request receipt's story: request, repeat, approval, run, replay.
    let story = desk.run_json(&["receipts", "show", &receipt_id(&asked), "--json"]);
    let story = story["approval_story"].as_array().expect("approval_story");
    let steps: Vec<(&str, &str, &str)> = story
        .iter()
        .map(|r| {
            (
                r["decision"].as_str().unwrap(),
                r["principal"].as_str().unwrap(),
                r["id"].as_str().unwrap(),
            )
        })
        .collect();
    let ask_id = receipt_id(&asked);
    let again_id = receipt_id(&again);
    let result_id = receipt_id(&result);
    assert_eq!(steps.len(), 7, "{steps:?}");
    assert_eq!(steps[0], ("pending_approval", "agent-1", ask_id.as_str()));
    assert_eq!(steps[1], ("pending_approval", "agent-1", again_id.as_str()));
    assert_eq!(
        steps[2],
        ("approval_refused", "agent-1", refused[0].as_str())
    );
    assert_eq!(
        steps[3],
        ("approval_refused", "agent-2", refused[1].as_str())
    );
    assert_eq!((steps[4].0, steps[4].1), ("approved", "fin-1"));
    assert_eq!(steps[5], ("allowed", "agent-1", run_receipt.as_str()));
    assert_eq!(steps[6], ("replayed", "agent-1", result_id.as_str()));
    for r in story {
        assert_eq!(r["approval_id"], approval.as_str(), "linked: {r}");
    }
    assert!(
        story[4]["reason"].as_str().unwrap().ends_with(": ok"),
        "the note is receipted: {}",
        story[4]["reason"]
    );
    let run = &story[5];
    assert!(
        run["reason"].as_str().unwrap().contains("fin-1"),
        "the run names its approver: {}",
        run["reason"]
    );
    assert_eq!(run["outcome"], "ok");
    assert_eq!(run["cost_usd"], 0.3);
    // The text form says the same.
    let shown = desk.run(&["receipts", "show", &ask_id]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(
        stdout(&shown).contains(&format!("approval {approval}")),
        "{}",
        stdout(&shown)
    );

    // A denied request never runs, and the requester is told why.
    let denied_args =
        json!({"order_id": "ord_2003", "amount_cents": 6000, "reason": "Changed mind"});
    let asked = call(&agent, "issue_refund", denied_args.clone()).await;
    assert_eq!(decision(&asked), "pending_approval");
    let other = meta(&asked, "tollgate/approval_id").unwrap().to_owned();
    assert_ne!(other, approval);
    let no = desk.run(&[
        "approvals",
        "deny",
        &other,
        "--as",
        "fin-1",
        "--reason",
        "no",
    ]);
    assert_eq!(no.status.code(), Some(0), "{}", stderr(&no));
    let repeat = call(&agent, "issue_refund", denied_args).await;
    assert_refused(&repeat, "denied", "permission denied: approval ");
    assert_eq!(
        text(&repeat),
        format!("permission denied: approval `{other}` was denied by fin-1: no")
    );
    assert_eq!(desk.refunds_for("ord_2003").await, 0);
    // A denied request cannot be approved afterwards.
    let late = desk.run(&["approvals", "approve", &other, "--as", "fin-1"]);
    assert_eq!(late.status.code(), Some(1));
    assert!(
        stderr(&late).contains("denied, not pending"),
        "{}",
        stderr(&late)
    );
    assert_eq!(desk.api.refunds().await.len(), 1);
    agent.cancel().await.ok();
    // Two processes (serve, and the CLI deciding) wrote one intact chain.
    let verify = desk.run(&["receipts", "verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
}

#[tokio::test]
async fn two_approvers_at_once_run_the_refund_once() {
    let desk = Desk::start_with(&["--delay-ms", "200"], |dir| {
        let path = dir.join("principals.yaml");
        let yaml = std::fs::read_to_string(&path).unwrap();
        std::fs::write(path, yaml + "  fin-2:\n    roles: [finance]\n").unwrap();
    });
    let agent = desk.client("agent-1").await;
    let asked = refund(&agent, "ord_5005", 8000).await;
    assert_eq!(decision(&asked), "pending_approval", "{}", text(&asked));
    let id = meta(&asked, "tollgate/approval_id").unwrap().to_owned();
    let spawn = |who: &str| {
        desk.command(&["approvals", "approve", &id, "--as", who])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn approvals approve")
    };
    let (one, two) = (spawn("fin-1"), spawn("fin-2"));
    let outs = [
        one.wait_with_output().unwrap(),
        two.wait_with_output().unwrap(),
    ];
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    let winners = codes.iter().filter(|c| **c == Some(0)).count();
    assert_eq!(winners, 1, "exactly one approval wins: {codes:?}");
    let loser = outs.iter().find(|o| o.status.code() != Some(0)).unwrap();
    assert_eq!(loser.status.code(), Some(1));
    assert!(
        stderr(loser).contains("approved, not pending"),
        "{}",
        stderr(loser)
    );
    assert_eq!(desk.refunds_for("ord_5005").await, 1);
    let result = refund(&agent, "ord_5005", 8000).await;
    assert_eq!(decision(&result), "replayed", "{}", text(&result));
    assert_eq!(desk.api.refunds().await.len(), 1);
    agent.cancel().await.ok();
}

/// `_meta["tollgate/approval_id"]` names the request a call follows up
/// (regression: see [`a_client_idempotency_key_replays_a_tool_without_a_spec_key`]).
#[tokio::test]
async fn an_approval_id_in_meta_names_the_request() {
    let desk = Desk::start();
    let agent = desk.client("agent-1").await;
    let args = json!({"order_id": "ord_4004", "amount_cents": 7500, "reason": "Lost"});
    let asked = call(&agent, "issue_refund", args.clone()).await;
    assert_eq!(decision(&asked), "pending_approval", "{}", text(&asked));
    let id = meta(&asked, "tollgate/approval_id").unwrap().to_owned();
    let named = json!({"tollgate/approval_id": id});

    // Naming it with the same call finds it.
    let same = call_meta(&agent, "issue_refund", args.clone(), named.clone()).await;
    assert_eq!(decision(&same), "pending_approval");
    assert_eq!(meta(&same, "tollgate/approval_id"), Some(id.as_str()));
    // Naming it with other arguments is refused, not a new request.
    let other = call_meta(
        &agent,
        "issue_refund",
        json!({"order_id": "ord_4004", "amount_cents": 7600, "reason": "Lost"}),
        named.clone(),
    )
    .await;
    assert_refused(
        &other,
        "denied",
        &format!("permission denied: approval `{id}` is for a different call"),
    );
    // An id that does not exist.
    let unknown = call_meta(
        &agent,
        "issue_refund",
        args.clone(),
        json!({"tollgate/approval_id": "ap_00000000000000000000000000000000"}),
    )
    .await;
    assert_refused(
        &unknown,
        "denied",
        "permission denied: there is no approval `ap_0000",
    );
    let rows = desk.run_json(&["approvals", "list", "--json"]);
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");

    let ok = desk.run(&["approvals", "approve", &id, "--as", "fin-1"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let result = call_meta(&agent, "issue_refund", args, named).await;
    assert_eq!(decision(&result), "replayed", "{}", text(&result));
    assert_eq!(desk.refunds_for("ord_4004").await, 1);
    agent.cancel().await.ok();
}

// ---------------------------------------------------------------------------
// Policies.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn policies_decide_and_every_receipt_names_its_policy() {
    // One principal whose roles no policy mentions.
    let desk = Desk::start_with(&[], |dir| {
        let path = dir.join("principals.yaml");
        let yaml = std::fs::read_to_string(&path).unwrap();
        let yaml = yaml.replace(
            "roles:\n",
            "roles:\n  auditor: Reads the books; no refunds\n",
        ) + "  aud-1:\n    roles: [auditor]\n";
        std::fs::write(path, yaml).unwrap();
    });
    let agent = desk.client("agent-1").await;
    let fin = desk.client("fin-1").await;
    let auditor = desk.client("aud-1").await;

    // Support: up to 5000 directly, above that by approval.
    let small = refund(&agent, "ord_p1", 5000).await;
    assert_refunded(&small);
    let large = refund(&agent, "ord_p2", 5001).await;
    assert_eq!(decision(&large), "pending_approval", "{}", text(&large));
    // Finance: up to 100000 directly; 100001 is over the cap for everyone.
    let fin_max = refund(&fin, "ord_p3", 100_000).await;
    assert_refunded(&fin_max);
    let capped = refund(&fin, "ord_p4", 100_001).await;
    assert_refused(
        &capped,
        "denied",
        "permission denied: policy `refund-cap` forbids this call",
    );
    let capped_agent = refund(&agent, "ord_p5", 100_001).await;
    assert_refused(
        &capped_agent,
        "denied",
        "permission denied: policy `refund-cap` forbids this call",
    );
    assert_eq!(
        meta(&capped_agent, "tollgate/approval_id"),
        None,
        "no approval asked"
    );
    // No permit at all.
    let nobody = refund(&auditor, "ord_p6", 100).await;
    assert_refused(
        &nobody,
        "denied",
        "permission denied: no policy permits principal `aud-1` to call `issue_refund`",
    );
    let headers = call(&agent, "payments_debug_headers", json!({})).await;
    assert_refused(
        &headers,
        "denied",
        "permission denied: no policy permits principal `agent-1` to call `payments_debug_headers`",
    );

    let paid: Vec<(String, i64)> = desk
        .api
        .refunds()
        .await
        .iter()
        .map(|r| {
            (
                r["order_id"].as_str().unwrap().to_owned(),
                r["amount_cents"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        paid,
        [("ord_p1".to_owned(), 5000), ("ord_p3".to_owned(), 100_000)]
    );

    // Each receipt names the deciding policy, under the served set's hash.
    let set = desk.policy_set();
    assert_eq!(set.len(), 64, "{set}");
    let expect = [
        (&small, "allowed", "support-small-refunds"),
        (
            &large,
            "pending_approval",
            "support-large-refunds-need-finance",
        ),
        (&fin_max, "allowed", "finance-refunds"),
        (&capped, "denied", "refund-cap"),
        (&capped_agent, "denied", "refund-cap"),
    ];
    for (result, want, policy) in expect {
        let r = desk.receipt(&receipt_id(result)).await;
        assert_eq!(r["decision"], want, "{r}");
        assert_eq!(r["policies"], json!([policy]), "{r}");
        assert_eq!(r["policy_set"], set.as_str(), "{r}");
    }
    for refused in [&capped, &capped_agent, &nobody] {
        let r = desk.receipt(&receipt_id(refused)).await;
        assert_eq!(r["outcome"], "not_run");
        assert_eq!(
            r["reason"],
            text(refused),
            "the receipt gives the same reason"
        );
    }
    agent.cancel().await.ok();
    fin.cancel().await.ok();
    auditor.cancel().await.ok();
}

/// README (Policies): "Each receipt records that hash (`policy_set`) and the
/// ids of the policies that decided the call (`policies`): the permits that
/// allowed it, or the forbid that denied it (empty when nothing permitted
/// it)." A call that no policy permits is decided by the policy set too.
/// Regression: its receipt once had no `policy_set`.
#[tokio::test]
async fn a_denial_without_a_permit_records_the_policy_set() {
    let desk = Desk::start();
    let agent = desk.client("agent-1").await;
    let denied = call(&agent, "payments_debug_headers", json!({})).await;
    assert_refused(&denied, "denied", "permission denied: no policy permits");
    agent.cancel().await.ok();
    let r = desk.receipt(&receipt_id(&denied)).await;
    assert_eq!(r["policy_set"], desk.policy_set().as_str(), "{r}");
}

// ---------------------------------------------------------------------------
// Budgets and costs.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn support_may_issue_200_refunds_a_day() {
    let desk = Desk::start();
    let agent = desk.client("agent-1").await;
    let started = Instant::now();
    // 192 distinct small refunds, 8 at a time…
    let orders: Vec<String> = (1..=192).map(|i| format!("ord_b{i:03}")).collect();
    for batch in orders.chunks(8) {
        let results = futures::future::join_all(batch.iter().map(|o| refund(&agent, o, 100))).await;
        for r in &results {
            assert_refunded(r);
        }
    }
    assert_eq!(desk.api.refunds().await.len(), 192);
    // …then 16 at once for the last 8 places: exactly 8 get through.
    let last: Vec<String> = (193..=208).map(|i| format!("ord_b{i:03}")).collect();
    let results = futures::future::join_all(last.iter().map(|o| refund(&agent, o, 100))).await;
    let mut allowed = 0;
    for r in &results {
        match decision(r) {
            "allowed" => {
                assert!(!is_error(r), "{}", text(r));
                allowed += 1;
            }
            _ => assert_refused(r, "over_budget", "over budget:"),
        }
    }
    assert_eq!(allowed, 8, "the race for the last places");
    eprintln!(
        "208 refund calls through one MCP client took {:?}",
        started.elapsed()
    );
    assert_eq!(desk.api.refunds().await.len(), 200);

    let over = refund(&agent, "ord_b301", 100).await;
    assert_refused(&over, "over_budget", "over budget:");
    assert!(text(&over).contains("support-refunds"), "{}", text(&over));
    // Refused before it claimed its key for good: a retry is refused the
    // same way (not "still running", not a replay).
    let retry = refund(&agent, "ord_b301", 100).await;
    assert_refused(&retry, "over_budget", "over budget:");
    // A retry of a refund that ran still gets its result: nothing runs, so
    // the budget does not stand in the way.
    let replay = refund(&agent, "ord_b001", 100).await;
    assert_eq!(decision(&replay), "replayed", "{}", text(&replay));
    assert!(!is_error(&replay));
    // The budget is the role's: agent-2 is over it too…
    let peer = desk.run(&[
        "call",
        "issue_refund",
        "--principal",
        "agent-2",
        "--args",
        r#"{"order_id":"ord_b302","amount_cents":100,"reason":"x"}"#,
    ]);
    assert_eq!(peer.status.code(), Some(1));
    assert!(stderr(&peer).contains("over budget:"), "{}", stderr(&peer));
    assert_eq!(
        desk.api.refunds().await.len(),
        200,
        "call 201 never reached the API"
    );

    let costs = desk.run_json(&["costs", "--by", "principal", "--json"]);
    let rows = costs["rows"].as_array().expect("rows");
    let agent1 = rows
        .iter()
        .find(|r| r["key"] == "agent-1")
        .unwrap_or_else(|| panic!("no agent-1 row: {costs}"));
    assert_eq!(agent1["calls"], 200, "{costs}");
    let usd = agent1["usd"].as_f64().expect("usd");
    assert!((usd - 60.0).abs() < 1e-6, "0.30 × 200, got {usd}");
    assert!(
        rows.iter().all(|r| r["key"] == "agent-1"),
        "refused calls cost nothing: {costs}"
    );
    let budget = budget_row(&costs, "support-refunds");
    assert_eq!(budget["subject"], "support");
    assert_eq!(budget["calls"], 200);
    assert_eq!(budget["limit"]["calls"], 200);

    // …but finance is not capped by it.
    let fin = desk.run(&[
        "call",
        "issue_refund",
        "--principal",
        "fin-1",
        "--args",
        r#"{"order_id":"ord_b303","amount_cents":100,"reason":"x"}"#,
    ]);
    assert!(fin.status.success(), "{}", stderr(&fin));
    assert_eq!(desk.api.refunds().await.len(), 201);
    agent.cancel().await.ok();
}

// ---------------------------------------------------------------------------
// Secrets.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn the_payments_key_never_leaks() {
    let desk = Desk::start();
    let key = desk.key.clone();
    let (agent, agent_log) = desk.logged_client("agent-1").await;
    let (fin, fin_log) = desk.logged_client("fin-1").await;
    // Everything a client got back, as JSON text.
    let mut seen: Vec<String> = Vec::new();
    let keep = |seen: &mut Vec<String>, what: &CallToolResult| {
        seen.push(serde_json::to_string(what).expect("result as JSON"));
    };

    for client in [&agent, &fin] {
        let tools = client.list_all_tools().await.expect("tools/list");
        assert!(!tools.is_empty());
        seen.push(serde_json::to_string(&tools).unwrap());
    }
    let paid = refund(&agent, "ord_s1", 1500).await;
    assert_refunded(&paid);
    keep(&mut seen, &paid);
    keep(&mut seen, &refund(&agent, "ord_s1", 1500).await);
    keep(&mut seen, &refund(&agent, "ord_s1", 1600).await);
    keep(&mut seen, &call(&agent, "list_refunds", json!({})).await);
    keep(
        &mut seen,
        &call(&agent, "payments_debug_headers", json!({})).await,
    );
    let large = refund(&agent, "ord_s2", 9000).await;
    keep(&mut seen, &large);
    let approval = meta(&large, "tollgate/approval_id")
        .expect("approval id")
        .to_owned();
    let approved = desk
        .command(&["approvals", "approve", &approval, "--as", "fin-1"])
        .env("TOLLGATE_LOG", "debug")
        .output()
        .expect("run tollgate approvals approve");
    assert!(approved.status.success(), "{}", stderr(&approved));
    seen.push(stdout(&approved) + &stderr(&approved));
    keep(&mut seen, &refund(&agent, "ord_s2", 9000).await);
    keep(&mut seen, &refund(&fin, "ord_s3", 100_001).await);

    let headers = call(&fin, "payments_debug_headers", json!({})).await;
    assert!(!is_error(&headers), "{}", text(&headers));
    assert_eq!(decision(&headers), "allowed");
    assert!(
        text(&headers).contains("[redacted:PAYMENTS_KEY]"),
        "{}",
        text(&headers)
    );
    assert_eq!(
        headers.structured_content.as_ref().unwrap()["headers"]["authorization"],
        "Bearer [redacted:PAYMENTS_KEY]"
    );
    keep(&mut seen, &headers);
    // The key did reach the API: it refuses requests without it.
    assert_eq!(desk.api.refunds().await.len(), 2);

    agent.cancel().await.ok();
    fin.cancel().await.ok();
    let logs = [agent_log.await.unwrap(), fin_log.await.unwrap()];
    for log in &logs {
        assert!(log.contains("DEBUG"), "debug logging is on: {log}");
        assert!(
            !log.contains(&key),
            "the key is in tollgate's stderr:\n{log}"
        );
    }
    for (i, s) in seen.iter().enumerate() {
        assert!(
            !s.contains(&key),
            "client-visible output #{i} has the key: {s}"
        );
    }
    for args in [
        &["receipts", "list", "--json", "--limit", "1000"][..],
        &["approvals", "list", "--json"],
        &["costs", "--json"],
        &["policies", "history", "--json"],
    ] {
        let out = desk.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(!stdout(&out).contains(&key), "{args:?} prints the key");
        assert!(!stderr(&out).contains(&key), "{args:?} logs the key");
    }
    let receipts = desk.receipts().await;
    assert!(receipts.len() >= 10, "{}", receipts.len());
    for r in &receipts {
        let out = desk.run(&["receipts", "show", r["id"].as_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            !stdout(&out).contains(&key),
            "receipts show {} prints the key",
            r["id"]
        );
    }
    // No file of the desk holds it: the database, its WAL and shared memory
    // (whichever exist), and everything else.
    let files = files_under(desk.dir.path());
    assert!(files.contains(&desk.db()), "{files:?}");
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "{} holds the key",
            file.display()
        );
    }
}

// ---------------------------------------------------------------------------
// Bad input.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_policy_typo_stops_check_and_serve() {
    let desk = Desk::start_with(&[], |dir| {
        let path = dir.join("policies/refunds.cedar");
        let text = std::fs::read_to_string(&path).unwrap();
        let typo = "when { context.args.amount > 100000 };";
        let fixed = text.replace("when { context.args.amount_cents > 100000 };", typo);
        assert!(fixed.contains(typo), "the cap policy changed shape");
        std::fs::write(path, fixed).unwrap();
    });
    let text = std::fs::read_to_string(desk.path("policies/refunds.cedar")).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("context.args.amount >"))
        .unwrap()
        + 1;
    let at = format!("refunds.cedar:{line}");

    let check = desk.run(&["check"]);
    assert_eq!(check.status.code(), Some(1), "{}", stdout(&check));
    assert!(stderr(&check).contains(&at), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("`refund-cap`"),
        "{}",
        stderr(&check)
    );
    assert!(stderr(&check).contains("args.amount"), "{}", stderr(&check));

    let serve = desk.run(&["serve", "--principal", "agent-1"]);
    assert_eq!(serve.status.code(), Some(1), "{}", stderr(&serve));
    assert!(stderr(&serve).contains(&at), "{}", stderr(&serve));
    assert!(
        stderr(&serve).contains("`refund-cap`"),
        "{}",
        stderr(&serve)
    );
    assert!(
        stderr(&serve).contains("refusing to start"),
        "{}",
        stderr(&serve)
    );
    assert!(
        stdout(&serve).is_empty(),
        "no protocol output: {}",
        stdout(&serve)
    );
    // The first start was refused before the database was created.
    assert!(!desk.db().exists(), "{} was created", desk.db().display());
}

#[tokio::test]
async fn a_budget_for_a_principal_and_a_role_is_rejected() {
    let desk = Desk::start_with(&[], |dir| {
        let path = dir.join("tollgate.yaml");
        let yaml = std::fs::read_to_string(&path).unwrap();
        let both = yaml.replace(
            "    role: support\n",
            "    role: support\n    principal: agent-1\n",
        );
        assert_ne!(both, yaml, "the budget changed shape");
        std::fs::write(path, both).unwrap();
    });
    for args in [&["check"][..], &["serve", "--principal", "agent-1"]] {
        let out = desk.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("budgets[0]: give exactly one of `principal:` or `role:`"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(
            stdout(&out).lines().all(|l| !l.starts_with('{')),
            "{args:?}"
        );
    }
}

/// A tollgate `_meta` field of the wrong type makes the call invalid, with a
/// receipt, and nothing runs (regression: see
/// [`a_client_idempotency_key_replays_a_tool_without_a_spec_key`]).
#[tokio::test]
async fn a_malformed_idempotency_key_is_refused_and_receipted() {
    let desk = Desk::start();
    let agent = desk.client("agent-1").await;
    let args = json!({"order_id": "ord_m1", "amount_cents": 100, "reason": "x"});
    for (bad, kind) in [
        (json!(42), "a number"),
        (json!(["k"]), "an array"),
        (json!({"k": 1}), "an object"),
        (json!(true), "a boolean"),
    ] {
        let result = call_meta(
            &agent,
            "issue_refund",
            args.clone(),
            json!({"tollgate/idempotency_key": bad}),
        )
        .await;
        assert_refused(&result, "invalid", "malformed tools/call:");
        assert_eq!(
            text(&result),
            format!(
                "malformed tools/call: `_meta.tollgate/idempotency_key` must be a string, not {kind}"
            )
        );
        let r = desk.receipt(&receipt_id(&result)).await;
        assert_eq!(r["decision"], "invalid");
        assert_eq!(r["outcome"], "not_run");
        assert_eq!(r["principal"], "agent-1");
        assert_eq!(r["tool"], "issue_refund");
        assert_eq!(r["reason"], text(&result));
    }
    // A malformed approval id is refused the same way.
    let result = call_meta(
        &agent,
        "issue_refund",
        args.clone(),
        json!({"tollgate/approval_id": 7}),
    )
    .await;
    assert_refused(
        &result,
        "invalid",
        "malformed tools/call: `_meta.tollgate/approval_id` must be a string",
    );
    assert_eq!(desk.api.refunds().await.len(), 0, "nothing ran");
    // Nothing was claimed either: the well-formed call runs.
    assert_refunded(&call(&agent, "issue_refund", args).await);
    assert_eq!(desk.refunds_for("ord_m1").await, 1);
    agent.cancel().await.ok();
}
