//! `tollgate serve`: MCP over stdio, or over Streamable HTTP with `--http`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::Global;
use super::app::{App, local_identity};
use tollgate::auth::Authenticator;
use tollgate::http::{DEFAULT_DRAIN_TIMEOUT, HttpServer};
use tollgate::pipeline::{Identity, Origin};
use tollgate::server::{Caller, TollgateServer, definitions};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Identity of the stdio client (or, with --insecure-no-auth, of every
    /// HTTP caller); must be listed in the principals file.
    #[arg(long, env = "TOLLGATE_PRINCIPAL", value_name = "NAME")]
    pub principal: Option<String>,
    /// Serve MCP Streamable HTTP at http://ADDR/mcp instead of stdio.
    /// `--http` alone binds 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    pub http: Option<SocketAddr>,
    /// Serve /metrics on this address instead of the main HTTP address.
    #[arg(long, value_name = "ADDR", requires = "http")]
    pub metrics: Option<SocketAddr>,
    /// Accept HTTP calls without credentials, all as --principal. Refused on
    /// non-loopback addresses. For local experiments only.
    #[arg(long, requires = "http")]
    pub insecure_no_auth: bool,
}

/// How often idle rate-limit keys are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<u8> {
    let settings = global.settings(args.principal.clone())?;
    if let Some(addr) = args.http {
        if args.insecure_no_auth && !addr.ip().is_loopback() {
            bail!(
                "refusing --insecure-no-auth on {addr}: it is not a loopback address, so anyone who can reach it could call tools as `{}`",
                settings.principal.as_deref().unwrap_or("?")
            );
        }
        let anonymous = match args.insecure_no_auth {
            true => Some(local_identity(&settings, "none")?),
            false => None,
        };
        return serve_http(&settings, addr, args.metrics, anonymous).await;
    }
    let identity = local_identity(&settings, "stdio")?;
    let app = App::start(&settings).await?;
    tracing::info!(
        tools = app.pipeline.catalog.len(),
        principal = %identity.principal,
        db = %settings.db.display(),
        "tollgate serving MCP over stdio"
    );
    let pruner = spawn_pruner(&app);
    let origin = Origin {
        transport: "stdio".into(),
        session: Some(uuid::Uuid::now_v7().to_string()),
    };
    let tools = Arc::new(definitions(&app.pipeline.catalog));
    let server = TollgateServer::new(app.pipeline.clone(), tools, Caller::Fixed(identity), origin);
    let mut serving = tokio::spawn(server.serve_stdio());
    let served = tokio::select! {
        r = &mut serving => r.context("stdio server task failed")?.map_err(anyhow::Error::from),
        _ = shutdown_signal() => {
            tracing::info!("signal received; draining running calls");
            Ok(())
        }
    };
    // Client gone or signal: either way, calls still running finish (or are
    // interrupted) and are receipted before the writer stops.
    app.pipeline.shutdown.drain(DEFAULT_DRAIN_TIMEOUT).await;
    serving.abort();
    pruner.abort();
    app.shutdown().await;
    served?;
    Ok(0)
}

async fn serve_http(
    settings: &tollgate::config::Settings,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    anonymous: Option<Identity>,
) -> anyhow::Result<u8> {
    let app = App::start(settings).await?;
    let auth = match anonymous {
        Some(_) => None,
        None => Some(
            Authenticator::new(&settings.auth, app.store.pool().clone(), app.http.clone())
                .await
                .context("cannot set up authentication")?,
        ),
    };
    let server = HttpServer {
        addr,
        metrics_addr,
        settings: settings.http.clone(),
        auth: auth.clone(),
        anonymous,
        store: app.store.clone(),
        metrics: Some(tollgate::metrics::install()),
    };
    let pruner = spawn_pruner(&app);
    let stop = CancellationToken::new();
    let signals = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("signal received");
            stop.cancel();
        })
    };
    let served = server.run(app.pipeline.clone(), stop).await;
    signals.abort();
    pruner.abort();
    // Every receipt, including interrupted calls', is flushed before exit,
    // and so are API keys' last-used times.
    if let Some(auth) = auth {
        auth.flush().await;
    }
    app.shutdown().await;
    served?;
    tracing::info!("stopped; all receipts committed");
    Ok(0)
}

fn spawn_pruner(app: &App) -> tokio::task::JoinHandle<()> {
    let pipeline = app.pipeline.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tick.tick().await;
            pipeline.limiter.prune();
        }
    })
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
