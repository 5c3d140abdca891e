//! When each API key was last used, written in batches.
//!
//! Writing `last_used` on every request would put a database write (and
//! SQLite's single write lock) on the hot path of every call. Instead a use
//! is noted in memory, and a background task writes all noted uses in one
//! transaction every few seconds. The cost: `tollgate keys list` in another
//! process can be that many seconds behind, and uses in the last seconds
//! before a crash are lost. Call [`UsageLog::flush`] at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;

use super::keys::ts;
use crate::store::{Doing, StoreError};

/// Pending uses, shared by every clone of one key store.
#[derive(Debug, Clone)]
pub(super) struct UsageLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pool: SqlitePool,
    every: Duration,
    /// Key id → latest use not yet written. A std mutex: it is held for a
    /// map insert, never across an await.
    pending: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Started on the first use, so that building a key store (e.g. in the
    /// CLI) needs no runtime and spawns nothing.
    flusher: std::sync::Once,
}

impl UsageLog {
    pub(super) fn new(pool: SqlitePool, every: Duration) -> UsageLog {
        UsageLog {
            inner: Arc::new(Inner {
                pool,
                every,
                pending: Mutex::new(HashMap::new()),
                flusher: std::sync::Once::new(),
            }),
        }
    }

    /// Note that key `id` was used at `at`.
    pub(super) fn note(&self, id: &str, at: DateTime<Utc>) {
        self.inner.lock().insert(id.to_owned(), at);
        self.inner.flusher.call_once(|| {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(flush_loop(Arc::downgrade(&self.inner)));
            }
        });
    }

    /// Uses not yet written (so a list from this process is current).
    pub(super) fn pending(&self) -> HashMap<String, DateTime<Utc>> {
        self.inner.lock().clone()
    }

    /// Write every pending use now.
    pub(super) async fn flush(&self) {
        self.inner.flush().await;
    }
}

/// Flush periodically until the log is dropped. Holds only a weak
/// reference, so it never keeps the pool alive by itself.
async fn flush_loop(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(i) => i.every,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.pool.is_closed() {
            return;
        }
        inner.flush().await;
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DateTime<Utc>>> {
        // A panic while holding the lock leaves a valid map; keep going.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn flush(&self) {
        let batch = std::mem::take(&mut *self.lock());
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.write(&batch).await {
            // Informational data: keep it for the next try.
            tracing::warn!(error = %e, "cannot record when API keys were last used");
            let mut pending = self.lock();
            for (id, t) in batch {
                let slot = pending.entry(id).or_insert(t);
                *slot = (*slot).max(t);
            }
        }
    }

    async fn write(&self, batch: &HashMap<String, DateTime<Utc>>) -> Result<(), StoreError> {
        let action = "record when API keys were last used";
        let mut tx = self.pool.begin().await.doing(action)?;
        for (id, t) in batch {
            // Never move last_used backwards (another process may be newer).
            sqlx::query(
                "UPDATE api_keys SET last_used = ?1
                 WHERE id = ?2 AND (last_used IS NULL OR last_used < ?1)",
            )
            .bind(ts(*t))
            .bind(id)
            .execute(&mut *tx)
            .await
            .doing(action)?;
        }
        tx.commit().await.doing(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_background_task_writes_noted_uses() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("t.db"))
            .await
            .unwrap();
        let keys = super::super::ApiKeys::new(store.pool().clone());
        let (info, _) = keys.create("alice", None, None).await.unwrap();
        let log = UsageLog::new(store.pool().clone(), Duration::from_millis(50));
        log.note(&info.id, Utc::now());
        let mut written = None;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            written = keys.get(&info.id).await.unwrap().unwrap().last_used;
            if written.is_some() {
                break;
            }
        }
        assert!(written.is_some(), "flushed without being asked");
        assert!(log.pending().is_empty());
    }
}
