//! The speed targets of the "[proof]" issue, measured in process.
//!
//! ```text
//! cargo bench --bench proof                 # every section, RUNS=5
//! cargo bench --bench proof -- writer       # one or more sections:
//!                                           #   writer verify list startup limiter
//! RUNS=3 WRITER_RECEIPTS=20000 cargo bench --bench proof -- writer
//! ```
//!
//! Each section runs its variants interleaved (round 1: A, B, C; round 2: A,
//! B, C; ...) and prints the median of the rounds and, where there is a
//! baseline, the median of the per-round ratios. The machine is shared, so
//! single rounds are noisy; see BENCHMARKS.md.
//!
//! - `writer`: receipts appended per second by [`ReceiptWriter`] with 64 and
//!   512 concurrent committers, against a copy of the previous writer (a tokio
//!   task on the sqlx pool, one multi-row INSERT per batch) on the previous
//!   schema (with the `receipts_decision` index).
//! - `verify`: `Store::verify_chain` on one thread and on all cores, over a
//!   database of 1,000,000 receipts written by the real writer (cached under
//!   `target/proof-bench/`).
//! - `list`: `Store::list_receipts --principal X --limit 20` on a database of
//!   10,000,000 receipts (built once with direct rusqlite INSERTs and correct
//!   chain hashes, cached under `target/proof-bench/`; ~4 GB), plus the
//!   `tollgate receipts list` binary's wall time when `target/release/tollgate`
//!   exists, and one verify of the whole 10M chain.
//! - `startup`: `check_dir` and `Catalog::load` on 1,000 generated spec files,
//!   and, with the release binary (when built), `tollgate check`'s wall time
//!   and the time `tollgate serve --http` takes to answer 200 on `/readyz`.
//! - `limiter`: VmRSS of a fresh process before and after 100,000 distinct
//!   principals pass the per-principal rate limiter.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tokio::runtime::Runtime;

use tollgate::catalog::{Catalog, check_dir, compile};
use tollgate::pipeline::{Identity, Limiter, authenticate};
use tollgate::principals::Principals;
use tollgate::receipt::{Decision, GENESIS_HASH, NewReceipt, Outcome, chain_hash};
use tollgate::secrets::Secrets;
use tollgate::spec::ToolSpec;
use tollgate::spec::model::{Rate, RateLimits};
use tollgate::store::{ReceiptFilter, ReceiptWriter, Store};

/// The allocator the `tollgate` binary uses (src/main.rs), so in-process
/// figures match the shipped program.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECTIONS: &[&str] = &["writer", "verify", "list", "startup", "limiter"];

fn main() {
    if let Ok(child) = std::env::var("PROOF_CHILD") {
        match child.as_str() {
            "limiter" => limiter_child(),
            other => panic!("unknown PROOF_CHILD {other}"),
        }
        return;
    }
    // `cargo bench` passes `--bench`; section names are the other arguments.
    let asked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for name in &asked {
        assert!(
            SECTIONS.contains(&name.as_str()),
            "unknown section {name}; expected some of {SECTIONS:?}"
        );
    }
    // `cargo test --benches` runs this without `--bench`: a quick smoke run
    // of the sections that need no large database.
    if !std::env::args().any(|a| a == "--bench") {
        println!("smoke run (use `cargo bench --bench proof` to measure)");
        // SAFETY: single-threaded here, before any thread reads the environment.
        unsafe { std::env::set_var("WRITER_RECEIPTS", "2000") };
        writer_section(1);
        limiter_section();
        return;
    }
    let runs = env_usize("RUNS", 5);
    let wants = |s: &str| asked.is_empty() || asked.iter().any(|a| a == s);
    println!(
        "# proof benchmarks: {runs} interleaved rounds, {} cores, load average {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    if wants("writer") {
        writer_section(runs);
    }
    if wants("verify") {
        verify_section(runs);
    }
    if wants("list") {
        list_section(runs);
    }
    if wants("startup") {
        startup_section(runs);
    }
    if wants("limiter") {
        limiter_section();
    }
}

// ---------------------------------------------------------------- helpers

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn manifest(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Where cached databases live (kept between runs).
fn cache_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest("target"));
    let dir = target.join("proof-bench");
    std::fs::create_dir_all(&dir).expect("cache dir");
    dir
}

fn release_binary() -> Option<PathBuf> {
    let bin = manifest("target/release/tollgate");
    bin.exists().then_some(bin)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// CPU seconds (user + system) used so far by this process's threads, by
/// thread name (`/proc/self/task/*/comm`, 15 characters at most).
fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let tick = 100.0; // USER_HZ on Linux
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3; utime 14, stime 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(comm.trim().to_owned()).or_insert(0.0) += ticks / tick;
    }
    out
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.0}–{hi:.0}")
}

/// A typical allowed `echo` receipt, as the pipeline would write it (the
/// same as `benches/pipeline.rs`).
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

/// `total` receipts cut into one list per committer.
///
/// They are built before the clock starts: the target is receipts appended
/// per second through the writer, and building a receipt (UUIDv7, JSON
/// arguments, a dozen strings) is the pipeline's work, not the writer's. It
/// cost ~1.5 µs per receipt of the 2 cores the writer needs.
fn receipts_for(committers: usize, total: usize) -> Vec<Vec<NewReceipt>> {
    let mut n = 0;
    (0..committers)
        .map(|t| {
            let mine = total / committers + usize::from(t < total % committers);
            (0..mine)
                .map(|_| {
                    n += 1;
                    receipt(n)
                })
                .collect()
        })
        .collect()
}

/// Commit `total` receipts from `committers` tasks, each awaiting its own
/// commit before it sends the next; returns receipts/s.
async fn commit_concurrently(writer: &ReceiptWriter, committers: usize, total: usize) -> f64 {
    let lists = receipts_for(committers, total);
    let started = Instant::now();
    let tasks: Vec<_> = lists
        .into_iter()
        .map(|mine| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for r in mine {
                    writer.commit(r).await.expect("commit");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("committer task");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------- writer

/// The receipt writer as it was before the rusqlite writer (kept here as the
/// baseline): a tokio task that takes up to 512 queued receipts, and writes
/// them through the sqlx pool in `BEGIN IMMEDIATE` with one multi-row INSERT.
/// The only difference: it computes the canonical texts twice (once inside
/// the public `chain_hash`), about 0.3 µs per receipt.
mod baseline {
    use sqlx::{QueryBuilder, Sqlite, SqlitePool};
    use tokio::sync::{mpsc, oneshot};
    use tollgate::receipt::{GENESIS_HASH, NewReceipt, chain_hash};

    pub type Job = (NewReceipt, oneshot::Sender<()>);

    pub fn spawn(pool: SqlitePool) -> mpsc::Sender<Job> {
        let (tx, mut rx) = mpsc::channel::<Job>(2048);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(512);
            while rx.recv_many(&mut buf, 512).await > 0 {
                let (receipts, replies): (Vec<NewReceipt>, Vec<_>) = buf.drain(..).unzip();
                write(&pool, receipts).await.expect("baseline batch");
                for r in replies {
                    let _ = r.send(());
                }
            }
        });
        tx
    }

    async fn write(pool: &SqlitePool, receipts: Vec<NewReceipt>) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let head: Option<String> =
            sqlx::query_scalar("SELECT hash FROM receipts ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&mut *tx)
                .await?;
        let mut prev = head.unwrap_or_else(|| GENESIS_HASH.to_owned());
        let mut rows = Vec::with_capacity(receipts.len());
        for r in receipts {
            let hash = chain_hash(&prev, &r);
            let args = tollgate::canonical::to_string(&r.args);
            let roles = serde_json::to_string(&r.roles).expect("roles");
            let policies = (!r.policies.is_empty())
                .then(|| serde_json::to_string(&r.policies).expect("policies"));
            let prev_hash = std::mem::replace(&mut prev, hash.clone());
            rows.push((r, args, roles, policies, prev_hash, hash));
        }
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO receipts (id, ts, principal, roles, auth, transport, session, tool, \
             version, spec_hash, args, decision, reason, outcome, result_digest, result_excerpt, \
             duration_us, cost_usd, policy_set, policies, approval_id, replay_of, prev_hash, hash) ",
        );
        insert.push_values(
            rows,
            |mut b, (r, args, roles, policies, prev_hash, hash)| {
                b.push_bind(r.id)
                    .push_bind(r.ts)
                    .push_bind(r.principal)
                    .push_bind(roles)
                    .push_bind(r.auth)
                    .push_bind(r.transport)
                    .push_bind(r.session)
                    .push_bind(r.tool)
                    .push_bind(r.version)
                    .push_bind(r.spec_hash)
                    .push_bind(args)
                    .push_bind(r.decision.as_str())
                    .push_bind(r.reason)
                    .push_bind(r.outcome.as_str())
                    .push_bind(r.result_digest)
                    .push_bind(r.result_excerpt)
                    .push_bind(r.duration_us)
                    .push_bind(r.cost_usd)
                    .push_bind(r.policy_set)
                    .push_bind(policies)
                    .push_bind(r.approval_id)
                    .push_bind(r.replay_of)
                    .push_bind(prev_hash)
                    .push_bind(hash);
            },
        );
        insert.build().persistent(false).execute(&mut *tx).await?;
        tx.commit().await
    }

    pub async fn commit_concurrently(
        queue: &mpsc::Sender<Job>,
        committers: usize,
        total: usize,
    ) -> f64 {
        let lists = super::receipts_for(committers, total);
        let started = std::time::Instant::now();
        let tasks: Vec<_> = lists
            .into_iter()
            .map(|mine| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    for r in mine {
                        let (reply, done) = oneshot::channel();
                        queue.send((r, reply)).await.expect("queue");
                        done.await.expect("baseline commit");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("committer task");
        }
        total as f64 / started.elapsed().as_secs_f64()
    }

    /// The rusqlite receipt writer as it was before the writer moved the
    /// canonical content and the freeing of receipts off its thread and
    /// started using multi-row INSERTs (`src/store/writer.rs` at a6e8def),
    /// reduced to the receipt path: the same queue (std mpsc + a semaphore
    /// of 2,048 places), batches of up to 512, `BEGIN IMMEDIATE`, the
    /// intents check and the head read per batch, one cached 24-parameter
    /// INSERT per receipt, two reporter events per batch, the background
    /// checkpointer, and every receipt freed on the writer thread.
    ///
    /// One difference: it hashes with the public `chain_hash`, which builds
    /// the canonical args/roles/policies texts once more on the writer
    /// thread (about 0.3 µs per receipt; the original reused the caller's).
    pub mod rusqlite_writer {
        use std::sync::Arc;
        use std::sync::mpsc as std_mpsc;
        use std::time::{Duration, Instant};

        use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
        use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
        use tollgate::receipt::{GENESIS_HASH, NewReceipt, chain_hash};

        struct Prepared {
            receipt: NewReceipt,
            args: String,
            roles: String,
            policies: Option<String>,
        }

        type Reply = oneshot::Sender<(i64, String)>;
        type Queued = (Box<Prepared>, Reply, OwnedSemaphorePermit);
        /// A job taken from the queue (its place in the queue released).
        type Job = (Box<Prepared>, Reply);

        #[derive(Clone)]
        pub struct Writer {
            queue: std_mpsc::Sender<Queued>,
            permits: Arc<Semaphore>,
        }

        const INSERT: &str = "INSERT INTO receipts (id, ts, principal, roles, auth, transport, \
             session, tool, version, spec_hash, args, decision, reason, outcome, result_digest, \
             result_excerpt, duration_us, cost_usd, policy_set, policies, approval_id, replay_of, \
             prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
             ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)";

        /// Start it on `path` (a database `Store::open` created). The thread
        /// ends when every `Writer` is dropped.
        pub fn spawn(path: &std::path::Path) -> Writer {
            let (queue, jobs) = std_mpsc::channel::<Queued>();
            let permits = Arc::new(Semaphore::new(2048));
            let (events, mut reported) = mpsc::unbounded_channel::<(usize, Duration)>();
            tokio::spawn(async move { while reported.recv().await.is_some() {} });
            let path = path.to_owned();
            let checkpoint = checkpointer(&path);
            std::thread::Builder::new()
                .name("previous-writer".into())
                .spawn(move || {
                    let conn = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                    .expect("open");
                    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
                    conn.execute_batch(
                        "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 4000;",
                    )
                    .expect("pragmas");
                    conn.set_prepared_statement_cache_capacity(16);
                    let mut conn = conn;
                    let mut batch: Vec<Job> = Vec::with_capacity(512);
                    while let Ok((p, r, _permit)) = jobs.recv() {
                        batch.push((p, r));
                        while batch.len() < 512 {
                            match jobs.try_recv() {
                                Ok((p, r, _permit)) => batch.push((p, r)),
                                Err(_) => break,
                            }
                        }
                        // Queue depth, as the original reported it.
                        let _ = events.send((batch.len(), Duration::ZERO));
                        let started = Instant::now();
                        let committed = write(&mut conn, &batch).expect("previous writer batch");
                        let _ = events.send((batch.len(), started.elapsed()));
                        if let Some(wake) = &checkpoint {
                            let _ = wake.try_send(());
                        }
                        for ((prepared, reply), c) in batch.drain(..).zip(committed) {
                            let _ = reply.send(c);
                            drop(prepared);
                        }
                    }
                })
                .expect("previous writer thread");
            Writer { queue, permits }
        }

        fn write(conn: &mut Connection, batch: &[Job]) -> rusqlite::Result<Vec<(i64, String)>> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(batch.len());
            {
                let _intents: bool = tx
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM intents)")?
                    .query_row([], |r| r.get(0))?;
                let mut prev: String = match tx
                    .prepare_cached("SELECT hash FROM receipts ORDER BY seq DESC LIMIT 1")?
                    .query_row([], |r| r.get(0))
                {
                    Ok(h) => h,
                    Err(rusqlite::Error::QueryReturnedNoRows) => GENESIS_HASH.to_owned(),
                    Err(e) => return Err(e),
                };
                let mut insert = tx.prepare_cached(INSERT)?;
                for (p, _) in batch {
                    let r = &p.receipt;
                    let hash = chain_hash(&prev, r);
                    insert.execute(params![
                        r.id,
                        r.ts,
                        r.principal,
                        p.roles,
                        r.auth,
                        r.transport,
                        r.session,
                        r.tool,
                        r.version,
                        r.spec_hash,
                        p.args,
                        r.decision.as_str(),
                        r.reason,
                        r.outcome.as_str(),
                        r.result_digest,
                        r.result_excerpt,
                        r.duration_us,
                        r.cost_usd,
                        r.policy_set,
                        p.policies,
                        r.approval_id,
                        r.replay_of,
                        prev,
                        hash,
                    ])?;
                    prev.clear();
                    prev.push_str(&hash);
                    out.push((tx.last_insert_rowid(), hash));
                }
            }
            tx.commit()?;
            Ok(out)
        }

        fn checkpointer(path: &std::path::Path) -> Option<std_mpsc::SyncSender<()>> {
            let (wake, woken) = std_mpsc::sync_channel::<()>(1);
            let path = path.to_owned();
            std::thread::Builder::new()
                .name("previous-checkp".into())
                .spawn(move || {
                    let conn = Connection::open(&path).expect("open");
                    conn.busy_timeout(Duration::from_secs(5)).expect("busy");
                    while woken.recv().is_ok() {
                        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                        std::thread::sleep(Duration::from_millis(50));
                    }
                })
                .ok()
                .map(|_| wake)
        }

        impl Writer {
            pub async fn commit(&self, receipt: NewReceipt) -> (i64, String) {
                let permit = Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .expect("permit");
                let prepared = Box::new(Prepared {
                    args: tollgate::canonical::to_string(&receipt.args),
                    roles: serde_json::to_string(&receipt.roles).expect("roles"),
                    policies: (!receipt.policies.is_empty())
                        .then(|| serde_json::to_string(&receipt.policies).expect("policies")),
                    receipt,
                });
                let (reply, answer) = oneshot::channel();
                self.queue
                    .send((prepared, reply, permit))
                    .map_err(|_| ())
                    .expect("queue");
                answer.await.expect("previous writer commit")
            }
        }

        pub async fn commit_concurrently(writer: &Writer, committers: usize, total: usize) -> f64 {
            let lists = super::super::receipts_for(committers, total);
            let started = Instant::now();
            let tasks: Vec<_> = lists
                .into_iter()
                .map(|mine| {
                    let writer = writer.clone();
                    tokio::spawn(async move {
                        for r in mine {
                            writer.commit(r).await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.expect("committer task");
            }
            total as f64 / started.elapsed().as_secs_f64()
        }
    }
}

/// The schema before migration 0004 dropped it.
const OLD_INDEX: &str = "CREATE INDEX IF NOT EXISTS receipts_decision ON receipts (decision, seq)";

fn writer_section(runs: usize) {
    let total = env_usize("WRITER_RECEIPTS", 30_000);
    println!("\n## writer: {total} receipts per variant per round\n");
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |name: &str, old_schema: bool| {
        rt.block_on(async {
            let store = Store::open(&dir.path().join(name)).await.expect("store");
            if old_schema {
                sqlx::query(OLD_INDEX)
                    .execute(store.pool())
                    .await
                    .expect("old index");
            }
            store
        })
    };
    let base_store = open("baseline.db", true);
    let before_store = open("before.db", false);
    let new_store = open("new.db", false);
    let (base_q, before_w, (new_w, new_h)) = rt.block_on(async {
        (
            baseline::spawn(base_store.pool().clone()),
            baseline::rusqlite_writer::spawn(before_store.path()),
            ReceiptWriter::spawn(&new_store),
        )
    });
    let variants = [
        "sqlx writer (multi-row INSERT), schema before 0004, 64 committers",
        "rusqlite writer before this change, 64 committers",
        "rusqlite writer before this change, 512 committers",
        "writer now, 64 committers",
        "writer now, 512 committers",
    ];
    // WRITER_NEW_ONLY=1: only the current writer (for profiling it).
    let new_only = std::env::var_os("WRITER_NEW_ONLY").is_some();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for round in 0..runs {
        let r = rt.block_on(async {
            if new_only {
                return [
                    f64::NAN,
                    f64::NAN,
                    f64::NAN,
                    commit_concurrently(&new_w, 64, total).await,
                    commit_concurrently(&new_w, 512, total).await,
                ];
            }
            [
                baseline::commit_concurrently(&base_q, 64, total).await,
                baseline::rusqlite_writer::commit_concurrently(&before_w, 64, total).await,
                baseline::rusqlite_writer::commit_concurrently(&before_w, 512, total).await,
                commit_concurrently(&new_w, 64, total).await,
                commit_concurrently(&new_w, 512, total).await,
            ]
        });
        eprintln!(
            "writer round {}: {}",
            round + 1,
            r.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        for (i, x) in r.into_iter().enumerate() {
            rates[i].push(x);
        }
    }
    let ratio = |i: usize, base: usize| {
        median(
            rates[i]
                .iter()
                .zip(&rates[base])
                .map(|(x, b)| x / b)
                .collect(),
        )
    };
    println!("| variant | median receipts/s | range | × sqlx writer | × before, same committers |");
    println!("|---|---|---|---|---|");
    for (i, name) in variants.iter().enumerate() {
        let before = match i {
            3 => format!("{:.2}", ratio(3, 1)),
            4 => format!("{:.2}", ratio(4, 2)),
            _ => String::new(),
        };
        println!(
            "| {name} | {:.0} | {} | {:.2} | {before} |",
            median(rates[i].clone()),
            spread(&rates[i]),
            ratio(i, 0),
        );
    }
    // CPU per receipt by thread, 64 committers: before and now, one after
    // the other.
    let probe_total = total * 2;
    let cpu = |run: &dyn Fn() -> f64| {
        let before = cpu_by_thread();
        run();
        let after = cpu_by_thread();
        after
            .iter()
            .map(|(name, t)| {
                let d = t - before.get(name).copied().unwrap_or(0.0);
                (name.clone(), d * 1e6 / probe_total as f64)
            })
            .filter(|(_, us)| *us > 0.0)
            .collect::<Vec<_>>()
    };
    let cpu_before = if new_only {
        Vec::new()
    } else {
        cpu(&|| {
            rt.block_on(baseline::rusqlite_writer::commit_concurrently(
                &before_w,
                64,
                probe_total,
            ))
        })
    };
    let cpu_now = cpu(&|| rt.block_on(commit_concurrently(&new_w, 64, probe_total)));
    println!(
        "\nCPU µs per receipt by thread, 64 committers, {probe_total} receipts each \
         (receipts built before the clock starts; `previous-*` threads are the writer before \
         this change):\n"
    );
    println!("| thread | before | now |");
    println!("|---|---|---|");
    let name_of = |n: &str| match n {
        "previous-writer" | "tollgate-receip" => "writer thread".to_owned(),
        "previous-checkp" | "tollgate-checkp" => "checkpointer thread".to_owned(),
        other => other.to_owned(),
    };
    let mut rows: std::collections::BTreeMap<String, (f64, f64)> = Default::default();
    for (n, us) in &cpu_before {
        rows.entry(name_of(n)).or_default().0 += us;
    }
    for (n, us) in &cpu_now {
        rows.entry(name_of(n)).or_default().1 += us;
    }
    let (mut sum_b, mut sum_n) = (0.0, 0.0);
    for (n, (b, now)) in &rows {
        sum_b += b;
        sum_n += now;
        println!("| {n} | {b:.2} | {now:.2} |");
    }
    println!("| all | {sum_b:.2} | {sum_n:.2} |");
    let stats = new_w.stats();
    println!(
        "\nwriter now: {} receipts in {} transactions (mean batch {:.0}, largest {}); \
         its thread spent {:.2} µs per receipt inside transactions (a ceiling of {:.0} receipts/s \
         if it had a core to itself)",
        stats.receipts,
        stats.batches,
        stats.receipts as f64 / stats.batches.max(1) as f64,
        stats.largest_batch,
        stats.busy_us as f64 / stats.receipts.max(1) as f64,
        stats.receipts as f64 * 1e6 / stats.busy_us.max(1) as f64
    );
    rt.block_on(async {
        drop(base_q);
        drop(before_w);
        new_h.shutdown().await;
        for s in [&base_store, &before_store, &new_store] {
            let report = s.verify_chain().await.expect("verify");
            assert!(report.first_bad.is_none(), "{report:?}");
        }
    });
}

// ---------------------------------------------------------------- verify

const VERIFY_RECEIPTS: usize = 1_000_000;

/// A cached database of `VERIFY_RECEIPTS` receipts written by the real writer.
fn verify_db(rt: &Runtime) -> Store {
    let path = cache_dir().join(format!("verify-{VERIFY_RECEIPTS}-v4.db"));
    rt.block_on(async {
        if path.exists() {
            let store = Store::open(&path).await.expect("store");
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts")
                .fetch_one(store.pool())
                .await
                .expect("count");
            if n as usize == VERIFY_RECEIPTS {
                return store;
            }
            store.close().await;
            std::fs::remove_file(&path).expect("remove stale db");
        }
        let store = Store::open(&path).await.expect("store");
        let (writer, handle) = ReceiptWriter::spawn(&store);
        let started = Instant::now();
        commit_concurrently(&writer, 512, VERIFY_RECEIPTS).await;
        handle.shutdown().await;
        eprintln!(
            "verify setup: wrote {VERIFY_RECEIPTS} receipts in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        store
    })
}

fn verify_section(runs: usize) {
    use tollgate::store::verify::RowCheck;
    println!("\n## verify: {VERIFY_RECEIPTS} receipts\n");
    let rt = runtime();
    let store = verify_db(&rt);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Each row through the `&str` reference check (the code before the raw
    // check) is the baseline, measured in the same rounds.
    let variants = [
        (1, RowCheck::Reference, "before, 1 thread"),
        (0, RowCheck::Reference, "before, one thread per core"),
        (1, RowCheck::Raw, "raw bytes, 1 thread"),
        (0, RowCheck::Raw, "raw bytes, one thread per core"),
    ];
    // VERIFY_VARIANT=N runs only variant N (e.g. under perf).
    let only = std::env::var("VERIFY_VARIANT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    // CPU seconds this process has used (exited threads included), so CPU
    // per row can be told apart from waiting for a busy core.
    let process_cpu = || -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    };
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    let mut cpu_us: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..runs {
        for (i, (threads, check, _)) in variants.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let cpu_before = process_cpu();
            let started = Instant::now();
            let report = rt
                .block_on(store.verify_chain_with(*threads, *check))
                .expect("verify");
            let took = started.elapsed().as_secs_f64();
            assert_eq!(report.checked as usize, VERIFY_RECEIPTS);
            assert!(report.first_bad.is_none());
            rates[i].push(VERIFY_RECEIPTS as f64 / took);
            cpu_us[i].push((process_cpu() - cpu_before) * 1e6 / VERIFY_RECEIPTS as f64);
        }
    }
    println!(
        "| variant | median receipts/s | range | wall µs per row × threads | CPU µs per row | × before, 1 thread |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, (threads, _, name)) in variants.iter().enumerate() {
        if rates[i].is_empty() {
            continue;
        }
        let ratios: Vec<f64> = rates[i].iter().zip(&rates[0]).map(|(x, b)| x / b).collect();
        let used = if *threads == 0 { cores } else { *threads };
        let rate = median(rates[i].clone());
        println!(
            "| {name} | {rate:.0} | {} | {:.2} | {:.2} | {} |",
            spread(&rates[i]),
            used as f64 * 1e6 / rate,
            median(cpu_us[i].clone()),
            if ratios.is_empty() {
                "".to_owned()
            } else {
                format!("{:.2}", median(ratios))
            }
        );
    }
}

// ---------------------------------------------------------------- list

const PRINCIPALS: usize = 10_000;
const TOOLS: usize = 50;

/// A cached database of `rows` receipts from `PRINCIPALS` principals, with
/// correct chain hashes (so it also verifies), built with direct rusqlite
/// INSERTs in large transactions without a journal.
fn list_db(rows: usize) -> PathBuf {
    let path = cache_dir().join(format!("list-{rows}-v4.db"));
    let done = path.with_extension("done");
    if path.exists() && done.exists() {
        return path;
    }
    let _ = std::fs::remove_file(&path);
    for ext in ["db-wal", "db-shm"] {
        let _ = std::fs::remove_file(path.with_extension(ext));
    }
    let started = Instant::now();
    // The schema, exactly as tollgate creates it.
    runtime().block_on(async {
        Store::open(&path).await.expect("store").close().await;
    });
    let mut conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(
        "PRAGMA journal_mode = DELETE; PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000;",
    )
    .expect("pragmas");
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("date")
        .to_utc();
    let mut prev = GENESIS_HASH.to_owned();
    let block = 100_000;
    let mut i = 0;
    while i < rows {
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO receipts (id, ts, principal, roles, auth, transport, session, \
                     tool, version, spec_hash, args, decision, reason, outcome, result_digest, \
                     result_excerpt, duration_us, cost_usd, policy_set, policies, approval_id, \
                     replay_of, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
                     ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24)",
                )
                .expect("prepare");
            for k in i..(i + block).min(rows) {
                // A fixed pseudo-random spread of principals and tools.
                let p = (k.wrapping_mul(2_654_435_761)) % PRINCIPALS;
                let ts = base + chrono::Duration::microseconds(k as i64 * 50_000);
                let r = NewReceipt {
                    id: format!("01900000-0000-7000-8000-{k:012}"),
                    ts: ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                    principal: Some(format!("p{p:05}")),
                    roles: vec!["support".to_owned()],
                    auth: format!("api_key:{:012x}", p),
                    transport: "http".to_owned(),
                    session: None,
                    tool: format!("tool{:02}", k % TOOLS),
                    version: Some(1),
                    spec_hash: None,
                    args: json!({"n": k}),
                    decision: if k % 10 == 0 {
                        Decision::Denied
                    } else {
                        Decision::Allowed
                    },
                    reason: None,
                    outcome: if k % 10 == 0 {
                        Outcome::NotRun
                    } else {
                        Outcome::Ok
                    },
                    result_digest: None,
                    result_excerpt: (k % 10 != 0).then(|| format!("ok {k}")),
                    duration_us: (k % 1000) as i64,
                    cost_usd: None,
                    policy_set: None,
                    policies: Vec::new(),
                    approval_id: None,
                    replay_of: None,
                };
                let hash = chain_hash(&prev, &r);
                insert
                    .execute(rusqlite::params![
                        r.id,
                        r.ts,
                        r.principal,
                        serde_json::to_string(&r.roles).expect("roles"),
                        r.auth,
                        r.transport,
                        r.session,
                        r.tool,
                        r.version,
                        r.spec_hash,
                        tollgate::canonical::to_string(&r.args),
                        r.decision.as_str(),
                        r.reason,
                        r.outcome.as_str(),
                        r.result_digest,
                        r.result_excerpt,
                        r.duration_us,
                        r.cost_usd,
                        r.policy_set,
                        Option::<String>::None,
                        r.approval_id,
                        r.replay_of,
                        prev,
                        hash,
                    ])
                    .expect("insert");
                prev = hash;
            }
        }
        tx.commit().expect("commit");
        i += block;
        if i % 1_000_000 == 0 {
            eprintln!(
                "list setup: {i} rows in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    conn.execute_batch("PRAGMA journal_mode = WAL;")
        .expect("back to WAL");
    drop(conn);
    std::fs::write(&done, b"").expect("marker");
    eprintln!(
        "list setup: {rows} receipts in {:.0} s ({:.1} GB)",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / 1e9
    );
    path
}

fn list_section(runs: usize) {
    let rows = env_usize("LIST_ROWS", 10_000_000);
    println!("\n## list: `--principal X --limit 20` on {rows} receipts\n");
    let path = list_db(rows);
    let rt = runtime();
    let store = rt.block_on(Store::open(&path)).expect("store");
    let queries = 200;
    let mut p50s = Vec::new();
    let mut p99s = Vec::new();
    let mut seed = 12345usize;
    for _ in 0..runs {
        let mut lat = Vec::with_capacity(queries);
        for _ in 0..queries {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let filter = ReceiptFilter {
                principal: Some(format!("p{:05}", (seed >> 33) % PRINCIPALS)),
                limit: 20,
                ..Default::default()
            };
            let started = Instant::now();
            let got = rt.block_on(store.list_receipts(&filter)).expect("list");
            lat.push(started.elapsed().as_secs_f64() * 1e3);
            assert_eq!(got.len(), 20);
        }
        p50s.push(percentile(&mut lat, 0.5));
        p99s.push(percentile(&mut lat, 0.99));
    }
    println!("| what | median of runs | range |");
    println!("|---|---|---|");
    println!(
        "| `Store::list_receipts`, p50 of {queries} random principals (ms) | {:.3} | {:.3}–{:.3} |",
        median(p50s.clone()),
        p50s.iter().copied().fold(f64::INFINITY, f64::min),
        p50s.iter().copied().fold(0.0, f64::max)
    );
    println!(
        "| `Store::list_receipts`, p99 (ms) | {:.3} | {:.3}–{:.3} |",
        median(p99s.clone()),
        p99s.iter().copied().fold(f64::INFINITY, f64::min),
        p99s.iter().copied().fold(0.0, f64::max)
    );
    if let Some(bin) = release_binary() {
        let mut walls = Vec::new();
        for k in 0..runs {
            let started = Instant::now();
            let out = std::process::Command::new(&bin)
                .arg("--db")
                .arg(&path)
                .args(["receipts", "list", "--limit", "20", "--principal"])
                .arg(format!("p{:05}", (k * 7919) % PRINCIPALS))
                .output()
                .expect("run tollgate");
            walls.push(started.elapsed().as_secs_f64() * 1e3);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        println!(
            "| `tollgate receipts list --principal X --limit 20`, whole process (ms) | {:.1} | {:.1}–{:.1} |",
            median(walls.clone()),
            walls.iter().copied().fold(f64::INFINITY, f64::min),
            walls.iter().copied().fold(0.0, f64::max)
        );
    } else {
        println!("(target/release/tollgate not built: `cargo build --release` to time the binary)");
    }
    if std::env::var_os("LIST_VERIFY").is_some() {
        let started = Instant::now();
        let report = rt.block_on(store.verify_chain()).expect("verify");
        let took = started.elapsed().as_secs_f64();
        assert!(report.first_bad.is_none(), "{report:?}");
        println!(
            "| `Store::verify_chain` over all {} receipts (receipts/s, one run) | {:.0} | |",
            report.checked,
            report.checked as f64 / took
        );
    }
}

// ---------------------------------------------------------------- startup

const SPECS: usize = 1000;

fn startup_section(runs: usize) {
    println!("\n## startup: {SPECS} spec files\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let specs = dir.path().join("specs");
    std::fs::create_dir(&specs).expect("specs dir");
    let echo = std::fs::read_to_string(manifest("tool-specs/echo.yaml")).expect("echo spec");
    for i in 0..SPECS {
        let text = echo
            .replace("name: echo", &format!("name: echo_{i:04}"))
            .replace("title: Echo", &format!("title: Echo {i}"));
        std::fs::write(specs.join(format!("echo_{i:04}.yaml")), text).expect("spec");
    }
    // No Cedar policies: the shipped ones name the shipped tools.
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).expect("policies dir");
    let principals_file = manifest("principals.yaml");
    let principals = Principals::load(&principals_file).expect("principals");
    let http = tollgate::executor::http_client().expect("http");
    let secrets = Arc::new(Secrets::empty());
    let rt = runtime();
    let (mut check, mut first, mut again, mut bin) = (vec![], vec![], vec![], vec![]);
    let mut serve = vec![];
    let serve_db = dir.path().join("serve.db");
    let bin_args = |cmd: &mut std::process::Command, db: &Path| {
        cmd.arg("--specs")
            .arg(&specs)
            .arg("--principals")
            .arg(&principals_file)
            .arg("--policies")
            .arg(&policies)
            .arg("--db")
            .arg(db);
    };
    if let Some(b) = release_binary() {
        // Untimed: registers the 1,000 versions, so the timed rounds start
        // the way a server restarts (versions known), with a warm page cache.
        serve_ready(&b, &bin_args, &serve_db);
    }
    for round in 0..runs {
        let started = Instant::now();
        let (_, compiled) =
            check_dir(&specs, Some(&principals), &http, &secrets).expect("specs check");
        assert_eq!(compiled.len(), SPECS);
        check.push(started.elapsed().as_secs_f64() * 1e3);

        let db = dir.path().join(format!("start-{round}.db"));
        rt.block_on(async {
            let store = Store::open(&db).await.expect("store");
            let started = Instant::now();
            let catalog = Catalog::load(&specs, &principals, &store, &http, &secrets)
                .await
                .expect("catalog");
            first.push(started.elapsed().as_secs_f64() * 1e3);
            assert_eq!(catalog.len(), SPECS);
            let started = Instant::now();
            Catalog::load(&specs, &principals, &store, &http, &secrets)
                .await
                .expect("catalog");
            again.push(started.elapsed().as_secs_f64() * 1e3);
        });
        if let Some(b) = release_binary() {
            let started = Instant::now();
            let mut cmd = std::process::Command::new(&b);
            bin_args(&mut cmd, &dir.path().join("check.db"));
            let out = cmd.arg("check").output().expect("tollgate check");
            bin.push(started.elapsed().as_secs_f64() * 1e3);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serve.push(serve_ready(&b, &bin_args, &serve_db));
        }
    }
    println!("| what | median ms | range ms |");
    println!("|---|---|---|");
    let row = |name: &str, v: &Vec<f64>| {
        if !v.is_empty() {
            println!("| {name} | {:.1} | {} |", median(v.clone()), spread(v));
        }
    };
    row("`check_dir` (parse, validate, compile)", &check);
    row(
        "`Catalog::load`, empty database (registers 1,000 versions)",
        &first,
    );
    row("`Catalog::load` again (versions known)", &again);
    row("`tollgate check`, whole process", &bin);
    row(
        "`tollgate serve --http`: spawn until `/readyz` answers 200",
        &serve,
    );
    if bin.is_empty() {
        println!("(target/release/tollgate not built: `cargo build --release` to time the binary)");
    }
}

/// Milliseconds from spawning `tollgate serve --http 127.0.0.1:PORT` until
/// `/readyz` answers 200 (polled every millisecond), then kill it.
fn serve_ready(bin: &Path, args: &dyn Fn(&mut std::process::Command, &Path), db: &Path) -> f64 {
    // A port that was free a moment ago; the server binds it again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut cmd = std::process::Command::new(bin);
    args(&mut cmd, db);
    let started = Instant::now();
    let mut child = cmd
        .arg("serve")
        .arg("--http")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tollgate serve");
    let ready = loop {
        if ready_200(port) {
            break started.elapsed().as_secs_f64() * 1e3;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("tollgate serve exited before it was ready: {status}");
        }
        assert!(
            started.elapsed().as_secs() < 120,
            "tollgate serve not ready after 120 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    };
    let _ = child.kill();
    let _ = child.wait();
    ready
}

/// Whether `GET /readyz` on 127.0.0.1:`port` answers 200.
fn ready_200(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    let mut reply = Vec::new();
    s.write_all(request.as_bytes()).is_ok()
        && s.read_to_end(&mut reply).is_ok()
        && reply.starts_with(b"HTTP/1.1 200")
}

// ---------------------------------------------------------------- limiter

const LIMITER_PRINCIPALS: usize = 100_000;

fn limiter_section() {
    println!("\n## limiter: {LIMITER_PRINCIPALS} distinct principals, fresh process\n");
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .env("PROOF_CHILD", "limiter")
        .output()
        .expect("child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

/// `(VmRSS, VmHWM)` of this process in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The shipped echo spec, with a per-principal limit.
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

fn limiter_child() {
    let principals = Principals::load(&manifest("principals.yaml")).expect("principals");
    let catalog = Catalog::from_tools([echo_tool()]);
    let tool = catalog.get("echo").expect("echo").clone();
    let limiter = Limiter::new(&catalog);
    let (before, _) = rss_kib();
    let started = Instant::now();
    for i in 0..LIMITER_PRINCIPALS {
        let who = Identity {
            principal: format!("principal-{i:06}@example.com"),
            auth: "bench".into(),
            roles: Some(vec!["admin".into()]),
        };
        let p = authenticate(&principals, &who).expect("authenticate");
        limiter.check(&p, &tool).expect("not limited");
    }
    let took = started.elapsed();
    let (after, hwm) = rss_kib();
    assert_eq!(limiter.tracked_keys(), LIMITER_PRINCIPALS);
    println!("| what | value |");
    println!("|---|---|");
    println!(
        "| VmRSS before (catalog and limiter built) | {:.1} MB |",
        before as f64 / 1024.0
    );
    println!(
        "| VmRSS after {LIMITER_PRINCIPALS} principals | {:.1} MB |",
        after as f64 / 1024.0
    );
    println!(
        "| growth | {:.1} MB ({:.0} bytes per principal) |",
        (after - before) as f64 / 1024.0,
        (after - before) as f64 * 1024.0 / LIMITER_PRINCIPALS as f64
    );
    println!("| VmHWM (peak) | {:.1} MB |", hwm as f64 / 1024.0);
    println!(
        "| time per first check of a new principal | {:.2} µs |",
        took.as_secs_f64() * 1e6 / LIMITER_PRINCIPALS as f64
    );
}
