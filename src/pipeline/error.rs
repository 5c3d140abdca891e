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

    #[error("permission denied: principal `{principal}` may not call `{tool}`; {}", allowed_by(.allowed_roles))]
    Denied {
        tool: String,
        principal: String,
        allowed_roles: Vec<String>,
    },

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

    #[error("malformed tools/call: {0}")]
    Malformed(String),
}

impl CallError {
    /// The receipt decision this refusal is recorded under.
    pub fn decision(&self) -> Decision {
        match self {
            CallError::Unauthenticated(_) | CallError::Denied { .. } => Decision::Denied,
            CallError::UnknownTool { .. } => Decision::UnknownTool,
            CallError::ArgsTooLarge { .. }
            | CallError::InvalidArgs { .. }
            | CallError::Malformed(_) => Decision::Invalid,
            CallError::RateLimited { .. } => Decision::RateLimited,
            CallError::ShuttingDown => Decision::Unavailable,
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

fn allowed_by(roles: &[String]) -> String {
    if roles.is_empty() {
        "no role is allowed to call it".to_string()
    } else {
        format!("it requires one of the roles: {}", roles.join(", "))
    }
}
