//! Every way a call can be refused before or instead of running, in one enum.
//!
//! Each variant maps to exactly one receipt decision ([`CallError::decision`])
//! and one message for the client ([`Display`](std::fmt::Display)). The
//! messages are read by a model deciding what to do next, so each one says
//! what happened and what would work.

use crate::receipt::Decision;

/// One schema violation: where in the arguments, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the arguments (`""` is the whole object).
    pub pointer: String,
    pub message: String,
}

impl CallError {
    /// The policies that decided a denial (for the receipt).
    pub fn policies(&self) -> &[String] {
        match self {
            CallError::Denied { policies, .. } => policies,
            _ => &[],
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("not authenticated: {0}")]
    Unauthenticated(String),

    #[error("unknown tool `{name}`; available tools: {}", .known.join(", "))]
    UnknownTool { name: String, known: Vec<String> },

    #[error(
        "arguments for `{tool}` are {size} bytes of JSON; the limit is {limit} bytes (the server's max_args_bytes)"
    )]
    ArgsTooLarge {
        tool: String,
        size: usize,
        limit: usize,
    },

    #[error("invalid arguments for `{tool}`:\n{}", render_violations(.violations))]
    InvalidArgs {
        tool: String,
        violations: Vec<Violation>,
    },

    /// `message` is safe for the client: it names the deciding policy (or
    /// says nothing permitted the call) and never quotes policy text.
    #[error("permission denied: {message}")]
    Denied {
        message: String,
        /// The forbids that decided (empty when nothing permitted the call).
        policies: Vec<String>,
    },

    #[error("over budget: {0}")]
    OverBudget(String),

    /// An idempotency key in use: other arguments, or a call still running.
    #[error("idempotency conflict: {0}")]
    Conflict(String),

    #[error("rate limited: `{tool}` allows {limit} ({scope}); retry after {retry_after_ms} ms")]
    RateLimited {
        tool: String,
        scope: &'static str,
        limit: String,
        retry_after_ms: u64,
    },

    #[error("the receipt for this call could not be committed, so its result is withheld: {0}")]
    ReceiptUnavailable(String),

    #[error("tollgate is shutting down and takes no new calls; retry against a running instance")]
    ShuttingDown,

    /// Receipts cannot be written, so nothing runs (fail closed).
    #[error(
        "tollgate cannot write receipts right now ({0}), so it runs no calls; retry once /readyz is green again"
    )]
    StorageUnavailable(String),

    #[error("malformed tools/call: {0}")]
    Malformed(String),
}

impl CallError {
    /// The receipt decision this refusal is recorded under.
    pub fn decision(&self) -> Decision {
        match self {
            CallError::Unauthenticated(_) | CallError::Denied { .. } => Decision::Denied,
            CallError::OverBudget(_) => Decision::OverBudget,
            CallError::Conflict(_) => Decision::Conflict,
            CallError::UnknownTool { .. } => Decision::UnknownTool,
            CallError::ArgsTooLarge { .. }
            | CallError::InvalidArgs { .. }
            | CallError::Malformed(_) => Decision::Invalid,
            CallError::RateLimited { .. } => Decision::RateLimited,
            CallError::ShuttingDown | CallError::StorageUnavailable(_) => Decision::Unavailable,
            // Only raised after a decision was already recorded-or-attempted.
            CallError::ReceiptUnavailable(_) => Decision::Allowed,
        }
    }
}

fn render_violations(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            let at = if v.pointer.is_empty() {
                "(root)"
            } else {
                v.pointer.as_str()
            };
            format!("  - at {at}: {}", v.message)
        })
        .collect::<Vec<_>>()
        .join("\n")
}
