//! The receipt writer: one task that owns the end of the hash chain.
//!
//! Every governed call hands its receipt to [`ReceiptWriter::commit`] and waits
//! until that receipt is durable, so no reply leaves before its receipt exists.
//! Committing one row per transaction caps out at a few thousand calls per
//! second; instead the task takes whatever has queued up (up to
//! [`BATCH_MAX`]), chains it, and writes it in one transaction with one
//! multi-row INSERT. Under load, batches grow and throughput follows; when
//! idle, a lone receipt commits immediately.
//!
//! Each batch runs in `BEGIN IMMEDIATE` and re-reads the chain head inside the
//! transaction. The head is never cached between batches: another tollgate
//! process (`tollgate call` while `serve` runs) may have appended meanwhile,
//! and the write lock guarantees nobody appends between our read and our commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Store, StoreError, db::describe};
use crate::metrics;
use crate::receipt::{
    ContentView, GENESIS_HASH, NewReceipt, canonical_args, canonical_policies, canonical_roles,
};

/// Most receipts written in one transaction.
pub const BATCH_MAX: usize = 512;

/// Receipts that may wait in the queue before `commit` itself waits
/// (backpressure, so a stalled disk cannot grow memory without bound).
const QUEUE_CAPACITY: usize = 4 * BATCH_MAX;

/// Bound values per receipt row in the INSERT.
const COLUMNS: usize = 24;

/// SQLite's default SQLITE_MAX_VARIABLE_NUMBER since 3.32 (the bundled build is newer).
const SQLITE_MAX_VARIABLES: usize = 32_766;

// A whole batch fits in one INSERT statement.
const _: () = assert!(BATCH_MAX * COLUMNS <= SQLITE_MAX_VARIABLES);

/// Where a receipt landed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub seq: i64,
    pub hash: String,
}

type Reply = oneshot::Sender<Result<Committed, StoreError>>;

/// Hands receipts to the writer task. Cheap to clone; one per pipeline is fine.
#[derive(Debug, Clone)]
pub struct ReceiptWriter {
    queue: mpsc::Sender<(NewReceipt, Reply)>,
    counters: Arc<Counters>,
}

/// What the writer has done so far, e.g. for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Receipts committed.
    pub receipts: u64,
    /// Transactions committed.
    pub batches: u64,
    /// The most receipts one transaction has held.
    pub largest_batch: u64,
}

#[derive(Debug, Default)]
struct Counters {
    receipts: AtomicU64,
    batches: AtomicU64,
    largest_batch: AtomicU64,
}

impl Counters {
    fn record(&self, batch: usize) {
        let batch = batch as u64;
        self.receipts.fetch_add(batch, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.largest_batch.fetch_max(batch, Ordering::Relaxed);
    }
}

/// Owns the writer task; [`WriterHandle::shutdown`] flushes it.
///
/// Dropping the handle without calling `shutdown` leaves the task running
/// until every [`ReceiptWriter`] is gone.
#[derive(Debug)]
pub struct WriterHandle {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl ReceiptWriter {
    /// Start the writer task on the current tokio runtime.
    pub fn spawn(store: &Store) -> (ReceiptWriter, WriterHandle) {
        let (queue, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (stop, stop_rx) = oneshot::channel();
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(
            store.pool().clone(),
            rx,
            stop_rx,
            Arc::clone(&counters),
        ));
        (
            ReceiptWriter { queue, counters },
            WriterHandle { stop, task },
        )
    }

    /// Counts of committed receipts and transactions since `spawn`.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            receipts: self.counters.receipts.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
            largest_batch: self.counters.largest_batch.load(Ordering::Relaxed),
        }
    }

    /// Append `receipt` to the chain; returns once its transaction has committed.
    ///
    /// An error means the receipt was not written at all (callers fail closed).
    /// If the returned future is dropped after the receipt was queued, the
    /// receipt is still written.
    pub async fn commit(&self, receipt: NewReceipt) -> Result<Committed, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((receipt, reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

impl WriterHandle {
    /// Refuse new receipts, write every one already queued, and wait for the
    /// task to finish. Later `commit` calls fail with [`StoreError::WriterStopped`].
    pub async fn shutdown(self) {
        // If the task already ended, there is nothing to tell it.
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the receipt writer task failed");
        }
    }
}

/// The writer task: batch, write, answer; until the queue is closed and empty.
async fn run(
    pool: SqlitePool,
    mut queue: mpsc::Receiver<(NewReceipt, Reply)>,
    mut stop: oneshot::Receiver<()>,
    counters: Arc<Counters>,
) {
    let mut buf = Vec::with_capacity(BATCH_MAX);
    let mut stop_seen = false;
    loop {
        let n = if stop_seen {
            queue.recv_many(&mut buf, BATCH_MAX).await
        } else {
            tokio::select! {
                n = queue.recv_many(&mut buf, BATCH_MAX) => n,
                signal = &mut stop => {
                    // Ok: shutdown was asked for. Err: the handle was dropped,
                    // which only means nobody will ask; keep serving.
                    if signal.is_ok() {
                        queue.close();
                    }
                    stop_seen = true;
                    continue;
                }
            }
        };
        if n == 0 {
            // Closed and drained.
            break;
        }
        // What is left behind this batch; 0 whenever the writer keeps up.
        metrics::writer_queue_depth(queue.len());
        let (receipts, replies): (Vec<NewReceipt>, Vec<Reply>) = buf.drain(..).unzip();
        let started = Instant::now();
        match write_batch(&pool, receipts).await {
            Ok(committed) => {
                let took = started.elapsed();
                counters.record(n);
                metrics::receipt_batch(n, took);
                tracing::debug!(
                    batch = n,
                    commit_us = took.as_micros() as u64,
                    "committed receipts"
                );
                for (reply, c) in replies.into_iter().zip(committed) {
                    // A caller that went away no longer needs the answer.
                    let _ = reply.send(Ok(c));
                }
            }
            Err(e) => {
                tracing::error!(batch = n, error = %describe(&e), "receipt batch rolled back");
                metrics::receipt_commit_failed(n);
                let source = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Unrecorded {
                        source: Arc::clone(&source),
                    }));
                }
            }
        }
    }
}

/// Write one batch in one transaction; all of it or none of it.
async fn write_batch(
    pool: &SqlitePool,
    receipts: Vec<NewReceipt>,
) -> Result<Vec<Committed>, sqlx::Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    match append(&mut tx, receipts).await {
        Ok(committed) => {
            tx.commit().await?;
            Ok(committed)
        }
        Err(e) => {
            // Dropping would roll back too, but later; be explicit.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// A receipt ready to insert: its canonical text and place in the chain.
struct Row {
    receipt: NewReceipt,
    args: String,
    roles: String,
    policies: Option<String>,
    prev_hash: String,
    hash: String,
}

async fn append(
    tx: &mut sqlx::Transaction<'static, Sqlite>,
    receipts: Vec<NewReceipt>,
) -> Result<Vec<Committed>, sqlx::Error> {
    let head: Option<String> =
        sqlx::query_scalar("SELECT hash FROM receipts ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut **tx)
            .await?;
    let mut prev = head.unwrap_or_else(|| GENESIS_HASH.to_owned());

    let n = receipts.len();
    let mut rows = Vec::with_capacity(n);
    let mut scratch = Vec::with_capacity(1024);
    for receipt in receipts {
        let (args, roles) = (canonical_args(&receipt), canonical_roles(&receipt));
        let policies = canonical_policies(&receipt);
        let hex = ContentView::of(&receipt, &args, &roles, policies.as_deref())
            .chain_hash(&prev, &mut scratch);
        let hash = String::from_utf8_lossy(&hex).into_owned();
        let prev_hash = std::mem::replace(&mut prev, hash.clone());
        rows.push(Row {
            receipt,
            args,
            roles,
            policies,
            prev_hash,
            hash,
        });
    }
    let hashes: Vec<String> = rows.iter().map(|r| r.hash.clone()).collect();

    let mut insert = QueryBuilder::<Sqlite>::new(
        "INSERT INTO receipts (id, ts, principal, roles, auth, transport, session, tool, \
         version, spec_hash, args, decision, reason, outcome, result_digest, result_excerpt, \
         duration_us, cost_usd, policy_set, policies, approval_id, replay_of, prev_hash, hash) ",
    );
    insert.push_values(rows, |mut b, row| {
        let r = row.receipt;
        b.push_bind(r.id)
            .push_bind(r.ts)
            .push_bind(r.principal)
            .push_bind(row.roles)
            .push_bind(r.auth)
            .push_bind(r.transport)
            .push_bind(r.session)
            .push_bind(r.tool)
            .push_bind(r.version)
            .push_bind(r.spec_hash)
            .push_bind(row.args)
            .push_bind(r.decision.as_str())
            .push_bind(r.reason)
            .push_bind(r.outcome.as_str())
            .push_bind(r.result_digest)
            .push_bind(r.result_excerpt)
            .push_bind(r.duration_us)
            .push_bind(r.cost_usd)
            .push_bind(r.policy_set)
            .push_bind(row.policies)
            .push_bind(r.approval_id)
            .push_bind(r.replay_of)
            .push_bind(row.prev_hash)
            .push_bind(row.hash);
    });
    // Batch sizes vary, so caching the prepared statement would only evict
    // statements that are reused.
    let done = insert.build().persistent(false).execute(&mut **tx).await?;
    debug_assert_eq!(done.rows_affected(), n as u64);

    // We hold the write lock, and rows take AUTOINCREMENT values in VALUES
    // order, so this batch's seqs are the n numbers ending at the last rowid.
    let first = done.last_insert_rowid() - n as i64 + 1;
    Ok(hashes
        .into_iter()
        .enumerate()
        .map(|(i, hash)| Committed {
            seq: first + i as i64,
            hash,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::tests::sample;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        (dir, store)
    }

    fn id(i: usize) -> String {
        format!("0190a5f0-0000-7000-8000-{i:012}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_committers_form_one_chain() {
        let (_dir, store) = store().await;
        let (writer, handle) = ReceiptWriter::spawn(&store);
        let mut tasks = Vec::new();
        for t in 0..50 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for k in 0..40 {
                    let c = writer.commit(sample(&id(t * 40 + k))).await.unwrap();
                    out.push(c);
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        handle.shutdown().await;

        all.sort_by_key(|c| c.seq);
        let seqs: Vec<i64> = all.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
        let report = store.verify_chain().await.unwrap();
        assert_eq!(report.checked, 2000);
        assert!(report.first_bad.is_none(), "{report:?}");

        // Each answer names the stored row.
        let last = store.list_receipts(&Default::default()).await.unwrap();
        assert_eq!(last[0].seq, 2000);
        assert_eq!(last[0].hash, all[1999].hash);

        // Batching happened: 2,000 receipts took fewer transactions.
        let stats = writer.stats();
        assert_eq!(stats.receipts, 2000);
        assert!(stats.largest_batch > 1, "{stats:?}");
        assert!(stats.batches < 2000, "{stats:?}");
    }

    #[tokio::test]
    async fn shutdown_writes_everything_queued_then_refuses() {
        let (_dir, store) = store().await;
        let (writer, handle) = ReceiptWriter::spawn(&store);
        // Queue directly, so every receipt is in the channel before shutdown.
        let mut answers = Vec::new();
        for i in 0..1000 {
            let (reply, answer) = oneshot::channel();
            writer.queue.try_send((sample(&id(i)), reply)).unwrap();
            answers.push(answer);
        }
        handle.shutdown().await;
        for answer in answers {
            answer.await.unwrap().unwrap();
        }
        let err = writer.commit(sample(&id(5000))).await.unwrap_err();
        assert!(matches!(err, StoreError::WriterStopped), "{err}");
        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (1000, None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failed_batch_writes_nothing_and_the_next_one_starts_fresh() {
        let (_dir, store) = store().await;
        let (writer, handle) = ReceiptWriter::spawn(&store);
        writer.commit(sample(&id(0))).await.unwrap();

        // Receipt 50 reuses id 0, so its whole batch must fail.
        let mut tasks = Vec::new();
        for i in 1..=100 {
            let writer = writer.clone();
            let rid = if i == 50 { id(0) } else { id(i) };
            tasks.push(tokio::spawn(
                async move { writer.commit(sample(&rid)).await },
            ));
        }
        let mut ok = 1;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(matches!(e, StoreError::Unrecorded { .. }), "{e}");
                    assert!(
                        e.to_string().starts_with("cannot record the receipt: "),
                        "{e}"
                    );
                    assert!(!e.to_string().contains("alice"), "{e}");
                }
            }
        }
        assert!(ok < 101, "the duplicate id was accepted");
        writer.commit(sample(&id(1000))).await.unwrap();
        handle.shutdown().await;

        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (ok + 1, None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_processes_share_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // Two pools on one file behave like two tollgate processes.
        let a = Store::open(&path).await.unwrap();
        let b = Store::open(&path).await.unwrap();
        let (wa, ha) = ReceiptWriter::spawn(&a);
        let (wb, hb) = ReceiptWriter::spawn(&b);
        let mut tasks = Vec::new();
        for t in 0..20 {
            let w = if t % 2 == 0 { wa.clone() } else { wb.clone() };
            tasks.push(tokio::spawn(async move {
                for k in 0..25 {
                    w.commit(sample(&id(t * 25 + k))).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        ha.shutdown().await;
        hb.shutdown().await;
        let report = a.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (500, None));
    }
}
