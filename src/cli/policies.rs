//! `tollgate policies …`: the policy sets tollgate has served with, and the
//! policy part of `tollgate check`.

use std::io::Write;
use std::sync::Arc;

use anyhow::bail;
use clap::Subcommand;

use super::app::{open_store, print_policy_issues};
use tollgate::catalog::CompiledTool;
use tollgate::config::Settings;
use tollgate::pipeline::Budgets;
use tollgate::policy::{PolicyEngine, SchemaBuild};
use tollgate::principals::Principals;

#[derive(Subcommand, Debug)]
pub enum PoliciesCmd {
    /// Every distinct policy set a server has started with, newest first.
    #[command(after_help = "Example:\n  tollgate policies history")]
    History {
        /// One JSON array.
        #[arg(long)]
        json: bool,
    },
    /// The full text of one stored policy set (a hash prefix of 8+ characters is enough).
    #[command(after_help = "Example:\n  tollgate policies show 3f9a1c0b")]
    Show {
        /// Policy-set hash, as in a receipt's `policy_set`.
        hash: String,
        /// One JSON object `{hash, sources: {file: text}, …}`.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(settings: &Settings, cmd: PoliciesCmd) -> anyhow::Result<u8> {
    if !settings.db.exists() {
        bail!(
            "no database at {}: no server has started yet, so no policy set is recorded",
            settings.db.display()
        );
    }
    let store = open_store(settings).await?;
    match cmd {
        PoliciesCmd::History { json } => {
            let sets = store.policy_sets().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&sets)?);
            } else {
                println!(
                    "{:<64}  {:<27}  {:<27}  FILES",
                    "HASH", "FIRST SEEN", "LAST USED"
                );
                for s in &sets {
                    let files = s
                        .sources
                        .as_object()
                        .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default();
                    println!(
                        "{:<64}  {:<27}  {:<27}  {files}",
                        s.hash, s.first_seen, s.last_used
                    );
                }
            }
        }
        PoliciesCmd::Show { hash, json } => {
            let Some(set) = store.policy_set(&hash).await? else {
                bail!("no policy set with hash `{hash}`; `tollgate policies history` lists them");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&set)?);
            } else {
                println!("policy set {}", set.hash);
                println!("first seen {}  last used {}", set.first_seen, set.last_used);
                if let Some(sources) = set.sources.as_object() {
                    for (name, text) in sources {
                        println!("\n// ===== {name} =====");
                        print!("{}", text.as_str().unwrap_or_default());
                    }
                }
            }
        }
    }
    Ok(0)
}

/// The policy and budget part of `tollgate check`: `true` when both are fine.
pub fn check_governance(
    settings: &Settings,
    tools: &[Arc<CompiledTool>],
    principals: Option<&Principals>,
    schema: &SchemaBuild,
) -> bool {
    let mut ok = true;
    match PolicyEngine::load_with(&settings.policies, tools.iter(), principals, schema) {
        Ok(engine) => {
            // One write, not one per line (see `check`): 1,000 tools with
            // three roles each are 3,000 lines.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for (id, what) in engine.summary() {
                let _ = writeln!(out, "ok  policy {id:<40} {what}");
            }
            let _ = writeln!(
                out,
                "{} polic(ies) from {} and the allow lists; policy set {}",
                engine.len(),
                settings.policies.display(),
                &engine.hash()[..12]
            );
            let _ = out.flush();
            super::leak_at_exit(engine);
        }
        Err(issues) => {
            print_policy_issues(settings, &issues);
            eprintln!(
                "{} problem(s) found in the policies under {}",
                issues.len(),
                settings.policies.display()
            );
            ok = false;
        }
    }
    if let Some(principals) = principals
        && let Err(problems) = Budgets::new(&settings.budgets, principals)
    {
        for p in &problems {
            eprintln!("error: config: {p}");
        }
        ok = false;
    }
    ok
}
