//! Running budget totals, one row per (budget, subject, period).
//!
//! Totals live in SQLite rather than in memory so that they survive restarts
//! and are shared by every tollgate process on the database (stdio clients
//! each start their own). A reservation is one conditional UPDATE per
//! budget, all in one transaction: either every budget that applies has room
//! and is charged, or none is.

use super::{Doing, Store, StoreError};

/// One budget a call must fit in.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub budget: String,
    /// The principal or role whose total this is.
    pub subject: String,
    /// "2026-11-22" or "2026-11" (UTC).
    pub period: String,
    pub max_calls: Option<u64>,
    pub max_usd: Option<f64>,
    /// Dollars charged now; settled to the actual cost after the call.
    pub usd: f64,
}

/// A budget without room: which, and its total so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Exhausted {
    pub budget: String,
    pub subject: String,
    pub period: String,
    pub calls: i64,
    pub usd: f64,
    pub max_calls: Option<u64>,
    pub max_usd: Option<f64>,
}

/// Tolerance for float dollars (a cent is 0.01; this is far below).
const EPSILON: f64 = 1e-9;

impl Store {
    /// Charge one call to every budget in `charges`, or to none of them.
    pub async fn reserve_budgets(
        &self,
        charges: &[Charge],
    ) -> Result<Option<Exhausted>, StoreError> {
        const ACTION: &str = "charge the budget";
        if charges.is_empty() {
            return Ok(None);
        }
        let mut tx = self.pool().begin().await.doing(ACTION)?;
        let mut totals = Vec::with_capacity(charges.len());
        for c in charges {
            sqlx::query(
                "INSERT INTO budget_usage (budget, subject, period) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(&c.budget)
            .bind(&c.subject)
            .bind(&c.period)
            .execute(&mut *tx)
            .await
            .doing(ACTION)?;
            let max_calls = c.max_calls.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
            let charged: Option<(i64, f64)> = sqlx::query_as(
                "UPDATE budget_usage SET calls = calls + 1, usd = usd + ?1 \
                 WHERE budget = ?2 AND subject = ?3 AND period = ?4 \
                 AND (?5 IS NULL OR calls + 1 <= ?5) AND (?6 IS NULL OR usd + ?1 <= ?6 + ?7) \
                 RETURNING calls, usd",
            )
            .bind(c.usd)
            .bind(&c.budget)
            .bind(&c.subject)
            .bind(&c.period)
            .bind(max_calls)
            .bind(c.max_usd)
            .bind(EPSILON)
            .fetch_optional(&mut *tx)
            .await
            .doing(ACTION)?;
            if let Some((calls, usd)) = charged {
                totals.push((c, calls, usd));
            } else {
                let (calls, usd): (i64, f64) = sqlx::query_as(
                    "SELECT calls, usd FROM budget_usage WHERE budget = ? AND subject = ? AND period = ?",
                )
                .bind(&c.budget)
                .bind(&c.subject)
                .bind(&c.period)
                .fetch_one(&mut *tx)
                .await
                .doing(ACTION)?;
                tx.rollback().await.doing(ACTION)?;
                return Ok(Some(Exhausted {
                    budget: c.budget.clone(),
                    subject: c.subject.clone(),
                    period: c.period.clone(),
                    calls,
                    usd,
                    max_calls: c.max_calls,
                    max_usd: c.max_usd,
                }));
            }
        }
        tx.commit().await.doing(ACTION)?;
        for (c, calls, usd) in totals {
            crate::metrics::budget_used(&c.budget, &c.subject, calls, usd, c.max_calls, c.max_usd);
        }
        Ok(None)
    }

    /// Correct reserved totals: `calls` -1 and the reserved dollars back when
    /// the call did not run; the difference to the actual cost when it did.
    pub async fn adjust_budgets(
        &self,
        charges: &[Charge],
        calls: i64,
        usd_delta: f64,
    ) -> Result<(), StoreError> {
        const ACTION: &str = "settle the budget";
        if charges.is_empty() || (calls == 0 && usd_delta == 0.0) {
            return Ok(());
        }
        let mut tx = self.pool().begin().await.doing(ACTION)?;
        for c in charges {
            sqlx::query(
                "UPDATE budget_usage SET calls = MAX(calls + ?, 0), usd = MAX(usd + ?, 0) \
                 WHERE budget = ? AND subject = ? AND period = ?",
            )
            .bind(calls)
            .bind(usd_delta)
            .bind(&c.budget)
            .bind(&c.subject)
            .bind(&c.period)
            .execute(&mut *tx)
            .await
            .doing(ACTION)?;
        }
        tx.commit().await.doing(ACTION)?;
        Ok(())
    }

    /// Current totals of every budget in `period` rows, for /metrics and `costs`.
    pub async fn budget_totals(
        &self,
    ) -> Result<Vec<(String, String, String, i64, f64)>, StoreError> {
        sqlx::query_as("SELECT budget, subject, period, calls, usd FROM budget_usage ORDER BY budget, subject, period")
            .fetch_all(self.pool())
            .await
            .doing("read budget totals")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(budget: &str, max_calls: Option<u64>, max_usd: Option<f64>, usd: f64) -> Charge {
        Charge {
            budget: budget.into(),
            subject: "support".into(),
            period: "2026-11-22".into(),
            max_calls,
            max_usd,
            usd,
        }
    }

    #[tokio::test]
    async fn calls_and_dollars_stop_at_the_cap_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).await.unwrap();
        let calls = charge("calls", Some(2), None, 0.5);
        let money = charge("money", None, Some(1.0), 0.5);
        let both = [calls.clone(), money.clone()];
        assert_eq!(store.reserve_budgets(&both).await.unwrap(), None);
        assert_eq!(store.reserve_budgets(&both).await.unwrap(), None);
        let over = store.reserve_budgets(&both).await.unwrap().unwrap();
        assert_eq!((over.budget.as_str(), over.calls), ("calls", 2));
        // The failed reservation charged nothing, not even the money budget.
        let totals = store.budget_totals().await.unwrap();
        assert_eq!(totals[1].3, 2);
        assert!((totals[1].4 - 1.0).abs() < 1e-9);
        // A call that did not run gives its reservation back.
        store.adjust_budgets(&both, -1, -0.5).await.unwrap();
        assert_eq!(store.reserve_budgets(&[calls]).await.unwrap(), None);
        let over = store
            .reserve_budgets(&[money.clone(), charge("money", None, Some(1.0), 0.6)])
            .await
            .unwrap();
        assert!(over.is_some());
    }
}
