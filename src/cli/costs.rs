//! `tollgate costs`: what calls cost, from the receipts, and where each
//! budget stands.

use anyhow::bail;
use clap::{Args, ValueEnum};
use serde_json::json;

use super::app::open_store;
use super::printable;
use tollgate::config::Settings;
use tollgate::store::GroupBy;

#[derive(Args, Debug)]
pub struct CostsArgs {
    /// Only calls newer than this, e.g. 24h, 7d, 30d.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub since: String,
    /// How to group the spend.
    #[arg(long, value_enum, default_value_t = By::Tool)]
    pub by: By,
    /// One JSON object: rows, total and budgets.
    #[arg(long)]
    pub json: bool,
}

/// The groupings of `--by`.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum By {
    Tool,
    Principal,
    /// A call counts once for each role of its caller.
    Role,
    Day,
}

pub async fn run(settings: &Settings, args: CostsArgs) -> anyhow::Result<u8> {
    if !settings.db.exists() {
        bail!(
            "no database at {}: nothing has been recorded yet",
            settings.db.display()
        );
    }
    let since_ts = super::receipts::since_to_ts(&args.since)?;
    let by = match args.by {
        By::Tool => GroupBy::Tool,
        By::Principal => GroupBy::Principal,
        By::Role => GroupBy::Role,
        By::Day => GroupBy::Day,
    };
    let store = open_store(settings).await?;
    let rows = store.costs(&since_ts, by).await?;
    let budgets = store.budget_totals().await?;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let month = &today[..7];
    let current: Vec<_> = budgets
        .into_iter()
        .filter(|(_, _, period, _, _)| period == &today || period == month)
        .collect();
    if args.json {
        let total_calls: i64 = match by {
            GroupBy::Role => -1,
            _ => rows.iter().map(|r| r.calls).sum(),
        };
        let out = json!({
            "since": since_ts,
            "by": format!("{:?}", args.by).to_lowercase(),
            "rows": rows,
            "total": if total_calls >= 0 {
                json!({"calls": total_calls, "usd": rows.iter().map(|r| r.usd).sum::<f64>()})
            } else {
                serde_json::Value::Null
            },
            "budgets": current.iter().map(|(b, s, p, c, u)| json!({
                "budget": b, "subject": s, "period": p, "calls": c, "usd": u,
                "limit": settings.budgets.iter().find(|cfg| cfg.name.as_deref() == Some(b)).map(|cfg| json!({"calls": cfg.calls, "usd": cfg.usd})),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(0);
    }
    println!("spend since {since_ts} (calls that ran)");
    println!("{:<32} {:>8} {:>12}", "KEY", "CALLS", "USD");
    for r in &rows {
        println!("{:<32} {:>8} {:>12.4}", printable(&r.key), r.calls, r.usd);
    }
    if !matches!(by, GroupBy::Role) {
        let calls: i64 = rows.iter().map(|r| r.calls).sum();
        let usd: f64 = rows.iter().map(|r| r.usd).sum();
        println!("{:<32} {:>8} {:>12.4}", "TOTAL", calls, usd);
    }
    if !current.is_empty() {
        println!("\nbudgets, current period");
        println!(
            "{:<32} {:<20} {:<10} {:>8} {:>12}",
            "BUDGET", "SUBJECT", "PERIOD", "CALLS", "USD"
        );
        for (b, s, p, c, u) in &current {
            println!(
                "{:<32} {:<20} {:<10} {:>8} {:>12.4}",
                printable(b),
                printable(s),
                p,
                c,
                u
            );
        }
    }
    Ok(0)
}
