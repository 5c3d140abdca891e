//! What a rusqlite error means to the writer (storage failure or not), and
//! its translation into the crate's `StoreError`.

use super::*;

/// SQLite's primary result code of an error, if it came from SQLite.
fn primary_code(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => Some(f.extended_code & 0xff),
        _ => None,
    }
}

/// Whether `e` says the storage refuses writes, rather than this batch's
/// content being refused (a duplicate id, a value too big).
pub(super) fn is_storage_failure(e: &rusqlite::Error) -> bool {
    // CONSTRAINT 19, MISMATCH 20, TOOBIG 18, RANGE 25.
    !matches!(primary_code(e), Some(18 | 19 | 20 | 25))
}

/// Whether the connection itself may be the problem (opened read-only,
/// file replaced or gone), so the next attempt should open a new one.
pub(super) fn needs_reopen(e: &rusqlite::Error) -> bool {
    // READONLY 8, IOERR 10, CORRUPT 11, CANTOPEN 14, NOTADB 26.
    matches!(primary_code(e), Some(8 | 10 | 11 | 14 | 26) | None)
}

pub(super) fn unrecorded(e: &rusqlite::Error) -> StoreError {
    StoreError::Unrecorded {
        source: Arc::new(to_sqlx(e)),
    }
}

pub(super) fn describe_raw(e: &rusqlite::Error) -> String {
    describe(&to_sqlx(e))
}

/// A rusqlite error as the sqlx error the rest of the store describes, so
/// the same hints ("is the disk full?") apply.
pub(super) fn to_sqlx(e: &rusqlite::Error) -> sqlx::Error {
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
