//! `tollgate keys …`: API keys for HTTP clients.

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use clap::Subcommand;

use super::app::open_store;
use tollgate::auth::{ApiKeys, KeyInfo, Revocation};
use tollgate::config::Settings;
use tollgate::principals::Principals;

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create an API key for a principal and print its token (once).
    #[command(
        after_help = "Example:\n  tollgate keys create --principal alice --expires 90d --note \"CI runner\"\n\nThe token goes to stdout and nothing else does, so it can be captured:\n  TOKEN=$(tollgate keys create --principal alice)\nClients send it as `Authorization: Bearer <token>`. Only a hash is stored:\na lost token cannot be shown again; revoke it and create another."
    )]
    Create {
        /// Who the key authenticates as; must be in the principals file.
        #[arg(long, value_name = "NAME")]
        principal: String,
        /// Lifetime, e.g. 30d, 12h, 90d. Default: the key never expires.
        #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
        expires: Option<std::time::Duration>,
        /// A reminder of who or what uses the key (shown by `keys list`).
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// List every key: id, principal, status, created, last used, expiry, note.
    #[command(
        after_help = "Example:\n  tollgate keys list\n  tollgate keys list --json\n\nStatus is active, expired or revoked. A running server records uses every\nfew seconds, so LAST USED can lag by that much. Secrets and hashes are never shown."
    )]
    List {
        /// One JSON array of keys.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key; the next request that uses it is refused, in open sessions too.
    #[command(
        after_help = "Example:\n  tollgate keys revoke 3f9a1c0b7d2e\n\nExit status: 0 when the key is now revoked (also when it already was), 1 on an\nunknown id."
    )]
    Revoke {
        /// Key id as shown by `keys list` (`tg_<id>` is accepted too).
        id: String,
    },
}

pub async fn run(settings: &Settings, cmd: KeysCmd) -> anyhow::Result<u8> {
    if !matches!(cmd, KeysCmd::Create { .. }) && !settings.db.exists() {
        bail!(
            "no database at {}: no API key has been created yet (`tollgate keys create --principal NAME`)",
            settings.db.display()
        );
    }
    match cmd {
        KeysCmd::Create {
            principal,
            expires,
            note,
        } => {
            let principals = Principals::load(&settings.principals)?;
            if principals.roles_of(&principal).is_none() {
                bail!(
                    "unknown principal `{principal}`: it is not in {} (known: {})",
                    settings.principals.display(),
                    principals.names().collect::<Vec<_>>().join(", ")
                );
            }
            let keys = key_store(settings).await?;
            let (info, token) = keys
                .create(&principal, expires, note.as_deref())
                .await
                .context("cannot create the API key")?;
            let until = match info.expires {
                Some(t) => format!("expires {}", show(t)),
                None => "never expires".to_owned(),
            };
            eprintln!(
                "created API key tg_{} for principal `{principal}` ({until}).\nThe token below is shown only this once: store it now.",
                info.id
            );
            println!("{token}");
        }
        KeysCmd::List { json } => {
            let keys = key_store(settings).await?.list().await?;
            let now = Utc::now();
            if json {
                let rows: Vec<_> = keys.iter().map(|k| to_json(k, now)).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if keys.is_empty() {
                eprintln!("no API keys; create one with `tollgate keys create --principal NAME`");
            } else {
                println!(
                    "{:<12} {:<16} {:<8} {:<20} {:<20} {:<20} NOTE",
                    "ID", "PRINCIPAL", "STATUS", "CREATED", "LAST USED", "EXPIRES"
                );
                for k in &keys {
                    println!(
                        "{:<12} {:<16} {:<8} {:<20} {:<20} {:<20} {}",
                        k.id,
                        k.principal,
                        k.status(now).as_str(),
                        show(k.created),
                        k.last_used.map(show).unwrap_or_else(|| "never".into()),
                        k.expires.map(show).unwrap_or_else(|| "never".into()),
                        k.note.as_deref().unwrap_or("")
                    );
                }
            }
        }
        KeysCmd::Revoke { id } => match key_store(settings).await?.revoke(&id).await? {
            Revocation::Revoked(k) => {
                println!("revoked API key tg_{} (principal `{}`)", k.id, k.principal);
            }
            Revocation::AlreadyRevoked(k) => {
                let at = k.revoked.map(show).unwrap_or_default();
                println!(
                    "API key tg_{} was already revoked ({at}); nothing changed",
                    k.id
                );
            }
        },
    }
    Ok(0)
}

async fn key_store(settings: &Settings) -> anyhow::Result<ApiKeys> {
    Ok(ApiKeys::new(open_store(settings).await?.pool().clone()))
}

/// `--expires`: a humantime duration, with an example when it is not one.
fn parse_lifetime(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration ({e}); write e.g. 30d, 12h or 90d"))
}

/// A timestamp for a table: to the second, UTC.
fn show(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

fn to_json(k: &KeyInfo, now: DateTime<Utc>) -> serde_json::Value {
    let ts = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
    };
    serde_json::json!({
        "id": k.id,
        "principal": k.principal,
        "status": k.status(now).as_str(),
        "created": ts(Some(k.created)),
        "last_used": ts(k.last_used),
        "expires": ts(k.expires),
        "revoked": ts(k.revoked),
        "note": k.note,
    })
}
