//! `tollgate tools …`: the version registry.

use anyhow::bail;
use clap::Subcommand;

use super::app::{open_store, sync_registry};
use tollgate::config::Settings;

#[derive(Subcommand, Debug)]
pub enum ToolsCmd {
    /// Name, active version, pinned?, hash and source file of every tool.
    #[command(after_help = "Example:\n  tollgate tools list")]
    List,
    /// Every stored version of a tool: number, hash, first seen, source.
    #[command(after_help = "Example:\n  tollgate tools history echo")]
    History {
        /// Tool name.
        name: String,
    },
    /// Readable diff between two stored versions of a tool.
    #[command(after_help = "Example:\n  tollgate tools diff echo 1 2")]
    Diff {
        /// Tool name.
        name: String,
        /// Older version number (as in `tools history`).
        v1: i64,
        /// Newer version number.
        v2: i64,
    },
    /// Make stored version VER active and pin it (takes effect at the next start of `serve`).
    #[command(after_help = "Example:\n  tollgate tools rollback echo 1")]
    Rollback {
        /// Tool name.
        name: String,
        /// Stored version number to serve (as in `tools history`).
        #[arg(value_name = "VER")]
        version: i64,
    },
    /// Follow the spec file again.
    #[command(after_help = "Example:\n  tollgate tools unpin echo")]
    Unpin {
        /// Tool name.
        name: String,
    },
}

pub async fn run(settings: &Settings, cmd: ToolsCmd) -> anyhow::Result<u8> {
    let store = open_store(settings).await?;
    sync_registry(settings, &store).await?;
    match cmd {
        ToolsCmd::List => {
            let states = store.tool_states().await?;
            println!(
                "{:<24} {:>7} {:<6} {:<12} SOURCE",
                "NAME", "ACTIVE", "PINNED", "HASH"
            );
            for s in states {
                let active = s.active_version.map(|v| format!("v{v}"));
                let version = match s.active_version {
                    Some(v) => store.version(&s.name, v).await?,
                    None => None,
                };
                let (hash, source) = version
                    .map(|v| {
                        (
                            v.hash.get(..12).unwrap_or(&v.hash).to_string(),
                            v.source_path,
                        )
                    })
                    .unwrap_or_else(|| ("-".into(), "(spec file removed; not served)".into()));
                println!(
                    "{:<24} {:>7} {:<6} {:<12} {}",
                    s.name,
                    active.as_deref().unwrap_or("-"),
                    if s.pinned { "yes" } else { "no" },
                    hash,
                    source
                );
            }
        }
        ToolsCmd::History { name } => {
            let history = store.history(&name).await?;
            if history.is_empty() {
                bail!("no tool named `{name}`; `tollgate tools list` shows the known tools");
            }
            let state = store
                .tool_states()
                .await?
                .into_iter()
                .find(|s| s.name == name);
            println!(
                "{:<8} {:<64} {:<28} SOURCE",
                "VERSION", "HASH", "FIRST SEEN"
            );
            for v in history {
                let marker = match &state {
                    Some(s) if s.active_version == Some(v.version) => {
                        if s.pinned {
                            " (active, pinned)"
                        } else {
                            " (active)"
                        }
                    }
                    _ => "",
                };
                println!(
                    "{:<8} {:<64} {:<28} {}{marker}",
                    format!("v{}", v.version),
                    v.hash,
                    v.first_seen,
                    v.source_path
                );
            }
        }
        ToolsCmd::Diff { name, v1, v2 } => {
            let get = |v: i64| {
                let store = &store;
                let name = &name;
                async move {
                    match store.version(name, v).await? {
                        Some(found) => Ok(found),
                        None => {
                            let known = store.history(name).await?;
                            if known.is_empty() {
                                bail!(
                                    "no tool named `{name}`; `tollgate tools list` shows the known tools"
                                )
                            }
                            bail!(
                                "tool `{name}` has no version {v}; it has {}",
                                known
                                    .iter()
                                    .map(|k| format!("v{}", k.version))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    }
                }
            };
            let (a, b) = (get(v1).await?, get(v2).await?);
            if a.hash == b.hash {
                println!("v{v1} and v{v2} are identical");
            } else {
                let diff = similar::TextDiff::from_lines(&a.source_text, &b.source_text);
                print!(
                    "{}",
                    diff.unified_diff().context_radius(3).header(
                        &format!("{name} v{v1} ({})", a.source_path),
                        &format!("{name} v{v2} ({})", b.source_path)
                    )
                );
            }
        }
        ToolsCmd::Rollback { name, version } => {
            store.rollback(&name, version).await?;
            println!(
                "{name}: v{version} is active and pinned; it serves from the next start of `tollgate serve`. `tollgate tools unpin {name}` follows the spec file again."
            );
        }
        ToolsCmd::Unpin { name } => {
            store.unpin(&name).await?;
            let state = store
                .tool_states()
                .await?
                .into_iter()
                .find(|s| s.name == name);
            match state.and_then(|s| s.active_version) {
                Some(v) => println!("{name}: unpinned; follows its spec file (v{v})"),
                None => {
                    println!("{name}: unpinned; its spec file is gone, so it will not be served")
                }
            }
        }
    }
    Ok(0)
}
