//! The receipt writer: one thread that owns the end of the hash chain.
//!
//! Every governed call hands its receipt to [`ReceiptWriter::commit`] and waits
//! until that receipt is durable, so no reply leaves before its receipt exists.
//! Committing one row per transaction caps out at a few thousand calls per
//! second; instead the writer takes whatever has queued up (up to
//! [`BATCH_MAX`]), chains it, and writes it in one transaction. Under load,
//! batches grow and throughput follows; when idle, a lone receipt commits
//! immediately.
//!
//! The writer is a dedicated OS thread with its own rusqlite connection and
//! cached prepared statements, not a task on the sqlx pool: one connection,
//! no per-statement channel hops. Everything that does not need the chain
//! head happens on the caller's side ([`Prepared`]): the canonical texts,
//! the bytes to hash, and freeing the receipt afterwards. The thread hashes
//! and inserts up to 64 rows per statement, bound without copies
//! ([`raw`]). A second thread checkpoints the WAL in the background, so a
//! caller does not wait behind a checkpoint's `fsync`. Metrics are recorded
//! by a small tokio task the thread reports to (one event per batch), on
//! the runtime that spawned the writer.
//!
//! Each batch runs in `BEGIN IMMEDIATE` and re-reads the chain head inside the
//! transaction. The head is never cached between batches: another tollgate
//! process (`tollgate call` while `serve` runs) may have appended meanwhile,
//! and the write lock guarantees nobody appends between our read and our commit.
//! A batch that fails writes nothing, and every caller in it gets an error.
//!
//! # Intents
//!
//! A call whose effect must not go unrecorded first commits an *intent*
//! ([`ReceiptWriter::intent`]): the receipt it would get if tollgate died
//! before the call completed (outcome `interrupted`). The transaction that
//! appends the real receipt deletes the intent. An intent left behind means
//! the process died in between; it is turned into its `interrupted` receipt
//! by [`Store::recover_intents`], by every writer when it starts, and by a
//! sweep every [`WriterOptions::heartbeat`].
//!
//! Several processes may share a database, so an intent is only recovered
//! once the writer that recorded it is known to be gone: each writer
//! registers in the `writers` table and refreshes its heartbeat there while
//! it runs, and holds an exclusive `flock` on a lock file next to the
//! database (`<db>.writer-<id>.lock`, see [`liveness`]). An intent is an
//! orphan when its writer unregistered (at shutdown), when its lock file on
//! this host can be locked by someone else (the process is gone: recovered
//! at once, so a restart after `kill -9` recovers the dead server's intents
//! in its start-up pass), or, when there is no lock to judge by (a writer on
//! another host), once its heartbeat is [`WriterOptions::stale_after`] old.
//! Recovery runs in `BEGIN IMMEDIATE` and takes the intents with
//! `DELETE … RETURNING`, so two processes recovering at once produce each
//! `interrupted` receipt exactly once.
//!
//! # Storage health
//!
//! [`ReceiptWriter::health`] turns [`StorageHealth::Unhealthy`] when a
//! transaction fails for a storage reason (disk full, read-only file, lock
//! held beyond the busy timeout, I/O error) and back to healthy at the next
//! successful write: a batch, a heartbeat, or a [`ReceiptWriter::probe`].
//! A batch refused for its content (a duplicate receipt id) leaves it as is.
//!
//! # Code map
//!
//! This file is the callers' side: [`ReceiptWriter`], [`WriterHandle`], the
//! jobs they queue and what comes back. `thread.rs` is the writer thread's
//! loop (batching, answers, health, metrics events); `db.rs` its connection
//! (transactions, chain head, heartbeats, intent recovery, checkpoints);
//! `raw.rs` the receipt INSERT through SQLite's C API; `liveness.rs` the
//! lock files that tell whether another writer is alive; `errors.rs` what a
//! SQLite error means here.

mod db;
mod errors;
mod liveness;
mod raw;
#[cfg(test)]
mod tests;
mod thread;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::{Store, StoreError, db::describe};
use crate::metrics;
use crate::receipt::{
    ContentView, Decision, GENESIS_HASH, NewReceipt, Outcome, canonical_args, canonical_policies,
    canonical_roles, chain_hash_of_tail, now_ts,
};
use db::*;
use errors::*;
use thread::WriterThread;

/// Most receipts written in one transaction.
pub const BATCH_MAX: usize = 512;

/// Jobs that may wait in the queue before `commit` itself waits
/// (backpressure, so a stalled disk cannot grow memory without bound).
const QUEUE_CAPACITY: usize = 4 * BATCH_MAX;

/// The writer connection checkpoints by itself past this many WAL pages
/// (16 MiB). Normally the background checkpointer keeps the WAL far smaller.
const WAL_AUTOCHECKPOINT: u32 = 4000;

/// Shortest pause between two background checkpoints.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(50);

/// The `reason` of a receipt recovered from an intent.
pub const INTERRUPTED_REASON: &str =
    "tollgate stopped before the call completed; its effect may or may not have happened";

/// Where a receipt landed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub seq: i64,
    pub hash: String,
}

/// Whether the database currently takes writes. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageHealth {
    Healthy,
    /// The last write failed; `cause` says why, in words (no receipt content).
    Unhealthy {
        cause: String,
    },
}

impl StorageHealth {
    pub fn is_healthy(&self) -> bool {
        matches!(self, StorageHealth::Healthy)
    }
}

/// Timings of the writer. [`Default`] is what `tollgate` uses.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// How long a transaction waits for another writer (possibly another
    /// process) before failing with "database is locked".
    pub busy_timeout: Duration,
    /// How often the writer refreshes its heartbeat (a tiny write, which also
    /// turns health green again after a failure) and sweeps for orphaned intents.
    pub heartbeat: Duration,
    /// A writer whose heartbeat is older than this is presumed dead, and its
    /// intents are recovered, unless its lock file on this host says
    /// otherwise (see the module docs). Must be well above
    /// `heartbeat + busy_timeout`.
    pub stale_after: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            busy_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(5),
            stale_after: Duration::from_secs(30),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// A receipt with its canonical texts, computed by the caller (off the
/// writer thread) because they do not depend on the chain head.
///
/// The one writer thread is the bottleneck of every governed call, so it
/// gets only the work that needs the chain head: SHA-256 over `prev_hash` +
/// [`Prepared::tail`], and the INSERT. The tail (the canonical content) is
/// built here, and the whole `Prepared` travels back to the caller with the
/// answer ([`Appended`]) so that freeing it is not the writer's work either.
struct Prepared {
    receipt: NewReceipt,
    args: String,
    roles: String,
    policies: Option<String>,
    /// `"\n"` + the canonical content: what the chain hash covers after
    /// `prev_hash` ([`ContentView::write_hash_tail`]).
    tail: Vec<u8>,
}

impl Prepared {
    fn new(receipt: NewReceipt) -> Prepared {
        let args = canonical_args(&receipt);
        let roles = canonical_roles(&receipt);
        let policies = canonical_policies(&receipt);
        // Keys and punctuation take ~300 bytes; the values the rest.
        let mut tail = Vec::with_capacity(512 + args.len() + roles.len());
        ContentView::of(&receipt, &args, &roles, policies.as_deref()).write_hash_tail(&mut tail);
        Prepared {
            receipt,
            args,
            roles,
            policies,
            tail,
        }
    }
}

/// The writer's answer to a receipt job: where the receipt landed, and the
/// receipt itself, handed back so the caller frees it (see [`Prepared`]).
struct Appended {
    seq: i64,
    /// Lower-case hex; turned into a `String` on the caller's side.
    hash: [u8; 64],
    prepared: Box<Prepared>,
}

impl Appended {
    fn committed(self) -> Committed {
        // Hex digits are ASCII, so nothing is lost here.
        let hash = String::from_utf8_lossy(&self.hash).into_owned();
        drop(self.prepared);
        Committed {
            seq: self.seq,
            hash,
        }
    }
}

enum Job {
    Receipt(Box<Prepared>, Reply<Appended>),
    Intent {
        id: String,
        created_at: String,
        json: String,
        reply: Reply<()>,
    },
    Probe(Reply<()>),
    Recover(Reply<usize>),
    Stop,
}

/// A job and its place in the queue (released when the writer takes it).
struct Queued {
    job: Job,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Hands receipts to the writer thread. Cheap to clone; one per pipeline is fine.
#[derive(Debug, Clone)]
pub struct ReceiptWriter {
    queue: std_mpsc::Sender<Queued>,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
    health: watch::Receiver<StorageHealth>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queued")
    }
}

/// What the writer has done so far, e.g. for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Receipts committed.
    pub receipts: u64,
    /// Transactions committed that held receipts.
    pub batches: u64,
    /// The most receipts one transaction has held.
    pub largest_batch: u64,
    /// Time the writer thread spent in those transactions, BEGIN to COMMIT,
    /// in microseconds (divided by `receipts`: its cost per receipt).
    pub busy_us: u64,
}

#[derive(Debug, Default)]
struct Counters {
    receipts: AtomicU64,
    batches: AtomicU64,
    largest_batch: AtomicU64,
    busy_us: AtomicU64,
}

impl Counters {
    fn record(&self, batch: usize, took: Duration) {
        let batch = batch as u64;
        self.receipts.fetch_add(batch, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.largest_batch.fetch_max(batch, Ordering::Relaxed);
        self.busy_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Owns the writer thread; [`WriterHandle::shutdown`] flushes it.
///
/// Dropping the handle without calling `shutdown` leaves the thread running
/// until every [`ReceiptWriter`] is gone.
#[derive(Debug)]
pub struct WriterHandle {
    stop: std_mpsc::Sender<Queued>,
    permits: Arc<Semaphore>,
    /// Ends after the thread has closed its connection.
    reporter: JoinHandle<()>,
}

/// What the thread tells the tokio side after each transaction: one event
/// per batch, since each one may wake the reporter task.
enum Event {
    Committed {
        /// Jobs still queued when the writer took the batch, if it came
        /// from the queue.
        queued: Option<usize>,
        receipts: usize,
        took: Duration,
    },
    Failed {
        queued: Option<usize>,
        receipts: usize,
    },
}

impl ReceiptWriter {
    /// Start the writer on the current tokio runtime, with default timings.
    pub fn spawn(store: &Store) -> (ReceiptWriter, WriterHandle) {
        Self::spawn_with(store, WriterOptions::default())
    }

    /// Start the writer with the given timings (tests use short ones).
    pub fn spawn_with(store: &Store, options: WriterOptions) -> (ReceiptWriter, WriterHandle) {
        let (queue, jobs) = std_mpsc::channel();
        let permits = Arc::new(Semaphore::new(QUEUE_CAPACITY));
        let counters = Arc::new(Counters::default());
        let (health_tx, health) = watch::channel(StorageHealth::Healthy);
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let reporter = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match event {
                    Event::Committed {
                        queued,
                        receipts,
                        took,
                    } => {
                        if let Some(n) = queued {
                            metrics::writer_queue_depth(n);
                        }
                        if receipts > 0 {
                            metrics::receipt_batch(receipts, took);
                            tracing::debug!(
                                batch = receipts,
                                commit_us = took.as_micros() as u64,
                                "committed receipts"
                            );
                        }
                    }
                    Event::Failed { queued, receipts } => {
                        if let Some(n) = queued {
                            metrics::writer_queue_depth(n);
                        }
                        if receipts > 0 {
                            metrics::receipt_commit_failed(receipts);
                        }
                    }
                }
            }
        });
        let mut thread = WriterThread {
            db: Db::new(store.path(), options),
            jobs,
            permits: Arc::clone(&permits),
            counters: Arc::clone(&counters),
            health: health_tx,
            events: events_tx,
            appended: Vec::with_capacity(BATCH_MAX),
        };
        let spawned = std::thread::Builder::new()
            .name("tollgate-receipts".into())
            .spawn(move || thread.run());
        if let Err(e) = spawned {
            // Without a thread nothing can be recorded: every call fails closed.
            tracing::error!(error = %e, "cannot start the receipt writer thread");
            permits.close();
        }
        (
            ReceiptWriter {
                queue: queue.clone(),
                permits: Arc::clone(&permits),
                counters,
                health,
            },
            WriterHandle {
                stop: queue,
                permits,
                reporter,
            },
        )
    }

    /// Counts of committed receipts and transactions since `spawn`.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            receipts: self.counters.receipts.load(Ordering::Relaxed),
            batches: self.counters.batches.load(Ordering::Relaxed),
            largest_batch: self.counters.largest_batch.load(Ordering::Relaxed),
            busy_us: self.counters.busy_us.load(Ordering::Relaxed),
        }
    }

    async fn send(&self, job: Job) -> Result<(), StoreError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        self.queue
            .send(Queued {
                job,
                _permit: Some(permit),
            })
            .map_err(|_| StoreError::WriterStopped)
    }

    /// Append `receipt` to the chain; returns once its transaction has committed.
    ///
    /// An error means the receipt was not written at all (callers fail closed).
    /// If the returned future is dropped after the receipt was queued, the
    /// receipt is still written. The transaction also deletes the intent
    /// with the receipt's id, if there is one.
    pub async fn commit(&self, receipt: NewReceipt) -> Result<Committed, StoreError> {
        let prepared = Box::new(Prepared::new(receipt));
        let (reply, answer) = oneshot::channel();
        self.send(Job::Receipt(prepared, reply)).await?;
        let appended = answer.await.map_err(|_| StoreError::WriterStopped)??;
        Ok(appended.committed())
    }

    /// Commit an intent for `receipt` (the call is about to run); returns once
    /// it is durable. Run the tool only after `Ok`.
    ///
    /// The stored intent is `receipt` with outcome `interrupted` and reason
    /// [`INTERRUPTED_REASON`]: exactly the receipt that is appended if the
    /// call never commits its own (see the module docs).
    pub async fn intent(&self, receipt: &NewReceipt) -> Result<(), StoreError> {
        let json = intent_json(receipt).map_err(|e| StoreError::Raw {
            action: "record the intent",
            cause: e.to_string(),
        })?;
        let (reply, answer) = oneshot::channel();
        self.send(Job::Intent {
            id: receipt.id.clone(),
            created_at: now_ts(),
            json,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Whether the last write succeeded (see [`StorageHealth`]).
    pub fn healthy(&self) -> bool {
        self.health.borrow().is_healthy()
    }

    /// The storage health, to read now or to watch for changes.
    pub fn health(&self) -> watch::Receiver<StorageHealth> {
        self.health.clone()
    }

    /// Make a tiny real write (the writer's heartbeat row) through the writer
    /// queue, so that health is re-evaluated without a call. `Ok` means the
    /// database takes writes now, and health is green.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Probe(reply)).await?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Turn the intents of writers that are gone into `interrupted`
    /// receipts now (the writer also does this at start and every heartbeat).
    /// Returns how many receipts were appended.
    pub async fn recover_intents(&self) -> Result<usize, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Job::Recover(reply)).await?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

impl WriterHandle {
    /// Refuse new receipts, write every one already queued, turn this
    /// writer's own leftover intents into `interrupted` receipts, and wait
    /// for the thread to finish. Later `commit` calls fail with
    /// [`StoreError::WriterStopped`].
    pub async fn shutdown(self) {
        self.permits.close();
        // If the thread already ended, there is nothing to tell it.
        let _ = self.stop.send(Queued {
            job: Job::Stop,
            _permit: None,
        });
        drop(self.stop);
        if let Err(e) = self.reporter.await {
            tracing::error!(error = %e, "the receipt writer's reporter failed");
        }
    }
}

impl Store {
    /// Turn every intent whose writer is gone (unregistered, or no heartbeat
    /// for [`WriterOptions::stale_after`]) into its `interrupted` receipt,
    /// appended to the chain, and delete the intent; all in one transaction.
    /// Returns the number of receipts appended. Safe to run from several
    /// processes at once: each intent becomes exactly one receipt.
    pub async fn recover_intents(&self) -> Result<usize, StoreError> {
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || {
            let mut db = Db::new(&path, WriterOptions::default());
            db.owner = None;
            db.recover().map_err(|e| unrecorded(&e))
        })
        .await
        .map_err(|e| StoreError::Raw {
            action: "recover intents",
            cause: e.to_string(),
        })?
    }
}

/// The intent text for `receipt`: its JSON, as the interrupted receipt.
fn intent_json(receipt: &NewReceipt) -> serde_json::Result<String> {
    let mut interrupted = receipt.clone();
    interrupted.outcome = Outcome::Interrupted;
    interrupted.reason = Some(INTERRUPTED_REASON.to_owned());
    serde_json::to_string(&interrupted)
}
