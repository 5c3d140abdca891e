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

struct WriterThread {
    db: Db,
    jobs: std_mpsc::Receiver<Queued>,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
    health: watch::Sender<StorageHealth>,
    events: mpsc::UnboundedSender<Event>,
    /// Where each receipt of the current batch landed: (seq, hash), reused
    /// from batch to batch.
    appended: Vec<(i64, [u8; 64])>,
}

impl WriterThread {
    fn run(&mut self) {
        // Take this writer's lock file before it registers, so that from
        // its first heartbeat on, this host can tell that it is alive.
        self.db.lock = self
            .db
            .owner
            .as_deref()
            .and_then(|owner| liveness::OwnLock::acquire(&self.db.path, owner));
        // Register, and recover what dead writers left behind.
        let started = self.db.beat().and_then(|()| self.db.recover_if_any());
        match started {
            Ok(n) => self.recovered(n),
            Err(e) => self.failed(&e, 0, None),
        }
        self.db.remove_stray_locks();
        let mut batch: Vec<Job> = Vec::with_capacity(BATCH_MAX);
        let mut stopping = false;
        loop {
            let first = if stopping {
                // Drain what was queued before shutdown, without waiting.
                match self.jobs.try_recv() {
                    Ok(q) => q,
                    Err(_) => break,
                }
            } else {
                match self.jobs.recv_timeout(self.db.options.heartbeat) {
                    Ok(q) => q,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        self.idle();
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            batch.push(first.job);
            while batch.len() < BATCH_MAX {
                match self.jobs.try_recv() {
                    Ok(q) => batch.push(q.job),
                    Err(_) => break,
                }
            }
            if batch.iter().any(|j| matches!(j, Job::Stop)) {
                stopping = true;
                self.permits.close();
                batch.retain(|j| !matches!(j, Job::Stop));
            }
            let queued = if stopping {
                0
            } else {
                QUEUE_CAPACITY.saturating_sub(self.permits.available_permits())
            };
            self.write(&mut batch, queued);
            if !stopping && self.db.beat_due() {
                self.idle();
            }
        }
        // Shut down: this writer's own leftover intents become receipts
        // (no call of ours is running any more), then it unregisters.
        match self.db.retire() {
            Ok(n) => self.recovered(n),
            Err(e) => self.failed(&e, 0, None),
        }
        self.db.close();
    }

    /// Nothing to do for a heartbeat: refresh it and sweep for orphans.
    fn idle(&mut self) {
        let result = self.db.beat().and_then(|()| self.db.recover_if_any());
        match result {
            Ok(n) => self.recovered(n),
            Err(e) => self.failed(&e, 0, None),
        }
    }

    fn write(&mut self, batch: &mut Vec<Job>, queued: usize) {
        let receipts = batch
            .iter()
            .filter(|j| matches!(j, Job::Receipt(..)))
            .count();
        let mut recovers: Vec<Reply<usize>> = Vec::new();
        let mut work = Vec::with_capacity(batch.len());
        for job in batch.drain(..) {
            match job {
                Job::Recover(reply) => recovers.push(reply),
                other => work.push(other),
            }
        }
        if !work.is_empty() {
            let started = Instant::now();
            match self.db.write_batch(&work, &mut self.appended) {
                Ok(()) => {
                    let took = started.elapsed();
                    self.healthy();
                    if receipts > 0 {
                        self.counters.record(receipts, took);
                    }
                    let _ = self.events.send(Event::Committed {
                        queued: Some(queued),
                        receipts,
                        took,
                    });
                    // One entry per receipt job, in order.
                    let mut appended = self.appended.drain(..);
                    for job in work {
                        match job {
                            Job::Receipt(prepared, reply) => {
                                if let Some((seq, hash)) = appended.next() {
                                    // A caller that went away no longer needs the answer.
                                    let _ = reply.send(Ok(Appended {
                                        seq,
                                        hash,
                                        prepared,
                                    }));
                                }
                            }
                            Job::Intent { reply, .. } | Job::Probe(reply) => {
                                let _ = reply.send(Ok(()));
                            }
                            Job::Recover(_) | Job::Stop => {}
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(
                        batch = work.len(),
                        error = %describe_raw(&e),
                        "receipt batch rolled back"
                    );
                    self.failed(&e, receipts, Some(queued));
                    let source = Arc::new(to_sqlx(&e));
                    let err = || StoreError::Unrecorded {
                        source: Arc::clone(&source),
                    };
                    for job in work {
                        match job {
                            Job::Receipt(_, reply) => {
                                let _ = reply.send(Err(err()));
                            }
                            Job::Intent { reply, .. } | Job::Probe(reply) => {
                                let _ = reply.send(Err(err()));
                            }
                            Job::Recover(_) | Job::Stop => {}
                        }
                    }
                }
            }
        } else {
            let _ = self.events.send(Event::Committed {
                queued: Some(queued),
                receipts: 0,
                took: Duration::ZERO,
            });
        }
        for reply in recovers {
            let result = self.db.recover();
            match &result {
                Ok(n) => self.recovered(*n),
                Err(e) => self.failed(e, 0, None),
            }
            let _ = reply.send(result.map_err(|e| unrecorded(&e)));
        }
    }

    fn recovered(&mut self, n: usize) {
        self.healthy();
        if n > 0 {
            tracing::warn!(
                receipts = n,
                "recorded calls whose process stopped before they completed as `interrupted`"
            );
            self.counters.record(n, Duration::ZERO);
            let _ = self.events.send(Event::Committed {
                queued: None,
                receipts: n,
                took: Duration::ZERO,
            });
        }
    }

    fn healthy(&mut self) {
        self.health.send_if_modified(|h| {
            let changed = !h.is_healthy();
            if changed {
                tracing::info!("the database takes writes again");
                *h = StorageHealth::Healthy;
            }
            changed
        });
    }

    fn failed(&mut self, e: &rusqlite::Error, receipts: usize, queued: Option<usize>) {
        if receipts > 0 || queued.is_some() {
            let _ = self.events.send(Event::Failed { queued, receipts });
        }
        if !is_storage_failure(e) {
            return;
        }
        let cause = describe_raw(e);
        self.health.send_if_modified(|h| {
            let changed = h.is_healthy();
            if changed {
                tracing::error!(error = %cause, "the database refuses writes");
            }
            *h = StorageHealth::Unhealthy {
                cause: cause.clone(),
            };
            changed
        });
    }
}

/// The writer's connection, and what it knows about itself.
struct Db {
    path: PathBuf,
    options: WriterOptions,
    link: Option<Link>,
    /// This writer's id in `writers` and `intents.owner`; `None` for a
    /// one-off recovery, which owns nothing.
    owner: Option<String>,
    started_at: String,
    last_beat: Option<Instant>,
    /// Wakes the background checkpointer; `None` until the connection opens.
    checkpoint: Option<std_mpsc::SyncSender<()>>,
    /// The lock that tells other processes on this host that this writer
    /// is alive; `None` for a one-off recovery, or if it could not be taken
    /// (then only the heartbeat speaks for this writer).
    lock: Option<liveness::OwnLock>,
}

/// An open connection and the receipt INSERTs prepared on it.
struct Link {
    // Declared first, so dropped first: its statements are finalized
    // before the connection they belong to closes.
    inserts: raw::Inserts,
    conn: Connection,
}

const HEAD: &str = "SELECT hash FROM receipts ORDER BY seq DESC LIMIT 1";
const ANY_INTENT: &str = "SELECT EXISTS (SELECT 1 FROM intents)";
const DELETE_INTENT: &str = "DELETE FROM intents WHERE id = ?1";
const INSERT_INTENT: &str =
    "INSERT INTO intents (id, created_at, receipt, owner) VALUES (?1, ?2, ?3, ?4)";
const BEAT: &str = "INSERT INTO writers (owner, pid, started_at, heartbeat) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (owner) DO UPDATE SET heartbeat = excluded.heartbeat";
/// Intents that are not ours and whose writer is unregistered, or one of
/// the writers found dead (`?2`, a JSON array of owners; see
/// [`dead_writers`]).
const ORPHANS: &str = "(?1 IS NULL OR owner IS NULL OR owner <> ?1) AND (owner IS NULL OR owner \
     NOT IN (SELECT owner FROM writers) OR owner IN (SELECT value FROM json_each(?2)))";
/// The registered writers other than `?1`.
const OTHER_WRITERS: &str = "SELECT owner, heartbeat FROM writers WHERE ?1 IS NULL OR owner <> ?1";

impl Db {
    fn new(path: &Path, options: WriterOptions) -> Db {
        Db {
            path: path.to_owned(),
            options,
            link: None,
            owner: Some(uuid::Uuid::now_v7().to_string()),
            started_at: now_ts(),
            last_beat: None,
            checkpoint: None,
            lock: None,
        }
    }

    /// The connection, (re)opened if needed.
    fn link(&mut self) -> rusqlite::Result<&mut Link> {
        if self.link.is_none() {
            let conn = open(&self.path, &self.options)?;
            let inserts = raw::Inserts::prepare(&conn)?;
            if self.owner.is_some() && self.checkpoint.is_none() {
                self.checkpoint = spawn_checkpointer(&self.path, &self.options);
            }
            self.link = Some(Link { inserts, conn });
        }
        Ok(self.link.as_mut().expect("opened above"))
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction; commit if it succeeds.
    /// After a failure that may be the connection's own (read-only, I/O),
    /// the connection is reopened next time.
    fn transaction<T>(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>, &mut raw::Inserts) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let result = (|| {
            let link = self.link()?;
            let tx = link
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx, &mut link.inserts)?;
            tx.commit()?;
            Ok(out)
        })();
        if let Err(e) = &result
            && needs_reopen(e)
        {
            self.link = None;
        }
        result
    }

    fn beat_due(&self) -> bool {
        self.owner.is_some()
            && self
                .last_beat
                .is_none_or(|t| t.elapsed() >= self.options.heartbeat)
    }

    fn beat_info(&self) -> BeatInfo {
        BeatInfo {
            owner: self.owner.clone(),
            started_at: self.started_at.clone(),
        }
    }

    /// A transaction that only refreshes the heartbeat.
    fn beat(&mut self) -> rusqlite::Result<()> {
        if self.owner.is_none() {
            return Ok(());
        }
        let info = self.beat_info();
        self.transaction(|tx, _| info.beat_in(tx))?;
        self.last_beat = Some(Instant::now());
        Ok(())
    }

    /// One batch in one transaction; all of it or none of it. Fills `out`
    /// with one (seq, hash) per receipt job, in order.
    fn write_batch(
        &mut self,
        jobs: &[Job],
        out: &mut Vec<(i64, [u8; 64])>,
    ) -> rusqlite::Result<()> {
        out.clear();
        let has_intents = jobs.iter().any(|j| matches!(j, Job::Intent { .. }));
        let has_probe = jobs.iter().any(|j| matches!(j, Job::Probe(_)));
        // An intent is always covered by a fresh heartbeat of its owner, so
        // no other process takes it for an orphan.
        let beat = has_probe || (has_intents && self.beat_due());
        let owner = self.owner.clone();
        let beat_self = self.beat_info();
        let receipts: Vec<&Prepared> = jobs
            .iter()
            .filter_map(|j| match j {
                Job::Receipt(p, _) => Some(&**p),
                _ => None,
            })
            .collect();
        let result = self.transaction(|tx, inserts| {
            if beat {
                beat_self.beat_in(tx)?;
            }
            let intents_present =
                has_intents || tx.prepare_cached(ANY_INTENT)?.query_row([], |r| r.get(0))?;
            for job in jobs {
                if let Job::Intent {
                    id,
                    created_at,
                    json,
                    ..
                } = job
                {
                    tx.prepare_cached(INSERT_INTENT)?
                        .execute(params![id, created_at, json, owner])?;
                }
            }
            if receipts.is_empty() {
                return Ok(());
            }
            append(tx, inserts, &head(tx)?, &receipts, out)?;
            if intents_present {
                let mut delete = tx.prepare_cached(DELETE_INTENT)?;
                for p in &receipts {
                    delete.execute([&p.receipt.id])?;
                }
            }
            Ok(())
        });
        if result.is_err() {
            out.clear();
        }
        result?;
        if beat {
            self.last_beat = Some(Instant::now());
        }
        if !out.is_empty()
            && let Some(wake) = &self.checkpoint
        {
            // Receipts grew the WAL; copy it back in the background.
            let _ = wake.try_send(());
        }
        Ok(())
    }

    /// Recover orphaned intents if a cheap read says there are any.
    fn recover_if_any(&mut self) -> rusqlite::Result<usize> {
        let cutoff = self.cutoff();
        let owner = self.owner.clone();
        let path = self.path.clone();
        let conn = &self.link()?.conn;
        let (dead, locks) = dead_writers(conn, &path, owner.as_deref(), cutoff)?;
        // Let go of the dead writers' locks before `recover` probes again:
        // held by us, they would make those writers look alive.
        drop(locks);
        let any: bool = conn
            .prepare_cached(&format!(
                "SELECT EXISTS (SELECT 1 FROM intents WHERE {ORPHANS})"
            ))?
            .query_row(params![owner, dead], |r| r.get(0))?;
        if any { self.recover() } else { Ok(0) }
    }

    fn cutoff(&self) -> i64 {
        unix_ms() - i64::try_from(self.options.stale_after.as_millis()).unwrap_or(i64::MAX)
    }

    /// Turn orphaned intents into `interrupted` receipts; see the module docs.
    fn recover(&mut self) -> rusqlite::Result<usize> {
        let cutoff = self.cutoff();
        let owner = self.owner.clone();
        let path = self.path.clone();
        let (n, locks) = self.transaction(|tx, inserts| {
            // Decided inside the write lock, on the rows as they are now.
            let (dead, locks) = dead_writers(tx, &path, owner.as_deref(), cutoff)?;
            let taken = tx
                .prepare(&format!(
                    "DELETE FROM intents WHERE {ORPHANS} RETURNING id, created_at, receipt"
                ))?
                .query_map(params![owner, dead], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<rusqlite::Result<Vec<(String, String, String)>>>()?;
            // Dead writers will not come back under that name.
            tx.prepare_cached(
                "DELETE FROM writers WHERE owner IN (SELECT value FROM json_each(?2)) \
                 AND (?1 IS NULL OR owner <> ?1)",
            )?
            .execute(params![owner, dead])?;
            Ok((append_intents(tx, inserts, taken)?, locks))
        })?;
        // Committed: the dead writers' rows are gone, so are their lock files.
        for lock in locks {
            lock.remove();
        }
        Ok(n)
    }

    /// Remove lock files next to the database that no registered writer
    /// owns and nobody holds: left by a process that died before it
    /// registered, or by a recovery that died before it cleaned up.
    fn remove_stray_locks(&mut self) {
        let Some(owner) = self.owner.clone() else {
            return;
        };
        let path = self.path.clone();
        let registered = (|| -> rusqlite::Result<Vec<String>> {
            let conn = &self.link()?.conn;
            let mut q = conn.prepare_cached("SELECT owner FROM writers")?;
            q.query_map([], |r| r.get(0))?.collect()
        })();
        // Without the list of writers, nothing is known to be stray.
        let Ok(registered) = registered else {
            return;
        };
        for (other, file) in liveness::lock_files(&path) {
            if other != owner && !registered.contains(&other) {
                liveness::remove_if_free(&file);
            }
        }
    }

    /// Shutdown: recover our own leftover intents (every call of ours has
    /// ended) and unregister, in one transaction.
    fn retire(&mut self) -> rusqlite::Result<usize> {
        let Some(owner) = self.owner.clone() else {
            return Ok(0);
        };
        if self.link.is_none() && self.last_beat.is_none() {
            // Never wrote anything; nothing of ours can be in the database.
            if let Some(lock) = self.lock.take() {
                lock.remove();
            }
            return Ok(0);
        }
        let n = self.transaction(|tx, inserts| {
            let taken = tx
                .prepare("DELETE FROM intents WHERE owner = ?1 RETURNING id, created_at, receipt")?
                .query_map([&owner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<(String, String, String)>>>()?;
            tx.prepare("DELETE FROM writers WHERE owner = ?1")?
                .execute([&owner])?;
            append_intents(tx, inserts, taken)
        })?;
        // Unregistered: the lock file has nothing left to speak for. (After
        // a failed retire it stays, so the next process on this host finds
        // the lock free and recovers at once.)
        if let Some(lock) = self.lock.take() {
            lock.remove();
        }
        Ok(n)
    }

    fn close(&mut self) {
        self.checkpoint = None;
        if let Some(Link { inserts, conn }) = self.link.take()
            && let Err((_, e)) = {
                drop(inserts);
                conn.close()
            }
        {
            tracing::warn!(error = %e, "closing the receipt writer's connection");
        }
    }
}

/// What a batch needs to refresh the heartbeat, borrowed apart from `Db`.
struct BeatInfo {
    owner: Option<String>,
    started_at: String,
}

impl BeatInfo {
    fn beat_in(&self, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
        if let Some(owner) = &self.owner {
            tx.prepare_cached(BEAT)?.execute(params![
                owner,
                std::process::id(),
                self.started_at,
                unix_ms()
            ])?;
        }
        Ok(())
    }
}

/// The registered writers other than `owner` that are gone, as a JSON array
/// of owners (for [`ORPHANS`]), and the lock files of those found dead by
/// their lock, still held (to remove once their rows are gone).
///
/// A writer is gone if its lock file on this host ([`liveness`]) is not
/// held by anyone; alive if it is held, whatever its heartbeat says; and
/// when its lock says nothing (another host, no lock file), gone once its
/// heartbeat is older than `cutoff` (unix ms).
fn dead_writers(
    conn: &Connection,
    db: &Path,
    owner: Option<&str>,
    cutoff: i64,
) -> rusqlite::Result<(String, Vec<liveness::DeadLock>)> {
    let writers = conn
        .prepare_cached(OTHER_WRITERS)?
        .query_map([owner], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut dead = Vec::new();
    let mut locks = Vec::new();
    for (other, heartbeat) in writers {
        match liveness::probe(db, &other) {
            liveness::State::Alive => {}
            liveness::State::Dead(lock) => {
                dead.push(other);
                locks.push(lock);
            }
            liveness::State::Unknown => {
                if heartbeat < cutoff {
                    dead.push(other);
                }
            }
        }
    }
    // A list of strings always serializes.
    let dead = serde_json::to_string(&dead).unwrap_or_else(|_| "[]".to_owned());
    Ok((dead, locks))
}

/// Whether a writer on this host is alive, without waiting for its heartbeat
/// to go stale.
///
/// Each writer holds an exclusive `flock` on `<db>.writer-<owner>.lock`, next
/// to the database, for as long as it runs; the file holds the host's boot
/// id (`/proc/sys/kernel/random/boot_id`) and the pid. The kernel lets go of
/// the lock when the process ends, however it ends (`kill -9` included),
/// and a lock held by anyone means the writer is alive, even with a stale
/// heartbeat (a process that is paused may still finish its calls). A lock
/// that can be taken, in a file written on this boot of this host, means the
/// writer is dead: its intents are recovered at once. Anything else (no lock
/// file, another boot id, no boot id) says nothing, and the heartbeat rule
/// ([`WriterOptions::stale_after`]) decides.
///
/// `flock` locks belong to an open file, not a process, so two writers in
/// one process (tests) see each other as alive too. Files are opened
/// close-on-exec, so tools the server runs do not inherit the lock.
mod liveness {
    use std::fs::{File, OpenOptions, TryLockError};
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    /// This boot of this host, if the kernel says.
    fn boot_id() -> Option<&'static str> {
        static BOOT: OnceLock<Option<String>> = OnceLock::new();
        BOOT.get_or_init(|| {
            let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
            let id = id.trim();
            (!id.is_empty()).then(|| id.to_owned())
        })
        .as_deref()
    }

    /// A writer id as the writer makes them (a hyphenated UUID), so that an
    /// owner read from the database can never name a path elsewhere.
    fn valid_owner(owner: &str) -> bool {
        owner.len() == 36 && owner.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    }

    /// The lock file name prefix for the database at `db`, and its folder.
    fn prefix(db: &Path) -> Option<(PathBuf, String)> {
        let name = db.file_name()?.to_str()?;
        let dir = db.parent().unwrap_or_else(|| Path::new("."));
        Some((dir.to_owned(), format!("{name}.writer-")))
    }

    fn lock_path(db: &Path, owner: &str) -> Option<PathBuf> {
        if !valid_owner(owner) {
            return None;
        }
        let (dir, prefix) = prefix(db)?;
        Some(dir.join(format!("{prefix}{owner}.lock")))
    }

    /// The lock file of a running writer: this one's.
    #[derive(Debug)]
    pub(super) struct OwnLock {
        path: PathBuf,
        _file: File,
    }

    impl OwnLock {
        /// Create and lock this writer's file; `None` (with a warning) if
        /// that fails, e.g. in a read-only folder or without a boot id.
        pub(super) fn acquire(db: &Path, owner: &str) -> Option<OwnLock> {
            let boot = boot_id()?;
            let path = lock_path(db, owner)?;
            let result = (|| -> std::io::Result<Option<OwnLock>> {
                // A start-up sweep elsewhere may remove a lock file that is
                // not locked yet; then the file locked is not the one at
                // `path` any more, and we try again.
                for _ in 0..3 {
                    let mut file = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)?;
                    if file.try_lock().is_err() {
                        return Ok(None);
                    }
                    let (held, named) = (file.metadata()?, std::fs::metadata(&path));
                    if !named.is_ok_and(|n| n.ino() == held.ino() && n.dev() == held.dev()) {
                        continue;
                    }
                    file.set_len(0)?;
                    write!(file, "boot_id {boot}\npid {}\n", std::process::id())?;
                    return Ok(Some(OwnLock {
                        path: path.clone(),
                        _file: file,
                    }));
                }
                Ok(None)
            })();
            match result {
                Ok(Some(lock)) => Some(lock),
                Ok(None) => {
                    tracing::warn!(
                        file = %path.display(),
                        "cannot lock the receipt writer's lock file; after a crash, its \
                         intents are recovered only once its heartbeat is stale"
                    );
                    None
                }
                Err(e) => {
                    tracing::warn!(
                        file = %path.display(),
                        error = %e,
                        "cannot create the receipt writer's lock file; after a crash, its \
                         intents are recovered only once its heartbeat is stale"
                    );
                    None
                }
            }
        }

        /// Unregistered: remove the file (the lock goes with the handle).
        pub(super) fn remove(self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// The lock file of a dead writer, locked by us.
    #[derive(Debug)]
    pub(super) struct DeadLock {
        path: PathBuf,
        _file: File,
    }

    impl DeadLock {
        /// Its writer's row is gone: remove the file while still holding it.
        pub(super) fn remove(self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// What the lock file of `owner` says about it.
    #[derive(Debug)]
    pub(super) enum State {
        /// Someone holds its lock.
        Alive,
        /// Its lock was free, in a file from this boot of this host.
        Dead(DeadLock),
        /// No evidence either way: let the heartbeat decide.
        Unknown,
    }

    pub(super) fn probe(db: &Path, owner: &str) -> State {
        let Some(boot) = boot_id() else {
            return State::Unknown;
        };
        let Some(path) = lock_path(db, owner) else {
            return State::Unknown;
        };
        let Ok(file) = File::open(&path) else {
            return State::Unknown;
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return State::Alive,
            Err(TryLockError::Error(_)) => return State::Unknown,
        }
        let mut text = String::new();
        let _ = (&file).take(1024).read_to_string(&mut text);
        if text
            .lines()
            .any(|l| l.strip_prefix("boot_id ") == Some(boot))
        {
            State::Dead(DeadLock { path, _file: file })
        } else {
            State::Unknown
        }
    }

    /// The writer lock files next to the database at `db`: (owner, path).
    pub(super) fn lock_files(db: &Path) -> Vec<(String, PathBuf)> {
        let Some((dir, prefix)) = prefix(db) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let owner = name
                    .to_str()?
                    .strip_prefix(&prefix)?
                    .strip_suffix(".lock")?;
                valid_owner(owner).then(|| (owner.to_owned(), e.path()))
            })
            .collect()
    }

    /// Remove `path` if nobody holds its lock.
    pub(super) fn remove_if_free(path: &Path) {
        if let Ok(file) = File::open(path)
            && file.try_lock().is_ok()
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The chain head, read inside the write transaction (never cached across
/// transactions: another process may have appended meanwhile).
fn head(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<String> {
    match tx.prepare_cached(HEAD)?.query_row([], |r| r.get(0)) {
        Ok(h) => Ok(h),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(GENESIS_HASH.to_owned()),
        Err(e) => Err(e),
    }
}

/// Append `receipts` after `head`, in order, and push one (seq, hash) per
/// receipt onto `out`.
///
/// The hashes come first (each needs the one before), then the rows go in
/// with as few statements as [`raw::CHUNKS`] allows.
fn append(
    tx: &rusqlite::Transaction<'_>,
    inserts: &mut raw::Inserts,
    head: &str,
    receipts: &[&Prepared],
    out: &mut Vec<(i64, [u8; 64])>,
) -> rusqlite::Result<()> {
    let first = out.len();
    for (i, p) in receipts.iter().enumerate() {
        let prev = if i == 0 {
            head.as_bytes()
        } else {
            &out[first + i - 1].1[..]
        };
        let hash = chain_hash_of_tail(prev, &p.tail);
        out.push((0, hash));
    }
    let mut done = 0;
    while done < receipts.len() {
        let rows = raw::chunk(receipts.len() - done);
        let hashes = &out[first..];
        inserts.insert(rows, |k| {
            let i = done + k;
            raw::Row {
                p: receipts[i],
                prev_hash: if i == 0 {
                    head.as_bytes()
                } else {
                    &hashes[i - 1].1
                },
                hash: &hashes[i].1,
            }
        })?;
        // One statement inside the write lock: its rows got consecutive seqs.
        let last = tx.last_insert_rowid();
        for k in 0..rows {
            out[first + done + k].0 = last - (rows - 1 - k) as i64;
        }
        done += rows;
    }
    Ok(())
}

/// Append the receipts of taken intents, oldest first.
fn append_intents(
    tx: &rusqlite::Transaction<'_>,
    inserts: &mut raw::Inserts,
    mut taken: Vec<(String, String, String)>,
) -> rusqlite::Result<usize> {
    if taken.is_empty() {
        return Ok(0);
    }
    taken.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    let mut prepared = Vec::with_capacity(taken.len());
    for (id, created_at, json) in taken {
        // Its receipt cannot exist (the same transaction deletes the intent),
        // but never append a second receipt for one call.
        let exists: bool = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM receipts WHERE id = ?1)")?
            .query_row([&id], |r| r.get(0))?;
        if exists {
            continue;
        }
        let receipt = match serde_json::from_str::<NewReceipt>(&json) {
            Ok(mut r) if r.id == id => {
                r.outcome = Outcome::Interrupted;
                r
            }
            _ => unreadable_intent(&id, &created_at, &json),
        };
        prepared.push(Prepared::new(receipt));
    }
    let refs: Vec<&Prepared> = prepared.iter().collect();
    let mut out = Vec::with_capacity(refs.len());
    append(tx, inserts, &head(tx)?, &refs, &mut out)?;
    Ok(out.len())
}

/// The receipt for an intent whose text tollgate cannot read back: the call
/// is still recorded, with a digest of the text instead of its content.
fn unreadable_intent(id: &str, created_at: &str, json: &str) -> NewReceipt {
    NewReceipt {
        id: id.to_owned(),
        ts: created_at.to_owned(),
        principal: None,
        roles: Vec::new(),
        auth: "unknown".to_owned(),
        transport: "unknown".to_owned(),
        session: None,
        tool: "(unknown)".to_owned(),
        version: None,
        spec_hash: None,
        args: serde_json::json!({
            "_tollgate_unreadable_intent": crate::canonical::sha256_hex(json.as_bytes())
        }),
        decision: Decision::Allowed,
        reason: Some(format!(
            "{INTERRUPTED_REASON} (its intent record was unreadable)"
        )),
        outcome: Outcome::Interrupted,
        result_digest: None,
        result_excerpt: None,
        duration_us: 0,
        cost_usd: None,
        policy_set: None,
        policies: Vec::new(),
        approval_id: None,
        replay_of: None,
    }
}

/// The writer's connection: the settings of [`Store::open`], plus caching.
fn open(path: &Path, options: &WriterOptions) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(options.busy_timeout)?;
    // The database is already in WAL mode (Store::open). NORMAL in WAL mode
    // never corrupts the database; a power cut may lose the last commits.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT};"
    ))?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(conn)
}

/// A thread that runs `PRAGMA wal_checkpoint(PASSIVE)` when woken (after
/// commits), at most every [`CHECKPOINT_PAUSE`]. It never blocks the writer;
/// it ends when the writer drops the sender.
fn spawn_checkpointer(path: &Path, options: &WriterOptions) -> Option<std_mpsc::SyncSender<()>> {
    let (wake, woken) = std_mpsc::sync_channel::<()>(1);
    let path = path.to_owned();
    let busy = options.busy_timeout;
    let spawned = std::thread::Builder::new()
        .name("tollgate-checkpoint".into())
        .spawn(move || {
            let Ok(conn) = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            ) else {
                return;
            };
            let _ = conn.busy_timeout(busy);
            while woken.recv().is_ok() {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "background WAL checkpoint");
                }
                std::thread::sleep(CHECKPOINT_PAUSE);
            }
        });
    spawned.ok().map(|_| wake)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// SQLite's primary result code of an error, if it came from SQLite.
fn primary_code(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code & 0xff),
        _ => None,
    }
}

/// Whether `e` says the storage refuses writes, rather than this batch's
/// content being refused (a duplicate id, a value too big).
fn is_storage_failure(e: &rusqlite::Error) -> bool {
    // CONSTRAINT 19, MISMATCH 20, TOOBIG 18, RANGE 25.
    !matches!(primary_code(e), Some(18 | 19 | 20 | 25))
}

/// Whether the connection itself may be the problem (opened read-only,
/// file replaced or gone), so the next attempt should open a new one.
fn needs_reopen(e: &rusqlite::Error) -> bool {
    // READONLY 8, IOERR 10, CORRUPT 11, CANTOPEN 14, NOTADB 26.
    matches!(primary_code(e), Some(8 | 10 | 11 | 14 | 26) | None)
}

fn unrecorded(e: &rusqlite::Error) -> StoreError {
    StoreError::Unrecorded {
        source: Arc::new(to_sqlx(e)),
    }
}

fn describe_raw(e: &rusqlite::Error) -> String {
    describe(&to_sqlx(e))
}

/// A rusqlite error as the sqlx error the rest of the store describes, so
/// the same hints ("is the disk full?") apply.
fn to_sqlx(e: &rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::SqliteFailure(f, message) => sqlx::Error::Database(Box::new(RawDbError {
            code: f.extended_code,
            message: message.clone().unwrap_or_else(|| f.to_string()),
        })),
        other => sqlx::Error::Protocol(other.to_string()),
    }
}

#[derive(Debug)]
struct RawDbError {
    code: i32,
    message: String,
}

impl std::fmt::Display for RawDbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RawDbError {}

impl sqlx::error::DatabaseError for RawDbError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        match self.code {
            // SQLITE_CONSTRAINT_UNIQUE, SQLITE_CONSTRAINT_PRIMARYKEY
            2067 | 1555 => sqlx::error::ErrorKind::UniqueViolation,
            _ => sqlx::error::ErrorKind::Other,
        }
    }
}

/// The receipt INSERT, driven through SQLite's C API.
///
/// Why not rusqlite here: rusqlite binds every string `SQLITE_TRANSIENT`,
/// so SQLite mallocs and copies each of the ~18 text values of every
/// receipt, and frees them again when the cached statement is returned
/// (`clear_bindings`); on the writer thread that was about a third of the
/// INSERT's cost. Binding `SQLITE_STATIC` lets SQLite read the receipt's
/// own bytes while the statement runs. In a standalone test on this schema
/// (batches of 64, CPU time per row, median of 5): one rusqlite INSERT per
/// row 8.4 µs, a 64-row rusqlite INSERT 7.2 µs, a 64-row INSERT bound
/// `SQLITE_STATIC` 4.6 µs.
///
/// The statements say `INSERT OR ROLLBACK`: a multi-row INSERT that may
/// abort half-way needs a statement journal (copies of every page it
/// touches, spilled to a temporary file past 64 KiB), unless a failure
/// rolls back the whole transaction. A failed batch is rolled back as a
/// whole anyway, so nothing changes for callers.
///
/// Safety rests on three rules kept in this module: the statements are
/// finalized before their connection closes ([`Link`] drops `inserts`
/// first), every bound pointer borrows from the arguments of one
/// [`Inserts::insert`] call, and the bindings are cleared before that call
/// returns, so SQLite never holds a pointer past the data's lifetime.
mod raw {
    use std::ffi::{CStr, CString, c_int};

    use rusqlite::{Connection, ffi};

    use super::Prepared;

    /// Rows per multi-row INSERT, largest first; a batch is cut into these.
    /// One statement per row pays a statement's fixed work per row (opening
    /// cursors on the table and its four indexes, and with AUTOINCREMENT a
    /// read and a write of `sqlite_sequence`); one statement per batch size
    /// would be prepared again for each new size. 64 rows are 1,536
    /// parameters, far below SQLite's limit of 32,766.
    pub(super) const CHUNKS: [usize; 4] = [64, 16, 4, 1];

    /// Columns per row, in the order [`Inserts::insert`] binds them.
    const COLUMNS: usize = 24;

    const INTO: &str = "INSERT OR ROLLBACK INTO receipts (id, ts, principal, roles, auth, \
         transport, session, tool, version, spec_hash, args, decision, reason, outcome, \
         result_digest, result_excerpt, duration_us, cost_usd, policy_set, policies, \
         approval_id, replay_of, prev_hash, hash) VALUES ";

    /// The largest of [`CHUNKS`] that fits in `left` (at least 1) rows.
    pub(super) fn chunk(left: usize) -> usize {
        CHUNKS.iter().copied().find(|&n| n <= left).unwrap_or(1)
    }

    /// One row to insert: the receipt and its place in the chain.
    pub(super) struct Row<'a> {
        pub p: &'a Prepared,
        pub prev_hash: &'a [u8],
        pub hash: &'a [u8],
    }

    /// One prepared INSERT per size in [`CHUNKS`], on one connection.
    pub(super) struct Inserts {
        db: *mut ffi::sqlite3,
        stmts: Vec<(usize, *mut ffi::sqlite3_stmt)>,
    }

    // SAFETY: the statements are used only through `&mut self`, by the one
    // thread that owns the `Link` (connection included) they belong to;
    // moving them to that thread together with the connection is what
    // rusqlite's own `Connection: Send` allows.
    unsafe impl Send for Inserts {}

    impl Inserts {
        pub(super) fn prepare(conn: &Connection) -> rusqlite::Result<Inserts> {
            // SAFETY: the handle is only used while `conn` lives (see the
            // module docs: `Link` drops the statements first).
            let db = unsafe { conn.handle() };
            let mut inserts = Inserts {
                db,
                stmts: Vec::with_capacity(CHUNKS.len()),
            };
            let row = format!("({})", vec!["?"; COLUMNS].join(","));
            for rows in CHUNKS {
                let sql = CString::new(format!("{INTO}{}", vec![row.as_str(); rows].join(",")))
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                let mut stmt = std::ptr::null_mut();
                // SAFETY: `db` is open; `sql` is NUL-terminated and outlives the call.
                let rc = unsafe {
                    ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut())
                };
                if rc != ffi::SQLITE_OK || stmt.is_null() {
                    return Err(inserts.error(rc));
                }
                // Pushed at once, so `Drop` finalizes it if a later one fails.
                inserts.stmts.push((rows, stmt));
            }
            Ok(inserts)
        }

        /// Insert `rows` rows (one of [`CHUNKS`]), row `k` being `row(k)`,
        /// in one statement.
        pub(super) fn insert<'a>(
            &mut self,
            rows: usize,
            row: impl Fn(usize) -> Row<'a>,
        ) -> rusqlite::Result<()> {
            let Some(&(_, stmt)) = self.stmts.iter().find(|(n, _)| *n == rows) else {
                return Err(rusqlite::Error::InvalidParameterCount(rows, CHUNKS[0]));
            };
            let result = (|| {
                for k in 0..rows {
                    self.bind_row(stmt, k * COLUMNS, &row(k))?;
                }
                // SAFETY: `stmt` is a live statement of `self.db`; every
                // bound pointer borrows from `row`'s data, alive for this call.
                let rc = unsafe { ffi::sqlite3_step(stmt) };
                if rc != ffi::SQLITE_DONE {
                    return Err(self.error(rc));
                }
                Ok(())
            })();
            // SAFETY: as above. Clearing drops SQLite's pointers into the rows
            // before they may be freed; the reset's code repeats the step's.
            unsafe {
                ffi::sqlite3_reset(stmt);
                ffi::sqlite3_clear_bindings(stmt);
            }
            result
        }

        fn bind_row(
            &self,
            stmt: *mut ffi::sqlite3_stmt,
            base: usize,
            row: &Row<'_>,
        ) -> rusqlite::Result<()> {
            let (p, r) = (row.p, &row.p.receipt);
            let text = |i: usize, s: &[u8]| self.text(stmt, base + i, s);
            let opt = |i: usize, s: &Option<String>| match s {
                Some(s) => self.text(stmt, base + i, s.as_bytes()),
                None => self.null(stmt, base + i),
            };
            let int = |i: usize, v: Option<i64>| match v {
                // SAFETY: a live statement and an in-range index.
                Some(v) => self.check(unsafe { ffi::sqlite3_bind_int64(stmt, idx(base + i), v) }),
                None => self.null(stmt, base + i),
            };
            text(1, r.id.as_bytes())?;
            text(2, r.ts.as_bytes())?;
            opt(3, &r.principal)?;
            text(4, p.roles.as_bytes())?;
            text(5, r.auth.as_bytes())?;
            text(6, r.transport.as_bytes())?;
            opt(7, &r.session)?;
            text(8, r.tool.as_bytes())?;
            int(9, r.version)?;
            opt(10, &r.spec_hash)?;
            text(11, p.args.as_bytes())?;
            text(12, r.decision.as_str().as_bytes())?;
            opt(13, &r.reason)?;
            text(14, r.outcome.as_str().as_bytes())?;
            opt(15, &r.result_digest)?;
            opt(16, &r.result_excerpt)?;
            int(17, Some(r.duration_us))?;
            match r.cost_usd {
                // SAFETY: a live statement and an in-range index.
                Some(c) => {
                    self.check(unsafe { ffi::sqlite3_bind_double(stmt, idx(base + 18), c) })?
                }
                None => self.null(stmt, base + 18)?,
            }
            opt(19, &r.policy_set)?;
            opt(20, &p.policies)?;
            opt(21, &r.approval_id)?;
            opt(22, &r.replay_of)?;
            text(23, row.prev_hash)?;
            text(24, row.hash)
        }

        /// Bind `s` as TEXT without copying it (see the module docs for
        /// how long SQLite may read it).
        fn text(&self, stmt: *mut ffi::sqlite3_stmt, i: usize, s: &[u8]) -> rusqlite::Result<()> {
            // An empty slice's pointer may dangle; give SQLite a real byte.
            let ptr = if s.is_empty() {
                c"".as_ptr().cast::<u8>()
            } else {
                s.as_ptr()
            };
            // SAFETY: a live statement; `ptr` is valid for `s.len()` bytes
            // until the bindings are cleared in `insert`. SQLite refuses a
            // length above its limit with SQLITE_TOOBIG.
            self.check(unsafe {
                ffi::sqlite3_bind_text64(
                    stmt,
                    idx(i),
                    ptr.cast(),
                    s.len() as u64,
                    ffi::SQLITE_STATIC(),
                    ffi::SQLITE_UTF8 as u8,
                )
            })
        }

        fn null(&self, stmt: *mut ffi::sqlite3_stmt, i: usize) -> rusqlite::Result<()> {
            // SAFETY: a live statement and an in-range index.
            self.check(unsafe { ffi::sqlite3_bind_null(stmt, idx(i)) })
        }

        fn check(&self, rc: c_int) -> rusqlite::Result<()> {
            if rc == ffi::SQLITE_OK {
                Ok(())
            } else {
                Err(self.error(rc))
            }
        }

        /// The connection's error for a failed call that returned `rc`.
        fn error(&self, rc: c_int) -> rusqlite::Error {
            // SAFETY: `db` is open; SQLite owns the message, copied at once.
            let (code, message) = unsafe {
                let code = ffi::sqlite3_extended_errcode(self.db);
                let message = ffi::sqlite3_errmsg(self.db);
                let message = (!message.is_null())
                    .then(|| CStr::from_ptr(message).to_string_lossy().into_owned());
                (code, message)
            };
            // The extended code is the connection's last error; trust it only
            // when it agrees with the call's own result code.
            let code = if code & 0xff == rc & 0xff { code } else { rc };
            rusqlite::Error::SqliteFailure(ffi::Error::new(code), message)
        }
    }

    /// A parameter index for the C API (at most 64 × 24, so it always fits).
    fn idx(i: usize) -> c_int {
        c_int::try_from(i).unwrap_or(c_int::MAX)
    }

    impl Drop for Inserts {
        fn drop(&mut self) {
            for (_, stmt) in self.stmts.drain(..) {
                // SAFETY: each statement is live and finalized exactly once,
                // before the connection closes (see `Link`).
                unsafe { ffi::sqlite3_finalize(stmt) };
            }
        }
    }
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

    async fn count(store: &Store, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(store.pool())
            .await
            .unwrap()
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
            let job = Job::Receipt(Box::new(Prepared::new(sample(&id(i)))), reply);
            writer.queue.send(Queued { job, _permit: None }).unwrap();
            answers.push(answer);
        }
        handle.shutdown().await;
        for answer in answers {
            answer.await.unwrap().unwrap();
        }
        let err = writer.commit(sample(&id(5000))).await.unwrap_err();
        assert!(matches!(err, StoreError::WriterStopped), "{err}");
        let err = writer.intent(&sample(&id(5001))).await.unwrap_err();
        assert!(matches!(err, StoreError::WriterStopped), "{err}");
        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (1000, None));
        // The writer unregistered.
        assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 0);
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
        // A receipt refused for its content says nothing about the storage.
        assert!(writer.healthy());
        writer.commit(sample(&id(1000))).await.unwrap();
        handle.shutdown().await;

        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (ok + 1, None));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_processes_share_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // Two stores on one file behave like two tollgate processes.
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

    #[tokio::test]
    async fn an_intent_then_its_commit_leaves_no_intent() {
        let (_dir, store) = store().await;
        let (writer, handle) = ReceiptWriter::spawn(&store);
        let r = sample(&id(1));
        writer.intent(&r).await.unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 1);
        let stored: String = sqlx::query_scalar("SELECT receipt FROM intents")
            .fetch_one(store.pool())
            .await
            .unwrap();
        let stored: NewReceipt = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored.outcome, Outcome::Interrupted);
        assert_eq!(stored.reason.as_deref(), Some(INTERRUPTED_REASON));
        assert_eq!((stored.id.as_str(), &stored.args), (r.id.as_str(), &r.args));

        writer.commit(r).await.unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
        // Receipts without an intent commit as before.
        writer.commit(sample(&id(2))).await.unwrap();
        handle.shutdown().await;
        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (2, None));
        let outcomes: Vec<String> = sqlx::query_scalar("SELECT outcome FROM receipts")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(outcomes, ["ok", "ok"]);
    }

    /// A writer that recorded intents for `ids` and then "died" where this
    /// host cannot see its lock (another host): its heartbeat is made stale
    /// and its lock file removed, so its intents are orphans by the
    /// heartbeat rule.
    async fn orphans(store: &Store, ids: std::ops::Range<usize>) {
        let slow = WriterOptions {
            heartbeat: Duration::from_secs(3600),
            ..Default::default()
        };
        let (writer, handle) = ReceiptWriter::spawn_with(store, slow);
        for i in ids {
            writer.intent(&sample(&id(i))).await.unwrap();
        }
        // Freeze it as a crash would: no shutdown, no further heartbeat.
        std::mem::forget(handle);
        std::mem::forget(writer);
        sqlx::query("UPDATE writers SET heartbeat = 0")
            .execute(store.pool())
            .await
            .unwrap();
        for (_, file) in liveness::lock_files(store.path()) {
            std::fs::remove_file(file).unwrap();
        }
    }

    fn boot_id() -> Option<String> {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// What a writer killed on this host leaves behind: its row with a fresh
    /// heartbeat, its intents for `ids`, and its lock file (with `boot` as
    /// the boot id) that nobody holds any more.
    async fn killed_writer(store: &Store, boot: &str, ids: std::ops::Range<usize>) -> PathBuf {
        let owner = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO writers (owner, pid, started_at, heartbeat) VALUES (?, 1, 'x', ?)",
        )
        .bind(&owner)
        .bind(unix_ms())
        .execute(store.pool())
        .await
        .unwrap();
        for i in ids {
            sqlx::query("INSERT INTO intents (id, created_at, receipt, owner) VALUES (?, ?, ?, ?)")
                .bind(id(i))
                .bind(now_ts())
                .bind(intent_json(&sample(&id(i))).unwrap())
                .bind(&owner)
                .execute(store.pool())
                .await
                .unwrap();
        }
        let mut name = store.path().file_name().unwrap().to_owned();
        name.push(format!(".writer-{owner}.lock"));
        let lock = store.path().with_file_name(name);
        std::fs::write(&lock, format!("boot_id {boot}\npid 1\n")).unwrap();
        lock
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_writers_intents_are_recovered_at_start_on_the_same_host() {
        let Some(boot) = boot_id() else {
            eprintln!("skipped: no boot id on this system");
            return;
        };
        let (_dir, store) = store().await;
        let lock = killed_writer(&store, &boot, 1..4).await;
        // Its heartbeat is fresh, but nobody holds its lock: it is dead.
        let (writer, handle) = ReceiptWriter::spawn(&store);
        writer.probe().await.unwrap();
        assert_eq!(writer.stats().receipts, 3);
        assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
        // The dead writer is unregistered and its lock file removed; ours is there.
        assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 1);
        assert!(!lock.exists());
        assert_eq!(liveness::lock_files(store.path()).len(), 1);
        handle.shutdown().await;
        assert!(liveness::lock_files(store.path()).is_empty());
        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (3, None));
        let r = store.get_receipt(&id(2)).await.unwrap().unwrap();
        assert_eq!(r.content.outcome, Outcome::Interrupted);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_live_writers_intents_are_not_recovered_even_when_its_heartbeat_is_stale() {
        if boot_id().is_none() {
            eprintln!("skipped: no boot id on this system");
            return;
        }
        let (_dir, store) = store().await;
        let slow = WriterOptions {
            heartbeat: Duration::from_secs(3600),
            ..Default::default()
        };
        let (live, live_handle) = ReceiptWriter::spawn_with(&store, slow);
        for i in 1..4 {
            live.intent(&sample(&id(i))).await.unwrap();
        }
        // Its heartbeat says dead; its lock says alive, and the lock wins.
        sqlx::query("UPDATE writers SET heartbeat = 0")
            .execute(store.pool())
            .await
            .unwrap();
        let (other, other_handle) = ReceiptWriter::spawn(&store);
        other.probe().await.unwrap();
        assert_eq!(other.recover_intents().await.unwrap(), 0);
        assert_eq!(store.recover_intents().await.unwrap(), 0);
        assert_eq!(other.stats().receipts, 0);
        other_handle.shutdown().await;
        assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 3);
        assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 1);

        // The live writer finishes one call; at shutdown the others become
        // `interrupted`, and its lock file goes.
        live.commit(sample(&id(1))).await.unwrap();
        live_handle.shutdown().await;
        assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
        assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 0);
        assert!(liveness::lock_files(store.path()).is_empty());
        let outcomes: Vec<String> = sqlx::query_scalar("SELECT outcome FROM receipts ORDER BY seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(outcomes, ["ok", "interrupted", "interrupted"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_file_from_another_boot_leaves_it_to_the_heartbeat() {
        let (_dir, store) = store().await;
        let lock = killed_writer(&store, "another-boot", 1..3).await;
        assert_eq!(store.recover_intents().await.unwrap(), 0);
        assert!(lock.exists());
        sqlx::query("UPDATE writers SET heartbeat = 0")
            .execute(store.pool())
            .await
            .unwrap();
        assert_eq!(store.recover_intents().await.unwrap(), 2);
        assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 0);
        // Not this host's file to judge; a later writer's start-up removes
        // it as stray, since nobody holds it and no writer owns it.
        let (writer, handle) = ReceiptWriter::spawn(&store);
        writer.probe().await.unwrap();
        assert!(!lock.exists());
        handle.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leftover_intent_becomes_one_interrupted_receipt() {
        let (_dir, store) = store().await;
        let (writer, handle) = ReceiptWriter::spawn(&store);
        writer.commit(sample(&id(0))).await.unwrap();
        handle.shutdown().await;
        orphans(&store, 1..2).await;

        assert_eq!(store.recover_intents().await.unwrap(), 1);
        assert_eq!(store.recover_intents().await.unwrap(), 0);
        assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (2, None));
        let r = store.get_receipt(&id(1)).await.unwrap().unwrap();
        assert_eq!(r.seq, 2);
        assert_eq!(r.content.outcome, Outcome::Interrupted);
        assert_eq!(r.content.reason.as_deref(), Some(INTERRUPTED_REASON));
        assert_eq!(r.content.args, sample(&id(1)).args);
        // The dead writer's row is gone too.
        assert_eq!(count(&store, "SELECT count(*) FROM writers").await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_writer_recovers_orphans_when_it_starts() {
        let (_dir, store) = store().await;
        orphans(&store, 1..4).await;
        let (writer, handle) = ReceiptWriter::spawn(&store);
        // Its first answer comes after its start-up recovery.
        writer.probe().await.unwrap();
        assert_eq!(writer.stats().receipts, 3);
        writer.commit(sample(&id(9))).await.unwrap();
        handle.shutdown().await;
        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (4, None));
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM receipts WHERE outcome = 'interrupted'"
            )
            .await,
            3
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_recoveries_append_each_receipt_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let a = Store::open(&path).await.unwrap();
        let b = Store::open(&path).await.unwrap();
        orphans(&a, 0..50).await;
        let (na, nb, nc) = tokio::join!(a.recover_intents(), b.recover_intents(), async {
            let (w, h) = ReceiptWriter::spawn(&b);
            // A new writer recovers at start-up too: count that pass, which
            // may win the race, as well as the explicit one.
            w.probe().await.unwrap();
            let at_start = usize::try_from(w.stats().receipts).unwrap();
            let n = w.recover_intents().await.unwrap();
            h.shutdown().await;
            at_start + n
        });
        let (na, nb) = (na.unwrap(), nb.unwrap());
        assert_eq!(na + nb + nc, 50, "{na} + {nb} + {nc}");
        let report = a.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (50, None));
        assert_eq!(
            count(&a, "SELECT count(DISTINCT id) FROM receipts").await,
            50
        );
        assert_eq!(count(&a, "SELECT count(*) FROM intents").await, 0);
    }

    #[tokio::test]
    async fn a_live_writers_intents_are_left_alone() {
        let (_dir, store) = store().await;
        let (writer, handle) = ReceiptWriter::spawn(&store);
        writer.intent(&sample(&id(1))).await.unwrap();
        assert_eq!(store.recover_intents().await.unwrap(), 0);
        assert_eq!(writer.recover_intents().await.unwrap(), 0);
        let (other, other_handle) = ReceiptWriter::spawn(&store);
        other.probe().await.unwrap();
        other_handle.shutdown().await;
        assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 1);
        assert_eq!(count(&store, "SELECT count(*) FROM receipts").await, 0);

        // At shutdown, a call that never committed is recorded as interrupted.
        handle.shutdown().await;
        assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
        let r = store.get_receipt(&id(1)).await.unwrap().unwrap();
        assert_eq!(r.content.outcome, Outcome::Interrupted);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_database_turns_health_red_until_a_write_succeeds() {
        let (dir, store) = store().await;
        let quick = WriterOptions {
            busy_timeout: Duration::from_millis(100),
            heartbeat: Duration::from_secs(3600),
            ..Default::default()
        };
        let (writer, handle) = ReceiptWriter::spawn_with(&store, quick);
        writer.probe().await.unwrap();
        assert!(writer.healthy());
        let mut health = writer.health();
        health.borrow_and_update();

        // Another process holds the write lock for longer than the busy timeout.
        let locker = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        locker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = writer.commit(sample(&id(1))).await.unwrap_err();
        assert!(err.to_string().contains("another process"), "{err}");
        assert!(!writer.healthy());
        assert!(health.has_changed().unwrap());
        match &*health.borrow_and_update() {
            StorageHealth::Unhealthy { cause } => assert!(cause.contains("locked"), "{cause}"),
            h => panic!("{h:?}"),
        }
        assert!(writer.probe().await.is_err());
        assert!(writer.intent(&sample(&id(2))).await.is_err());
        assert!(!writer.healthy());

        locker.execute_batch("ROLLBACK").unwrap();
        writer.probe().await.unwrap();
        assert!(writer.healthy());
        assert!(health.has_changed().unwrap());
        writer.commit(sample(&id(3))).await.unwrap();
        handle.shutdown().await;
        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (1, None));
        assert_eq!(count(&store, "SELECT count(*) FROM intents").await, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_only_database_turns_health_red_until_it_is_writable() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = store().await;
        let path = dir.path().join("t.db");
        let mode = |m: u32| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m));
        mode(0o444).unwrap();
        // root (as in CI containers) writes to read-only files anyway; the
        // locked-database test covers the health logic there.
        if std::fs::OpenOptions::new().append(true).open(&path).is_ok() {
            mode(0o644).unwrap();
            eprintln!("skipped: this user can write to read-only files");
            return;
        }
        // SQLite opens a read-only file read-only, and refuses writes.
        let (writer, handle) = ReceiptWriter::spawn(&store);
        let err = writer.probe().await.unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
        assert!(!writer.healthy());
        match &*writer.health().borrow() {
            StorageHealth::Unhealthy { cause } => {
                assert!(cause.contains("is the file writable?"), "{cause}")
            }
            h => panic!("{h:?}"),
        }
        assert!(writer.commit(sample(&id(1))).await.is_err());

        // Fixed: the writer reconnects, and the next write turns it green.
        mode(0o644).unwrap();
        writer.probe().await.unwrap();
        assert!(writer.healthy());
        writer.commit(sample(&id(2))).await.unwrap();
        handle.shutdown().await;
        let report = store.verify_chain().await.unwrap();
        assert_eq!((report.checked, report.first_bad), (1, None));
    }
}
