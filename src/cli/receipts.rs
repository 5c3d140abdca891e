//! `tollgate receipts …`: query and verify the receipt chain.

use anyhow::{Context, bail};
use clap::Subcommand;

use super::app::open_store;
use super::{EXIT_FAILED, printable};
use tollgate::config::Settings;
use tollgate::receipt::{Decision, Receipt};
use tollgate::store::ReceiptFilter;

#[derive(Subcommand, Debug)]
pub enum ReceiptsCmd {
    /// List receipts, newest first.
    #[command(
        after_help = "Example:\n  tollgate receipts list --tool echo --decision denied --since 1h --limit 20"
    )]
    List {
        /// Only calls to this tool.
        #[arg(long)]
        tool: Option<String>,
        /// Only calls by this principal.
        #[arg(long)]
        principal: Option<String>,
        /// allowed, denied, rate_limited, invalid, unknown_tool, unavailable,
        /// pending_approval, approved, approval_denied, approval_refused, replayed, conflict or
        /// over_budget
        #[arg(long)]
        decision: Option<Decision>,
        /// Only receipts newer than this, e.g. 30m, 1h, 7d.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Most receipts to print.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON array of receipts.
        #[arg(long)]
        json: bool,
    },
    /// Show one receipt in full (an id prefix of 8+ characters is enough).
    #[command(after_help = "Example:\n  tollgate receipts show 019a8c2e")]
    Show {
        /// Receipt id, as in a result's `_meta` `tollgate/receipt_id` or `receipts list`.
        id: String,
        /// The receipt as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Recompute the hash chain; exit 0 when intact, 1 at the first bad receipt.
    #[command(after_help = "Example:\n  tollgate receipts verify")]
    Verify,
}

pub async fn run(settings: &Settings, cmd: ReceiptsCmd) -> anyhow::Result<u8> {
    if !settings.db.exists() {
        bail!(
            "no database at {}: nothing has been recorded yet (start `tollgate serve` or run `tollgate call` first)",
            settings.db.display()
        );
    }
    let store = open_store(settings).await?;
    match cmd {
        ReceiptsCmd::List {
            tool,
            principal,
            decision,
            since,
            limit,
            json,
        } => {
            if limit < 1 {
                bail!("--limit must be at least 1");
            }
            let since_ts = since.map(|s| since_to_ts(&s)).transpose()?;
            let filter = ReceiptFilter {
                tool,
                principal,
                decision,
                since_ts,
                limit,
            };
            let receipts = store.list_receipts(&filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&receipts)?);
            } else {
                println!(
                    "{:<36} {:<27} {:<10} {:<20} {:<13} {:<8} {:>9}",
                    "ID", "TIME", "PRINCIPAL", "TOOL", "DECISION", "OUTCOME", "MS"
                );
                for r in &receipts {
                    let tool = match r.content.version {
                        Some(v) => format!("{}@v{v}", r.content.tool),
                        None => printable(&r.content.tool),
                    };
                    println!(
                        "{:<36} {:<27} {:<10} {:<20} {:<13} {:<8} {:>9.1}",
                        r.content.id,
                        r.content.ts,
                        printable(r.content.principal.as_deref().unwrap_or("-")),
                        tool,
                        r.content.decision.as_str(),
                        r.content.outcome.as_str(),
                        r.content.duration_us as f64 / 1000.0
                    );
                }
            }
        }
        ReceiptsCmd::Show { id, json } => {
            let Some(r) = store.get_receipt(&id).await? else {
                bail!("no receipt with id `{id}`; `tollgate receipts list` shows recent ones");
            };
            // An approval's whole story: request, decision and run.
            let story = match &r.content.approval_id {
                Some(aid) => store.receipts_of_approval(aid).await?,
                None => Vec::new(),
            };
            if json {
                let mut value = serde_json::to_value(&r)?;
                if !story.is_empty()
                    && let Some(obj) = value.as_object_mut()
                {
                    obj.insert("approval_story".into(), serde_json::to_value(&story)?);
                }
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print_receipt(&r);
                if !story.is_empty() {
                    println!(
                        "\napproval {} (every receipt linked to it, oldest first):",
                        r.content.approval_id.as_deref().unwrap_or_default()
                    );
                    for s in &story {
                        let mark = if s.content.id == r.content.id {
                            "*"
                        } else {
                            " "
                        };
                        println!(
                            "{mark} {} {} {:<17} {:<12} {}",
                            s.content.ts,
                            s.content.id,
                            s.content.decision.as_str(),
                            printable(s.content.principal.as_deref().unwrap_or("-")),
                            printable(s.content.reason.as_deref().unwrap_or("-"))
                        );
                    }
                }
            }
        }
        ReceiptsCmd::Verify => {
            let report = store.verify_chain().await?;
            match report.first_bad {
                None => {
                    println!(
                        "ok: {} receipt(s) checked; the chain is intact",
                        report.checked
                    );
                    // Truncation at the end leaves a valid (shorter) chain;
                    // only a head saved elsewhere can reveal it.
                    if let Some((seq, hash)) = report.last_good {
                        println!(
                            "head: receipt #{seq} hash {hash} (save it elsewhere to detect later truncation)"
                        );
                    }
                }
                Some(bad) => {
                    println!("BROKEN: receipt #{} ({}): {}", bad.seq, bad.id, bad.problem);
                    println!("{} receipt(s) before it are intact", report.checked);
                    return Ok(EXIT_FAILED);
                }
            }
        }
    }
    Ok(0)
}

pub(super) fn since_to_ts(text: &str) -> anyhow::Result<String> {
    let d = humantime::parse_duration(text)
        .with_context(|| format!("--since `{text}` is not a duration; write e.g. 30m, 1h or 7d"))?;
    let d = chrono::Duration::from_std(d).context("--since is too large")?;
    let cutoff = chrono::Utc::now()
        .checked_sub_signed(d)
        .context("--since is too large")?;
    Ok(cutoff.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

fn print_receipt(r: &Receipt) {
    let n = &r.content;
    let opt = |v: &Option<String>| printable(v.as_deref().unwrap_or("-"));
    println!("receipt   {} (#{})", n.id, r.seq);
    println!("time      {}", n.ts);
    println!(
        "principal {} (roles: {}; auth: {})",
        opt(&n.principal),
        printable(&n.roles.join(", ")),
        printable(&n.auth)
    );
    println!(
        "transport {}{}",
        n.transport,
        n.session
            .as_ref()
            .map(|s| format!(" session {}", printable(s)))
            .unwrap_or_default()
    );
    println!(
        "tool      {} v{} (spec {})",
        printable(&n.tool),
        n.version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into()),
        opt(&n.spec_hash)
    );
    println!("arguments {}", printable(&n.args.to_string()));
    println!("decision  {}", n.decision.as_str());
    println!("reason    {}", opt(&n.reason));
    println!("outcome   {}", n.outcome.as_str());
    println!("duration  {:.3} ms", n.duration_us as f64 / 1000.0);
    println!(
        "cost      {}",
        n.cost_usd
            .map(|c| format!("${c}"))
            .unwrap_or_else(|| "-".into())
    );
    println!("result    sha256 {}", opt(&n.result_digest));
    println!("excerpt   {}", opt(&n.result_excerpt));
    if n.policy_set.is_some() || !n.policies.is_empty() {
        println!(
            "policies  {} (set {})",
            if n.policies.is_empty() {
                "none permitted the call".to_owned()
            } else {
                n.policies.join(", ")
            },
            opt(&n.policy_set)
        );
    }
    if let Some(a) = &n.approval_id {
        println!("approval  {}", printable(a));
    }
    if let Some(o) = &n.replay_of {
        println!("replay of {}", printable(o));
    }
    println!("prev_hash {}", r.prev_hash);
    println!("hash      {}", r.hash);
}
