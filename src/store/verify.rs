//! Verifying the whole receipt hash chain: [`Store::verify_chain`].
//!
//! # Why it is built this way
//!
//! `receipts verify` must re-hash every receipt, so its speed is the cost of
//! one row times the number of rows. Per row that is reading 25 columns from
//! SQLite, writing the ~630-byte canonical text and one SHA-256 (~0.7 µs
//! with SHA-NI, the floor). So:
//!
//! - It bypasses sqlx (whose row stream costs ~17 µs per receipt) and reads
//!   with plain rusqlite cursors on read-only connections, off the async
//!   runtime.
//! - The seq range is cut into chunks that threads (one per core, each with
//!   its own connection) check independently; only the links between chunks
//!   are then compared, in order (`merge`).
//! - Each row is first checked on its raw column bytes
//!   (`check_row_raw`, `RawContent`): no UTF-8 re-validation of ASCII
//!   values, no `String`s, one reused buffer per thread. Only when that
//!   check does not pass is the row checked again through `&str` columns and
//!   `ContentView` (`check_row`, the reference), which also names the
//!   problem. A row therefore passes or fails, and is reported, exactly as
//!   the reference alone would report it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::types::ValueRef;

use super::receipts::{BadReceipt, VerifyReport};
use super::{Store, StoreError};
use crate::receipt::{ContentView, GENESIS_HASH, RawContent};

/// How [`Store::verify_chain_with`] checks each row. The answer is the same
/// either way; benchmarks compare the two.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCheck {
    /// Raw column bytes first, the reference only for rows that fail (the
    /// default).
    Raw,
    /// Every row through the reference `&str` check, and the old
    /// whole-index `min(seq), max(seq)` query, as before the raw check
    /// existed: the benchmark's baseline.
    Reference,
}

/// Every column the verifier reads, in the order [`check_row_raw`] and
/// [`check_row`] expect (the table's order).
const VERIFY_COLUMNS: &str = "seq, id, ts, principal, roles, auth, transport, session, tool, \
     version, spec_hash, args, decision, reason, outcome, result_digest, result_excerpt, \
     duration_us, cost_usd, prev_hash, hash, policy_set, policies, approval_id, replay_of";

impl Store {
    /// Recompute every receipt's hash, in seq order, and check each link.
    ///
    /// Reads one consistent snapshot (receipts appended meanwhile are not
    /// checked) and stops at the first problem. See the [module
    /// docs](self) for how it is made fast.
    pub async fn verify_chain(&self) -> Result<VerifyReport, StoreError> {
        self.verify_chain_on(0).await
    }

    /// [`Store::verify_chain`] on at most `threads` threads (0: one per core).
    /// The same answer whatever the number; benchmarks compare them.
    pub async fn verify_chain_on(&self, threads: usize) -> Result<VerifyReport, StoreError> {
        self.verify_chain_with(threads, RowCheck::Raw).await
    }

    /// [`Store::verify_chain_on`] with a choice of row check, for benchmarks.
    #[doc(hidden)]
    pub async fn verify_chain_with(
        &self,
        threads: usize,
        check: RowCheck,
    ) -> Result<VerifyReport, StoreError> {
        let path = std::sync::Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || verify_file(&path, threads, check))
            .await
            .map_err(|e| StoreError::Raw {
                action: "verify receipts",
                cause: e.to_string(),
            })?
    }
}

/// Fewest and most seq numbers per chunk of [`verify_file`].
const CHUNK_MIN: i64 = if cfg!(test) { 4 } else { 4096 };
const CHUNK_MAX: i64 = 1 << 18;

/// Most threads [`verify_file`] uses.
const VERIFY_THREADS_MAX: usize = 8;

fn raw_verify(cause: rusqlite::Error) -> StoreError {
    StoreError::Raw {
        action: "verify receipts",
        cause: cause.to_string(),
    }
}

fn open_read_only(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Open {
        path: path.to_owned(),
        cause: e.to_string(),
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(raw_verify)?;
    // Map the file instead of copying every page through read(2).
    conn.execute_batch("PRAGMA mmap_size = 1073741824")
        .map_err(raw_verify)?;
    Ok(conn)
}

fn verify_file(path: &Path, threads: usize, check: RowCheck) -> Result<VerifyReport, StoreError> {
    let conn = open_read_only(path)?;
    // The snapshot: receipts are append-only, so every row up to `hi` is
    // there now and stays as it is while the threads read.
    // Two scalar subqueries, each one B-tree seek: `SELECT min(seq),
    // max(seq)` in one aggregate is not optimised and scans a whole index
    // (0.12–0.23 s for 1M receipts, before any thread starts).
    // (The benchmark's baseline keeps the old query, so that it measures the
    // code as it was.)
    let bounds = match check {
        RowCheck::Raw => "SELECT (SELECT min(seq) FROM receipts), (SELECT max(seq) FROM receipts)",
        RowCheck::Reference => "SELECT min(seq), max(seq) FROM receipts",
    };
    let (lo, hi): (Option<i64>, Option<i64>) = conn
        .query_row(bounds, [], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(raw_verify)?;
    drop(conn);
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(VerifyReport {
            checked: 0,
            last_good: None,
            first_bad: None,
        });
    };
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, VERIFY_THREADS_MAX);
    let span = hi - lo + 1;
    let size = (span / (threads as i64 * 16)).clamp(CHUNK_MIN, CHUNK_MAX);
    let chunks: Vec<(i64, i64)> = (0..)
        .map(|i| lo + i * size)
        .take_while(|&start| start <= hi)
        .map(|start| (start, (start + size - 1).min(hi)))
        .collect();
    let threads = threads.min(chunks.len());

    let next = AtomicUsize::new(0);
    // Chunks after a bad one need not be read.
    let first_bad = AtomicUsize::new(usize::MAX);
    let results: Vec<Result<Vec<(usize, Chunk)>, StoreError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let conn = open_read_only(path)?;
                    let mut stmt = conn
                        .prepare(&format!(
                            "SELECT {VERIFY_COLUMNS} FROM receipts \
                             WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq"
                        ))
                        .map_err(raw_verify)?;
                    let mut scratch = Vec::with_capacity(1024);
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= chunks.len() || i > first_bad.load(Ordering::Relaxed) {
                            return Ok(done);
                        }
                        let chunk = check_chunk(&mut stmt, chunks[i], check, &mut scratch)?;
                        if chunk.bad.is_some() {
                            first_bad.fetch_min(i, Ordering::Relaxed);
                        }
                        done.push((i, chunk));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(StoreError::Raw {
                        action: "verify receipts",
                        cause: "a verifying thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut by_index: Vec<Option<Chunk>> = (0..chunks.len()).map(|_| None).collect();
    for done in results {
        for (i, chunk) in done? {
            by_index[i] = Some(chunk);
        }
    }
    Ok(merge(by_index))
}

/// What one thread found in one seq range.
#[derive(Debug, Default)]
struct Chunk {
    /// The first row: seq, id and prev_hash (its link is checked at merge).
    first: Option<(i64, String, String)>,
    /// Rows that passed, in order, before `bad`.
    passed: u64,
    /// The last row that passed: seq and hash.
    last_good: Option<(i64, String)>,
    bad: Option<(i64, String, Problem)>,
}

/// Check the rows of `range` in order: every hash, and every link but the
/// first row's.
fn check_chunk(
    stmt: &mut rusqlite::Statement<'_>,
    range: (i64, i64),
    check: RowCheck,
    scratch: &mut Vec<u8>,
) -> Result<Chunk, StoreError> {
    let mut rows = stmt.query(range).map_err(raw_verify)?;
    let mut chunk = Chunk::default();
    // The previous row's hash; reused, so the loop does not allocate. It is
    // always text: the first row's prev_hash as read, then hashes that
    // passed (hex).
    let mut prev: Vec<u8> = Vec::with_capacity(64);
    let mut last_seq = None;
    while let Some(row) = rows.next().map_err(raw_verify)? {
        let seq = row
            .get_ref(0)
            .and_then(|v| Ok(v.as_i64()?))
            .map_err(raw_verify)?;
        let id = || {
            row.get_ref(1)
                .ok()
                .and_then(|v| v.as_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        if chunk.first.is_none() {
            // Its link is the merge's to check; here it links to itself.
            match row.get_ref(19).map(|v| v.as_str()) {
                Ok(Ok(p)) => {
                    prev.extend_from_slice(p.as_bytes());
                    chunk.first = Some((seq, id(), p.to_owned()));
                }
                _ => {
                    chunk.first = Some((seq, id(), String::new()));
                    chunk.bad = Some((
                        seq,
                        id(),
                        Problem::Unreadable {
                            column: "prev_hash",
                        },
                    ));
                    break;
                }
            }
        }
        let raw = match check {
            RowCheck::Raw => check_row_raw(row, &prev, scratch),
            RowCheck::Reference => None,
        };
        if let Some(hash) = raw {
            prev.clear();
            prev.extend_from_slice(&hash);
            last_seq = Some(seq);
            chunk.passed += 1;
            continue;
        }
        // `prev` came from a `&str`, so it is UTF-8; an empty one would only
        // fail the link.
        let prev_text = std::str::from_utf8(&prev).unwrap_or_default();
        match check_row(row, prev_text, scratch) {
            Ok(hash) => {
                prev.clear();
                prev.extend_from_slice(hash.as_bytes());
                last_seq = Some(seq);
                chunk.passed += 1;
            }
            Err(problem) => {
                chunk.bad = Some((seq, id(), problem));
                break;
            }
        }
    }
    chunk.last_good = last_seq.map(|seq| (seq, String::from_utf8_lossy(&prev).into_owned()));
    Ok(chunk)
}

/// Join the chunks in seq order: check the link into each chunk, and stop at
/// the first problem.
fn merge(chunks: Vec<Option<Chunk>>) -> VerifyReport {
    let mut report = VerifyReport {
        checked: 0,
        last_good: None,
        first_bad: None,
    };
    for chunk in chunks {
        // Chunks after the first bad one may be missing; we stop before them.
        let Some(chunk) = chunk else { break };
        let Some((seq, id, first_prev)) = chunk.first else {
            continue; // no rows in this range
        };
        let prev = report
            .last_good
            .as_ref()
            .map_or(GENESIS_HASH, |(_, h)| h.as_str());
        let unreadable_first = matches!(
            &chunk.bad,
            Some((s, _, Problem::Unreadable { column: "prev_hash" })) if *s == seq
        );
        if !unreadable_first && first_prev != prev {
            let problem = if report.last_good.is_none() {
                "prev_hash is not the chain's starting value, so receipts before it were deleted"
                    .to_owned()
            } else {
                Problem::Link.to_string()
            };
            report.first_bad = Some(BadReceipt { seq, id, problem });
            return report;
        }
        report.checked += chunk.passed;
        if chunk.last_good.is_some() {
            report.last_good = chunk.last_good;
        }
        if let Some((seq, id, problem)) = chunk.bad {
            report.first_bad = Some(BadReceipt {
                seq,
                id,
                problem: problem.to_string(),
            });
            return report;
        }
    }
    report
}

/// Why a receipt failed verification.
#[derive(Debug, PartialEq, Eq)]
enum Problem {
    Link,
    Edited { stored: String, recomputed: String },
    Unreadable { column: &'static str },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Link => f.write_str(
                "prev_hash does not match the previous receipt's hash (a receipt before it \
                 was deleted, inserted or reordered)",
            ),
            Problem::Edited { stored, recomputed } => write!(
                f,
                "content was edited (stored hash {stored}, recomputed {recomputed})"
            ),
            Problem::Unreadable { column } => {
                write!(f, "its {column} column holds a value tollgate never writes")
            }
        }
    }
}

/// The fast check of one row on its raw column bytes: its hash when the
/// row links to `prev` and its recomputed hash matches the stored one;
/// `None` otherwise, whatever the reason, and [`check_row`] then decides.
///
/// Every column must have the type the reference reads (text, or NULL
/// where the reference allows it; the numbers as in `check_row`), and every
/// text value must be UTF-8 ([`RawContent`] checks it, cheaply for ASCII),
/// so a row passes here only if it passes `check_row`.
fn check_row_raw(row: &rusqlite::Row<'_>, prev: &[u8], scratch: &mut Vec<u8>) -> Option<[u8; 64]> {
    let text = |i: usize| match row.get_ref(i) {
        Ok(ValueRef::Text(b)) => Some(b),
        _ => None,
    };
    let opt_text = |i: usize| match row.get_ref(i) {
        Ok(ValueRef::Text(b)) => Some(Some(b)),
        Ok(ValueRef::Null) => Some(None),
        _ => None,
    };
    if text(19)? != prev {
        return None;
    }
    let hash = text(20)?;
    let content = RawContent {
        id: text(1)?,
        ts: text(2)?,
        principal: opt_text(3)?,
        roles: text(4)?,
        auth: text(5)?,
        transport: text(6)?,
        session: opt_text(7)?,
        tool: text(8)?,
        version: row.get_ref(9).ok()?.as_i64_or_null().ok()?,
        spec_hash: opt_text(10)?,
        args: text(11)?,
        decision: text(12)?,
        reason: opt_text(13)?,
        outcome: text(14)?,
        result_digest: opt_text(15)?,
        result_excerpt: opt_text(16)?,
        duration_us: row.get_ref(17).ok()?.as_i64().ok()?,
        cost_usd: row.get_ref(18).ok()?.as_f64_or_null().ok()?,
        policy_set: opt_text(21)?,
        policies: opt_text(22)?,
        approval_id: opt_text(23)?,
        replay_of: opt_text(24)?,
    };
    let recomputed = content.chain_hash(prev, scratch).ok()?;
    (recomputed[..] == *hash).then_some(recomputed)
}

/// Check one row against the previous hash; on success return its hash.
///
/// This is the reference check: every text column must be UTF-8 (`&str`),
/// and the hash comes from [`ContentView`], the writer's own code. The link
/// is checked first, so a deletion is reported at the receipt after the gap
/// rather than as an edit.
fn check_row<'r>(
    row: &'r rusqlite::Row<'_>,
    prev: &str,
    scratch: &mut Vec<u8>,
) -> Result<&'r str, Problem> {
    let get = |i: usize, column: &'static str| -> Result<ValueRef<'r>, Problem> {
        row.get_ref(i).map_err(|_| Problem::Unreadable { column })
    };
    let text = |i, column| {
        get(i, column)?
            .as_str()
            .map_err(|_| Problem::Unreadable { column })
    };
    let opt_text = |i, column| {
        get(i, column)?
            .as_str_or_null()
            .map_err(|_| Problem::Unreadable { column })
    };
    let prev_hash = text(19, "prev_hash")?;
    let hash = text(20, "hash")?;
    if prev_hash != prev {
        return Err(Problem::Link);
    }
    let view = ContentView {
        id: text(1, "id")?,
        ts: text(2, "ts")?,
        principal: opt_text(3, "principal")?,
        roles: text(4, "roles")?,
        auth: text(5, "auth")?,
        transport: text(6, "transport")?,
        session: opt_text(7, "session")?,
        tool: text(8, "tool")?,
        version: get(9, "version")?
            .as_i64_or_null()
            .map_err(|_| Problem::Unreadable { column: "version" })?,
        spec_hash: opt_text(10, "spec_hash")?,
        args: text(11, "args")?,
        decision: text(12, "decision")?,
        reason: opt_text(13, "reason")?,
        outcome: text(14, "outcome")?,
        result_digest: opt_text(15, "result_digest")?,
        result_excerpt: opt_text(16, "result_excerpt")?,
        duration_us: get(17, "duration_us")?
            .as_i64()
            .map_err(|_| Problem::Unreadable {
                column: "duration_us",
            })?,
        cost_usd: get(18, "cost_usd")?
            .as_f64_or_null()
            .map_err(|_| Problem::Unreadable { column: "cost_usd" })?,
        policy_set: opt_text(21, "policy_set")?,
        policies: opt_text(22, "policies")?,
        approval_id: opt_text(23, "approval_id")?,
        replay_of: opt_text(24, "replay_of")?,
    };
    let recomputed = view.chain_hash(prev_hash, scratch);
    if recomputed != hash.as_bytes() {
        return Err(Problem::Edited {
            stored: hash.to_owned(),
            recomputed: String::from_utf8_lossy(&recomputed).into_owned(),
        });
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::receipt::tests::sample;
    use crate::receipt::{
        NewReceipt, NotUtf8, canonical_args, canonical_policies, canonical_roles,
    };
    use crate::store::ReceiptWriter;

    /// The raw view of `r`, as its row stores it.
    fn raw_of<'a>(
        r: &'a NewReceipt,
        args: &'a str,
        roles: &'a str,
        policies: Option<&'a str>,
    ) -> RawContent<'a> {
        let b = |s: &'a Option<String>| s.as_deref().map(str::as_bytes);
        RawContent {
            args: args.as_bytes(),
            approval_id: b(&r.approval_id),
            auth: r.auth.as_bytes(),
            cost_usd: r.cost_usd,
            decision: r.decision.as_str().as_bytes(),
            duration_us: r.duration_us,
            id: r.id.as_bytes(),
            outcome: r.outcome.as_str().as_bytes(),
            policies: policies.map(str::as_bytes),
            policy_set: b(&r.policy_set),
            principal: b(&r.principal),
            reason: b(&r.reason),
            replay_of: b(&r.replay_of),
            result_digest: b(&r.result_digest),
            result_excerpt: b(&r.result_excerpt),
            roles: roles.as_bytes(),
            session: b(&r.session),
            spec_hash: b(&r.spec_hash),
            tool: r.tool.as_bytes(),
            transport: r.transport.as_bytes(),
            ts: r.ts.as_bytes(),
            version: r.version,
        }
    }

    /// Both writers' hashes of `r` after `prev`.
    fn both_hashes(prev: &str, r: &NewReceipt) -> ([u8; 64], Result<[u8; 64], NotUtf8>) {
        let (args, roles) = (canonical_args(r), canonical_roles(r));
        let policies = canonical_policies(r);
        let mut scratch = Vec::new();
        let reference =
            ContentView::of(r, &args, &roles, policies.as_deref()).chain_hash(prev, &mut scratch);
        let raw =
            raw_of(r, &args, &roles, policies.as_deref()).chain_hash(prev.as_bytes(), &mut scratch);
        (reference, raw)
    }

    /// Strings that need every path of the writers: plain ASCII, quotes,
    /// backslashes, control characters, DEL, non-ASCII, long runs (the
    /// 16-byte blocks) and the empty string.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,40}",
            "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é€😀]{0,40}",
            any::<String>(),
        ]
    }

    fn receipt() -> impl Strategy<Value = NewReceipt> {
        let opt = || proptest::option::of(text());
        (
            (text(), text(), opt(), text(), text(), opt(), text()),
            (opt(), opt(), opt(), opt(), opt(), opt(), opt()),
            (
                proptest::option::of(any::<i64>()),
                any::<i64>(),
                proptest::option::of(any::<f64>()),
                proptest::collection::vec(text(), 0..3),
                proptest::collection::vec(text(), 0..3),
                text(),
            ),
        )
            .prop_map(
                |(
                    (id, ts, principal, auth, transport, session, tool),
                    (
                        spec_hash,
                        reason,
                        result_digest,
                        result_excerpt,
                        policy_set,
                        approval_id,
                        replay_of,
                    ),
                    (version, duration_us, cost_usd, roles, policies, arg),
                )| NewReceipt {
                    id,
                    ts,
                    principal,
                    roles,
                    auth,
                    transport,
                    session,
                    tool,
                    version,
                    spec_hash,
                    args: serde_json::json!({ "a": arg, "n": duration_us }),
                    reason,
                    result_digest,
                    result_excerpt,
                    duration_us,
                    cost_usd,
                    policy_set,
                    policies,
                    approval_id,
                    replay_of,
                    ..sample("x")
                },
            )
    }

    proptest! {
        #[test]
        fn raw_and_reference_writers_agree(r in receipt(), prev in "[0-9a-f]{64}") {
            let (reference, raw) = both_hashes(&prev, &r);
            prop_assert_eq!(raw, Ok(reference));
        }
    }

    #[test]
    fn raw_writer_agrees_on_the_sample_and_refuses_bad_utf8() {
        let r = sample("0190a5f0-0000-7000-8000-000000000001");
        let (reference, raw) = both_hashes(GENESIS_HASH, &r);
        assert_eq!(raw, Ok(reference));

        let (args, roles) = (canonical_args(&r), canonical_roles(&r));
        let mut scratch = Vec::new();
        let mut bad = raw_of(&r, &args, &roles, None);
        bad.reason = Some(b"caf\xe9");
        assert_eq!(bad.chain_hash(b"", &mut scratch), Err(NotUtf8));
        let mut bad = raw_of(&r, &args, &roles, None);
        bad.args = b"\"\xff\"";
        assert_eq!(bad.chain_hash(b"", &mut scratch), Err(NotUtf8));
    }

    /// A store holding `n` chained receipts (the sample, which needs
    /// escaping and non-ASCII handling).
    async fn store_with(n: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let (writer, handle) = ReceiptWriter::spawn(&store);
        for i in 1..=n {
            let mut r = sample(&format!("0190a5f0-0000-7000-8000-{i:012}"));
            if i % 2 == 0 {
                r.cost_usd = None;
                r.policies.clear();
                r.approval_id = None;
            }
            writer.commit(r).await.unwrap();
        }
        handle.shutdown().await;
        (dir, store)
    }

    #[tokio::test]
    async fn intact_rows_pass_the_raw_check_itself() {
        let (_dir, store) = store_with(6).await;
        let conn = open_read_only(store.path()).unwrap();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {VERIFY_COLUMNS} FROM receipts ORDER BY seq"
            ))
            .unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut prev = GENESIS_HASH.as_bytes().to_vec();
        let mut scratch = Vec::new();
        let mut n = 0;
        while let Some(row) = rows.next().unwrap() {
            let hash = check_row_raw(row, &prev, &mut scratch).expect("raw check passes");
            prev = hash.to_vec();
            n += 1;
        }
        assert_eq!(n, 6);
    }

    async fn reports(store: &Store) -> (VerifyReport, VerifyReport) {
        let raw = store.verify_chain_with(2, RowCheck::Raw).await.unwrap();
        let reference = store
            .verify_chain_with(1, RowCheck::Reference)
            .await
            .unwrap();
        (raw, reference)
    }

    /// Tampering that the raw check cannot judge by itself is reported
    /// exactly as the reference check reports it.
    #[tokio::test]
    async fn raw_and_reference_report_the_same_problems() {
        let cases: &[(&str, &str)] = &[
            (
                "args",
                r#"UPDATE receipts SET args = '{"a":2}' WHERE seq = 5"#,
            ),
            (
                "bad utf-8",
                "UPDATE receipts SET reason = CAST(x'ff' AS TEXT) WHERE seq = 4",
            ),
            (
                "bad utf-8 args",
                "UPDATE receipts SET args = CAST(x'22ff22' AS TEXT) WHERE seq = 3",
            ),
            (
                "integer for text",
                "UPDATE receipts SET tool = 5 WHERE seq = 6",
            ),
            (
                "blob for text",
                "UPDATE receipts SET id = x'00' WHERE seq = 2",
            ),
            (
                "real for text",
                "UPDATE receipts SET roles = 2.5 WHERE seq = 7",
            ),
            (
                "real for integer",
                "UPDATE receipts SET duration_us = 1.5 WHERE seq = 5",
            ),
            (
                "text for real",
                "UPDATE receipts SET cost_usd = 'x' WHERE seq = 3",
            ),
            (
                "blob hash",
                "UPDATE receipts SET hash = x'00' WHERE seq = 4",
            ),
            (
                "prev_hash",
                "UPDATE receipts SET prev_hash = x'00' WHERE seq = 6",
            ),
            (
                "null optional",
                "UPDATE receipts SET session = NULL WHERE seq = 2",
            ),
            (
                "first prev_hash",
                "UPDATE receipts SET prev_hash = 5 WHERE seq = 1",
            ),
        ];
        for (what, sql) in cases {
            let (_dir, store) = store_with(8).await;
            for sql in ["DROP TRIGGER receipts_no_update", sql] {
                sqlx::query(sql).execute(store.pool()).await.unwrap();
            }
            let (raw, reference) = reports(&store).await;
            assert!(raw.first_bad.is_some(), "{what}: went unnoticed");
            assert_eq!(raw, reference, "{what}");
        }
    }

    /// A row whose text is not UTF-8 is refused even when its stored hash
    /// matches those bytes (someone re-hashed it): the reference cannot read
    /// it as text, and the raw check must not accept what the reference
    /// refuses.
    #[tokio::test]
    async fn rehashed_invalid_utf8_is_still_unreadable() {
        let (_dir, store) = store_with(3).await;
        let r = store
            .get_receipt("0190a5f0-0000-7000-8000-000000000003")
            .await;
        let r = r.unwrap().unwrap();
        // The canonical text with the `ts` value's first byte made invalid.
        let (args, roles) = (canonical_args(&r.content), canonical_roles(&r.content));
        let policies = canonical_policies(&r.content);
        let view = raw_of(&r.content, &args, &roles, policies.as_deref());
        let mut text = Vec::new();
        let _ = view.chain_hash(r.prev_hash.as_bytes(), &mut text);
        let at = text
            .windows(r.content.ts.len())
            .position(|w| w == r.content.ts.as_bytes())
            .unwrap();
        text[at] = 0xff;
        let hash = crate::canonical::sha256_hex(&text);
        let mut bad_ts = r.content.ts.as_bytes().to_vec();
        bad_ts[0] = 0xff;
        sqlx::query("DROP TRIGGER receipts_no_update")
            .execute(store.pool())
            .await
            .unwrap();
        sqlx::query("UPDATE receipts SET ts = CAST(? AS TEXT), hash = ? WHERE seq = 3")
            .bind(bad_ts)
            .bind(hash)
            .execute(store.pool())
            .await
            .unwrap();
        let (raw, reference) = reports(&store).await;
        assert_eq!(raw, reference);
        let bad = raw.first_bad.expect("invalid UTF-8 went unnoticed");
        assert_eq!(bad.seq, 3);
        assert!(bad.problem.contains("its ts column"), "{}", bad.problem);
    }

    #[tokio::test]
    async fn intact_chains_give_the_same_report_both_ways() {
        for n in [0, 1, 5, 50] {
            let (_dir, store) = store_with(n).await;
            let (raw, reference) = reports(&store).await;
            assert_eq!(raw, reference);
            assert_eq!((raw.checked, raw.first_bad), (n as u64, None));
        }
    }
}
