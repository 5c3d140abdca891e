//! Reading receipts back: listing with filters and fetching one. Verifying
//! the whole hash chain is in [`super::verify`]; its report types are here.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::{Doing, Store, StoreError};
use crate::receipt::{NewReceipt, Receipt};

/// Which receipts [`Store::list_receipts`] returns. Unset fields match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReceiptFilter {
    pub tool: Option<String>,
    pub principal: Option<String>,
    pub decision: Option<crate::receipt::Decision>,
    /// Receipts with `ts >= since_ts` (same timestamp format; it sorts as text).
    pub since_ts: Option<String>,
    /// At most this many, newest first; zero or negative means no limit.
    pub limit: i64,
}

/// The result of [`Store::verify_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Receipts that passed, in seq order, before `first_bad` (all of them if
    /// the chain is intact).
    pub checked: u64,
    /// The last receipt that passed: keep its hash somewhere else to detect a
    /// later truncation, which the chain alone cannot reveal.
    pub last_good: Option<(i64, String)>,
    /// Where the chain first breaks. Everything after it is suspect too.
    pub first_bad: Option<BadReceipt>,
}

/// The first receipt that fails verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReceipt {
    pub seq: i64,
    pub id: String,
    /// What is wrong, in words.
    pub problem: String,
}

/// Shortest accepted id prefix: long enough to be unique in practice (a
/// UUIDv7 starts with 48 bits of milliseconds), short enough to type.
const MIN_ID_PREFIX: usize = 8;

/// Every receipt column, in the order `receipt_from_row` expects.
const RECEIPT_COLUMNS: &str = "seq, id, ts, principal, roles, auth, transport, session, tool, \
     version, spec_hash, args, decision, reason, outcome, result_digest, result_excerpt, \
     duration_us, cost_usd, prev_hash, hash, policy_set, policies, approval_id, replay_of";

impl Store {
    /// Receipts matching `filter`, newest first.
    pub async fn list_receipts(&self, filter: &ReceiptFilter) -> Result<Vec<Receipt>, StoreError> {
        const ACTION: &str = "list receipts";
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {RECEIPT_COLUMNS} FROM receipts"));
        let mut clause = " WHERE ";
        let mut and = |q: &mut QueryBuilder<Sqlite>, sql: &str| {
            q.push(clause).push(sql);
            clause = " AND ";
        };
        if let Some(tool) = &filter.tool {
            and(&mut q, "tool = ");
            q.push_bind(tool.as_str());
        }
        if let Some(principal) = &filter.principal {
            and(&mut q, "principal = ");
            q.push_bind(principal.as_str());
        }
        if let Some(decision) = filter.decision {
            and(&mut q, "decision = ");
            q.push_bind(decision.as_str());
        }
        if let Some(since) = &filter.since_ts {
            and(&mut q, "ts >= ");
            q.push_bind(since.as_str());
        }
        q.push(" ORDER BY seq DESC");
        if filter.limit > 0 {
            q.push(" LIMIT ").push_bind(filter.limit);
        }
        let rows = q.build().fetch_all(&self.pool).await.doing(ACTION)?;
        rows.iter()
            .map(|row| receipt_from_row(row, ACTION))
            .collect()
    }

    /// The receipt with this id, or with this unique id prefix (at least 8
    /// characters, as people copy them from `tollgate receipts list`).
    pub async fn get_receipt(&self, id: &str) -> Result<Option<Receipt>, StoreError> {
        const ACTION: &str = "read the receipt";
        if id.chars().count() < MIN_ID_PREFIX {
            return Err(StoreError::ReceiptIdTooShort {
                given: id.to_owned(),
            });
        }
        // A range on the unique index, rather than LIKE (which is
        // case-insensitive and would need escaping). Ids are ASCII, so every id
        // starting with `id` sorts below `id` followed by the largest character.
        let upper = format!("{id}\u{10FFFF}");
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE id >= ? AND id < ? ORDER BY id LIMIT 2"
        )))
        .bind(id)
        .bind(upper)
        .fetch_all(&self.pool)
        .await
        .doing(ACTION)?;
        match rows.as_slice() {
            [] => Ok(None),
            [row] => receipt_from_row(row, ACTION).map(Some),
            [first, ..] => {
                // A full id that is also a prefix of another cannot happen with
                // UUIDs, but prefer the exact match if it does.
                let exact: Option<&str> = first.try_get("id").ok();
                if exact == Some(id) {
                    receipt_from_row(first, ACTION).map(Some)
                } else {
                    Err(StoreError::AmbiguousReceiptId {
                        prefix: id.to_owned(),
                    })
                }
            }
        }
    }
}

/// Decode a full receipt row (the `RECEIPT_COLUMNS` order).
fn receipt_from_row(row: &SqliteRow, action: &'static str) -> Result<Receipt, StoreError> {
    let seq: i64 = row.try_get("seq").doing(action)?;
    let corrupt = |field: &'static str, problem: String| StoreError::Corrupt {
        seq,
        field,
        problem,
    };
    let text = |field: &'static str| -> Result<String, StoreError> {
        row.try_get(field)
            .map_err(|e| corrupt(field, e.to_string()))
    };
    let opt_text = |field: &'static str| -> Result<Option<String>, StoreError> {
        row.try_get(field)
            .map_err(|e| corrupt(field, e.to_string()))
    };
    let roles =
        serde_json::from_str(&text("roles")?).map_err(|e| corrupt("roles", e.to_string()))?;
    let args = serde_json::from_str(&text("args")?).map_err(|e| corrupt("args", e.to_string()))?;
    let decision = text("decision")?
        .parse()
        .map_err(|e: crate::receipt::UnknownLabel| corrupt("decision", e.to_string()))?;
    let outcome = text("outcome")?
        .parse()
        .map_err(|e: crate::receipt::UnknownLabel| corrupt("outcome", e.to_string()))?;
    Ok(Receipt {
        seq,
        content: NewReceipt {
            id: text("id")?,
            ts: text("ts")?,
            principal: opt_text("principal")?,
            roles,
            auth: text("auth")?,
            transport: text("transport")?,
            session: opt_text("session")?,
            tool: text("tool")?,
            version: row
                .try_get("version")
                .map_err(|e| corrupt("version", e.to_string()))?,
            spec_hash: opt_text("spec_hash")?,
            args,
            decision,
            reason: opt_text("reason")?,
            outcome,
            result_digest: opt_text("result_digest")?,
            result_excerpt: opt_text("result_excerpt")?,
            duration_us: row
                .try_get("duration_us")
                .map_err(|e| corrupt("duration_us", e.to_string()))?,
            cost_usd: row
                .try_get("cost_usd")
                .map_err(|e| corrupt("cost_usd", e.to_string()))?,
            policy_set: opt_text("policy_set")?,
            policies: match opt_text("policies")? {
                None => Vec::new(),
                Some(text) => {
                    serde_json::from_str(&text).map_err(|e| corrupt("policies", e.to_string()))?
                }
            },
            approval_id: opt_text("approval_id")?,
            replay_of: opt_text("replay_of")?,
        },
        prev_hash: text("prev_hash")?,
        hash: text("hash")?,
    })
}

impl Store {
    /// Every receipt linked to approval `id` (request, decision, run,
    /// replays), oldest first.
    pub async fn receipts_of_approval(&self, id: &str) -> Result<Vec<Receipt>, StoreError> {
        const ACTION: &str = "read the approval's receipts";
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RECEIPT_COLUMNS} FROM receipts WHERE approval_id = ? ORDER BY seq"
        )))
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .doing(ACTION)?;
        rows.iter().map(|r| receipt_from_row(r, ACTION)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{Decision, tests::sample};
    use crate::store::ReceiptWriter;

    /// A store holding `n` chained receipts with ids id(1)..=id(n).
    async fn store_with(n: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let (writer, handle) = ReceiptWriter::spawn(&store);
        for i in 1..=n {
            let mut r = sample(&id(i));
            r.tool = if i % 2 == 0 { "even" } else { "odd" }.to_owned();
            r.decision = if i % 3 == 0 {
                Decision::Denied
            } else {
                Decision::Allowed
            };
            r.ts = format!("2026-11-21T22:56:{:02}.000000Z", i % 60);
            writer.commit(r).await.unwrap();
        }
        handle.shutdown().await;
        (dir, store)
    }

    fn id(i: usize) -> String {
        format!("0190a5f0-0000-7000-8000-{i:012}")
    }

    async fn exec(store: &Store, sql: &'static str) {
        sqlx::query(sql).execute(store.pool()).await.unwrap();
    }

    async fn first_bad(store: &Store) -> BadReceipt {
        store
            .verify_chain()
            .await
            .unwrap()
            .first_bad
            .expect("tampering went unnoticed")
    }

    #[tokio::test]
    async fn intact_chain_passes() {
        let (_dir, store) = store_with(10).await;
        let report = store.verify_chain().await.unwrap();
        assert_eq!(report.checked, 10);
        assert_eq!(report.first_bad, None);
        let newest = store.get_receipt(&id(10)).await.unwrap().unwrap();
        assert_eq!(report.last_good, Some((10, newest.hash)));
    }

    #[tokio::test]
    async fn empty_chain_passes() {
        let (_dir, store) = store_with(0).await;
        let report = store.verify_chain().await.unwrap();
        assert_eq!(
            (report.checked, report.last_good, report.first_bad),
            (0, None, None)
        );
    }

    #[tokio::test]
    async fn triggers_refuse_changes() {
        let (_dir, store) = store_with(2).await;
        for sql in ["UPDATE receipts SET tool = 'x'", "DELETE FROM receipts"] {
            let err = sqlx::query(sql).execute(store.pool()).await.unwrap_err();
            assert!(
                err.to_string().contains("receipts are append-only"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn edited_args_are_detected_at_that_receipt() {
        let (_dir, store) = store_with(10).await;
        exec(&store, "DROP TRIGGER receipts_no_update").await;
        exec(
            &store,
            r#"UPDATE receipts SET args = '{"a":2}' WHERE seq = 5"#,
        )
        .await;
        let bad = first_bad(&store).await;
        assert_eq!((bad.seq, bad.id.as_str()), (5, id(5).as_str()));
        assert!(
            bad.problem.starts_with("content was edited (stored hash "),
            "{}",
            bad.problem
        );
        assert_eq!(store.verify_chain().await.unwrap().checked, 4);
    }

    #[tokio::test]
    async fn a_deleted_receipt_is_detected_at_the_next_one() {
        let (_dir, store) = store_with(10).await;
        exec(&store, "DROP TRIGGER receipts_no_delete").await;
        exec(&store, "DELETE FROM receipts WHERE seq = 5").await;
        let bad = first_bad(&store).await;
        assert_eq!(bad.seq, 6);
        assert!(
            bad.problem.starts_with("prev_hash does not match"),
            "{}",
            bad.problem
        );
    }

    #[tokio::test]
    async fn a_deleted_first_receipt_is_detected() {
        let (_dir, store) = store_with(3).await;
        exec(&store, "DROP TRIGGER receipts_no_delete").await;
        exec(&store, "DELETE FROM receipts WHERE seq = 1").await;
        let bad = first_bad(&store).await;
        assert_eq!(bad.seq, 2);
        assert!(
            bad.problem.contains("receipts before it were deleted"),
            "{}",
            bad.problem
        );
    }

    #[tokio::test]
    async fn swapped_receipts_are_detected_at_the_first() {
        let (_dir, store) = store_with(10).await;
        exec(&store, "DROP TRIGGER receipts_no_delete").await;
        let mut tx = store.pool().begin().await.unwrap();
        for sql in [
            "CREATE TEMP TABLE swap AS SELECT * FROM receipts WHERE seq IN (3, 7)",
            "DELETE FROM receipts WHERE seq IN (3, 7)",
            "INSERT INTO receipts SELECT 10 - seq, id, ts, principal, roles, auth, transport, \
             session, tool, version, spec_hash, args, decision, reason, outcome, result_digest, \
             result_excerpt, duration_us, cost_usd, prev_hash, hash, policy_set, policies, \
             approval_id, replay_of FROM swap",
        ] {
            sqlx::query(sql).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(store.get_receipt(&id(7)).await.unwrap().unwrap().seq, 3);
        let bad = first_bad(&store).await;
        assert_eq!((bad.seq, bad.id), (3, id(7)));
        assert!(
            bad.problem.starts_with("prev_hash does not match"),
            "{}",
            bad.problem
        );
    }

    #[tokio::test]
    async fn unreadable_values_are_reported_not_fatal() {
        let (_dir, store) = store_with(3).await;
        exec(&store, "DROP TRIGGER receipts_no_update").await;
        exec(
            &store,
            "UPDATE receipts SET duration_us = 'soon' WHERE seq = 2",
        )
        .await;
        let bad = first_bad(&store).await;
        assert_eq!(bad.seq, 2);
        assert!(bad.problem.contains("duration_us"), "{}", bad.problem);
    }

    #[tokio::test]
    async fn list_filters_and_orders_newest_first() {
        let (_dir, store) = store_with(12).await;
        let all = store
            .list_receipts(&ReceiptFilter::default())
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            (1..=12).rev().collect::<Vec<_>>()
        );
        assert_eq!(all[0].content, {
            let mut r = sample(&id(12));
            r.tool = "even".into();
            r.decision = Decision::Denied;
            r.ts = "2026-11-21T22:56:12.000000Z".into();
            r
        });

        let f = ReceiptFilter {
            tool: Some("even".into()),
            decision: Some(Decision::Denied),
            ..Default::default()
        };
        let seqs: Vec<i64> = store
            .list_receipts(&f)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [12, 6]);

        let f = ReceiptFilter {
            since_ts: Some("2026-11-21T22:56:10.000000Z".into()),
            limit: 2,
            ..Default::default()
        };
        let seqs: Vec<i64> = store
            .list_receipts(&f)
            .await
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs, [12, 11]);

        let f = ReceiptFilter {
            principal: Some("nobody".into()),
            ..Default::default()
        };
        assert!(store.list_receipts(&f).await.unwrap().is_empty());
        // Values are bound, never spliced into the SQL.
        let f = ReceiptFilter {
            tool: Some("x' OR 1=1 --".into()),
            ..Default::default()
        };
        assert!(store.list_receipts(&f).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn get_accepts_unique_prefixes() {
        let (_dir, store) = store_with(12).await;
        let r = store.get_receipt(&id(3)).await.unwrap().unwrap();
        assert_eq!(r.seq, 3);
        assert_eq!(store.get_receipt(&id(13)).await.unwrap(), None);
        let (writer, handle) = ReceiptWriter::spawn(&store);
        writer
            .commit(sample("abcdef12-3456-7000-8000-000000000000"))
            .await
            .unwrap();
        handle.shutdown().await;
        assert_eq!(
            store.get_receipt("abcdef12").await.unwrap().unwrap().seq,
            13
        );
        let err = store.get_receipt("0190a5f0-0000").await.unwrap_err();
        assert!(
            matches!(err, StoreError::AmbiguousReceiptId { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("more than one receipt"));
        let err = store.get_receipt("0190a5").await.unwrap_err();
        assert!(matches!(err, StoreError::ReceiptIdTooShort { .. }), "{err}");
        assert_eq!(store.get_receipt("ffffffff").await.unwrap(), None);
    }
}
