//! The writer's connection: batches in `BEGIN IMMEDIATE`, the chain head,
//! heartbeats, intent recovery, and the background checkpointer.

use super::*;

/// The writer's connection, and what it knows about itself.
pub(super) struct Db {
    pub(super) path: PathBuf,
    pub(super) options: WriterOptions,
    link: Option<Link>,
    /// This writer's id in `writers` and `intents.owner`; `None` for a
    /// one-off recovery, which owns nothing.
    pub(super) owner: Option<String>,
    pub(super) started_at: String,
    last_beat: Option<Instant>,
    /// Wakes the background checkpointer; `None` until the connection opens.
    checkpoint: Option<std_mpsc::SyncSender<()>>,
    /// The lock that tells other processes on this host that this writer
    /// is alive; `None` for a one-off recovery, or if it could not be taken
    /// (then only the heartbeat speaks for this writer).
    pub(super) lock: Option<liveness::OwnLock>,
}

/// An open connection and the receipt INSERTs prepared on it.
pub(super) struct Link {
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
pub(super) const ORPHANS: &str = "(?1 IS NULL OR owner IS NULL OR owner <> ?1) AND (owner IS NULL OR owner \
     NOT IN (SELECT owner FROM writers) OR owner IN (SELECT value FROM json_each(?2)))";

impl Db {
    pub(super) fn new(path: &Path, options: WriterOptions) -> Db {
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
    pub(super) fn transaction<T>(
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

    pub(super) fn beat_due(&self) -> bool {
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
    pub(super) fn beat(&mut self) -> rusqlite::Result<()> {
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
    pub(super) fn write_batch(
        &mut self,
        jobs: &[Job],
        out: &mut Vec<(i64, [u8; 64])>,
    ) -> rusqlite::Result<()> {
        out.clear();
        #[cfg(feature = "bench-decompose")]
        if crate::bench_stage::cut() == crate::bench_stage::Cut::Storage {
            let receipts = jobs.iter().filter(|j| matches!(j, Job::Receipt(..)));
            out.extend(receipts.map(|_| (0, [b'0'; 64])));
            return Ok(());
        }
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
    pub(super) fn recover_if_any(&mut self) -> rusqlite::Result<usize> {
        let cutoff = self.cutoff();
        let owner = self.owner.clone();
        let path = self.path.clone();
        let conn = &self.link()?.conn;
        let (dead, locks) = liveness::dead_writers(conn, &path, owner.as_deref(), cutoff)?;
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

    pub(super) fn cutoff(&self) -> i64 {
        unix_ms() - i64::try_from(self.options.stale_after.as_millis()).unwrap_or(i64::MAX)
    }

    /// Turn orphaned intents into `interrupted` receipts; see the module docs.
    pub(super) fn recover(&mut self) -> rusqlite::Result<usize> {
        let cutoff = self.cutoff();
        let owner = self.owner.clone();
        let path = self.path.clone();
        let (n, locks) = self.transaction(|tx, inserts| {
            // Decided inside the write lock, on the rows as they are now.
            let (dead, locks) = liveness::dead_writers(tx, &path, owner.as_deref(), cutoff)?;
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
    pub(super) fn remove_stray_locks(&mut self) {
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
    pub(super) fn retire(&mut self) -> rusqlite::Result<usize> {
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

    pub(super) fn close(&mut self) {
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

/// The chain head, read inside the write transaction (never cached across
/// transactions: another process may have appended meanwhile).
pub(super) fn head(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<String> {
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
pub(super) fn append(
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
pub(super) fn open(path: &Path, options: &WriterOptions) -> rusqlite::Result<Connection> {
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

pub(super) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
