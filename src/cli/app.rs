//! Start-up shared by `serve` and `call`: principals, database, catalog,
//! receipt writer and pipeline, in that order, failing with a readable
//! message at the first thing that is wrong.

use std::sync::Arc;

use anyhow::{Context, bail};

use tollgate::catalog::{Catalog, CatalogError, check_dir, spec_files};
use tollgate::config::Settings;
use tollgate::executor;
use tollgate::pipeline::{Identity, Pipeline};
use tollgate::principals::Principals;
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
        let principals = Principals::load(&settings.principals)?;
        let store = open_store(settings).await?;
        let http = http_client()?;
        let catalog = match Catalog::load(&settings.specs, &principals, &store, &http).await {
            Ok(c) => c,
            Err(CatalogError::Specs(issues)) => {
                print_issues(&issues);
                bail!(
                    "refusing to start: {} problem(s) in the tool specs under {} (fix them, then run `tollgate check`)",
                    issues.len(),
                    settings.specs.display()
                );
            }
            Err(e) => return Err(e.into()),
        };
        if catalog.is_empty() {
            tracing::warn!(specs = %settings.specs.display(), "no tools are active; clients will see an empty tool list");
        }
        let (writer, handle) = ReceiptWriter::spawn(&store);
        let pipeline = Pipeline::new(
            Arc::new(catalog),
            Arc::new(principals),
            writer,
            settings.max_args_bytes,
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
    match check_dir(&settings.specs, principals.as_ref(), &http_client()?) {
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

/// The shared HTTP client for `http` tools.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    executor::http_client().context("cannot set up the HTTP client for http tools")
}
