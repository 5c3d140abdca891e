//! Recently verified API keys, so a request does not wait on the database.
//!
//! Reading the key row costs a trip through the connection pool on every
//! HTTP request: measured at about a tenth of a governed call's server CPU.
//! The row of an active key changes in only two ways that matter here:
//! revocation and expiry. Expiry is a time stored in the entry and checked
//! on every use. Revocation is announced through a *revocation epoch*: an
//! 8-byte counter in a file beside the database (`<db>-keys-epoch`) that
//! `tollgate keys revoke` increments after its UPDATE commits, in whatever
//! process it runs. An entry remembers the epoch it was verified under and
//! is used only while the epoch is unchanged, so a revocation still takes
//! effect on the very next request, as without the cache.
//!
//! Reading the epoch is one `pread` of 8 bytes from a file that stays in
//! the page cache: far less than the pooled query it replaces, and unlike a
//! memory map it cannot fault the process if someone truncates the file.
//! Entries also expire after [`MAX_AGE`], so a change the epoch cannot
//! announce (a row edited by hand, the epoch file deleted) is seen within
//! that time. Without an epoch file (an in-memory database, a read-only
//! directory) nothing is cached and every request reads the row.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::keys::KeyInfo;

/// Longest time an entry is trusted without reading the row again.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// The revocation epoch file of the database at `db`.
pub fn epoch_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-keys-epoch");
    PathBuf::from(name)
}

/// The shared counter. Every process that opens the same database opens the
/// same file.
#[derive(Debug)]
pub struct Epoch {
    file: File,
}

impl Epoch {
    /// Open (creating if needed) the epoch file of the database at `db`.
    pub fn open(db: &Path) -> std::io::Result<Epoch> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(epoch_path(db))?;
        Ok(Epoch { file })
    }

    /// The current value; `None` when it cannot be read, which disables the
    /// cache for that request (fail safe: read the row).
    pub fn current(&self) -> Option<u64> {
        let mut buf = [0u8; 8];
        match self.file.read_at(&mut buf, 0) {
            Ok(8) => Some(u64::from_le_bytes(buf)),
            // A new, still empty file: epoch 0.
            Ok(0) => Some(0),
            _ => None,
        }
    }

    /// Announce a revocation. Not atomic across processes (read, add,
    /// write), but it only has to *change*: two revocations racing may both
    /// write the same new value, and either way every cached entry, whose
    /// epoch is the old one, is dropped.
    pub fn bump(&self) -> std::io::Result<()> {
        let next = self.current().unwrap_or(0).wrapping_add(1);
        self.file.write_all_at(&next.to_le_bytes(), 0)?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Entry {
    secret_hash: String,
    info: KeyInfo,
    epoch: u64,
    verified: Instant,
}

/// Verified keys by id. Bounded by the number of keys in the database: an
/// entry is only made after the row was found and the secret matched.
#[derive(Debug, Clone, Default)]
pub struct VerifiedKeys {
    epoch: Option<Arc<Epoch>>,
    entries: Arc<DashMap<String, Entry>>,
}

/// What the cache knows about a presented key.
pub enum Lookup {
    /// Verified under the current epoch: its stored secret hash and info.
    Hit { secret_hash: String, info: KeyInfo },
    /// Read the row; remember it under this epoch if it verifies.
    Miss { epoch: Option<u64> },
}

impl VerifiedKeys {
    /// A cache announced through the epoch file of the database at `db`.
    /// `None` for `db` (in memory), or a file that cannot be opened, gives a
    /// cache that never hits.
    pub fn new(db: Option<&Path>) -> VerifiedKeys {
        let epoch = db.and_then(|db| match Epoch::open(db) {
            Ok(epoch) => Some(Arc::new(epoch)),
            Err(e) => {
                tracing::warn!(path = %epoch_path(db).display(), error = %e,
                    "cannot open the API key revocation epoch; every request will read its key from the database");
                None
            }
        });
        VerifiedKeys {
            epoch,
            entries: Arc::default(),
        }
    }

    pub fn lookup(&self, id: &str) -> Lookup {
        let epoch = self.epoch.as_ref().and_then(|e| e.current());
        if let Some(now) = epoch
            && let Some(entry) = self.entries.get(id)
            && entry.epoch == now
            && entry.verified.elapsed() < MAX_AGE
        {
            return Lookup::Hit {
                secret_hash: entry.secret_hash.clone(),
                info: entry.info.clone(),
            };
        }
        Lookup::Miss { epoch }
    }

    /// Remember a key that verified under `epoch` (read *before* its row,
    /// so a revocation committed in between leaves the entry stale).
    pub fn remember(&self, epoch: Option<u64>, secret_hash: String, info: KeyInfo) {
        if let Some(epoch) = epoch {
            self.entries.insert(
                info.id.clone(),
                Entry {
                    secret_hash,
                    info,
                    epoch,
                    verified: Instant::now(),
                },
            );
        }
    }

    /// Announce a revocation to every process sharing the database.
    pub fn revoked(&self, id: &str) {
        self.entries.remove(id);
        if let Some(epoch) = &self.epoch
            && let Err(e) = epoch.bump()
        {
            // Other processes then notice within MAX_AGE instead of at once.
            tracing::warn!(error = %e, "cannot announce the revocation through the epoch file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn info(id: &str) -> KeyInfo {
        KeyInfo {
            id: id.into(),
            principal: "alice".into(),
            created: Utc::now(),
            expires: None,
            note: None,
            revoked: None,
            last_used: None,
        }
    }

    #[test]
    fn a_bump_from_another_handle_invalidates_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let server = VerifiedKeys::new(Some(&db));
        let Lookup::Miss { epoch } = server.lookup("k1") else {
            panic!("empty cache hit")
        };
        assert_eq!(epoch, Some(0));
        server.remember(epoch, "h".into(), info("k1"));
        assert!(matches!(server.lookup("k1"), Lookup::Hit { .. }));
        // Another process revokes (a second handle on the same file).
        VerifiedKeys::new(Some(&db)).revoked("other");
        assert!(matches!(
            server.lookup("k1"),
            Lookup::Miss { epoch: Some(1) }
        ));
    }

    #[test]
    fn without_an_epoch_file_nothing_is_cached() {
        let keys = VerifiedKeys::new(None);
        keys.remember(None, "h".into(), info("k1"));
        assert!(matches!(keys.lookup("k1"), Lookup::Miss { epoch: None }));
    }
}
