//! Opening the database file and bringing its schema up to date.
//!
//! The settings are chosen for one busy writer plus readers, possibly in two
//! processes at once (`tollgate serve` and `tollgate call`): WAL lets readers
//! run while a batch commits, and the busy timeout makes the second process
//! wait its turn instead of failing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::{Store, StoreError};

/// Connections in the pool: the receipt writer holds one per batch, and the
/// rest serve reads. SQLite allows only one writer at a time anyway.
const POOL_SIZE: u32 = 4;

/// How long a writer waits for another one (possibly another process) to commit.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema history, oldest first. Embedded so the binary is self-contained.
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            include_str!("../../migrations/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "api_keys".into(),
            MigrationType::Simple,
            include_str!("../../migrations/0002_api_keys.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "governance".into(),
            MigrationType::Simple,
            include_str!("../../migrations/0003_governance.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "writer".into(),
            MigrationType::Simple,
            include_str!("../../migrations/0004_writer.sql").into_sql_str(),
            false,
        ),
    ])
}

impl Store {
    /// Open (creating if missing) the database at `path` and migrate it.
    ///
    /// The directory must exist: creating directories is the caller's
    /// decision (it knows whether the path was a default or a typo).
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode never corrupts the database; a power cut
            // may lose the last commits, which the chain then simply lacks.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open {
                path: path.to_owned(),
                cause: describe(&e),
            })?;
        migrator()
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate {
                path: path.to_owned(),
                cause: match e {
                    sqlx::migrate::MigrateError::Execute(e) => describe(&e),
                    other => other.to_string(),
                },
            })?;
        Ok(Store {
            pool,
            path: Arc::new(path.to_owned()),
        })
    }
}

/// A sqlx error in words, with a hint for the causes people can fix.
///
/// sqlx's own Display adds "error returned from database: (code: 14)", which
/// tells a user nothing they can act on.
pub(crate) fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => {
            let message = db.message();
            // Primary result code: the low byte of SQLite's extended code.
            let primary = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff);
            let hint = match primary {
                Some(5) | Some(6) => " (another process is holding the database; try again)",
                Some(8) => " (is the file writable?)",
                Some(13) => " (is the disk full?)",
                Some(14) => " (does the directory exist, and is it writable?)",
                Some(26) => " (is this really a tollgate database?)",
                _ => "",
            };
            format!("{message}{hint}")
        }
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".to_owned(),
        sqlx::Error::PoolClosed => "the database has been closed".to_owned(),
        other => other.to_string(),
    }
}

impl Store {
    /// Whether a write transaction can start right now (readiness probes).
    /// Takes and releases the write lock without writing anything.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        let sql = |source| StoreError::Sql {
            action: "take the database write lock",
            source,
        };
        // A sqlx transaction rolls back if this future is dropped half-way
        // (a probe that timed out), so no pooled connection is ever left
        // holding the write lock.
        let tx = self
            .pool()
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql)?;
        tx.rollback().await.map_err(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_creates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&path).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(fk, 1);
        store.close().await;
        // A second open finds the migration already applied.
        Store::open(&path).await.unwrap();
    }

    #[tokio::test]
    async fn missing_directory_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("t.db");
        let err = Store::open(&path).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot open database {}: ", path.display())),
            "{err}"
        );
        assert!(err.contains("unable to open database file"), "{err}");
        assert!(err.contains("directory"), "{err}");
    }

    #[tokio::test]
    async fn not_a_database_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = Store::open(&path).await.unwrap_err().to_string();
        assert!(err.contains("tollgate database"), "{err}");
    }
}
