//! Stage 6: run the tool.
//!
//! Executors enforce the spec's timeout themselves (they know how to kill a
//! process group or drop a connection). The outer timeout here is a safety
//! net with a short grace period, so a misbehaving executor still cannot
//! hold a call, and its receipt, forever.
//!
//! **Redaction happens here.** Whatever the tool produced (text, structured
//! JSON, failure messages, which may echo a URL or a header) passes through
//! the secrets' [`Redactor`] before this stage returns, so the receipt's
//! excerpt and digest, the reply and any log line only ever see
//! `[redacted:NAME]` in place of a secret value.

use std::time::Duration;

use super::{Permit, ValidArgs};
use crate::catalog::CompiledTool;
use crate::executor::{ExecError, ExecOutput};
use crate::receipt::Outcome;
use crate::secrets::Redactor;
use crate::shutdown::Shutdown;

const GRACE: Duration = Duration::from_secs(2);

/// What running the tool produced, and how it is recorded.
#[derive(Debug)]
pub struct Executed {
    pub outcome: Outcome,
    pub output: ExecOutput,
    /// How long the executor ran (metrics: execution latency).
    pub elapsed: Duration,
}

/// Run `tool` with `args`. Taking the [`Permit`] by value means this cannot be
/// called for a call that was not authorized. `shutdown` interrupts the run
/// when tollgate stops before the tool finishes.
pub async fn execute(
    tool: &CompiledTool,
    args: &ValidArgs,
    permit: Permit,
    shutdown: &Shutdown,
) -> Executed {
    let mut executed = run(tool, args, permit, shutdown).await;
    redact(&tool.secrets.redactor(), &mut executed.output);
    executed
}

/// Replace every secret value in `output` with `[redacted:NAME]`.
fn redact(redactor: &Redactor, output: &mut ExecOutput) {
    if redactor.is_empty() {
        return;
    }
    if let std::borrow::Cow::Owned(text) = redactor.redact(&output.text) {
        output.text = text;
    }
    if let Some(structured) = &mut output.structured {
        redactor.redact_json(structured);
    }
}

async fn run(
    tool: &CompiledTool,
    args: &ValidArgs,
    _permit: Permit,
    shutdown: &Shutdown,
) -> Executed {
    let started = std::time::Instant::now();
    let run = tokio::time::timeout(
        tool.timeout + GRACE,
        tool.run.run(args.as_map(), tool.timeout),
    );
    let result = tokio::select! {
        result = run => match result {
            Ok(result) => result,
            Err(_) => Err(ExecError::Timeout(tool.timeout)),
        },
        // Dropping the run future stops the tool (child processes are
        // killed on drop, HTTP requests are aborted).
        _ = shutdown.interrupted() => {
            return Executed {
                elapsed: started.elapsed(),
                outcome: Outcome::Interrupted,
                output: failure(format!(
                    "tool `{}` was interrupted because tollgate is shutting down; its effect may or may not have happened",
                    tool.spec.name
                )),
            };
        }
    };
    let elapsed = started.elapsed();
    match result {
        Ok(output) => Executed {
            elapsed,
            outcome: if output.is_error {
                Outcome::Error
            } else {
                Outcome::Ok
            },
            output,
        },
        Err(ExecError::Timeout(after)) => Executed {
            elapsed,
            outcome: Outcome::Timeout,
            output: failure(format!(
                "tool `{}` timed out after {} and was stopped",
                tool.spec.name,
                humantime::format_duration(after)
            )),
        },
        Err(ExecError::Failed(why)) => Executed {
            elapsed,
            outcome: Outcome::Error,
            output: failure(format!("tool `{}` failed: {why}", tool.spec.name)),
        },
        // Certain that nothing happened: the receipt says `not_run`, and the
        // run stage gives back the idempotency key and the budget charge.
        Err(ExecError::NotStarted(why)) => Executed {
            elapsed,
            outcome: Outcome::NotRun,
            output: failure(format!(
                "tool `{}` did not start: {why}; nothing was sent or run, so it is safe to retry",
                tool.spec.name
            )),
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
