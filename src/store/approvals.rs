//! Pending approvals (four eyes).
//!
//! A row is created `pending` by a call that only an `@approval` permit
//! allows. It moves by conditional UPDATEs, to `approved`, `denied` or
//! `expired`, so two approvers racing cannot both win. An approved call then
//! runs once and its receipt and result are stored on the row, which is what
//! a repeat of the same call gets back. The one way back: an approved call
//! whose run did not start (nothing was sent) is `pending` again
//! ([`Store::reopen_approval`]).

use serde_json::Value;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{Doing, Store, StoreError};
use crate::receipt::now_ts;

/// One approval as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Approval {
    pub id: String,
    pub created_at: String,
    pub expires_at: String,
    pub status: String,
    pub request_receipt: String,
    pub principal: String,
    pub roles: Vec<String>,
    pub auth: String,
    pub tool: String,
    pub version: i64,
    pub spec_hash: String,
    /// The arguments as they will run.
    pub args: Value,
    pub args_hash: String,
    pub approver_role: String,
    pub policies: Vec<String>,
    pub policy_set: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub note: Option<String>,
    pub run_receipt: Option<String>,
    pub result: Option<Value>,
}

/// Decode one row selected with [`COLUMNS`].
fn decode(row: &SqliteRow) -> Result<Approval, sqlx::Error> {
    let json = |s: String| serde_json::from_str(&s).unwrap_or(Value::Null);
    Ok(Approval {
        id: row.try_get("id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        status: row.try_get("status")?,
        request_receipt: row.try_get("request_receipt")?,
        principal: row.try_get("principal")?,
        roles: serde_json::from_str(&row.try_get::<String, _>("roles")?).unwrap_or_default(),
        auth: row.try_get("auth")?,
        tool: row.try_get("tool")?,
        version: row.try_get("version")?,
        spec_hash: row.try_get("spec_hash")?,
        args: json(row.try_get("args")?),
        args_hash: row.try_get("args_hash")?,
        approver_role: row.try_get("approver_role")?,
        policies: serde_json::from_str(&row.try_get::<String, _>("policies")?).unwrap_or_default(),
        policy_set: row.try_get("policy_set")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get("decided_at")?,
        note: row.try_get("note")?,
        run_receipt: row.try_get("run_receipt")?,
        result: row.try_get::<Option<String>, _>("result")?.map(json),
    })
}

const COLUMNS: &str = "id, created_at, expires_at, status, request_receipt, principal, roles, auth, \
     tool, version, spec_hash, args, args_hash, approver_role, policies, policy_set, decided_by, \
     decided_at, note, run_receipt, result";

impl Store {
    /// Mark pending approvals past their time as expired.
    async fn expire_approvals(&self) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE approvals SET status = 'expired' WHERE status = 'pending' AND expires_at <= ?",
        )
        .bind(now_ts())
        .execute(self.pool())
        .await
        .doing("expire approvals")?;
        Ok(())
    }

    /// Store a new pending approval.
    pub async fn create_approval(&self, a: &Approval) -> Result<(), StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO approvals ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )))
        .bind(&a.id)
        .bind(&a.created_at)
        .bind(&a.expires_at)
        .bind(&a.status)
        .bind(&a.request_receipt)
        .bind(&a.principal)
        .bind(serde_json::to_string(&a.roles).unwrap_or_default())
        .bind(&a.auth)
        .bind(&a.tool)
        .bind(a.version)
        .bind(&a.spec_hash)
        .bind(crate::canonical::to_string(&a.args))
        .bind(&a.args_hash)
        .bind(&a.approver_role)
        .bind(serde_json::to_string(&a.policies).unwrap_or_default())
        .bind(&a.policy_set)
        .bind(&a.decided_by)
        .bind(&a.decided_at)
        .bind(&a.note)
        .bind(&a.run_receipt)
        .bind(a.result.as_ref().map(Value::to_string))
        .execute(self.pool())
        .await
        .doing("store the approval request")?;
        Ok(())
    }

    /// The newest approval for this exact call that still says something:
    /// pending or denied and not yet expired, or approved.
    pub async fn find_approval(
        &self,
        principal: &str,
        tool: &str,
        args_hash: &str,
    ) -> Result<Option<Approval>, StoreError> {
        self.expire_approvals().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE principal = ? AND tool = ? AND args_hash = ? \
             AND (status = 'approved' OR (status IN ('pending', 'denied') AND expires_at > ?)) \
             ORDER BY created_at DESC LIMIT 1"
        )))
        .bind(principal)
        .bind(tool)
        .bind(args_hash)
        .bind(now_ts())
        .fetch_optional(self.pool())
        .await
        .doing("find the approval")?;
        row.as_ref()
            .map(decode)
            .transpose()
            .doing("read the approval")
    }

    /// The approval whose id starts with `prefix` (8 characters or more).
    pub async fn get_approval(&self, prefix: &str) -> Result<Option<Approval>, StoreError> {
        if prefix.len() < 8 {
            return Err(StoreError::TooShort {
                what: "approval id",
                given: prefix.into(),
            });
        }
        self.expire_approvals().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE substr(id, 1, ?) = ? LIMIT 2"
        )))
        .bind(prefix.len() as i64)
        .bind(prefix)
        .fetch_all(self.pool())
        .await
        .doing("find the approval")?;
        if rows.len() > 1 {
            return Err(StoreError::Ambiguous {
                what: "approval id",
                prefix: prefix.into(),
            });
        }
        rows.first()
            .map(decode)
            .transpose()
            .doing("read the approval")
    }

    /// Approvals, newest first, optionally of one status.
    pub async fn list_approvals(
        &self,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        self.expire_approvals().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approvals WHERE (?1 IS NULL OR status = ?1) \
             ORDER BY created_at DESC LIMIT ?2"
        )))
        .bind(status)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .doing("list approvals")?;
        rows.iter()
            .map(decode)
            .collect::<Result<_, _>>()
            .doing("read approvals")
    }

    /// Move a pending, unexpired approval to `status`. `false` when it was
    /// no longer pending (someone else decided, or it expired).
    pub async fn decide_approval(
        &self,
        id: &str,
        status: &str,
        by: &str,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        let now = now_ts();
        let n = sqlx::query(
            "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, note = ? \
             WHERE id = ? AND status = 'pending' AND expires_at > ?",
        )
        .bind(status)
        .bind(by)
        .bind(&now)
        .bind(note)
        .bind(id)
        .bind(&now)
        .execute(self.pool())
        .await
        .doing("decide the approval")?
        .rows_affected();
        Ok(n == 1)
    }

    /// Put an approved approval back to pending: its one run did not start
    /// (nothing was sent), so the approval was not used, and an approver
    /// decides again. `false` when it was not approved-and-unrun.
    pub async fn reopen_approval(&self, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE approvals SET status = 'pending', decided_by = NULL, decided_at = NULL, \
             note = NULL WHERE id = ? AND status = 'approved' AND run_receipt IS NULL",
        )
        .bind(id)
        .execute(self.pool())
        .await
        .doing("reopen the approval")?
        .rows_affected();
        Ok(n == 1)
    }

    /// Record the run of an approved call: its receipt and result.
    pub async fn approval_ran(
        &self,
        id: &str,
        run_receipt: &str,
        result: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE approvals SET run_receipt = ?, result = ? WHERE id = ?")
            .bind(run_receipt)
            .bind(result.to_string())
            .bind(id)
            .execute(self.pool())
            .await
            .doing("store the approved call's result")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(id: &str, expires_at: &str) -> Approval {
        Approval {
            id: id.into(),
            created_at: now_ts(),
            expires_at: expires_at.into(),
            status: "pending".into(),
            request_receipt: "r1".into(),
            principal: "agent-1".into(),
            roles: vec!["support".into()],
            auth: "cli".into(),
            tool: "issue_refund".into(),
            version: 1,
            spec_hash: "h".into(),
            args: json!({"amount_cents": 7500}),
            args_hash: "ah".into(),
            approver_role: "finance".into(),
            policies: vec!["support-large".into()],
            policy_set: "ps".into(),
            decided_by: None,
            decided_at: None,
            note: None,
            run_receipt: None,
            result: None,
        }
    }

    #[tokio::test]
    async fn decided_once_and_expired_ones_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        store
            .create_approval(&sample("ap-00000001", "9999-01-01T00:00:00.000000Z"))
            .await
            .unwrap();
        let found = store
            .find_approval("agent-1", "issue_refund", "ah")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.args, json!({"amount_cents": 7500}));
        assert!(
            store
                .decide_approval("ap-00000001", "approved", "fin-1", Some("ok"))
                .await
                .unwrap()
        );
        assert!(
            !store
                .decide_approval("ap-00000001", "denied", "fin-2", None)
                .await
                .unwrap()
        );
        store
            .approval_ran("ap-00000001", "r2", &json!({"text": "done"}))
            .await
            .unwrap();
        let got = store.get_approval("ap-00000001").await.unwrap().unwrap();
        assert_eq!(
            (got.status.as_str(), got.decided_by.as_deref()),
            ("approved", Some("fin-1"))
        );
        assert_eq!(got.result, Some(json!({"text": "done"})));

        store
            .create_approval(&sample("ap-00000002", "2000-01-01T00:00:00.000000Z"))
            .await
            .unwrap();
        assert!(
            !store
                .decide_approval("ap-00000002", "approved", "fin-1", None)
                .await
                .unwrap()
        );
        let expired = store.list_approvals(Some("expired"), 10).await.unwrap();
        assert_eq!(expired.len(), 1);
        assert!(store.get_approval("ap-0000").await.is_err());
        assert!(store.get_approval("ap-00000").await.is_err(), "ambiguous");
    }
}
