//! Benchmark-only short cuts. They act only in a build with the
//! `bench-decompose` feature: without it, nothing calls this module. It is
//! compiled in every build all the same, so the default `cargo test` checks
//! its parsing.
//!
//! Why: the [proof] benchmark compares a governed call with a bare rmcp
//! server. The gap is the sum of three parts (the HTTP front with its
//! authentication, the pipeline's stages, the receipt store), and only
//! removing one part at a time, in the same run, says how much each costs.
//! `scripts/bench-decompose.sh` does that with one build of this feature and
//! `TOLLGATE_BENCH_STAGE`:
//!
//! - `null-pipeline`: `tools/call` answers `echo` (the `message` argument)
//!   right after the HTTP guard has authenticated the request. Nothing is
//!   resolved, validated, authorized, limited, run or recorded.
//! - `no-storage`: the whole pipeline runs, and every receipt and intent
//!   travels to the writer thread and back, but the writer answers without
//!   writing them to SQLite. (Its start-up registration and heartbeats still
//!   write, and its metrics count the receipts as if they were stored.)
//!
//! Both break tollgate's promise ("never a call without a record") on
//! purpose, so every command that starts a writer (`serve`, `call`,
//! `approvals approve|reject`) checks the variable first ([`check`]): it refuses an
//! unknown value and logs an error line naming a known one.

use std::sync::OnceLock;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};

/// The environment variable that selects a stage to cut out.
pub const ENV: &str = "TOLLGATE_BENCH_STAGE";

/// Which part of a call is cut out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The full governed call (the variable is unset or empty).
    Nothing,
    /// `null-pipeline`.
    Pipeline,
    /// `no-storage`.
    Storage,
}

impl Cut {
    /// The stage's name as [`ENV`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Cut::Nothing => "",
            Cut::Pipeline => "null-pipeline",
            Cut::Storage => "no-storage",
        }
    }

    /// Reads [`ENV`]; an unknown value is an error that names the choices.
    pub fn from_env() -> Result<Cut, String> {
        Cut::parse(&std::env::var(ENV).unwrap_or_default())
    }

    /// The stage named `value` (empty: none).
    pub fn parse(value: &str) -> Result<Cut, String> {
        match value {
            "" => Ok(Cut::Nothing),
            "null-pipeline" => Ok(Cut::Pipeline),
            "no-storage" => Ok(Cut::Storage),
            other => Err(format!(
                "{ENV}={other:?} is not a stage; use null-pipeline, no-storage, or leave it unset"
            )),
        }
    }
}

static CUT: OnceLock<Cut> = OnceLock::new();

/// The stage cut out in this process, read once. [`check`] has refused an
/// unknown value before any writer started; were it skipped, an unknown
/// value would cut nothing.
pub fn cut() -> Cut {
    *CUT.get_or_init(|| Cut::from_env().unwrap_or(Cut::Nothing))
}

/// Called before a command starts its writer: refuse an unknown stage, and
/// say loudly that a known one is set.
pub fn check() -> Result<(), String> {
    let cut = Cut::from_env()?;
    let _ = CUT.set(cut);
    if cut != Cut::Nothing {
        tracing::error!(
            stage = cut.name(),
            "{ENV} is set: this benchmark build skips part of every call; never serve real traffic with it"
        );
    }
    Ok(())
}

/// The `null-pipeline` answer: echo's output, computed in place.
pub fn echo(arguments: Option<&JsonObject>) -> CallToolResult {
    let message = arguments
        .and_then(|a| a.get("message"))
        .and_then(|m| m.as_str())
        .unwrap_or_default();
    CallToolResult::success(vec![ContentBlock::text(message.to_owned())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_names_parse_and_an_unknown_one_names_the_choices() {
        assert_eq!(Cut::parse(""), Ok(Cut::Nothing));
        assert_eq!(Cut::parse("null-pipeline"), Ok(Cut::Pipeline));
        assert_eq!(Cut::parse("no-storage"), Ok(Cut::Storage));
        for cut in [Cut::Pipeline, Cut::Storage] {
            assert_eq!(Cut::parse(cut.name()), Ok(cut));
        }
        let err = Cut::parse("nothing").unwrap_err();
        assert_eq!(
            err,
            "TOLLGATE_BENCH_STAGE=\"nothing\" is not a stage; use null-pipeline, no-storage, or leave it unset"
        );
    }

    #[test]
    fn echo_answers_the_message() {
        let args: JsonObject = serde_json::from_str(r#"{"message":"hi"}"#).unwrap();
        let out = serde_json::to_value(echo(Some(&args))).unwrap();
        assert_eq!(out["content"][0]["text"], "hi");
        assert_eq!(out["isError"], false);
    }
}
