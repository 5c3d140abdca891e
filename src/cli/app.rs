//! Start-up shared by `serve` and `call`: principals, database, catalog,
//! receipt writer and pipeline, in that order, failing with a readable
//! message at the first thing that is wrong. On the first start on a
//! database path, the specs, policies and budgets are checked before the
//! database file is created, so a refused start leaves none behind.

use std::borrow::Borrow;
use std::sync::Arc;

use anyhow::{Context, bail};

use tollgate::catalog::{
    Catalog, CatalogError, CompiledTool, check_dir, compile_report, spec_files,
};
use tollgate::config::Settings;
use tollgate::executor;
use tollgate::pipeline::{Budgets, Governance, Identity, Pipeline};
use tollgate::policy::{self, PolicyEngine, PolicyIssue, SchemaBuild};
use tollgate::principals::Principals;
use tollgate::secrets::{self, Secrets};
use tollgate::spec::SpecIssue;
use tollgate::store::{ReceiptWriter, Store, WriterHandle};

/// A running pipeline and the handle that flushes its receipts on shutdown.
pub struct App {
    pub pipeline: Arc<Pipeline>,
    pub writer: WriterHandle,
    pub store: Store,
    pub http: reqwest::Client,
}

impl App {
    /// Build everything a governed call needs.
    pub async fn start(settings: &Settings) -> anyhow::Result<App> {
        #[cfg(feature = "bench-decompose")]
        tollgate::bench_stage::check().map_err(anyhow::Error::msg)?;
        let principals = Principals::load(&settings.principals)?;
        let http = http_client()?;
        let secrets = load_secrets(settings)?;
        // Specs, and on a first start policies and budgets too, are checked
        // before the database is opened: a refused first start then leaves
        // no empty database behind.
        let report = tollgate::spec::load_dir(&settings.specs);
        // The Cedar schema builds on its own thread from here on, while the
        // specs compile, the database opens and the registry records them.
        let schema = SchemaBuild::start_specs(report.specs.iter().map(|l| &l.spec));
        let (loaded, compiled) = compile_report(report, Some(&principals), &http, &secrets)
            .map_err(|e| refuse_specs(settings, e))?;
        if !settings.db.exists() {
            first_start_checks(settings, &compiled, &principals, &schema)?;
        }
        let store = open_store(settings).await?;
        let catalog = Catalog::register(&loaded, compiled, &principals, &store, &http, &secrets)
            .await
            .map_err(|e| refuse_specs(settings, e))?;
        if catalog.iter().any(|t| t.sensitive_args) {
            // Create (or check) the receipt HMAC key now, so a problem with
            // it stops start-up instead of surfacing in a call.
            secrets
                .hash_key()
                .context("cannot set up the key for x-sensitive arguments")?;
        }
        if catalog.is_empty() {
            tracing::warn!(specs = %settings.specs.display(), "no tools are active; clients will see an empty tool list");
        }
        let policy = load_policies(settings, catalog.iter(), &principals, &schema)?;
        store
            .record_policy_set(
                policy.hash(),
                &policy::source::sources_json(policy.sources()),
            )
            .await?;
        tracing::info!(policy_set = %policy.hash(), policies = policy.len(), "policies loaded");
        let budgets = load_budgets(settings, &principals)?;
        let (writer, handle) = ReceiptWriter::spawn(&store);
        let governance = Governance {
            policy: Arc::new(policy),
            budgets,
            store: store.clone(),
            approval_ttl: settings.approval_ttl,
        };
        let pipeline = Pipeline::new(
            Arc::new(catalog),
            Arc::new(principals),
            writer,
            settings.max_args_bytes,
            governance,
        );
        Ok(App {
            pipeline: Arc::new(pipeline),
            writer: handle,
            store,
            http,
        })
    }

    /// Flush every queued receipt and stop the writer.
    pub async fn shutdown(self) {
        drop(self.pipeline);
        self.writer.shutdown().await;
        self.store.close().await;
    }
}

/// The first start on a database path: the policies and budgets, which
/// need no database, are checked before the database file is created, so
/// that a mistake in them does not leave an empty database behind. The
/// policy set is then loaded twice on that one start: the one that is
/// served describes the tools at their registered versions, which only the
/// registry assigns. Both loads use the one Cedar schema `schema` builds,
/// the slowest part of a load.
fn first_start_checks(
    settings: &Settings,
    compiled: &[CompiledTool],
    principals: &Principals,
    schema: &SchemaBuild,
) -> anyhow::Result<()> {
    load_policies(settings, compiled, principals, schema)?;
    load_budgets(settings, principals)?;
    Ok(())
}

/// The start-up error for specs that cannot be served, their problems printed.
fn refuse_specs(settings: &Settings, e: CatalogError) -> anyhow::Error {
    match e {
        CatalogError::Specs(issues) => {
            print_issues(&issues);
            anyhow::anyhow!(
                "refusing to start: {} problem(s) in the tool specs under {} (fix them, then run `tollgate check`)",
                issues.len(),
                settings.specs.display()
            )
        }
        e => e.into(),
    }
}

/// The `budgets:` section of the config, each problem printed.
fn load_budgets(settings: &Settings, principals: &Principals) -> anyhow::Result<Budgets> {
    Budgets::new(&settings.budgets, principals).map_err(|problems| {
        for p in &problems {
            eprintln!("error: config: {p}");
        }
        anyhow::anyhow!(
            "refusing to start: {} problem(s) in the `budgets:` section of the config",
            problems.len()
        )
    })
}

/// Load and validate the policy set for `tools`, printing every problem.
/// `schema` is used when it was started for these tools' argument types.
pub fn load_policies<'a, T: Borrow<CompiledTool> + 'a>(
    settings: &Settings,
    tools: impl IntoIterator<Item = &'a T>,
    principals: &Principals,
    schema: &SchemaBuild,
) -> anyhow::Result<PolicyEngine> {
    PolicyEngine::load_with(&settings.policies, tools, Some(principals), schema).map_err(|issues| {
        print_policy_issues(settings, &issues);
        anyhow::anyhow!(
            "refusing to start: {} problem(s) in the policies under {} (fix them, then run `tollgate check`)",
            issues.len(),
            settings.policies.display()
        )
    })
}

/// One line per policy problem, with the policies directory in front of
/// the file name so the path can be opened as printed.
pub fn print_policy_issues(settings: &Settings, issues: &[PolicyIssue]) {
    for issue in issues {
        let mut issue = issue.clone();
        if issue.file.ends_with(".cedar") {
            issue.file = settings.policies.join(&issue.file).display().to_string();
        }
        eprintln!("error: {issue}");
    }
}

/// The identity of a locally configured caller (stdio client or CLI user).
pub fn local_identity(settings: &Settings, auth: &str) -> anyhow::Result<Identity> {
    let principals = Principals::load(&settings.principals)?;
    let known = || principals.names().collect::<Vec<_>>().join(", ");
    let Some(name) = settings.principal.clone() else {
        bail!(
            "no principal given: pass --principal NAME (or set TOLLGATE_PRINCIPAL, or `principal:` in the config file); principals in {}: {}",
            settings.principals.display(),
            known()
        );
    };
    if principals.roles_of(&name).is_none() {
        bail!(
            "unknown principal `{name}`: it is not in {} (known: {})",
            settings.principals.display(),
            known()
        );
    }
    Ok(Identity::local(name, auth))
}

pub async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    Store::open(&settings.db)
        .await
        .with_context(|| format!("cannot use the database {}", settings.db.display()))
}

/// Record the spec directory's versions in the registry (what start-up does),
/// so `tools` commands see the files as they are now. Problems in the specs
/// are reported as a warning: the registry is then shown as last recorded.
pub async fn sync_registry(settings: &Settings, store: &Store) -> anyhow::Result<()> {
    let principals = Principals::load(&settings.principals).ok();
    // Without secrets, specs that use them fail below and the registry is
    // shown as last recorded; that is enough for `tools` commands.
    let secrets = load_secrets(settings).unwrap_or_else(|e| {
        eprintln!("warning: {e:#}");
        Arc::default()
    });
    match check_dir(
        &settings.specs,
        principals.as_ref(),
        &http_client()?,
        &secrets,
    ) {
        Ok((loaded, _)) => {
            store.sync_specs(&spec_files(&loaded)).await?;
        }
        Err(CatalogError::Specs(issues)) => eprintln!(
            "warning: {} problem(s) in the tool specs (run `tollgate check`); showing the registry as last recorded",
            issues.len()
        ),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

pub fn print_issues(issues: &[SpecIssue]) {
    for issue in issues {
        eprintln!("error: {issue}");
    }
}

/// The server's secrets: `TOLLGATE_SECRET_*` and `secrets_dir`, with the
/// receipt HMAC key file next to the database.
pub fn load_secrets(settings: &Settings) -> anyhow::Result<Arc<Secrets>> {
    let secrets = Secrets::load(settings.secrets_dir.as_deref())
        .context("cannot load secrets")?
        .with_key_file(secrets::key_file_for(&settings.db));
    Ok(Arc::new(secrets))
}

/// The shared HTTP client for `http` tools.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    executor::http_client().context("cannot set up the HTTP client for http tools")
}
