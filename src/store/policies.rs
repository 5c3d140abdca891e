//! Every distinct policy set tollgate has served with, by hash.
//!
//! Receipts name the policy set by hash; this table turns the hash back into
//! the exact text, so "on what basis was this call allowed?" has an answer
//! years later, after the files have changed.

use serde_json::Value;

use super::{Doing, Store, StoreError};
use crate::receipt::now_ts;

/// One stored policy set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoredPolicySet {
    pub hash: String,
    /// `{source name: text}`.
    pub sources: Value,
    pub first_seen: String,
    pub last_used: String,
}

impl Store {
    /// Record that a server runs with this policy set (first use inserts it).
    pub async fn record_policy_set(&self, hash: &str, sources: &Value) -> Result<(), StoreError> {
        let now = now_ts();
        sqlx::query(
            "INSERT INTO policy_sets (hash, sources, first_seen, last_used) VALUES (?, ?, ?, ?) \
             ON CONFLICT (hash) DO UPDATE SET last_used = excluded.last_used",
        )
        .bind(hash)
        .bind(crate::canonical::to_string(sources))
        .bind(&now)
        .bind(&now)
        .execute(self.pool())
        .await
        .doing("record the policy set")?;
        Ok(())
    }

    /// Every stored set, newest first.
    pub async fn policy_sets(&self) -> Result<Vec<StoredPolicySet>, StoreError> {
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT hash, sources, first_seen, last_used FROM policy_sets ORDER BY first_seen DESC",
        )
        .fetch_all(self.pool())
        .await
        .doing("list policy sets")?;
        rows.into_iter().map(decode).collect()
    }

    /// The set whose hash starts with `prefix` (at least 8 characters).
    pub async fn policy_set(&self, prefix: &str) -> Result<Option<StoredPolicySet>, StoreError> {
        if prefix.len() < 8 {
            return Err(StoreError::TooShort {
                what: "policy set hash",
                given: prefix.into(),
            });
        }
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT hash, sources, first_seen, last_used FROM policy_sets \
             WHERE substr(hash, 1, ?) = ? LIMIT 2",
        )
        .bind(prefix.len() as i64)
        .bind(prefix.to_ascii_lowercase())
        .fetch_all(self.pool())
        .await
        .doing("find the policy set")?;
        match rows.len() {
            0 => Ok(None),
            1 => rows.into_iter().next().map(decode).transpose(),
            _ => Err(StoreError::Ambiguous {
                what: "policy set hash",
                prefix: prefix.into(),
            }),
        }
    }
}

fn decode(row: (String, String, String, String)) -> Result<StoredPolicySet, StoreError> {
    let (hash, sources, first_seen, last_used) = row;
    let sources = serde_json::from_str(&sources).map_err(|e| StoreError::Raw {
        action: "read a policy set",
        cause: e.to_string(),
    })?;
    Ok(StoredPolicySet {
        hash,
        sources,
        first_seen,
        last_used,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sets_are_stored_once_and_found_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let sources = serde_json::json!({"a.cedar": "permit (principal, action, resource);"});
        store
            .record_policy_set(&"ab".repeat(32), &sources)
            .await
            .unwrap();
        store
            .record_policy_set(&"ab".repeat(32), &sources)
            .await
            .unwrap();
        store
            .record_policy_set(&"cd".repeat(32), &sources)
            .await
            .unwrap();
        assert_eq!(store.policy_sets().await.unwrap().len(), 2);
        let found = store.policy_set("abababab").await.unwrap().unwrap();
        assert_eq!(found.sources, sources);
        assert!(store.policy_set("ffffffff").await.unwrap().is_none());
        assert!(store.policy_set("ab").await.is_err());
    }
}
