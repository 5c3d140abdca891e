//! SQLite storage: the schema, the tool-version registry, the receipt writer
//! and receipt queries.
//!
//! # Layout
//!
//! - [`db`]: opening the database file and migrating it ([`Store::open`]).
//! - [`registry`]: every version of every tool spec, and which one is served.
//! - [`writer`]: the single task that appends receipts to the hash chain.
//! - [`receipts`]: listing, fetching and verifying stored receipts.
//!
//! **Invariant:** receipts are only ever appended by [`ReceiptWriter`], inside
//! `BEGIN IMMEDIATE` transactions that re-read the chain head, so two tollgate
//! processes sharing a database interleave their batches but never fork the chain.

pub mod approvals;
pub mod budgets;
pub mod costs;
pub mod db;
pub mod idempotency;
pub mod policies;
pub mod receipts;
pub mod registry;
pub mod verify;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::SqlitePool;

pub use approvals::Approval;
pub use budgets::{Charge, Exhausted};
pub use costs::{CostRow, GroupBy};
pub use idempotency::{Claim, KeyRef};
pub use policies::StoredPolicySet;
pub use receipts::{BadReceipt, ReceiptFilter, VerifyReport};
pub use registry::{SpecFile, ToolState, ToolVersion, Unpinned};
pub use writer::{Committed, ReceiptWriter, StorageHealth, WriterHandle, WriterStats};

/// A handle to the tollgate database. Cheap to clone (a pool and a path).
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Kept only to name the file in messages.
    path: Arc<PathBuf>,
}

impl Store {
    /// The connection pool, for callers that need raw SQL (tests, admin commands).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The database file this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Close every connection, waiting for in-flight queries. Shut the
    /// [`WriterHandle`] down first, or its last batch will fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Everything that can go wrong in storage, worded for the person at the terminal.
///
/// No variant carries receipt arguments: they may hold secrets, and errors end
/// up in logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {}: {cause}", path.display())]
    Open { path: PathBuf, cause: String },

    #[error("cannot prepare database {}: {cause}", path.display())]
    Migrate { path: PathBuf, cause: String },

    /// A query failed; `action` says what we were doing, e.g. "list receipts".
    #[error("cannot {action}: {}", db::describe(source))]
    Sql {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// A failure outside sqlx (the verifier reads through its own connection).
    #[error("cannot {action}: {cause}")]
    Raw { action: &'static str, cause: String },

    #[error("no tool named {name}; `tollgate tools list` shows the known tools")]
    UnknownTool { name: String },

    #[error("tool {name} has versions 1..{latest}; there is no version {requested}")]
    UnknownVersion {
        name: String,
        latest: i64,
        requested: i64,
    },

    #[error("two spec files define the tool {name}; each tool needs exactly one")]
    DuplicateSpec { name: String },

    #[error(
        "receipt id {given:?} is too short; give the full id or at least its first 8 characters"
    )]
    ReceiptIdTooShort { given: String },

    #[error("receipt id prefix {prefix:?} matches more than one receipt; give more characters")]
    AmbiguousReceiptId { prefix: String },

    #[error("{what} {given:?} is too short; give at least its first 8 characters")]
    TooShort { what: &'static str, given: String },

    #[error("{what} prefix {prefix:?} matches more than one; give more characters")]
    Ambiguous { what: &'static str, prefix: String },

    /// A stored value that tollgate did not write, e.g. an unknown decision.
    #[error(
        "receipt {seq} has an unreadable {field} ({problem}); `tollgate receipts verify` checks the whole log"
    )]
    Corrupt {
        seq: i64,
        field: &'static str,
        problem: String,
    },

    /// The batch holding this receipt did not commit; nothing of it was written.
    #[error("cannot record the receipt: {}", db::describe(source))]
    Unrecorded {
        #[source]
        source: Arc<sqlx::Error>,
    },

    #[error("the receipt writer has stopped, so the call cannot be recorded")]
    WriterStopped,
}

/// Attach "what we were doing" to a sqlx error.
pub(crate) trait Doing<T> {
    fn doing(self, action: &'static str) -> Result<T, StoreError>;
}

impl<T> Doing<T> for Result<T, sqlx::Error> {
    fn doing(self, action: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql { action, source })
    }
}
