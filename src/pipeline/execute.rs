//! Stage 6: run the tool.
//!
//! Executors enforce the spec's timeout themselves (they know how to kill a
//! process group or drop a connection). The outer timeout here is a safety
//! net with a short grace period, so a misbehaving executor still cannot
//! hold a call, and its receipt, forever.

use std::time::Duration;

use super::{Permit, ValidArgs};
use crate::catalog::CompiledTool;
use crate::executor::{ExecError, ExecOutput};
use crate::receipt::Outcome;

const GRACE: Duration = Duration::from_secs(2);

/// What running the tool produced, and how it is recorded.
#[derive(Debug)]
pub struct Executed {
    pub outcome: Outcome,
    pub output: ExecOutput,
}

/// Run `tool` with `args`. Taking the [`Permit`] by value means this cannot be
/// called for a call that was not authorized.
pub async fn execute(tool: &CompiledTool, args: &ValidArgs, _permit: Permit) -> Executed {
    let run = tool.run.run(args.as_map(), tool.timeout);
    let result = match tokio::time::timeout(tool.timeout + GRACE, run).await {
        Ok(result) => result,
        Err(_) => Err(ExecError::Timeout(tool.timeout)),
    };
    match result {
        Ok(output) => Executed {
            outcome: if output.is_error {
                Outcome::Error
            } else {
                Outcome::Ok
            },
            output,
        },
        Err(ExecError::Timeout(after)) => Executed {
            outcome: Outcome::Timeout,
            output: failure(format!(
                "tool `{}` timed out after {} and was stopped",
                tool.spec.name,
                humantime::format_duration(after)
            )),
        },
        Err(ExecError::Failed(why)) => Executed {
            outcome: Outcome::Error,
            output: failure(format!("tool `{}` failed: {why}", tool.spec.name)),
        },
    }
}

fn failure(text: String) -> ExecOutput {
    ExecOutput {
        text,
        structured: None,
        is_error: true,
    }
}
