//! Stage 5: rate limits, per (principal, tool) and per tool overall.
//!
//! governor keeps one keyed limiter per tool (a keyed limiter has a single
//! quota for all its keys), keyed by the *authenticated* principal name, never
//! by raw client input. Keys are never dropped by governor itself, so
//! [`Limiter::prune`] must run periodically to keep memory bounded.

use std::collections::HashMap;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::{CallError, Principal};
use crate::catalog::{Catalog, CompiledTool};
use crate::metrics::{self, LimitScope};

struct ToolLimits {
    per_principal: Option<(DefaultKeyedRateLimiter<String>, String)>,
    global: Option<(DefaultDirectRateLimiter, String)>,
}

/// All rate limiters, built once from the catalog.
pub struct Limiter {
    tools: HashMap<String, ToolLimits>,
    clock: DefaultClock,
}

impl Limiter {
    pub fn new(catalog: &Catalog) -> Limiter {
        let tools = catalog
            .iter()
            .map(|t| {
                let rates = t.spec.rate_limit.as_ref();
                let label = |q: Quota, text: Option<&str>| {
                    format!("{} (burst {})", text.unwrap_or("?"), q.burst_size())
                };
                let limits = ToolLimits {
                    per_principal: t.per_principal.map(|q| {
                        let text = rates
                            .and_then(|r| r.per_principal.as_ref())
                            .map(|r| r.rate.as_str());
                        (RateLimiter::keyed(q), label(q, text))
                    }),
                    global: t.global.map(|q| {
                        let text = rates
                            .and_then(|r| r.global.as_ref())
                            .map(|r| r.rate.as_str());
                        (RateLimiter::direct(q), label(q, text))
                    }),
                };
                (t.spec.name.clone(), limits)
            })
            .collect();
        Limiter {
            tools,
            clock: DefaultClock::default(),
        }
    }

    /// Take one token from each limit that applies, or say when to retry.
    pub fn check(&self, principal: &Principal, tool: &CompiledTool) -> Result<(), CallError> {
        let Some(limits) = self.tools.get(&tool.spec.name) else {
            return Ok(());
        };
        let refuse =
            |scope: &'static str, limit: &str, wait: std::time::Duration| CallError::RateLimited {
                tool: tool.spec.name.clone(),
                scope,
                limit: limit.to_string(),
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            };
        if let Some((lim, text)) = &limits.per_principal {
            lim.check_key(&principal.name().to_string()).map_err(|nu| {
                metrics::rate_limited(&tool.spec.name, LimitScope::PerPrincipal);
                refuse("per principal", text, nu.wait_time_from(self.clock.now()))
            })?;
        }
        if let Some((lim, text)) = &limits.global {
            lim.check().map_err(|nu| {
                metrics::rate_limited(&tool.spec.name, LimitScope::Global);
                refuse("for all callers", text, nu.wait_time_from(self.clock.now()))
            })?;
        }
        Ok(())
    }

    /// Forget principals whose buckets are full again, and release memory.
    pub fn prune(&self) {
        for limits in self.tools.values() {
            if let Some((lim, _)) = &limits.per_principal {
                lim.retain_recent();
                lim.shrink_to_fit();
            }
        }
    }

    /// Number of tracked (principal, tool) keys, for tests and metrics.
    pub fn tracked_keys(&self) -> usize {
        self.tools
            .values()
            .filter_map(|l| l.per_principal.as_ref())
            .map(|(lim, _)| lim.len())
            .sum()
    }
}
