//! Layered settings: command-line flags beat environment variables, which beat
//! the config file, which beats built-in defaults.
//!
//! clap already merges flags with their `TOLLGATE_*` environment variables, so
//! this module only has to lay the config file and the defaults underneath.
//! Relative paths in the config file are taken relative to the file itself, so
//! a config works no matter which directory tollgate is started from.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::AuthConfig;
use crate::http::HttpSettings;

/// Default argument payload limit: 1 MiB of JSON.
pub const DEFAULT_MAX_ARGS_BYTES: usize = 1024 * 1024;

/// Default time an approval request waits for a decision.
pub const DEFAULT_APPROVAL_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What flags and environment variables said (`None` = not given).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub specs: Option<PathBuf>,
    pub principals: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    pub principal: Option<String>,
}

/// The config file (`tollgate.yaml`). Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    db: Option<PathBuf>,
    specs: Option<PathBuf>,
    principals: Option<PathBuf>,
    /// Identity of the stdio client when `--principal` is not given.
    principal: Option<String>,
    /// Largest accepted `arguments` payload, in bytes of JSON.
    max_args_bytes: Option<usize>,
    /// Streamable HTTP settings (`serve --http`).
    http: Option<HttpSettings>,
    /// How HTTP callers authenticate (API keys are always available).
    auth: Option<AuthConfig>,
    /// Directory of Cedar policy files (`*.cedar`).
    policies: Option<PathBuf>,
    /// Directory of secret files (one file per secret, named after it).
    secrets_dir: Option<PathBuf>,
    /// Spending and call budgets.
    #[serde(default)]
    budgets: Vec<BudgetConfig>,
    /// Approval settings.
    approvals: Option<ApprovalSettings>,
}

/// One budget: a cap on money or calls for a principal or a role, per day
/// or per month (UTC).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// Name shown in receipts, `tollgate costs` and /metrics. Default: derived
    /// from the subject, tool and period.
    #[serde(default)]
    pub name: Option<String>,
    /// The principal this budget applies to (exactly one of `principal`, `role`).
    #[serde(default)]
    pub principal: Option<String>,
    /// The role this budget applies to: by default one pool shared by every
    /// holder of the role; with `each_principal: true`, one budget per holder.
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub each_principal: bool,
    /// Only calls of this tool count (default: every tool).
    #[serde(default)]
    pub tool: Option<String>,
    /// `day` or `month` (UTC calendar periods).
    pub period: BudgetPeriod,
    /// Most calls per period.
    #[serde(default)]
    pub calls: Option<u64>,
    /// Most US dollars per period.
    #[serde(default)]
    pub usd: Option<f64>,
}

/// The calendar period a budget resets on (UTC).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    Month,
}

/// How long a pending approval waits before it expires.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSettings {
    /// e.g. `24h` (the default), `30m`, `7d`.
    #[serde(default)]
    pub expire_after: Option<String>,
}

fn field_prefix(field: &str) -> String {
    match field {
        "" | "." => String::new(),
        f => format!("field `{f}`: "),
    }
}

/// The settings tollgate runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub db: PathBuf,
    pub specs: PathBuf,
    pub principals: PathBuf,
    pub principal: Option<String>,
    pub max_args_bytes: usize,
    pub http: HttpSettings,
    pub auth: AuthConfig,
    /// Directory of Cedar policies. Default: ./policies (may be absent).
    pub policies: PathBuf,
    /// Directory of secret files, if any (`TOLLGATE_SECRET_<NAME>` always works).
    pub secrets_dir: Option<PathBuf>,
    pub budgets: Vec<BudgetConfig>,
    /// How long an approval request stays pending. Default 24 h.
    pub approval_ttl: std::time::Duration,
    /// The config file that was read, if any (for messages).
    pub config_file: Option<PathBuf>,
}

/// An error reading the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {}{message}", field_prefix(.field))]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl Settings {
    /// Resolve settings from `overrides`, the config file and the defaults.
    ///
    /// An explicitly named config file must exist; the implicit
    /// `./tollgate.yaml` is read only when present.
    pub fn resolve(overrides: Overrides) -> Result<Settings, ConfigError> {
        let (file, config_file) = match &overrides.config {
            Some(path) => (read_config(path)?, Some(path.clone())),
            None => {
                let implicit = PathBuf::from("tollgate.yaml");
                if implicit.exists() {
                    (read_config(&implicit)?, Some(implicit))
                } else {
                    (ConfigFile::default(), None)
                }
            }
        };
        let base = config_file
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let from_file = |p: Option<PathBuf>| p.map(|p| base.join(p));
        if file.max_args_bytes == Some(0) {
            return Err(ConfigError::Invalid {
                path: config_file.clone().unwrap_or_default(),
                field: "max_args_bytes".into(),
                message: "must be at least 1".into(),
            });
        }
        let approval_ttl = match file
            .approvals
            .as_ref()
            .and_then(|a| a.expire_after.as_deref())
        {
            None => DEFAULT_APPROVAL_TTL,
            Some(text) => humantime::parse_duration(text).map_err(|e| ConfigError::Invalid {
                path: config_file.clone().unwrap_or_default(),
                field: "approvals.expire_after".into(),
                message: format!("{text:?} is not a duration ({e}); write e.g. `24h` or `30m`"),
            })?,
        };
        Ok(Settings {
            policies: overrides
                .policies
                .or(from_file(file.policies))
                .unwrap_or_else(|| "policies".into()),
            secrets_dir: from_file(file.secrets_dir),
            budgets: file.budgets,
            approval_ttl,
            db: overrides
                .db
                .or(from_file(file.db))
                .unwrap_or_else(|| "tollgate.db".into()),
            specs: overrides
                .specs
                .or(from_file(file.specs))
                .unwrap_or_else(|| "tool-specs".into()),
            principals: overrides
                .principals
                .or(from_file(file.principals))
                .unwrap_or_else(|| "principals.yaml".into()),
            principal: overrides.principal.or(file.principal),
            max_args_bytes: file.max_args_bytes.unwrap_or(DEFAULT_MAX_ARGS_BYTES),
            http: file.http.unwrap_or_default(),
            auth: {
                let mut auth = file.auth.unwrap_or_default();
                auth.rebase(&base);
                auth
            },
            config_file,
        })
    }
}

fn read_config(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    let de = serde_norway::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Invalid {
        path: path.to_path_buf(),
        field: e.path().to_string(),
        message: e.into_inner().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_and_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("t.yaml");
        std::fs::write(&cfg, "db: data/x.db\nspecs: specs\nprincipal: bob\n").unwrap();
        let s = Settings::resolve(Overrides {
            config: Some(cfg),
            specs: Some("/flag/specs".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(s.db, dir.path().join("data/x.db"));
        assert_eq!(s.specs, PathBuf::from("/flag/specs"));
        assert_eq!(s.principals, PathBuf::from("principals.yaml"));
        assert_eq!(s.principal.as_deref(), Some("bob"));
        assert_eq!(s.max_args_bytes, DEFAULT_MAX_ARGS_BYTES);
    }

    #[test]
    fn unknown_config_field_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("t.yaml");
        std::fs::write(&cfg, "dbb: x.db\n").unwrap();
        let err = Settings::resolve(Overrides {
            config: Some(cfg),
            ..Overrides::default()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown field `dbb`"), "{err}");
    }

    #[test]
    fn missing_explicit_config_is_an_error() {
        let err = Settings::resolve(Overrides {
            config: Some("/nonexistent/t.yaml".into()),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/t.yaml"));
    }
}
