//! Stage 5b: does the call fit every budget that applies to it.
//!
//! Budgets come from the config (`budgets:`): a cap on calls or dollars, for
//! one principal or a role, per UTC day or month. A call is charged before it
//! runs (so a call that would exceed a cap never runs), given back if it does
//! not run after all, and settled to its actual cost when the cost comes
//! from the result.

use chrono::{DateTime, Datelike, Utc};

use super::{CallError, Principal};
use crate::config::{BudgetConfig, BudgetPeriod};
use crate::principals::Principals;
use crate::store::{Charge, Exhausted, Store};

/// The configured budgets, checked once at start-up.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    budgets: Vec<Budget>,
}

#[derive(Debug, Clone)]
struct Budget {
    name: String,
    subject: Subject,
    tool: Option<String>,
    period: BudgetPeriod,
    calls: Option<u64>,
    usd: Option<f64>,
}

#[derive(Debug, Clone)]
enum Subject {
    Principal(String),
    /// `each`: one total per holder rather than one for the role.
    Role {
        role: String,
        each: bool,
    },
}

impl Budgets {
    /// Check the `budgets:` config. Every problem names the budget and the fix.
    pub fn new(config: &[BudgetConfig], principals: &Principals) -> Result<Budgets, Vec<String>> {
        let mut budgets = Vec::new();
        let mut problems = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for (i, b) in config.iter().enumerate() {
            let at = format!("budgets[{i}]");
            let subject = match (&b.principal, &b.role) {
                (Some(p), None) if !b.each_principal => Subject::Principal(p.clone()),
                (None, Some(r)) => {
                    if !principals.has_role(r) {
                        problems.push(format!(
                            "{at}: role `{r}` is not declared in the principals file"
                        ));
                    }
                    Subject::Role {
                        role: r.clone(),
                        each: b.each_principal,
                    }
                }
                (Some(_), None) => {
                    problems.push(format!(
                        "{at}: `each_principal` only applies to a `role:` budget"
                    ));
                    continue;
                }
                _ => {
                    problems.push(format!("{at}: give exactly one of `principal:` or `role:`"));
                    continue;
                }
            };
            if b.calls.is_none() && b.usd.is_none() {
                problems.push(format!("{at}: give a cap: `calls: N` and/or `usd: AMOUNT`"));
            }
            if b.usd.is_some_and(|u| !u.is_finite() || u < 0.0) {
                problems.push(format!("{at}: `usd` must be a non-negative amount"));
            }
            let name = b.name.clone().unwrap_or_else(|| {
                let who = match &subject {
                    Subject::Principal(p) => format!("principal:{p}"),
                    Subject::Role { role, .. } => format!("role:{role}"),
                };
                let period = match b.period {
                    BudgetPeriod::Day => "day",
                    BudgetPeriod::Month => "month",
                };
                format!("{who}/{}/{period}", b.tool.as_deref().unwrap_or("*"))
            });
            if !names.insert(name.clone()) {
                problems.push(format!(
                    "{at}: the name `{name}` is used twice; give each budget its own `name:`"
                ));
            }
            budgets.push(Budget {
                name,
                subject,
                tool: b.tool.clone(),
                period: b.period,
                calls: b.calls,
                usd: b.usd,
            });
        }
        if problems.is_empty() {
            Ok(Budgets { budgets })
        } else {
            Err(problems)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty()
    }

    /// The charges one call of `tool` by `principal` makes at `now`, with
    /// `usd` as the amount charged up front.
    pub fn charges(
        &self,
        principal: &Principal,
        tool: &str,
        usd: f64,
        now: DateTime<Utc>,
    ) -> Vec<Charge> {
        self.budgets
            .iter()
            .filter(|b| b.tool.as_deref().is_none_or(|t| t == tool))
            .filter_map(|b| {
                let subject = match &b.subject {
                    Subject::Principal(p) => (p == principal.name()).then(|| p.clone())?,
                    Subject::Role { role, each } => {
                        if !principal.roles().contains(role) {
                            return None;
                        }
                        if *each {
                            format!("{role}/{}", principal.name())
                        } else {
                            role.clone()
                        }
                    }
                };
                Some(Charge {
                    budget: b.name.clone(),
                    subject,
                    period: period_key(b.period, now),
                    max_calls: b.calls,
                    max_usd: b.usd,
                    usd,
                })
            })
            .collect()
    }
}

/// "2026-11-22" or "2026-11".
fn period_key(period: BudgetPeriod, now: DateTime<Utc>) -> String {
    match period {
        BudgetPeriod::Day => now.format("%Y-%m-%d").to_string(),
        BudgetPeriod::Month => format!("{:04}-{:02}", now.year(), now.month()),
    }
}

/// Charge every budget or refuse the call.
pub async fn reserve(store: &Store, charges: &[Charge]) -> Result<(), CallError> {
    match store.reserve_budgets(charges).await {
        Ok(None) => Ok(()),
        Ok(Some(over)) => Err(CallError::OverBudget(explain(&over))),
        // Fail closed: a budget that cannot be checked is not a budget with room.
        Err(e) => Err(CallError::OverBudget(format!(
            "the budget could not be checked ({e}); the call was not run"
        ))),
    }
}

/// Give a reservation back (the call did not run), or settle it.
pub async fn adjust(store: &Store, charges: &[Charge], calls: i64, usd_delta: f64) {
    if let Err(e) = store.adjust_budgets(charges, calls, usd_delta).await {
        tracing::error!(error = %e, "budget totals could not be corrected");
    }
}

fn explain(over: &Exhausted) -> String {
    let period = if over.period.len() == 7 {
        "this month"
    } else {
        "today"
    };
    let cap = match (over.max_calls, over.max_usd) {
        (Some(calls), _) if over.calls >= calls as i64 => {
            format!("{calls} calls {period}, and {} have been made", over.calls)
        }
        (_, Some(usd)) => format!(
            "{usd:.2} USD {period}, and {:.2} USD has been spent",
            over.usd
        ),
        (Some(calls), None) => format!("{calls} calls {period}"),
        (None, None) => "nothing".to_owned(),
    };
    format!(
        "budget `{}` ({}) allows {cap}; it resets at the start of the next {} (UTC)",
        over.budget,
        over.subject,
        if over.period.len() == 7 {
            "month"
        } else {
            "day"
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Vec<BudgetConfig> {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn bad_budgets_are_named_with_the_fix() {
        let p = Principals::parse("roles: {support: s}\nprincipals:\n  a: {roles: [support]}\n")
            .unwrap();
        let err = Budgets::new(
            &cfg("- {principal: a, role: support, period: day, calls: 1}\n- {role: support, period: month}\n- {role: nobody, period: day, calls: 1}\n- {name: x, principal: a, period: day, usd: -1}\n- {name: x, principal: a, period: day, calls: 2}\n"),
            &p,
        )
        .unwrap_err();
        let all = err.join("\n");
        assert!(
            all.contains("budgets[0]: give exactly one of `principal:` or `role:`"),
            "{all}"
        );
        assert!(
            all.contains("budgets[1]: give a cap: `calls: N` and/or `usd: AMOUNT`"),
            "{all}"
        );
        assert!(
            all.contains("budgets[2]: role `nobody` is not declared"),
            "{all}"
        );
        assert!(
            all.contains("budgets[3]: `usd` must be a non-negative amount"),
            "{all}"
        );
        assert!(
            all.contains("budgets[4]: the name `x` is used twice"),
            "{all}"
        );
    }

    #[test]
    fn charges_follow_subject_tool_and_period() {
        let p = Principals::parse("roles: {support: s, finance: f}\nprincipals:\n  a: {roles: [support]}\n  b: {roles: [support]}\n").unwrap();
        let budgets = Budgets::new(
            &cfg("- {role: support, tool: refund, period: day, calls: 5}\n- {role: support, each_principal: true, period: month, usd: 10}\n- {principal: b, period: day, calls: 1}\n"),
            &p,
        )
        .unwrap();
        let a =
            crate::pipeline::authenticate(&p, &crate::pipeline::Identity::local("a", "t")).unwrap();
        let now = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 22, 10, 0, 0).unwrap();
        let on_refund = budgets.charges(&a, "refund", 0.5, now);
        let subjects: Vec<(&str, &str)> = on_refund
            .iter()
            .map(|c| (c.subject.as_str(), c.period.as_str()))
            .collect();
        assert_eq!(
            subjects,
            [("support", "2026-11-22"), ("support/a", "2026-11")]
        );
        assert_eq!(on_refund[0].budget, "role:support/refund/day");
        // Other tools only count against the tool-less budget; b's own budget is not a's.
        assert_eq!(budgets.charges(&a, "note", 0.0, now).len(), 1);
    }
}
