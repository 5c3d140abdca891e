//! Operator metrics, rendered in the Prometheus text format.
//!
//! Receipts answer "what happened to *this* call"; metrics answer "how is the
//! server doing". The rest of the code calls the small free functions below
//! at the moment something happens; they go through the [`metrics`] facade,
//! so they cost a registry lookup and an atomic add, and they are no-ops until
//! [`install`] has put a recorder in place (e.g. in `tollgate call` or in unit
//! tests that never install one).
//!
//! We serve `/metrics` ourselves from the HTTP server, so the exporter has no
//! listener of its own: [`install`] returns a [`PrometheusHandle`] whose
//! [`render`](PrometheusHandle::render) is the response body.
//!
//! # Metrics
//!
//! The names and labels are a public contract: dashboards and alerts are
//! written against them. Change one only with a changelog entry.
//!
//! | name | type | labels | meaning |
//! |------|------|--------|---------|
//! | `tollgate_calls_total` | counter | `tool`, `decision`, `outcome` | `tools/call` requests, by how they ended |
//! | `tollgate_call_duration_seconds` | histogram | `tool` | a whole call, from arrival to committed receipt |
//! | `tollgate_execution_duration_seconds` | histogram | `tool` | the executor run alone (only calls that ran) |
//! | `tollgate_receipt_commit_duration_seconds` | histogram | | one committed receipt transaction |
//! | `tollgate_receipt_batch_size` | histogram | | receipts in one committed transaction |
//! | `tollgate_receipt_writer_queue_depth` | gauge | | receipts still queued when the writer takes a batch |
//! | `tollgate_receipt_commit_failures_total` | counter | | receipts whose transaction failed (those calls got an error) |
//! | `tollgate_rate_limited_total` | counter | `tool`, `scope` | calls refused by a rate limit |
//! | `tollgate_auth_failures_total` | counter | `reason` | requests refused by authentication |
//! | `tollgate_active_sessions` | gauge | | open MCP sessions |
//! | `tollgate_build_info` | gauge | `version` | always 1; carries the version as a label |
//!
//! Label values:
//!
//! - `tool`: the name of a served tool, or `(unknown)`. The name of a tool
//!   that does not exist comes from the client, and every distinct label value
//!   is a new time series held forever; so only names we serve become labels.
//! - `decision`: `allowed`, `denied`, `rate_limited`, `invalid`, `unknown_tool`
//!   ([`Decision`]).
//! - `outcome`: `ok`, `error`, `timeout`, `not_run`, `interrupted` ([`Outcome`]).
//! - `scope`: `per_principal`, `global` ([`LimitScope`]).
//! - `reason`: a short, fixed label chosen by the authenticating code. It must
//!   be a `&'static str` so no client text can reach it.
//!
//! Durations are in seconds. A call takes ~100 µs, so the duration buckets
//! start at 50 µs ([`DURATION_BUCKETS`]).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ::metrics::{
    SharedString, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::receipt::{Decision, Outcome};

/// Counter: `tools/call` requests by `tool`, `decision` and `outcome`.
pub const CALLS_TOTAL: &str = "tollgate_calls_total";
/// Histogram: whole-call latency by `tool`, including the receipt commit.
pub const CALL_DURATION: &str = "tollgate_call_duration_seconds";
/// Histogram: executor run time by `tool`.
pub const EXECUTION_DURATION: &str = "tollgate_execution_duration_seconds";
/// Histogram: one receipt batch transaction, BEGIN to COMMIT.
pub const RECEIPT_COMMIT_DURATION: &str = "tollgate_receipt_commit_duration_seconds";
/// Histogram: receipts per committed transaction.
pub const RECEIPT_BATCH_SIZE: &str = "tollgate_receipt_batch_size";
/// Gauge: receipts waiting for the writer.
pub const RECEIPT_WRITER_QUEUE_DEPTH: &str = "tollgate_receipt_writer_queue_depth";
/// Counter: receipts whose transaction failed.
pub const RECEIPT_COMMIT_FAILURES: &str = "tollgate_receipt_commit_failures_total";
/// Counter: rate-limit refusals by `tool` and `scope`.
pub const RATE_LIMITED_TOTAL: &str = "tollgate_rate_limited_total";
/// Counter: authentication refusals by `reason`.
pub const AUTH_FAILURES_TOTAL: &str = "tollgate_auth_failures_total";
/// Gauge: open MCP sessions.
pub const ACTIVE_SESSIONS: &str = "tollgate_active_sessions";
/// Gauge: 1, labelled with the running `version`.
pub const BUILD_INFO: &str = "tollgate_build_info";
/// US dollars spent on calls since start, by tool (a gauge: counters are
/// integers, and a cent must add up exactly).
pub const SPEND_USD: &str = "tollgate_spend_usd";
/// A budget's running total in its current period, by budget, subject and unit.
pub const BUDGET_USED: &str = "tollgate_budget_used";
/// A budget's cap, by budget and unit.
pub const BUDGET_LIMIT: &str = "tollgate_budget_limit";

/// The `tool` label for a name we do not serve (see the module docs).
pub const UNKNOWN_TOOL_LABEL: &str = "(unknown)";

/// Upper bounds (seconds) of the latency buckets, 50 µs to 10 s.
///
/// Calls and commits usually take tens to hundreds of microseconds, so the low
/// end is dense; the top covers slow executors up to a typical timeout.
pub const DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the batch-size buckets: powers of two up to the writer's
/// largest batch ([`BATCH_MAX`](crate::store::writer::BATCH_MAX)).
pub const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often the background thread folds recorded histogram samples into
/// their buckets. Without a recorder-owned listener nobody else does it, and
/// samples would pile up in memory between scrapes (or forever, unscraped).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Which rate limit refused a call: the `scope` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// The limit on one principal's calls to one tool.
    PerPrincipal,
    /// The limit on all callers' calls to one tool.
    Global,
}

impl LimitScope {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitScope::PerPrincipal => "per_principal",
            LimitScope::Global => "global",
        }
    }
}

/// Install the process-wide recorder (once) and return a handle to render it.
///
/// Idempotent: every call after the first returns a handle to the same
/// recorder, so tests running in parallel in one process, and a server that
/// starts twice in one process, need not coordinate.
///
/// If something other than this function already installed a global recorder,
/// ours cannot be installed: the error is logged and the returned handle
/// renders an empty page, rather than taking the server down for the sake of
/// its metrics.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = match builder().install_recorder() {
                Ok(handle) => handle,
                Err(e) => {
                    tracing::error!(error = %e, "metrics are not recorded");
                    builder().build_recorder().handle()
                }
            };
            describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// The exporter configuration: histogram buckets, and nothing else.
fn builder() -> PrometheusBuilder {
    let with_buckets = |b: PrometheusBuilder, name: &str, buckets: &[f64]| {
        b.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
            .expect("bucket lists are non-empty constants")
    };
    let mut b = PrometheusBuilder::new();
    for name in [CALL_DURATION, EXECUTION_DURATION, RECEIPT_COMMIT_DURATION] {
        b = with_buckets(b, name, DURATION_BUCKETS);
    }
    with_buckets(b, RECEIPT_BATCH_SIZE, BATCH_SIZE_BUCKETS)
}

/// Give every metric its HELP text and unit, and set the constant ones.
///
/// Runs against whichever recorder is current, so tests can call it under a
/// local recorder.
fn describe() {
    describe_counter!(
        CALLS_TOTAL,
        Unit::Count,
        "tools/call requests, by tool, decision and outcome."
    );
    describe_histogram!(
        CALL_DURATION,
        Unit::Seconds,
        "Whole tools/call latency, including the receipt commit."
    );
    describe_histogram!(
        EXECUTION_DURATION,
        Unit::Seconds,
        "Time spent running the tool's executor."
    );
    describe_histogram!(
        RECEIPT_COMMIT_DURATION,
        Unit::Seconds,
        "Duration of one committed receipt batch transaction."
    );
    describe_histogram!(
        RECEIPT_BATCH_SIZE,
        Unit::Count,
        "Receipts written per committed transaction."
    );
    describe_gauge!(
        RECEIPT_WRITER_QUEUE_DEPTH,
        Unit::Count,
        "Receipts still queued for the writer when it took its last batch."
    );
    describe_counter!(
        RECEIPT_COMMIT_FAILURES,
        Unit::Count,
        "Receipts whose transaction failed; each of those calls got an error."
    );
    describe_counter!(
        RATE_LIMITED_TOTAL,
        Unit::Count,
        "Calls refused by a rate limit, by tool and scope."
    );
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        Unit::Count,
        "Requests refused by authentication, by reason."
    );
    describe_gauge!(ACTIVE_SESSIONS, Unit::Count, "Open MCP sessions.");
    describe_gauge!(
        SPEND_USD,
        "US dollars spent on calls since this process started (receipt cost_usd), by tool."
    );
    describe_gauge!(
        BUDGET_USED,
        "Budget used in the current period, by budget, subject and unit (calls or usd)."
    );
    describe_gauge!(
        BUDGET_LIMIT,
        "Budget cap, by budget and unit (calls or usd)."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version label says which tollgate is running."
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Fold histogram samples into buckets every [`UPKEEP_INTERVAL`].
///
/// A plain thread rather than a tokio task: `install` may run outside a
/// runtime, and this happens once per process.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("tollgate-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        // Rendering drains samples too, so scrapes still keep memory bounded.
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
    }
}

/// The `tool` label: the name only if we serve it (see the module docs).
fn tool_label(tool: &str, known_tool: bool) -> SharedString {
    if known_tool {
        // One allocation, shared by every metric of this call.
        SharedString::from(Arc::<str>::from(tool))
    } else {
        SharedString::const_str(UNKNOWN_TOOL_LABEL)
    }
}

/// One `tools/call` has ended (its receipt committed, or failed to).
///
/// `known_tool` says whether `tool` names a served tool; if not (or if the
/// decision is `unknown_tool`), the call is counted under `(unknown)`.
/// `exec` is the executor's run time, `None` when the call never reached
/// the executor (a tool that was tried but did not start has `Some`).
pub fn call_finished(
    tool: &str,
    known_tool: bool,
    decision: Decision,
    outcome: Outcome,
    total: Duration,
    exec: Option<Duration>,
) {
    let tool = tool_label(tool, known_tool && decision != Decision::UnknownTool);
    counter!(
        CALLS_TOTAL,
        "tool" => tool.clone(),
        "decision" => decision.as_str(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
    histogram!(CALL_DURATION, "tool" => tool.clone()).record(total);
    if let Some(exec) = exec {
        histogram!(EXECUTION_DURATION, "tool" => tool).record(exec);
    }
}

/// A call of the served tool `tool` cost `usd` dollars.
pub fn spent(tool: &str, usd: f64) {
    gauge!(SPEND_USD, "tool" => tool_label(tool, true)).increment(usd);
}

/// A budget's total after a call was charged to it.
pub fn budget_used(
    budget: &str,
    subject: &str,
    calls: i64,
    usd: f64,
    max_calls: Option<u64>,
    max_usd: Option<f64>,
) {
    let (b, s) = (budget.to_owned(), subject.to_owned());
    gauge!(BUDGET_USED, "budget" => b.clone(), "subject" => s.clone(), "unit" => "calls")
        .set(calls as f64);
    gauge!(BUDGET_USED, "budget" => b.clone(), "subject" => s, "unit" => "usd").set(usd);
    if let Some(max) = max_calls {
        gauge!(BUDGET_LIMIT, "budget" => b.clone(), "unit" => "calls").set(max as f64);
    }
    if let Some(max) = max_usd {
        gauge!(BUDGET_LIMIT, "budget" => b, "unit" => "usd").set(max);
    }
}

/// A rate limit refused a call to `tool`, a served tool (limits run after
/// the tool is resolved).
pub fn rate_limited(tool: &str, scope: LimitScope) {
    counter!(
        RATE_LIMITED_TOTAL,
        "tool" => tool_label(tool, true),
        "scope" => scope.as_str()
    )
    .increment(1);
}

/// Authentication refused a request. `reason` is a short fixed label such as
/// `missing_token` or `bad_token`: static, so client text cannot become one.
pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// An MCP session began.
pub fn session_opened() {
    gauge!(ACTIVE_SESSIONS).increment(1.0);
}

/// An MCP session ended. Call exactly once per [`session_opened`].
pub fn session_closed() {
    gauge!(ACTIVE_SESSIONS).decrement(1.0);
}

/// The writer committed one transaction of `size` receipts in `commit`.
pub fn receipt_batch(size: usize, commit: Duration) {
    histogram!(RECEIPT_COMMIT_DURATION).record(commit);
    histogram!(RECEIPT_BATCH_SIZE).record(size as f64);
}

/// `n` receipts were still queued when the writer took a batch.
pub fn writer_queue_depth(n: usize) {
    gauge!(RECEIPT_WRITER_QUEUE_DEPTH).set(n as f64);
}

/// A transaction of `n` receipts failed and was rolled back.
pub fn receipt_commit_failed(n: usize) {
    counter!(RECEIPT_COMMIT_FAILURES).increment(n as u64);
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    /// One sample line: metric name and its labels, sorted.
    type Series = (String, BTreeMap<String, String>);

    /// A parsed exposition page.
    #[derive(Debug, Default)]
    struct Page {
        samples: HashMap<Series, f64>,
        types: HashMap<String, String>,
        help: HashMap<String, String>,
    }

    impl Page {
        fn parse(text: &str) -> Page {
            let mut page = Page::default();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                    page.types.insert(name.into(), kind.into());
                } else if let Some(rest) = line.strip_prefix("# HELP ") {
                    let (name, help) = rest.split_once(' ').expect("HELP has text");
                    page.help.insert(name.into(), help.into());
                } else {
                    assert!(!line.starts_with('#'), "unexpected comment: {line}");
                    let (series, value) = line.rsplit_once(' ').expect("sample has a value");
                    let value: f64 = value.parse().expect("sample value is a number");
                    let prev = page.samples.insert(parse_series(series), value);
                    assert!(prev.is_none(), "duplicate series: {line}");
                }
            }
            page
        }

        fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
            let labels = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            self.samples.get(&(name.to_owned(), labels)).copied()
        }

        /// The value of a series that must exist.
        fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            self.get(name, labels).unwrap_or_else(|| {
                panic!("no series {name}{labels:?} in {:#?}", self.samples.keys())
            })
        }

        /// Every series of `name`.
        fn series(&self, name: &str) -> Vec<&BTreeMap<String, String>> {
            self.samples
                .keys()
                .filter(|(n, _)| n == name)
                .map(|(_, l)| l)
                .collect()
        }
    }

    /// `name{a="x",b="y"}` → name and labels (values may contain `\"`).
    fn parse_series(s: &str) -> Series {
        let Some((name, rest)) = s.split_once('{') else {
            return (s.to_owned(), BTreeMap::new());
        };
        let body = rest.strip_suffix('}').expect("labels end with }");
        let mut labels = BTreeMap::new();
        let mut chars = body.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "label value is quoted in {s}");
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.push(chars.next().expect("escape has a char")),
                    '"' => break,
                    c => value.push(c),
                }
            }
            labels.insert(key, value);
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        (name.to_owned(), labels)
    }

    /// Run `record` against a fresh recorder of our configuration and parse
    /// what it renders; isolated from the global recorder other tests share.
    fn render_local(record: impl FnOnce()) -> Page {
        let recorder = builder().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            describe();
            record();
        });
        Page::parse(&handle.render())
    }

    const MS: Duration = Duration::from_millis(1);
    const US: Duration = Duration::from_micros(1);

    #[test]
    fn calls_are_counted_and_timed_by_tool_decision_and_outcome() {
        let page = render_local(|| {
            call_finished(
                "echo",
                true,
                Decision::Allowed,
                Outcome::Ok,
                120 * US,
                Some(70 * US),
            );
            call_finished(
                "echo",
                true,
                Decision::Allowed,
                Outcome::Ok,
                3 * MS,
                Some(2 * MS),
            );
            call_finished(
                "echo",
                true,
                Decision::Denied,
                Outcome::NotRun,
                40 * US,
                None,
            );
            call_finished(
                "slow",
                true,
                Decision::Allowed,
                Outcome::Timeout,
                Duration::from_secs(11),
                Some(Duration::from_secs(11)),
            );
        });
        let calls = |tool, decision, outcome| {
            page.value(
                CALLS_TOTAL,
                &[("tool", tool), ("decision", decision), ("outcome", outcome)],
            )
        };
        assert_eq!(calls("echo", "allowed", "ok"), 2.0);
        assert_eq!(calls("echo", "denied", "not_run"), 1.0);
        assert_eq!(calls("slow", "allowed", "timeout"), 1.0);
        assert_eq!(page.series(CALLS_TOTAL).len(), 3);
        assert_eq!(page.types[CALLS_TOTAL], "counter");
        assert!(!page.help[CALLS_TOTAL].is_empty());

        // Cumulative buckets: 40 µs ≤ 50 µs; 120 µs ≤ 250 µs; 3 ms ≤ 5 ms.
        let bucket = |name: &str, tool, le| {
            page.value(&format!("{name}_bucket"), &[("tool", tool), ("le", le)])
        };
        assert_eq!(page.types[CALL_DURATION], "histogram");
        assert_eq!(bucket(CALL_DURATION, "echo", "0.00005"), 1.0);
        assert_eq!(bucket(CALL_DURATION, "echo", "0.0001"), 1.0);
        assert_eq!(bucket(CALL_DURATION, "echo", "0.00025"), 2.0);
        assert_eq!(bucket(CALL_DURATION, "echo", "0.0025"), 2.0);
        assert_eq!(bucket(CALL_DURATION, "echo", "0.005"), 3.0);
        assert_eq!(bucket(CALL_DURATION, "echo", "+Inf"), 3.0);
        assert_eq!(bucket(CALL_DURATION, "slow", "10"), 0.0);
        assert_eq!(bucket(CALL_DURATION, "slow", "+Inf"), 1.0);
        let count = |name: &str, tool| page.value(&format!("{name}_count"), &[("tool", tool)]);
        assert_eq!(count(CALL_DURATION, "echo"), 3.0);
        let sum = page.value(&format!("{CALL_DURATION}_sum"), &[("tool", "echo")]);
        assert!((sum - 0.00316).abs() < 1e-9, "{sum}");

        // Only calls that ran have an execution time.
        assert_eq!(count(EXECUTION_DURATION, "echo"), 2.0);
        assert_eq!(bucket(EXECUTION_DURATION, "echo", "0.0001"), 1.0);
        assert_eq!(page.types[EXECUTION_DURATION], "histogram");
        let le: Vec<&str> = page
            .series(&format!("{CALL_DURATION}_bucket"))
            .iter()
            .filter(|l| l["tool"] == "echo")
            .map(|l| l["le"].as_str())
            .collect();
        assert_eq!(le.len(), DURATION_BUCKETS.len() + 1, "{le:?}");
    }

    #[test]
    fn client_chosen_tool_names_never_become_labels() {
        let page = render_local(|| {
            for junk in ["no-such-tool", "x\"y", "another one"] {
                call_finished(
                    junk,
                    false,
                    Decision::UnknownTool,
                    Outcome::NotRun,
                    10 * US,
                    None,
                );
            }
            // Refused before resolve: the name was never checked.
            call_finished(
                "anything",
                false,
                Decision::Denied,
                Outcome::NotRun,
                10 * US,
                None,
            );
            // A decision of unknown_tool wins over a mistaken `known_tool`.
            call_finished(
                "ghost",
                true,
                Decision::UnknownTool,
                Outcome::NotRun,
                10 * US,
                None,
            );
        });
        let tools: Vec<&str> = page
            .series(CALLS_TOTAL)
            .iter()
            .map(|l| l["tool"].as_str())
            .collect();
        assert_eq!(tools, ["(unknown)", "(unknown)"], "{tools:?}");
        let labels = |decision| {
            [
                ("tool", "(unknown)"),
                ("decision", decision),
                ("outcome", "not_run"),
            ]
        };
        assert_eq!(page.value(CALLS_TOTAL, &labels("unknown_tool")), 4.0);
        assert_eq!(page.value(CALLS_TOTAL, &labels("denied")), 1.0);
        assert_eq!(
            page.value(&format!("{CALL_DURATION}_count"), &[("tool", "(unknown)")]),
            5.0
        );
    }

    #[test]
    fn limits_auth_and_sessions() {
        let page = render_local(|| {
            rate_limited("echo", LimitScope::PerPrincipal);
            rate_limited("echo", LimitScope::PerPrincipal);
            rate_limited("echo", LimitScope::Global);
            auth_failure("missing_token");
            auth_failure("bad_token");
            auth_failure("bad_token");
            session_opened();
            session_opened();
            session_opened();
            session_closed();
        });
        let limited = |scope| page.value(RATE_LIMITED_TOTAL, &[("tool", "echo"), ("scope", scope)]);
        assert_eq!(limited("per_principal"), 2.0);
        assert_eq!(limited("global"), 1.0);
        assert_eq!(page.types[RATE_LIMITED_TOTAL], "counter");
        let auth = |reason| page.value(AUTH_FAILURES_TOTAL, &[("reason", reason)]);
        assert_eq!(auth("missing_token"), 1.0);
        assert_eq!(auth("bad_token"), 2.0);
        assert_eq!(page.value(ACTIVE_SESSIONS, &[]), 2.0);
        assert_eq!(page.types[ACTIVE_SESSIONS], "gauge");
        assert_eq!(
            page.value(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
            1.0
        );
        assert_eq!(page.types[BUILD_INFO], "gauge");
    }

    #[test]
    fn the_receipt_writer_metrics() {
        let page = render_local(|| {
            receipt_batch(1, 80 * US);
            receipt_batch(300, 4 * MS);
            writer_queue_depth(700);
            writer_queue_depth(0);
            receipt_commit_failed(12);
        });
        let bucket = |name: &str, le| page.value(&format!("{name}_bucket"), &[("le", le)]);
        assert_eq!(bucket(RECEIPT_COMMIT_DURATION, "0.0001"), 1.0);
        assert_eq!(bucket(RECEIPT_COMMIT_DURATION, "0.005"), 2.0);
        assert_eq!(bucket(RECEIPT_BATCH_SIZE, "1"), 1.0);
        assert_eq!(bucket(RECEIPT_BATCH_SIZE, "256"), 1.0);
        assert_eq!(bucket(RECEIPT_BATCH_SIZE, "512"), 2.0);
        assert_eq!(page.value(&format!("{RECEIPT_BATCH_SIZE}_sum"), &[]), 301.0);
        assert_eq!(page.value(RECEIPT_WRITER_QUEUE_DEPTH, &[]), 0.0);
        assert_eq!(page.value(RECEIPT_COMMIT_FAILURES, &[]), 12.0);
        assert_eq!(page.types[RECEIPT_COMMIT_FAILURES], "counter");
        assert_eq!(page.types[RECEIPT_BATCH_SIZE], "histogram");
    }

    #[test]
    fn the_receipt_writer_reports_each_batch() {
        use crate::receipt::tests::sample;
        use crate::store::{Store, writer::ReceiptWriter};

        // A current-thread runtime keeps the writer task on this thread, so
        // it records into the thread-local recorder.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut stats = None;
        let page = render_local(|| {
            rt.block_on(async {
                let store = Store::open(&dir.path().join("t.db")).await.unwrap();
                let (writer, handle) = ReceiptWriter::spawn(&store);
                let commits = (0..40).map(|i| {
                    let writer = writer.clone();
                    async move {
                        let id = format!("0190a5f0-0000-7000-8000-{i:012}");
                        writer.commit(sample(&id)).await
                    }
                });
                for done in futures::future::join_all(commits).await {
                    done.unwrap();
                }
                // A duplicate id makes its batch fail.
                let dup = writer.commit(sample("0190a5f0-0000-7000-8000-000000000000"));
                assert!(dup.await.is_err());
                handle.shutdown().await;
                stats = Some(writer.stats());
            });
        });
        let stats = stats.unwrap();
        let batches = page.value(&format!("{RECEIPT_BATCH_SIZE}_count"), &[]);
        assert_eq!(batches, stats.batches as f64);
        assert_eq!(page.value(&format!("{RECEIPT_BATCH_SIZE}_sum"), &[]), 40.0);
        assert_eq!(
            page.value(&format!("{RECEIPT_COMMIT_DURATION}_count"), &[]),
            batches
        );
        assert_eq!(page.value(RECEIPT_COMMIT_FAILURES, &[]), 1.0);
        assert_eq!(page.value(RECEIPT_WRITER_QUEUE_DEPTH, &[]), 0.0);
    }

    #[test]
    fn every_metric_is_described() {
        let page = render_local(|| {
            call_finished("t", true, Decision::Allowed, Outcome::Ok, US, Some(US));
            rate_limited("t", LimitScope::Global);
            auth_failure("r");
            session_opened();
            receipt_batch(1, US);
            writer_queue_depth(1);
            receipt_commit_failed(1);
        });
        for name in [
            CALLS_TOTAL,
            CALL_DURATION,
            EXECUTION_DURATION,
            RECEIPT_COMMIT_DURATION,
            RECEIPT_BATCH_SIZE,
            RECEIPT_WRITER_QUEUE_DEPTH,
            RECEIPT_COMMIT_FAILURES,
            RATE_LIMITED_TOTAL,
            AUTH_FAILURES_TOTAL,
            ACTIVE_SESSIONS,
            BUILD_INFO,
        ] {
            assert!(page.help.contains_key(name), "no HELP for {name}");
            assert!(page.types.contains_key(name), "no TYPE for {name}");
        }
    }

    #[test]
    fn install_is_idempotent_and_shared() {
        // Other tests may install concurrently; all get the same recorder.
        let threads: Vec<_> = (0..4).map(|_| std::thread::spawn(install)).collect();
        let handles: Vec<PrometheusHandle> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        // A label no other test uses, so parallel tests cannot disturb the count.
        rate_limited("install-test-tool", LimitScope::Global);
        for handle in handles.iter().chain([&install()]) {
            let page = Page::parse(&handle.render());
            assert_eq!(
                page.value(
                    RATE_LIMITED_TOTAL,
                    &[("tool", "install-test-tool"), ("scope", "global")]
                ),
                1.0
            );
            assert_eq!(
                page.value(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))]),
                1.0
            );
        }
    }
}
