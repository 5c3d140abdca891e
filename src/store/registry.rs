//! The tool-version registry: every content each tool's spec file has ever
//! had, and which version is served.
//!
//! The spec loader hands over plain data (name, hash, canonical text); this
//! module only decides version numbers and what is active. A version is the
//! pair (tool, hash): editing a file creates the next version, and reverting
//! it reuses the old one, so version numbers mean "this exact spec".
//!
//! A tool is normally served at its file's version. `rollback` pins it to an
//! older one, and the pin holds across file edits (and even if the file is
//! deleted) until `unpin`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::{Doing, Store, StoreError};
use crate::receipt::now_ts;

/// One spec file as the loader found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecFile {
    pub name: String,
    /// SHA-256 hex of `canonical`.
    pub hash: String,
    /// Canonical JSON of the parsed spec.
    pub canonical: String,
    pub source_path: String,
    /// The file's text, kept for humans (comments survive, unlike in `canonical`).
    pub source_text: String,
}

/// One stored version of a tool's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolVersion {
    pub tool: String,
    pub version: i64,
    pub hash: String,
    pub canonical: String,
    pub source_path: String,
    pub source_text: String,
    pub first_seen: String,
}

/// Which version of a tool is served, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolState {
    pub name: String,
    /// The served version; `None` means the tool is not served.
    pub active_version: Option<i64>,
    /// The version the spec file has now; `None` if the file is gone.
    pub file_version: Option<i64>,
    /// Set by a rollback: `active_version` ignores file changes until unpinned.
    pub pinned: bool,
    pub updated_at: String,
}

/// The result of [`Store::unpin`]; its `Display` tells the user what now happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpinned {
    pub state: ToolState,
}

impl fmt::Display for Unpinned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.state.name;
        match self.state.file_version {
            Some(v) => write!(
                f,
                "{name} is no longer pinned; it is served at version {v}, the spec file's version"
            ),
            None => write!(
                f,
                "{name} is no longer pinned; its spec file is gone, so it will not be served"
            ),
        }
    }
}

const STATE_COLUMNS: &str = "name, active_version, file_version, pinned, updated_at";
const VERSION_COLUMNS: &str =
    "tool, version, hash, canonical, source_path, source_text, first_seen";

fn state_from_row(row: &SqliteRow) -> Result<ToolState, sqlx::Error> {
    Ok(ToolState {
        name: row.try_get("name")?,
        active_version: row.try_get("active_version")?,
        file_version: row.try_get("file_version")?,
        pinned: row.try_get("pinned")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn version_from_row(row: &SqliteRow) -> Result<ToolVersion, sqlx::Error> {
    Ok(ToolVersion {
        tool: row.try_get("tool")?,
        version: row.try_get("version")?,
        hash: row.try_get("hash")?,
        canonical: row.try_get("canonical")?,
        source_path: row.try_get("source_path")?,
        source_text: row.try_get("source_text")?,
        first_seen: row.try_get("first_seen")?,
    })
}

impl Store {
    /// Record the spec files now on disk and return what should be served.
    ///
    /// In one transaction: each file gets its existing version (same tool and
    /// hash) or the next version number; unpinned tools follow their file;
    /// tools whose file is gone stop being served unless pinned. Returns the
    /// served tools, by name. Calling it again with the same files changes
    /// nothing.
    pub async fn sync_specs(
        &self,
        files: &[SpecFile],
    ) -> Result<Vec<(ToolState, ToolVersion)>, StoreError> {
        const ACTION: &str = "record tool versions";
        let mut names = HashSet::new();
        for f in files {
            if !names.insert(f.name.as_str()) {
                return Err(StoreError::DuplicateSpec {
                    name: f.name.clone(),
                });
            }
        }
        let now = now_ts();
        // IMMEDIATE: we read then write, and a deferred transaction could not
        // upgrade to a write if another process committed in between.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing(ACTION)?;
        let states: BTreeMap<String, ToolState> = all_states(&mut tx)
            .await
            .doing(ACTION)?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();

        // Versions are decided in memory from one read of the registry, then
        // written with a few multi-row statements: one round trip per spec
        // made start-up with 1,000 specs wait on SQLite 1,000 times.
        let mut known = known_versions(&mut tx).await.doing(ACTION)?;
        let mut new_versions: Vec<(&SpecFile, i64)> = Vec::new();
        let mut new_tools: Vec<(&str, i64)> = Vec::new();
        // Applied after the inserts: `tools` rows refer to `tool_versions`.
        let mut updates: Vec<(&ToolState, Option<i64>, Option<i64>)> = Vec::new();
        for file in files {
            let (version, is_new) = known.version_for(file);
            if is_new {
                new_versions.push((file, version));
            }
            match states.get(&file.name) {
                None => new_tools.push((&file.name, version)),
                Some(state) => {
                    let active = if state.pinned {
                        state.active_version
                    } else {
                        Some(version)
                    };
                    updates.push((state, active, Some(version)));
                }
            }
        }
        for chunk in new_versions.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO tool_versions (tool, version, hash, canonical, source_path, source_text, first_seen) ",
            );
            q.push_values(chunk, |mut row, (file, version)| {
                row.push_bind(&file.name)
                    .push_bind(*version)
                    .push_bind(&file.hash)
                    .push_bind(&file.canonical)
                    .push_bind(&file.source_path)
                    .push_bind(&file.source_text)
                    .push_bind(&now);
            });
            q.build().execute(&mut *tx).await.doing(ACTION)?;
        }
        for chunk in new_tools.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO tools (name, active_version, file_version, pinned, updated_at) ",
            );
            q.push_values(chunk, |mut row, (name, version)| {
                row.push_bind(*name)
                    .push_bind(*version)
                    .push_bind(*version)
                    .push_bind(0_i64)
                    .push_bind(&now);
            });
            q.build().execute(&mut *tx).await.doing(ACTION)?;
        }
        for (state, active, file) in updates {
            set_versions(&mut tx, state, active, file, &now)
                .await
                .doing(ACTION)?;
        }
        for state in states.values() {
            if !names.contains(state.name.as_str()) {
                let active = if state.pinned {
                    state.active_version
                } else {
                    None
                };
                set_versions(&mut tx, state, active, None, &now)
                    .await
                    .doing(ACTION)?;
            }
        }

        let sql = "SELECT t.name, t.active_version, t.file_version, t.pinned, t.updated_at, \
                   v.tool, v.version, v.hash, v.canonical, v.source_path, v.source_text, v.first_seen \
                   FROM tools t JOIN tool_versions v ON v.tool = t.name AND v.version = t.active_version \
                   ORDER BY t.name";
        let served = sqlx::query(sql)
            .fetch_all(&mut *tx)
            .await
            .doing(ACTION)?
            .iter()
            .map(|row| Ok((state_from_row(row)?, version_from_row(row)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .doing(ACTION)?;
        tx.commit().await.doing(ACTION)?;
        Ok(served)
    }

    /// Every tool ever seen, by name.
    pub async fn tool_states(&self) -> Result<Vec<ToolState>, StoreError> {
        let mut conn = self.pool.acquire().await.doing("list tools")?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STATE_COLUMNS} FROM tools ORDER BY name"
        )))
        .fetch_all(&mut *conn)
        .await
        .doing("list tools")?;
        rows.iter()
            .map(state_from_row)
            .collect::<Result<_, _>>()
            .doing("list tools")
    }

    /// Every version of `name`, oldest first.
    pub async fn history(&self, name: &str) -> Result<Vec<ToolVersion>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM tool_versions WHERE tool = ? ORDER BY version"
        )))
        .bind(name)
        .fetch_all(&self.pool)
        .await
        .doing("read tool history")?;
        if rows.is_empty() {
            // Every known tool has at least one version.
            return Err(StoreError::UnknownTool {
                name: name.to_owned(),
            });
        }
        rows.iter()
            .map(version_from_row)
            .collect::<Result<_, _>>()
            .doing("read tool history")
    }

    /// One version of `name`, if it exists.
    pub async fn version(
        &self,
        name: &str,
        version: i64,
    ) -> Result<Option<ToolVersion>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {VERSION_COLUMNS} FROM tool_versions WHERE tool = ? AND version = ?"
        )))
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .doing("read a tool version")?;
        row.as_ref()
            .map(version_from_row)
            .transpose()
            .doing("read a tool version")
    }

    /// Serve `name` at `version` from now on, whatever its file says, until
    /// [`Store::unpin`].
    pub async fn rollback(&self, name: &str, version: i64) -> Result<ToolState, StoreError> {
        const ACTION: &str = "roll the tool back";
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing(ACTION)?;
        let state = state_of(&mut tx, name).await?;
        let latest: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) FROM tool_versions WHERE tool = ?",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .doing(ACTION)?;
        if version < 1 || version > latest {
            return Err(StoreError::UnknownVersion {
                name: name.to_owned(),
                latest,
                requested: version,
            });
        }
        let now = now_ts();
        sqlx::query(
            "UPDATE tools SET active_version = ?, pinned = 1, updated_at = ? WHERE name = ?",
        )
        .bind(version)
        .bind(&now)
        .bind(name)
        .execute(&mut *tx)
        .await
        .doing(ACTION)?;
        tx.commit().await.doing(ACTION)?;
        Ok(ToolState {
            active_version: Some(version),
            pinned: true,
            updated_at: now,
            ..state
        })
    }

    /// Undo a rollback: `name` follows its spec file again (and is not served
    /// if the file is gone; the returned value's `Display` says which).
    pub async fn unpin(&self, name: &str) -> Result<Unpinned, StoreError> {
        const ACTION: &str = "unpin the tool";
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .doing(ACTION)?;
        let state = state_of(&mut tx, name).await?;
        let now = now_ts();
        sqlx::query(
            "UPDATE tools SET active_version = file_version, pinned = 0, updated_at = ? WHERE name = ?",
        )
        .bind(&now)
        .bind(name)
        .execute(&mut *tx)
        .await
        .doing(ACTION)?;
        tx.commit().await.doing(ACTION)?;
        Ok(Unpinned {
            state: ToolState {
                active_version: state.file_version,
                pinned: false,
                updated_at: now,
                ..state
            },
        })
    }
}

async fn all_states(tx: &mut Transaction<'static, Sqlite>) -> Result<Vec<ToolState>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {STATE_COLUMNS} FROM tools"
    )))
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(state_from_row).collect()
}

async fn state_of(
    tx: &mut Transaction<'static, Sqlite>,
    name: &str,
) -> Result<ToolState, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {STATE_COLUMNS} FROM tools WHERE name = ?"
    )))
    .bind(name)
    .fetch_optional(&mut **tx)
    .await
    .doing("look the tool up")?;
    match row {
        Some(row) => state_from_row(&row).doing("look the tool up"),
        None => Err(StoreError::UnknownTool {
            name: name.to_owned(),
        }),
    }
}

/// Rows per multi-row INSERT: 7 values each stays far below SQLite's
/// limit on bound parameters (32,766).
const ROWS_PER_INSERT: usize = 500;

/// Every (tool, hash) → version already stored, and each tool's latest
/// version: what deciding a file's version number needs.
#[derive(Debug, Default)]
struct KnownVersions {
    by_hash: HashMap<(String, String), i64>,
    latest: HashMap<String, i64>,
}

impl KnownVersions {
    /// `file`'s version number, and whether it is new (to be inserted). A
    /// new one is the tool's next number, so history is never renumbered.
    fn version_for(&mut self, file: &SpecFile) -> (i64, bool) {
        let key = (file.name.clone(), file.hash.clone());
        if let Some(v) = self.by_hash.get(&key) {
            return (*v, false);
        }
        let latest = self.latest.entry(file.name.clone()).or_insert(0);
        *latest += 1;
        self.by_hash.insert(key, *latest);
        (*latest, true)
    }
}

async fn known_versions(
    tx: &mut Transaction<'static, Sqlite>,
) -> Result<KnownVersions, sqlx::Error> {
    let rows = sqlx::query("SELECT tool, hash, version FROM tool_versions")
        .fetch_all(&mut **tx)
        .await?;
    let mut known = KnownVersions::default();
    for row in &rows {
        let tool: String = row.try_get("tool")?;
        let hash: String = row.try_get("hash")?;
        let version: i64 = row.try_get("version")?;
        let latest = known.latest.entry(tool.clone()).or_insert(0);
        *latest = (*latest).max(version);
        known.by_hash.insert((tool, hash), version);
    }
    Ok(known)
}

/// Update a tool's versions, touching `updated_at` only if something changed
/// (so a sync that finds nothing new leaves the table exactly as it was).
async fn set_versions(
    tx: &mut Transaction<'static, Sqlite>,
    state: &ToolState,
    active: Option<i64>,
    file: Option<i64>,
    now: &str,
) -> Result<(), sqlx::Error> {
    if state.active_version == active && state.file_version == file {
        return Ok(());
    }
    sqlx::query(
        "UPDATE tools SET active_version = ?, file_version = ?, updated_at = ? WHERE name = ?",
    )
    .bind(active)
    .bind(file)
    .bind(now)
    .bind(&state.name)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, body: &str) -> SpecFile {
        SpecFile {
            name: name.to_owned(),
            hash: crate::canonical::sha256_hex(body.as_bytes()),
            canonical: body.to_owned(),
            source_path: format!("tools/{name}.yaml"),
            source_text: format!("# {name}\n{body}"),
        }
    }

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        (dir, store)
    }

    fn served(list: &[(ToolState, ToolVersion)]) -> Vec<(String, i64)> {
        list.iter()
            .map(|(s, v)| (s.name.clone(), v.version))
            .collect()
    }

    #[tokio::test]
    async fn versions_follow_file_content_and_sync_is_idempotent() {
        let (_dir, store) = store().await;
        let a1 = spec("a", "{\"v\":1}");
        let b1 = spec("b", "{\"v\":1}");
        let out = store.sync_specs(&[a1.clone(), b1.clone()]).await.unwrap();
        assert_eq!(served(&out), [("a".into(), 1), ("b".into(), 1)]);

        let before = store.tool_states().await.unwrap();
        let again = store.sync_specs(&[a1.clone(), b1.clone()]).await.unwrap();
        assert_eq!(again, out);
        assert_eq!(store.tool_states().await.unwrap(), before);

        let a2 = spec("a", "{\"v\":2}");
        let out = store.sync_specs(&[a2.clone(), b1.clone()]).await.unwrap();
        assert_eq!(served(&out), [("a".into(), 2), ("b".into(), 1)]);
        // Reverting the file reuses version 1.
        let out = store.sync_specs(&[a1.clone(), b1.clone()]).await.unwrap();
        assert_eq!(served(&out), [("a".into(), 1), ("b".into(), 1)]);
        assert_eq!(store.history("a").await.unwrap().len(), 2);
        let v2 = store.version("a", 2).await.unwrap().unwrap();
        assert_eq!(v2.hash, a2.hash);
        assert_eq!(v2.source_text, a2.source_text);
        assert!(store.version("a", 3).await.unwrap().is_none());

        // A vanished file stops being served but stays known.
        let out = store.sync_specs(std::slice::from_ref(&b1)).await.unwrap();
        assert_eq!(served(&out), [("b".into(), 1)]);
        let a = store.tool_states().await.unwrap().remove(0);
        assert_eq!((a.active_version, a.file_version), (None, None));
    }

    #[tokio::test]
    async fn rollback_pins_until_unpinned() {
        let (_dir, store) = store().await;
        store.sync_specs(&[spec("a", "1")]).await.unwrap();
        store.sync_specs(&[spec("a", "2")]).await.unwrap();
        let state = store.rollback("a", 1).await.unwrap();
        assert_eq!((state.active_version, state.pinned), (Some(1), true));

        // A file edit creates version 3 but the pin holds.
        let out = store.sync_specs(&[spec("a", "3")]).await.unwrap();
        assert_eq!(served(&out), [("a".into(), 1)]);
        assert_eq!(out[0].0.file_version, Some(3));

        // Even a vanished file does not stop a pinned tool.
        let out = store.sync_specs(&[]).await.unwrap();
        assert_eq!(served(&out), [("a".into(), 1)]);

        let unpinned = store.unpin("a").await.unwrap();
        assert_eq!(unpinned.state.active_version, None);
        assert!(
            unpinned.to_string().contains("will not be served"),
            "{unpinned}"
        );
        assert!(store.sync_specs(&[]).await.unwrap().is_empty());

        store.sync_specs(&[spec("a", "2")]).await.unwrap();
        store.rollback("a", 3).await.unwrap();
        let unpinned = store.unpin("a").await.unwrap();
        assert_eq!(unpinned.state.active_version, Some(2));
        assert_eq!(store.tool_states().await.unwrap()[0], unpinned.state);
    }

    #[tokio::test]
    async fn mistakes_are_explained() {
        let (_dir, store) = store().await;
        store.sync_specs(&[spec("a", "1")]).await.unwrap();
        let err = store.rollback("zz", 1).await.unwrap_err().to_string();
        assert_eq!(
            err,
            "no tool named zz; `tollgate tools list` shows the known tools"
        );
        let err = store.rollback("a", 7).await.unwrap_err().to_string();
        assert_eq!(err, "tool a has versions 1..1; there is no version 7");
        assert!(matches!(
            store.unpin("zz").await,
            Err(StoreError::UnknownTool { .. })
        ));
        assert!(matches!(
            store.history("zz").await,
            Err(StoreError::UnknownTool { .. })
        ));
        let dup = store.sync_specs(&[spec("a", "1"), spec("a", "2")]).await;
        assert!(matches!(dup, Err(StoreError::DuplicateSpec { .. })));
    }
}
