//! Crash under load: `kill -9` the HTTP server while concurrent clients call
//! a tool that changes the world, restart it, and check what survived.
//!
//! Each of `TOLLGATE_CRASH_KILLS` iterations (default 20) starts
//! `tollgate serve --http` on one database that persists across restarts,
//! waits for `/readyz`, runs [`WORKERS`] clients issuing `tools/call`s with
//! distinct arguments, and SIGKILLs the server after a random 50–400 ms
//! (seeded; `TOLLGATE_CRASH_SEED` replays a run). After every kill, with the
//! server dead, the database file itself is checked:
//!
//! - every call the client saw answered has its receipt, with the arguments
//!   it sent and not `interrupted` (receipt before reply);
//! - the intents left behind belong to the dead server and none of them
//!   already has a receipt;
//! - `tollgate receipts verify` exits 0.
//!
//! After every restart: the server is ready within 5 s (the figure is
//! recorded; the "within a second" is reported, not asserted), and
//! within [`RECOVERY_LIMIT`] of `/readyz` answering 200, every intent the
//! killed servers left has become exactly one `interrupted` receipt, the
//! killed server is unregistered and its lock file is gone.
//!
//! A dead writer's intents are recovered at once on the same host: each
//! writer holds an exclusive `flock` on `<db>.writer-<id>.lock` while it
//! runs, the kernel lets go of it when the process dies, and the restarted
//! server's start-up pass finds the lock free (src/store/writer.rs,
//! `liveness`). The heartbeat rule (30 s) is only for writers whose lock
//! cannot be seen, e.g. on another host. After the last kill the harness
//! restarts at once, as a supervisor would, checks the same, then: a clean
//! shutdown (no intent and no lock file left), a last `receipts verify`, and
//! every effect the tool left (a line in `effects.txt`) has a receipt (no
//! side effect without a record).
//!
//! The summary line at the end carries the figures quoted in BENCHMARKS.md
//! ("Crash under load"); `scripts/crash-long.sh` runs 100 kills in release.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{Value, json};

/// Concurrent clients.
const WORKERS: usize = 8;
/// A restart slower than this fails the test (a hang, not a slow machine).
const READY_LIMIT: Duration = Duration::from_secs(5);
/// How long after `/readyz` answers 200 the killed servers' intents may
/// still be waiting for the start-up pass (which runs on the writer thread,
/// alongside the first requests).
const RECOVERY_LIMIT: Duration = Duration::from_secs(2);

/// Not read-only, so every call commits an intent before it runs. It sleeps
/// 20 ms so that kills land mid-execution, and leaves its effect in a file.
fn work_spec(effects: &Path) -> String {
    format!(
        "name: work\n\
         description: Sleeps 20 ms, appends n to a file, echoes n.\n\
         input_schema: {{type: object, properties: {{n: {{type: integer}}}}, required: [n], additionalProperties: false}}\n\
         annotations: {{readOnlyHint: false}}\n\
         allow: [admin]\n\
         timeout: 10s\n\
         run:\n  command:\n    argv: [sh, -c, 'sleep 0.02; echo \"$1\" >> {}; echo \"$1\"', sh, '{{{{ args.n }}}}']\n",
        effects.display()
    )
}

/// splitmix64: a seeded, replayable sequence without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// min / median / max.
fn spread(v: &[Duration]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    let mut s = v.to_vec();
    s.sort();
    format!(
        "min {}, median {}, max {}",
        secs(s[0]),
        secs(s[s.len() / 2]),
        secs(s[s.len() - 1])
    )
}

/// What a client saw for one call.
enum Seen {
    /// A result came back: the call is acknowledged, with this receipt.
    Acked {
        receipt: String,
        args: Value,
        is_error: bool,
    },
    /// A JSON-RPC error came back.
    Error,
}

/// A running `tollgate serve --http`, started by the harness.
struct Server {
    child: std::process::Child,
    base: String,
}

impl Server {
    fn spawn(f: &Fixture, log: &Path) -> Server {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("server log");
        let child = f
            .command(&["serve", "--http", &addr, "--config", "tollgate.yaml"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn tollgate serve --http");
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// Poll `/readyz` until 200; returns the time since `started`.
    async fn ready(&mut self, started: Instant, log: &Path) -> Duration {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return started.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("tollgate exited early ({status}); log:\n{}", tail(log));
            }
            assert!(
                started.elapsed() < READY_LIMIT,
                "tollgate was not ready {READY_LIMIT:?} after start; log:\n{}",
                tail(log)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn sigkill(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
        let status = self.child.wait().expect("wait for the killed server");
        assert!(
            !status.success(),
            "the server exited on its own before the kill: {status}"
        );
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("kill -TERM");
        self.child.wait().expect("wait for tollgate")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One client: calls until the server stops answering.
async fn worker(
    http: reqwest::Client,
    url: String,
    token: String,
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> (Vec<Seen>, usize) {
    let mut seen = Vec::new();
    let mut in_doubt = 0;
    while !stop.load(Ordering::Relaxed) {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        // One call in four goes to `echo`; the rest to `work`.
        let (tool, args) = if n % 4 == 3 {
            ("echo", json!({"message": format!("m{n}")}))
        } else {
            ("work", json!({"n": n}))
        };
        let body = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
            "params": {"name": tool, "arguments": args}});
        let sent = http
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .body(body.to_string())
            .send()
            .await;
        let reply: Result<Value, _> = match sent {
            Ok(r) => r.json().await,
            Err(e) => Err(e),
        };
        match reply {
            Ok(v) if v.get("result").is_some() => {
                let result = &v["result"];
                let receipt = result["_meta"]["tollgate/receipt_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a result without a receipt id: {v}"))
                    .to_owned();
                seen.push(Seen::Acked {
                    receipt,
                    args,
                    is_error: result["isError"] == json!(true),
                });
            }
            Ok(_) => seen.push(Seen::Error),
            // The server is gone (or going): this call may or may not have run.
            Err(_) => {
                in_doubt += 1;
                break;
            }
        }
    }
    (seen, in_doubt)
}

/// An intent left behind by a killed server, not yet recovered.
struct Pending {
    args: Value,
    killed_at: Instant,
}

#[derive(Default)]
struct Tally {
    kills: usize,
    acked: usize,
    acked_errors: usize,
    rpc_errors: usize,
    in_doubt: usize,
    intents_left: usize,
    recovered_at_restart: usize,
    recovered_later: usize,
    verified: usize,
    ready: Vec<Duration>,
    recovery_delay: Vec<Duration>,
    /// From `/readyz` 200 until the start-up pass had recovered every
    /// intent left behind (restarts that had any).
    startup_after_ready: Vec<Duration>,
}

fn open(db: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn
}

/// Every acknowledged call has its receipt: same id, same arguments, not
/// `interrupted` (the reply came after the commit).
fn check_acked(conn: &rusqlite::Connection, acked: &[(String, Value)]) {
    let mut q = conn
        .prepare_cached("SELECT args, outcome FROM receipts WHERE id = ?1")
        .unwrap();
    for (id, args) in acked {
        let row: Option<(String, String)> = q
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .unwrap();
        let (stored, outcome) =
            row.unwrap_or_else(|| panic!("acknowledged call {args} has no receipt {id}"));
        let stored: Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(&stored, args, "receipt {id} records other arguments");
        assert_ne!(
            outcome, "interrupted",
            "receipt {id} of an acknowledged call is `interrupted`"
        );
    }
}

/// The intents table: id → (owner, the args of the receipt it stands for).
fn intents(conn: &rusqlite::Connection) -> BTreeMap<String, (Option<String>, Value)> {
    let mut q = conn
        .prepare("SELECT id, owner, receipt FROM intents")
        .unwrap();
    q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
        ))
    })
    .unwrap()
    .map(|row| {
        let (id, owner, json) = row.unwrap();
        let receipt: Value = serde_json::from_str(&json).expect("intent JSON");
        (id, (owner, receipt["args"].clone()))
    })
    .collect()
}

/// The pid of each registered writer.
fn writers(conn: &rusqlite::Connection) -> HashMap<String, u32> {
    let mut q = conn.prepare("SELECT owner, pid FROM writers").unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// The writer lock files next to the database: `<db>.writer-<owner>.lock`.
fn lock_files(db: &Path) -> BTreeSet<String> {
    let prefix = format!("{}.writer-", db.file_name().unwrap().to_str().unwrap());
    std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().ok()?;
            Some(
                name.strip_prefix(&prefix)?
                    .strip_suffix(".lock")?
                    .to_owned(),
            )
        })
        .collect()
}

/// Pending intents that are gone from the table must each have become one
/// `interrupted` receipt with the intent's arguments. Returns how many.
fn reconcile(
    conn: &rusqlite::Connection,
    pending: &mut HashMap<String, Pending>,
    tally: &mut Tally,
) -> usize {
    reconcile_with(conn, &intents(conn), pending, tally)
}

/// [`reconcile`] against a snapshot of the intents table read earlier.
fn reconcile_with(
    conn: &rusqlite::Connection,
    left: &BTreeMap<String, (Option<String>, Value)>,
    pending: &mut HashMap<String, Pending>,
    tally: &mut Tally,
) -> usize {
    let gone: Vec<String> = pending
        .keys()
        .filter(|id| !left.contains_key(*id))
        .cloned()
        .collect();
    let mut q = conn
        .prepare_cached("SELECT args, outcome, reason FROM receipts WHERE id = ?1")
        .unwrap();
    for id in &gone {
        let p = pending.remove(id).unwrap();
        let rows: Vec<(String, String, Option<String>)> = q
            .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            rows.len(),
            1,
            "intent {id} ({}) became {} receipts",
            p.args,
            rows.len()
        );
        let (args, outcome, reason) = &rows[0];
        assert_eq!(outcome, "interrupted", "recovered intent {id}: {reason:?}");
        let args: Value = serde_json::from_str(args).unwrap();
        assert_eq!(
            args, p.args,
            "recovered intent {id} records other arguments"
        );
        tally.recovery_delay.push(p.killed_at.elapsed());
    }
    gone.len()
}

fn verify(f: &Fixture, tally: &mut Tally, when: &str) {
    let out = f.run(&["receipts", "verify"]);
    assert!(
        out.status.success(),
        "receipts verify failed {when}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    tally.verified += 1;
}

/// After a (re)start is ready: every intent the killed servers left behind
/// is recovered by the start-up pass within [`RECOVERY_LIMIT`], and their
/// writers (`dead`) are unregistered, their lock files gone. Returns how
/// many intents were recovered here.
async fn await_startup_recovery(
    db: &Path,
    pending: &mut HashMap<String, Pending>,
    dead: &BTreeSet<String>,
    tally: &mut Tally,
    log: &Path,
) -> usize {
    let due = pending.len();
    let started = Instant::now();
    let mut recovered = 0;
    loop {
        let conn = open(db);
        recovered += reconcile(&conn, pending, tally);
        let registered = writers(&conn);
        let locks = lock_files(db);
        let lingering: Vec<&String> = dead
            .iter()
            .filter(|o| registered.contains_key(*o) || locks.contains(*o))
            .collect();
        if pending.is_empty() && lingering.is_empty() {
            if due > 0 {
                tally.startup_after_ready.push(started.elapsed());
            }
            return recovered;
        }
        assert!(
            started.elapsed() < RECOVERY_LIMIT,
            "{} intents of killed servers were not recovered, or their writers {lingering:?} \
             not unregistered with their lock files removed, {RECOVERY_LIMIT:?} after the \
             restart was ready: {:?}; log:\n{}",
            pending.len(),
            pending.keys(),
            tail(log)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load() {
    let kills: usize = std::env::var("TOLLGATE_CRASH_KILLS")
        .ok()
        .map(|s| s.parse().expect("TOLLGATE_CRASH_KILLS is a number"))
        .unwrap_or(20);
    let seed: u64 = std::env::var("TOLLGATE_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("TOLLGATE_CRASH_SEED is a number"))
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("crash harness: {kills} kills, seed {seed} (replay with TOLLGATE_CRASH_SEED={seed})");
    let mut rng = Rng(seed);
    let run_started = Instant::now();

    let f = Fixture::new();
    let effects = f.path("effects.txt");
    f.write_spec("work", &work_spec(&effects));
    std::fs::write(f.path("tollgate.yaml"), "http: {json_response: true}\n").unwrap();
    let (_, token) = f.create_key("alice", &[]);
    let db = f.db();
    let log = f.path("server.log");

    let counter = Arc::new(AtomicU64::new(1));
    let mut pending: HashMap<String, Pending> = HashMap::new();
    // Writers of killed servers, to be unregistered by the next start.
    let mut dead: BTreeSet<String> = BTreeSet::new();
    let mut tally = Tally::default();

    for i in 1..=kills {
        let started = Instant::now();
        let mut server = Server::spawn(&f, &log);
        let ready = server.ready(started, &log).await;
        if i > 1 {
            tally.ready.push(ready);
        }
        let at_start = await_startup_recovery(&db, &mut pending, &dead, &mut tally, &log).await;
        tally.recovered_at_restart += at_start;
        dead.clear();
        // No call is running yet and every intent of a killed server is
        // recovered: the table is empty.
        let conn = open(&db);
        let snapshot = intents(&conn);
        drop(conn);
        assert!(
            snapshot.is_empty(),
            "intents nobody left behind: {:?}",
            snapshot.keys()
        );

        // Load, then kill -9 at a random moment.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("{}/mcp", server.base);
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                tokio::spawn(worker(
                    http.clone(),
                    url.clone(),
                    token.clone(),
                    Arc::clone(&counter),
                    Arc::clone(&stop),
                ))
            })
            .collect();
        let delay = Duration::from_millis(rng.range(50, 400));
        tokio::time::sleep(delay).await;
        server.sigkill();
        let killed_at = Instant::now();
        tally.kills += 1;
        stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        let mut in_doubt = 0;
        for w in workers {
            let (seen, doubt) = w.await.expect("worker");
            in_doubt += doubt;
            for s in seen {
                match s {
                    Seen::Acked {
                        receipt,
                        args,
                        is_error,
                    } => {
                        tally.acked_errors += usize::from(is_error);
                        acked.push((receipt, args));
                    }
                    Seen::Error => tally.rpc_errors += 1,
                }
            }
        }
        tally.acked += acked.len();
        tally.in_doubt += in_doubt;

        // The server is dead: read what it left on disk.
        let conn = open(&db);
        check_acked(&conn, &acked);
        let later = reconcile(&conn, &mut pending, &mut tally);
        tally.recovered_later += later;
        let registered = writers(&conn);
        let killed_pid = server.child.id();
        dead.extend(
            registered
                .iter()
                .filter(|(_, pid)| **pid == killed_pid)
                .map(|(owner, _)| owner.clone()),
        );
        let mut left = 0;
        let mut has_receipt = conn
            .prepare("SELECT EXISTS (SELECT 1 FROM receipts WHERE id = ?1)")
            .unwrap();
        for (id, (owner, args)) in intents(&conn) {
            if pending.contains_key(&id) {
                continue;
            }
            assert!(
                owner.as_ref().is_some_and(|o| dead.contains(o)),
                "intent {id} left behind by a writer other than the killed server's: {owner:?}"
            );
            let exists: bool = has_receipt.query_row([&id], |r| r.get(0)).unwrap();
            assert!(!exists, "intent {id} left behind, yet it has a receipt");
            pending.insert(id, Pending { args, killed_at });
            left += 1;
        }
        drop(has_receipt);
        tally.intents_left += left;
        drop(conn);
        verify(&f, &mut tally, &format!("after kill {i}"));
        println!(
            "kill {i:>3}/{kills}: ready {}, killed after {} ms, {} acked, {in_doubt} in doubt, \
             {left} intents left, {at_start} recovered at start, {later} by a sweep",
            secs(ready),
            delay.as_millis(),
            acked.len(),
        );
    }

    // The last restart, as a supervisor would do it: at once. Its start-up
    // pass recovers what the last kill left, as every restart did.
    let started = Instant::now();
    let mut server = Server::spawn(&f, &log);
    let ready = server.ready(started, &log).await;
    tally.ready.push(ready);
    let last = await_startup_recovery(&db, &mut pending, &dead, &mut tally, &log).await;
    tally.recovered_at_restart += last;
    let waited = started.elapsed();
    println!(
        "final restart: ready {}; {last} intents recovered by its start-up pass",
        secs(ready),
    );
    let status = server.sigterm();
    assert!(
        status.success(),
        "clean shutdown: {status}; log:\n{}",
        tail(&log)
    );
    drop(server);

    let conn = open(&db);
    assert!(intents(&conn).is_empty(), "intents after a clean shutdown");
    assert!(
        writers(&conn).is_empty(),
        "writers registered after a clean shutdown"
    );
    assert!(
        lock_files(&db).is_empty(),
        "writer lock files after a clean shutdown: {:?}",
        lock_files(&db)
    );
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let receipts = count("SELECT count(*) FROM receipts");
    let distinct = count("SELECT count(DISTINCT id) FROM receipts");
    let interrupted = count("SELECT count(*) FROM receipts WHERE outcome = 'interrupted'");
    assert_eq!(receipts, distinct, "one receipt per id");
    let recovered = tally.recovered_at_restart + tally.recovered_later;
    assert_eq!(
        recovered, tally.intents_left,
        "every intent left behind recovered"
    );
    assert_eq!(
        interrupted as usize, recovered,
        "`interrupted` receipts are exactly the recovered intents"
    );
    // No side effect without a record: every n the tool wrote has a receipt.
    let mut q = conn
        .prepare("SELECT args, outcome FROM receipts WHERE tool = 'work'")
        .unwrap();
    let receipted: HashMap<i64, String> = q
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(|r| {
            let (args, outcome) = r.unwrap();
            let args: Value = serde_json::from_str(&args).unwrap();
            (args["n"].as_i64().expect("n"), outcome)
        })
        .collect();
    let effects_text = std::fs::read_to_string(&effects).unwrap_or_default();
    let mut effects_n = 0;
    let mut effects_interrupted = 0;
    for line in effects_text.lines() {
        let n: i64 = line.trim().parse().expect("an effect line is a number");
        let outcome = receipted
            .get(&n)
            .unwrap_or_else(|| panic!("the tool ran for n = {n}, but no receipt records it"));
        effects_n += 1;
        effects_interrupted += usize::from(outcome == "interrupted");
    }
    drop(q);
    drop(conn);
    verify(&f, &mut tally, "at the end");

    println!(
        "final restart: {last} intents recovered at start-up; all recovered {} after the restart",
        secs(waited),
    );
    println!(
        "effects: {effects_n} tool runs left a trace, all receipted ({effects_interrupted} of \
         them as `interrupted`); {} calls in doubt at the kills, {} acknowledged with isError, \
         {} JSON-RPC errors",
        tally.in_doubt, tally.acked_errors, tally.rpc_errors
    );
    println!(
        "intents recovered: {} by a restart's start-up pass (done {} after /readyz), {} by a \
         running server's sweep; kill → interrupted receipt: {}",
        tally.recovered_at_restart,
        spread(&tally.startup_after_ready),
        tally.recovered_later,
        spread(&tally.recovery_delay)
    );
    println!(
        "crash harness: {} kills, {} acknowledged calls, all receipted; {} intents → {} \
         interrupted receipts; chain verified {}/{}; {receipts} receipts; ready after restart: \
         {}; run took {}",
        tally.kills,
        tally.acked,
        tally.intents_left,
        interrupted,
        tally.verified,
        tally.kills + 1,
        spread(&tally.ready),
        secs(run_started.elapsed()),
    );
}
