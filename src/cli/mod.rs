//! The command line: argument definitions and dispatch.
//!
//! This is the binary's edge, so errors here are `anyhow` with context; the
//! library underneath uses typed errors.

mod app;
mod approvals;
mod call;
mod check;
mod costs;
mod keys;
mod policies;
mod receipts;
mod serve;
mod tools;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use tollgate::config::{Overrides, Settings};

/// Exit status for "the command ran but the answer is no" (check found
/// problems, a call was refused, the receipt chain is broken).
pub const EXIT_FAILED: u8 = 1;

#[derive(Parser, Debug)]
#[command(
    name = "tollgate",
    version,
    about = "A Model Context Protocol server that exposes governed tools",
    long_about = "tollgate serves tools defined in YAML spec files over MCP. Every call is \
authenticated, validated against the tool's input schema, authorized by role, rate limited, \
executed, and recorded as a hash-chained receipt in SQLite before the reply is sent.",
    after_help = "Examples:\n  tollgate check\n  tollgate serve --principal alice\n  tollgate call echo --args '{\"message\":\"hi\"}' --principal alice\n  tollgate receipts list --limit 5"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes. Flags beat environment variables, which beat
/// the config file, which beats the defaults.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Config file (YAML). Default: ./tollgate.yaml when it exists.
    #[arg(long, global = true, env = "TOLLGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// SQLite database file (created if missing). Default: ./tollgate.db
    #[arg(long, global = true, env = "TOLLGATE_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Directory of tool spec files (*.yaml). Default: ./tool-specs
    #[arg(long, global = true, env = "TOLLGATE_SPECS", value_name = "DIR")]
    pub specs: Option<PathBuf>,
    /// Principals and roles file. Default: ./principals.yaml
    #[arg(long, global = true, env = "TOLLGATE_PRINCIPALS", value_name = "FILE")]
    pub principals: Option<PathBuf>,
    /// Directory of Cedar policy files (*.cedar). Default: ./policies
    #[arg(long, global = true, env = "TOLLGATE_POLICIES", value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

/// How log lines are written (always to stderr).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Pretty,
    /// One JSON object per event, with the call's span fields (receipt_id, tool, principal).
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve MCP over stdio (stdout carries only the protocol; logs go to stderr).
    #[command(
        after_help = "Example:\n  tollgate serve --principal alice\n\nLog level: TOLLGATE_LOG=debug (or RUST_LOG)."
    )]
    Serve(serve::ServeArgs),
    /// Validate every spec and print what would be loaded; exit 1 on any error.
    #[command(after_help = "Example:\n  tollgate check --specs ./tool-specs")]
    Check,
    /// Print the JSON Schema of the tool-spec format (for editors).
    #[command(after_help = "Example:\n  tollgate schema > tool-spec.schema.json")]
    Schema,
    /// Inspect and manage tool versions.
    #[command(subcommand)]
    Tools(tools::ToolsCmd),
    /// Run one governed call through the same pipeline as `serve` (transport "cli").
    #[command(
        after_help = "Example:\n  tollgate call echo --args '{\"message\":\"hi\"}' --principal alice\n\nExit status: 0 when the tool succeeded, 1 when the call was refused or the tool failed."
    )]
    Call(call::CallArgs),
    /// Query and verify receipts.
    #[command(subcommand)]
    Receipts(receipts::ReceiptsCmd),
    /// Create, list and revoke API keys for HTTP clients.
    #[command(subcommand)]
    Keys(keys::KeysCmd),
    /// The four-eyes queue: list, show, approve and deny calls waiting for approval.
    #[command(subcommand)]
    Approvals(approvals::ApprovalsCmd),
    /// Stored policy sets: which text decided which calls.
    #[command(subcommand)]
    Policies(policies::PoliciesCmd),
    /// What calls cost (from the receipts), and where budgets stand.
    #[command(
        after_help = "Example:\n  tollgate costs --since 7d --by principal\n  tollgate costs --by day --json"
    )]
    Costs(costs::CostsArgs),
}

impl Global {
    fn settings(&self, principal: Option<String>) -> anyhow::Result<Settings> {
        Ok(Settings::resolve(Overrides {
            config: self.config.clone(),
            db: self.db.clone(),
            specs: self.specs.clone(),
            principals: self.principals.clone(),
            policies: self.policies.clone(),
            principal,
        })?)
    }
}

/// Text that came from a client or a tool, made safe to print on a terminal:
/// control characters (ANSI escape sequences, carriage returns) are escaped.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Skip freeing `value`: the command ends right after, and the process's
/// exit returns all of its memory at once. Freeing 1,000 tools' trees (spec,
/// JSON Schema validators, the Cedar policy set and schema) took ~20 ms of
/// `tollgate check`, time the user waits for and nothing gains from. (What
/// is leaked includes the cached secret values, which are therefore not
/// zeroized first; the kernel clears the pages before any other process
/// gets them.)
fn leak_at_exit<T>(value: T) {
    std::mem::forget(value);
}

/// Run the parsed command; the result is the process exit status.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Serve(args) => serve::run(&cli.global, args).await,
        Command::Check => check::check(&cli.global.settings(None)?),
        Command::Schema => check::schema(),
        Command::Tools(cmd) => tools::run(&cli.global.settings(None)?, cmd).await,
        Command::Call(args) => call::run(&cli.global, args).await,
        Command::Receipts(cmd) => receipts::run(&cli.global.settings(None)?, cmd).await,
        Command::Keys(cmd) => keys::run(&cli.global.settings(None)?, cmd).await,
        Command::Approvals(cmd) => approvals::run(&cli.global.settings(None)?, cmd).await,
        Command::Policies(cmd) => policies::run(&cli.global.settings(None)?, cmd).await,
        Command::Costs(args) => costs::run(&cli.global.settings(None)?, args).await,
    }
}
