//! Spend, summed from the receipts themselves (the audited source), grouped
//! for `tollgate costs`.

use super::{Doing, Store, StoreError};

/// How `tollgate costs` groups spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Tool,
    Principal,
    /// A call counts once for each role its caller held.
    Role,
    /// UTC calendar day.
    Day,
}

/// One group's calls that ran, and what they cost.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CostRow {
    pub key: String,
    pub calls: i64,
    pub usd: f64,
}

impl Store {
    /// Calls that ran since `since_ts`, and their cost, grouped by `by`,
    /// biggest spend first.
    pub async fn costs(&self, since_ts: &str, by: GroupBy) -> Result<Vec<CostRow>, StoreError> {
        // Fixed SQL per grouping: nothing from the user is spliced in.
        let sql = match by {
            GroupBy::Tool => {
                "SELECT tool AS k, COUNT(*), TOTAL(cost_usd) FROM receipts \
                 WHERE ts >= ? AND outcome != 'not_run' GROUP BY k ORDER BY 3 DESC, 2 DESC, k"
            }
            GroupBy::Principal => {
                "SELECT COALESCE(principal, '-') AS k, COUNT(*), TOTAL(cost_usd) FROM receipts \
                 WHERE ts >= ? AND outcome != 'not_run' GROUP BY k ORDER BY 3 DESC, 2 DESC, k"
            }
            GroupBy::Role => {
                "SELECT r.value AS k, COUNT(*), TOTAL(cost_usd) FROM receipts, json_each(receipts.roles) AS r \
                 WHERE ts >= ? AND outcome != 'not_run' GROUP BY k ORDER BY 3 DESC, 2 DESC, k"
            }
            GroupBy::Day => {
                "SELECT substr(ts, 1, 10) AS k, COUNT(*), TOTAL(cost_usd) FROM receipts \
                 WHERE ts >= ? AND outcome != 'not_run' GROUP BY k ORDER BY k"
            }
        };
        let rows: Vec<(String, i64, f64)> = sqlx::query_as(sql)
            .bind(since_ts)
            .fetch_all(self.pool())
            .await
            .doing("sum costs")?;
        Ok(rows
            .into_iter()
            .map(|(key, calls, usd)| CostRow { key, calls, usd })
            .collect())
    }
}
