//! In-process costs of a governed call, without any transport:
//!
//! - `pipeline/echo`: one `Pipeline::call` on the shipped `echo` static tool,
//!   alone (`sequential`) and 32 at a time (`concurrent_32`), each including
//!   its receipt's commit through the real writer on a temporary SQLite file.
//! - `writer/commit_64`: receipts appended per second by the writer alone,
//!   with 64 concurrent committers.
//! - `receipt/chain_hash`: canonical JSON + SHA-256 of one receipt.
//! - `store/verify_chain`: `Store::verify_chain` over 200,000 receipts.
//!
//! `cargo bench --bench pipeline` (about 1.5 min on 2 cores). Figures and
//! context: BENCHMARKS.md. The `echo` spec is the one in `tool-specs/`, with its
//! rate limit raised to 1,000,000/second so the limiter still runs but never refuses.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use tollgate::catalog::{Catalog, compile};
use tollgate::pipeline::{CallMeta, CallRequest, Governance, Identity, Origin, Pipeline};
use tollgate::principals::Principals;
use tollgate::receipt::{Decision, NewReceipt, Outcome, chain_hash};
use tollgate::spec::ToolSpec;
use tollgate::spec::model::{Rate, RateLimits};
use tollgate::store::{ReceiptWriter, Store};

/// Receipts in the chain that `store/verify_chain` checks.
const VERIFY_RECEIPTS: usize = 200_000;
/// Concurrent committers in `writer/commit_64`.
const COMMITTERS: usize = 64;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn manifest(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The shipped echo spec, with a limit that never refuses.
fn echo_tool() -> tollgate::catalog::CompiledTool {
    let text = std::fs::read_to_string(manifest("tool-specs/echo.yaml")).expect("echo spec");
    let mut spec: ToolSpec = serde_norway::from_str(&text).expect("echo spec parses");
    spec.rate_limit = Some(RateLimits {
        per_principal: Some(Rate {
            rate: "1000000/second".into(),
            burst: Some(1_000_000),
        }),
        global: None,
    });
    let client = tollgate::executor::http_client().expect("http client");
    compile(spec, None, &client).expect("echo spec compiles")
}

struct Setup {
    pipeline: Arc<Pipeline>,
    _dir: tempfile::TempDir,
}

async fn pipeline() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("bench.db"))
        .await
        .expect("store");
    let (writer, _handle) = ReceiptWriter::spawn(&store);
    let principals = Principals::load(&manifest("principals.yaml")).expect("principals");
    let catalog = Catalog::from_tools([echo_tool()]);
    let governance = Governance::allow_lists(&catalog, store.clone());
    let pipeline = Pipeline::new(
        Arc::new(catalog),
        Arc::new(principals),
        writer,
        1 << 20,
        governance,
    );
    Setup {
        pipeline: Arc::new(pipeline),
        _dir: dir,
    }
}

fn echo_request() -> CallRequest {
    let Value::Object(args) = json!({"message": "hi"}) else {
        unreachable!()
    };
    CallRequest {
        tool: "echo".into(),
        arguments: Some(args),
        meta: CallMeta::default(),
    }
}

async fn one_call(p: &Pipeline, who: &Identity) {
    let origin = Origin {
        transport: "bench".into(),
        session: None,
    };
    let reply = p.call(who, origin, echo_request()).await;
    assert!(reply.body.is_ok(), "echo refused: {:?}", reply.body.err());
}

fn bench_pipeline(c: &mut Criterion) {
    let rt = runtime();
    let setup = rt.block_on(pipeline());
    let who = Identity::local("alice", "bench");
    let mut g = c.benchmark_group("pipeline/echo");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));

    g.throughput(Throughput::Elements(1));
    g.bench_function("sequential", |b| {
        b.to_async(&rt).iter(|| one_call(&setup.pipeline, &who))
    });

    // 32 calls in flight, as tasks (as rmcp runs them): throughput per call.
    let n = 32;
    g.throughput(Throughput::Elements(n as u64));
    g.bench_with_input(BenchmarkId::new("concurrent", n), &n, |b, &n| {
        b.to_async(&rt).iter(|| async {
            let calls: Vec<_> = (0..n)
                .map(|_| {
                    let p = setup.pipeline.clone();
                    let who = who.clone();
                    tokio::spawn(async move { one_call(&p, &who).await })
                })
                .collect();
            for call in calls {
                call.await.expect("call task");
            }
        })
    });
    g.finish();
    let stats = setup.pipeline.writer.stats();
    eprintln!(
        "pipeline writer: {} receipts in {} transactions (largest batch {})",
        stats.receipts, stats.batches, stats.largest_batch
    );
}

/// A typical allowed `echo` receipt, as the pipeline would write it.
fn receipt(i: usize) -> NewReceipt {
    NewReceipt {
        id: uuid::Uuid::now_v7().to_string(),
        ts: "2026-11-21T22:56:13.123456Z".to_owned(),
        principal: Some("alice".to_owned()),
        roles: vec!["admin".to_owned(), "support".to_owned()],
        auth: "api_key:3f9a1c0b7d2e".to_owned(),
        transport: "http".to_owned(),
        session: Some("0190a5f0-0000-7000-8000-000000000001".to_owned()),
        tool: "echo".to_owned(),
        version: Some(1),
        spec_hash: Some("ab".repeat(32)),
        args: json!({"message": format!("hi {i}")}),
        decision: Decision::Allowed,
        reason: Some("allowed by role `admin`".to_owned()),
        outcome: Outcome::Ok,
        result_digest: Some("cd".repeat(32)),
        result_excerpt: Some(format!("hi {i}")),
        duration_us: 120,
        cost_usd: None,
        policy_set: Some("ef".repeat(32)),
        policies: vec!["spec:echo:allow:admin".to_owned()],
        approval_id: None,
        replay_of: None,
    }
}

/// Commit `total` receipts from `COMMITTERS` tasks; returns the wall time.
async fn commit_concurrently(writer: &ReceiptWriter, total: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..COMMITTERS)
        .map(|t| {
            let writer = writer.clone();
            // Spread `total` as evenly as possible.
            let mine = total / COMMITTERS + usize::from(t < total % COMMITTERS);
            tokio::spawn(async move {
                for i in 0..mine {
                    writer.commit(receipt(i)).await.expect("commit");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("committer task");
    }
    started.elapsed()
}

fn bench_writer(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, writer) = rt.block_on(async {
        let store = Store::open(&dir.path().join("writer.db"))
            .await
            .expect("store");
        let (writer, _handle) = ReceiptWriter::spawn(&store);
        (store, writer)
    });
    let mut g = c.benchmark_group("writer");
    g.measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10)
        .throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("commit", COMMITTERS), |b| {
        b.to_async(&rt)
            .iter_custom(|iters| commit_concurrently(&writer, iters as usize))
    });
    g.finish();
    let stats = writer.stats();
    eprintln!(
        "writer: {} receipts in {} transactions (mean batch {:.0}, largest {})",
        stats.receipts,
        stats.batches,
        stats.receipts as f64 / stats.batches.max(1) as f64,
        stats.largest_batch
    );
    drop(store);
}

fn bench_chain_hash(c: &mut Criterion) {
    let r = receipt(7);
    let prev = "ef".repeat(32);
    // The hashed text, built the slow, obvious way (as the receipt tests do).
    let content = tollgate::canonical::to_string(&serde_json::to_value(&r).expect("receipt json"));
    let hashed = format!("{prev}\n{content}");
    let mut g = c.benchmark_group("receipt");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(1));
    g.bench_function("chain_hash", |b| b.iter(|| chain_hash(&prev, &r)));
    // Its parts: canonical JSON of the arguments, and SHA-256 of the whole text.
    g.bench_function("canonical_args", |b| {
        b.iter(|| tollgate::canonical::to_string(&r.args))
    });
    g.bench_function(BenchmarkId::new("sha256_hex", hashed.len()), |b| {
        b.iter(|| tollgate::canonical::sha256_hex(hashed.as_bytes()))
    });
    g.finish();
}

fn bench_verify(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    // Filled on first use, so `cargo bench -- receipt` skips the 10 s setup.
    let mut store: Option<Store> = None;
    let mut g = c.benchmark_group("store");
    g.measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(10)
        .throughput(Throughput::Elements(VERIFY_RECEIPTS as u64));
    g.bench_function(BenchmarkId::new("verify_chain", VERIFY_RECEIPTS), |b| {
        let store = store.get_or_insert_with(|| rt.block_on(filled_store(dir.path())));
        b.to_async(&rt).iter(|| async {
            let report = store.verify_chain().await.expect("verify");
            assert_eq!(report.checked as usize, VERIFY_RECEIPTS);
            assert!(report.first_bad.is_none());
        })
    });
    g.finish();
}

/// A database holding `VERIFY_RECEIPTS` receipts, written by the real writer.
async fn filled_store(dir: &Path) -> Store {
    let store = Store::open(&dir.join("verify.db")).await.expect("store");
    let (writer, handle) = ReceiptWriter::spawn(&store);
    let took = commit_concurrently(&writer, VERIFY_RECEIPTS).await;
    handle.shutdown().await;
    eprintln!(
        "verify setup: wrote {VERIFY_RECEIPTS} receipts in {:.1} s",
        took.as_secs_f64()
    );
    store
}

criterion_group!(
    benches,
    bench_pipeline,
    bench_writer,
    bench_chain_hash,
    bench_verify
);
criterion_main!(benches);
