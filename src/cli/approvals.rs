//! `tollgate approvals …`: the four-eyes queue.
//!
//! Approving runs the call right here, once, as its requester, through the
//! same pipeline `serve` uses (same specs, policies, secrets and database);
//! the requester's repeat of the call then gets the stored result.

use anyhow::bail;
use clap::{Subcommand, ValueEnum};

use super::app::{App, open_store};
use super::{EXIT_FAILED, printable};
use tollgate::config::Settings;
use tollgate::pipeline::{Identity, Unused, authenticate};
use tollgate::principals::Principals;
use tollgate::store::Approval;

#[derive(Subcommand, Debug)]
pub enum ApprovalsCmd {
    /// Approval requests, newest first.
    #[command(after_help = "Example:\n  tollgate approvals list --status pending")]
    List {
        /// Only requests in this state.
        #[arg(long)]
        status: Option<Status>,
        /// Most requests to print.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// One request in full (an id prefix of 8+ characters is enough).
    #[command(after_help = "Example:\n  tollgate approvals show ap_3f9a1c0b")]
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Approve a pending request; the call then runs once, as its requester.
    #[command(
        after_help = "Example:\n  tollgate approvals approve ap_3f9a1c0b --as fin-1 --note 'customer called, verified'\n\nExit status: 0 when the approved call ran and succeeded, 1 otherwise."
    )]
    Approve {
        id: String,
        /// Who approves: a principal holding the role the request names, and not its requester.
        #[arg(long = "as", value_name = "PRINCIPAL")]
        approver: String,
        /// Why, recorded in the receipt.
        #[arg(long)]
        note: Option<String>,
    },
    /// Deny a pending request; the call never runs.
    #[command(
        after_help = "Example:\n  tollgate approvals deny ap_3f9a1c0b --as fin-1 --reason 'duplicate of ord_123'"
    )]
    Deny {
        id: String,
        #[arg(long = "as", value_name = "PRINCIPAL")]
        approver: String,
        /// Why, recorded in the receipt and shown to the requester.
        #[arg(long)]
        reason: String,
    },
}

/// The states of an approval request.
#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Expired => "expired",
        }
    }
}

pub async fn run(settings: &Settings, cmd: ApprovalsCmd) -> anyhow::Result<u8> {
    if !settings.db.exists() {
        bail!(
            "no database at {}: no call has asked for approval yet",
            settings.db.display()
        );
    }
    match cmd {
        ApprovalsCmd::List {
            status,
            limit,
            json,
        } => {
            if limit < 1 {
                bail!("--limit must be at least 1");
            }
            let store = open_store(settings).await?;
            let list = store
                .list_approvals(status.map(Status::as_str), limit)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<35} {:<9} {:<12} {:<18} {:<10} {:<27} ARGUMENTS",
                    "ID", "STATUS", "REQUESTER", "TOOL", "APPROVER", "EXPIRES"
                );
                for a in &list {
                    println!(
                        "{:<35} {:<9} {:<12} {:<18} {:<10} {:<27} {}",
                        a.id,
                        a.status,
                        printable(&a.principal),
                        format!("{}@v{}", a.tool, a.version),
                        a.approver_role,
                        a.expires_at,
                        printable(&a.args.to_string())
                    );
                }
            }
            Ok(0)
        }
        ApprovalsCmd::Show { id, json } => {
            let store = open_store(settings).await?;
            let Some(a) = store.get_approval(&id).await? else {
                bail!("no approval `{id}`; `tollgate approvals list` shows them");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                print_approval(&a);
            }
            Ok(0)
        }
        ApprovalsCmd::Approve { id, approver, note } => {
            decide(settings, &id, &approver, true, note.as_deref()).await
        }
        ApprovalsCmd::Deny {
            id,
            approver,
            reason,
        } => {
            if reason.trim().is_empty() {
                bail!("--reason is empty; say why, the requester will read it");
            }
            decide(settings, &id, &approver, false, Some(&reason)).await
        }
    }
}

async fn decide(
    settings: &Settings,
    id: &str,
    approver: &str,
    approve: bool,
    note: Option<&str>,
) -> anyhow::Result<u8> {
    let principals = Principals::load(&settings.principals)?;
    let who = authenticate(&principals, &Identity::local(approver, "cli")).map_err(|e| {
        anyhow::anyhow!(
            "--as {approver}: {e} (approvers must be listed in {})",
            settings.principals.display()
        )
    })?;
    let app = App::start(settings).await?;
    let decided = app.pipeline.decide_approval(id, &who, approve, note).await;
    app.shutdown().await;
    let decided = decided?;
    let verb = if approve { "approved" } else { "denied" };
    println!(
        "{verb} {id} as {approver}; decision receipt: {}",
        decided
            .decision_receipt
            .as_deref()
            .unwrap_or("none (not committed)")
    );
    let Some(run) = decided.run else {
        return Ok(0);
    };
    let receipt = run.receipt_id.as_deref().unwrap_or("none (not committed)");
    if let Some(unused) = &decided.unused {
        println!("the call did not start; receipt: {receipt}");
        if let Ok(out) = &run.body {
            println!("{}", printable(&out.text));
        }
        match unused {
            Unused::Pending { expires_at } => println!(
                "nothing was sent, so the approval was not used: {id} is pending again (until {expires_at}); approve it once the tool can run"
            ),
            Unused::Expired => println!(
                "nothing was sent, so the approval was not used, but {id} has expired meanwhile: the requester's repeat asks for a new approval"
            ),
            Unused::Kept => println!(
                "nothing was sent, but {id} could not be put back to pending (see the log); it keeps this result"
            ),
        }
        return Ok(EXIT_FAILED);
    }
    match &run.body {
        Ok(out) if !out.is_error => {
            println!("the call ran once; receipt: {receipt}");
            println!("{}", printable(&out.text));
            Ok(0)
        }
        Ok(out) => {
            println!("the call ran and failed; receipt: {receipt}");
            println!("{}", printable(&out.text));
            Ok(EXIT_FAILED)
        }
        Err(e) => {
            println!("the call did not run; receipt: {receipt}");
            println!("{e}");
            Ok(EXIT_FAILED)
        }
    }
}

fn print_approval(a: &Approval) {
    let opt = |v: &Option<String>| printable(v.as_deref().unwrap_or("-"));
    println!("approval   {}", a.id);
    println!("status     {}", a.status);
    println!(
        "requested  {} by {} (roles: {})",
        a.created_at,
        printable(&a.principal),
        printable(&a.roles.join(", "))
    );
    println!("expires    {}", a.expires_at);
    println!(
        "tool       {} v{} (spec {})",
        a.tool, a.version, a.spec_hash
    );
    println!("arguments  {}", printable(&a.args.to_string()));
    println!("approver   a holder of role `{}`", a.approver_role);
    println!(
        "policies   {} (set {})",
        a.policies.join(", "),
        a.policy_set
    );
    println!("request    receipt {}", a.request_receipt);
    println!(
        "decided    {} at {}",
        opt(&a.decided_by),
        opt(&a.decided_at)
    );
    println!("note       {}", opt(&a.note));
    println!("run        receipt {}", opt(&a.run_receipt));
    if let Some(result) = &a.result {
        println!(
            "result     {}",
            printable(
                result
                    .get("text")
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
            )
        );
    }
}
