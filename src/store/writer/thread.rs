//! The writer thread's loop: take queued jobs in batches, write them, answer
//! each caller, and report health and metrics.

use super::*;

pub(super) struct WriterThread {
    pub(super) db: Db,
    pub(super) jobs: std_mpsc::Receiver<Queued>,
    pub(super) permits: Arc<Semaphore>,
    pub(super) counters: Arc<Counters>,
    pub(super) health: watch::Sender<StorageHealth>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    /// Where each receipt of the current batch landed: (seq, hash), reused
    /// from batch to batch.
    pub(super) appended: Vec<(i64, [u8; 64])>,
}

impl WriterThread {
    pub(super) fn run(&mut self) {
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
    pub(super) fn idle(&mut self) {
        let result = self.db.beat().and_then(|()| self.db.recover_if_any());
        match result {
            Ok(n) => self.recovered(n),
            Err(e) => self.failed(&e, 0, None),
        }
    }

    pub(super) fn write(&mut self, batch: &mut Vec<Job>, queued: usize) {
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

    pub(super) fn recovered(&mut self, n: usize) {
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

    pub(super) fn healthy(&mut self) {
        self.health.send_if_modified(|h| {
            let changed = !h.is_healthy();
            if changed {
                tracing::info!("the database takes writes again");
                *h = StorageHealth::Healthy;
            }
            changed
        });
    }

    pub(super) fn failed(&mut self, e: &rusqlite::Error, receipts: usize, queued: Option<usize>) {
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
