//! `tollgate serve`: MCP over stdio.

use std::time::Duration;

use clap::Args;

use super::Global;
use super::app::{App, local_identity};
use tollgate::pipeline::Origin;
use tollgate::server::TollgateServer;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Identity of the stdio client; must be listed in the principals file.
    #[arg(long, env = "TOLLGATE_PRINCIPAL", value_name = "NAME")]
    pub principal: Option<String>,
}

/// How often idle rate-limit keys are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<u8> {
    let settings = global.settings(args.principal)?;
    let identity = local_identity(&settings, "stdio")?;
    let app = App::start(&settings).await?;
    tracing::info!(
        tools = app.pipeline.catalog.len(),
        principal = %identity.principal,
        db = %settings.db.display(),
        "tollgate serving MCP over stdio"
    );
    let pruner = {
        let pipeline = app.pipeline.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tick.tick().await;
                pipeline.limiter.prune();
            }
        })
    };
    let origin = Origin {
        transport: "stdio".into(),
        session: Some(uuid::Uuid::now_v7().to_string()),
    };
    let server = TollgateServer::new(app.pipeline.clone(), identity, origin);
    let served = tokio::select! {
        r = server.serve_stdio() => r.map_err(anyhow::Error::from),
        _ = shutdown_signal() => {
            tracing::info!("signal received; flushing receipts");
            Ok(())
        }
    };
    pruner.abort();
    app.shutdown().await;
    served?;
    Ok(0)
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
