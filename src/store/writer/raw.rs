//! The receipt INSERT, driven through SQLite's C API.
//!
//! Why not rusqlite here: rusqlite binds every string `SQLITE_TRANSIENT`,
//! so SQLite mallocs and copies each of the ~18 text values of every
//! receipt, and frees them again when the cached statement is returned
//! (`clear_bindings`); on the writer thread that was about a third of the
//! INSERT's cost. Binding `SQLITE_STATIC` lets SQLite read the receipt's
//! own bytes while the statement runs. In a standalone test on this schema
//! (batches of 64, CPU time per row, median of 5): one rusqlite INSERT per
//! row 8.4 µs, a 64-row rusqlite INSERT 7.2 µs, a 64-row INSERT bound
//! `SQLITE_STATIC` 4.6 µs.
//!
//! The statements say `INSERT OR ROLLBACK`: a multi-row INSERT that may
//! abort half-way needs a statement journal (copies of every page it
//! touches, spilled to a temporary file past 64 KiB), unless a failure
//! rolls back the whole transaction. A failed batch is rolled back as a
//! whole anyway, so nothing changes for callers.
//!
//! Safety rests on three rules kept in this module: the statements are
//! finalized before their connection closes ([`Link`] drops `inserts`
//! first), every bound pointer borrows from the arguments of one
//! [`Inserts::insert`] call, and the bindings are cleared before that call
//! returns, so SQLite never holds a pointer past the data's lifetime.

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
            Some(c) => self.check(unsafe { ffi::sqlite3_bind_double(stmt, idx(base + 18), c) })?,
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
