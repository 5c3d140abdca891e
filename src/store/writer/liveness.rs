//! Whether a writer on this host is alive, without waiting for its heartbeat
//! to go stale.
//!
//! Each writer holds an exclusive `flock` on `<db>.writer-<owner>.lock`, next
//! to the database, for as long as it runs; the file holds the host's boot
//! id (`/proc/sys/kernel/random/boot_id`) and the pid. The kernel lets go of
//! the lock when the process ends, however it ends (`kill -9` included),
//! and a lock held by anyone means the writer is alive, even with a stale
//! heartbeat (a process that is paused may still finish its calls). A lock
//! that can be taken, in a file written on this boot of this host, means the
//! writer is dead: its intents are recovered at once. Anything else (no lock
//! file, another boot id, no boot id) says nothing, and the heartbeat rule
//! ([`WriterOptions::stale_after`]) decides.
//!
//! `flock` locks belong to an open file, not a process, so two writers in
//! one process (tests) see each other as alive too. Files are opened
//! close-on-exec, so tools the server runs do not inherit the lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rusqlite::Connection;

/// This boot of this host, if the kernel says.
pub(super) fn boot_id() -> Option<&'static str> {
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
enum State {
    /// Someone holds its lock.
    Alive,
    /// Its lock was free, in a file from this boot of this host.
    Dead(DeadLock),
    /// No evidence either way: let the heartbeat decide.
    Unknown,
}

fn probe(db: &Path, owner: &str) -> State {
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

/// The registered writers other than `?1`.
const OTHER_WRITERS: &str = "SELECT owner, heartbeat FROM writers WHERE ?1 IS NULL OR owner <> ?1";

/// The registered writers other than `owner` that are gone, as a JSON array
/// of owners (for `db.rs`'s `ORPHANS`), and the lock files of those found dead by
/// their lock, still held (to remove once their rows are gone).
///
/// A writer is gone if its lock file on this host (see the module docs) is not
/// held by anyone; alive if it is held, whatever its heartbeat says; and
/// when its lock says nothing (another host, no lock file), gone once its
/// heartbeat is older than `cutoff` (unix ms).
pub(super) fn dead_writers(
    conn: &Connection,
    db: &Path,
    owner: Option<&str>,
    cutoff: i64,
) -> rusqlite::Result<(String, Vec<DeadLock>)> {
    let writers = conn
        .prepare_cached(OTHER_WRITERS)?
        .query_map([owner], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut dead = Vec::new();
    let mut locks = Vec::new();
    for (other, heartbeat) in writers {
        match probe(db, &other) {
            State::Alive => {}
            State::Dead(lock) => {
                dead.push(other);
                locks.push(lock);
            }
            State::Unknown => {
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
