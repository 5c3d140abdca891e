//! Idempotency keys: at most one execution per key, and the stored result
//! for every repeat (Stripe's semantics).
//!
//! A key is claimed (`running`) just before the tool runs, after every check
//! that could refuse the call, so refused calls never use a key up. The
//! claim is a committed row, so it survives a crash: a repeat after a crash
//! finds the claim and the original call's receipt (outcome `interrupted`)
//! and is told the effect is unknown, instead of running a second time.

use serde_json::Value;

use super::{Doing, Store, StoreError};
use crate::receipt::now_ts;

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key is ours: run the call, then [`Store::finish_key`].
    Claimed,
    /// A call with this key already ran; here is what it returned.
    Done {
        receipt_id: String,
        result: Value,
        same_args: bool,
    },
    /// A call with this key is running now (or its process died while it
    /// ran: `receipt_id` then has a receipt).
    Running { receipt_id: String, same_args: bool },
}

/// Where a key lives, and for how long.
#[derive(Debug, Clone)]
pub struct KeyRef<'a> {
    /// "tool:NAME" for spec-derived keys, "principal:P|tool:NAME" for client keys.
    pub scope: &'a str,
    /// SHA-256 of the key (argument values used as keys are not stored).
    pub key_hash: &'a str,
}

impl Store {
    /// Claim `key` for the call whose receipt will be `receipt_id`, unless a
    /// live claim exists. Expired claims are replaced.
    pub async fn claim_key(
        &self,
        key: &KeyRef<'_>,
        args_hash: &str,
        receipt_id: &str,
        expires_at: &str,
    ) -> Result<Claim, StoreError> {
        const ACTION: &str = "claim the idempotency key";
        let now = now_ts();
        let mut tx = self.pool().begin().await.doing(ACTION)?;
        sqlx::query("DELETE FROM idempotency WHERE scope = ? AND key_hash = ? AND expires_at <= ?")
            .bind(key.scope)
            .bind(key.key_hash)
            .bind(&now)
            .execute(&mut *tx)
            .await
            .doing(ACTION)?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency (scope, key_hash, args_hash, state, created_at, expires_at, receipt_id) \
             VALUES (?, ?, ?, 'running', ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(key.scope)
        .bind(key.key_hash)
        .bind(args_hash)
        .bind(&now)
        .bind(expires_at)
        .bind(receipt_id)
        .execute(&mut *tx)
        .await
        .doing(ACTION)?
        .rows_affected();
        let claim = if inserted == 1 {
            Claim::Claimed
        } else {
            let (stored_args, state, rid, result): (
                String,
                String,
                Option<String>,
                Option<String>,
            ) = sqlx::query_as(
                "SELECT args_hash, state, receipt_id, result FROM idempotency \
                     WHERE scope = ? AND key_hash = ?",
            )
            .bind(key.scope)
            .bind(key.key_hash)
            .fetch_one(&mut *tx)
            .await
            .doing(ACTION)?;
            let same_args = stored_args == args_hash;
            let receipt_id = rid.unwrap_or_default();
            match (state.as_str(), result) {
                ("done", Some(result)) => Claim::Done {
                    receipt_id,
                    result: serde_json::from_str(&result).unwrap_or(Value::Null),
                    same_args,
                },
                _ => Claim::Running {
                    receipt_id,
                    same_args,
                },
            }
        };
        tx.commit().await.doing(ACTION)?;
        Ok(claim)
    }

    /// Store the result of the call that held the claim.
    pub async fn finish_key(
        &self,
        key: &KeyRef<'_>,
        receipt_id: &str,
        result: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency SET state = 'done', receipt_id = ?, result = ? \
             WHERE scope = ? AND key_hash = ?",
        )
        .bind(receipt_id)
        .bind(result.to_string())
        .bind(key.scope)
        .bind(key.key_hash)
        .execute(self.pool())
        .await
        .doing("store the idempotent result")?;
        Ok(())
    }

    /// Give a claim back: the call did not run after all.
    pub async fn release_key(&self, key: &KeyRef<'_>, receipt_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency WHERE scope = ? AND key_hash = ? AND state = 'running' AND receipt_id = ?",
        )
        .bind(key.scope)
        .bind(key.key_hash)
        .bind(receipt_id)
        .execute(self.pool())
        .await
        .doing("release the idempotency key")?;
        Ok(())
    }

    /// Whether a receipt with this id has been committed.
    pub async fn receipt_exists(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts WHERE id = ?")
            .bind(id)
            .fetch_one(self.pool())
            .await
            .doing("look up a receipt")?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn claim_replay_conflict_release_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let key = KeyRef {
            scope: "tool:refund",
            key_hash: "k1",
        };
        let later = "9999-01-01T00:00:00.000000Z";
        assert_eq!(
            store.claim_key(&key, "a1", "r1", later).await.unwrap(),
            Claim::Claimed
        );
        assert_eq!(
            store.claim_key(&key, "a1", "r2", later).await.unwrap(),
            Claim::Running {
                receipt_id: "r1".into(),
                same_args: true
            }
        );
        store
            .finish_key(&key, "r1", &json!({"text": "ok"}))
            .await
            .unwrap();
        assert_eq!(
            store.claim_key(&key, "a2", "r3", later).await.unwrap(),
            Claim::Done {
                receipt_id: "r1".into(),
                result: json!({"text": "ok"}),
                same_args: false
            }
        );
        // Releasing only removes a running claim held by that receipt.
        store.release_key(&key, "r1").await.unwrap();
        assert!(matches!(
            store.claim_key(&key, "a1", "r4", later).await.unwrap(),
            Claim::Done { .. }
        ));

        let other = KeyRef {
            scope: "tool:refund",
            key_hash: "k2",
        };
        assert_eq!(
            store.claim_key(&other, "a", "r5", later).await.unwrap(),
            Claim::Claimed
        );
        store.release_key(&other, "r5").await.unwrap();
        assert_eq!(
            store
                .claim_key(&other, "a", "r6", "2000-01-01T00:00:00.000000Z")
                .await
                .unwrap(),
            Claim::Claimed
        );
        // That claim has expired: the next caller takes the key over.
        assert_eq!(
            store.claim_key(&other, "b", "r7", later).await.unwrap(),
            Claim::Claimed
        );
    }
}
