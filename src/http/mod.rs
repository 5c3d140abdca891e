//! MCP over Streamable HTTP, plus the operations endpoints.
//!
//! ```text
//! /mcp                                   auth layer → rmcp StreamableHttpService → TollgateServer → Pipeline
//! /healthz /readyz /metrics              operations (metrics optionally on their own address)
//! /.well-known/oauth-protected-resource  RFC 9728 metadata, when JWT auth is configured
//! ```
//!
//! The HTTP layer only establishes *who* is calling. Everything else
//! (permissions, limits, receipts) is the same pipeline stdio uses.

mod guard;
pub mod jsonrpc;
mod ops;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::pipeline::{Identity, Origin, Pipeline};
use crate::server::{Caller, TollgateServer, definitions};
use crate::store::Store;

pub use guard::FailureLimiter;

/// Default largest request body; the arguments limit applies inside it.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Time between the end of the drain and closing sessions, so replies
/// already produced are written out.
const REPLY_FLUSH: Duration = Duration::from_millis(200);
/// Default time running calls get to finish on SIGTERM.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The `http:` section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Accepted `Host` values (DNS-rebinding protection). Default: the
    /// localhost forms of the bound address.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Accepted browser `Origin`s, e.g. `https://app.example.com:443`.
    /// Default: the localhost forms of the bound address. Requests without an
    /// `Origin` header (non-browser clients) are not affected.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Largest request body in bytes (bigger → 413). Default 4 MiB.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// How long running calls get to finish on SIGTERM, e.g. `10s`.
    #[serde(default)]
    pub drain_timeout: Option<String>,
    /// Failed authentications allowed per client address per minute before
    /// that address gets 429 for a while. Default 20.
    #[serde(default)]
    pub auth_failures_per_minute: Option<u32>,
    /// Answer simple request/response calls with `application/json` instead
    /// of an SSE stream. This is the spec's stateless mode: no
    /// `Mcp-Session-Id` sessions are kept. Default false (sessions + SSE).
    #[serde(default)]
    pub json_response: bool,
}

/// Everything `serve --http` needs besides the pipeline.
pub struct HttpServer {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub settings: HttpSettings,
    /// `Some`: credentials are required on /mcp. `None`: every request is
    /// this fixed identity (`--insecure-no-auth`, loopback only).
    pub auth: Option<Authenticator>,
    pub anonymous: Option<Identity>,
    pub store: Store,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve on {0} without authentication: it is not a loopback address, so anyone who can reach it could call tools\n  hint: drop --insecure-no-auth, and create an API key (`tollgate keys create`) or configure `auth.jwt`"
    )]
    Unauthenticated(SocketAddr),
    #[error(
        "refusing to serve on {0}: no credential could ever be accepted (no active API key and no `auth.jwt` configured)\n  hint: create an API key with `tollgate keys create --principal NAME`, or configure `auth.jwt`, or bind 127.0.0.1"
    )]
    NoCredentials(SocketAddr),
    #[error("invalid http setting `{field}`: {message}")]
    Setting {
        field: &'static str,
        message: String,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

impl HttpServer {
    /// Serve until `stop` fires, then drain running calls and return.
    pub async fn run(
        self,
        pipeline: Arc<Pipeline>,
        stop: CancellationToken,
    ) -> Result<(), HttpError> {
        let loopback = self.addr.ip().is_loopback();
        match (&self.auth, loopback) {
            (None, false) => return Err(HttpError::Unauthenticated(self.addr)),
            (Some(auth), false) if !auth.jwt_enabled() && !auth.has_active_keys().await => {
                return Err(HttpError::NoCredentials(self.addr));
            }
            _ => {}
        }
        let drain_timeout = match &self.settings.drain_timeout {
            None => DEFAULT_DRAIN_TIMEOUT,
            Some(t) => match humantime::parse_duration(t) {
                Ok(d) if d <= Duration::from_secs(3600) => d,
                Ok(_) => {
                    return Err(HttpError::Setting {
                        field: "http.drain_timeout",
                        message: format!("`{t}` is longer than the 1h maximum"),
                    });
                }
                Err(e) => {
                    return Err(HttpError::Setting {
                        field: "http.drain_timeout",
                        message: format!("`{t}` is not a duration ({e}); write e.g. 10s"),
                    });
                }
            },
        };
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| HttpError::Bind {
                addr: self.addr,
                source,
            })?;
        let addr = listener.local_addr().map_err(HttpError::Serve)?;
        let sessions_stop = CancellationToken::new();
        let app = self.router(pipeline.clone(), addr, sessions_stop.clone())?;
        if let Some(maddr) = self.metrics_addr {
            let metrics_listener =
                tokio::net::TcpListener::bind(maddr)
                    .await
                    .map_err(|source| HttpError::Bind {
                        addr: maddr,
                        source,
                    })?;
            let metrics_app = ops::metrics_router(self.metrics.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = axum::serve(metrics_listener, metrics_app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            });
        }
        tracing::info!(%addr, tools = pipeline.catalog.len(), "tollgate serving MCP over HTTP at /mcp");
        // Nagle + delayed ACK would hold each small SSE write ~40 ms.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let shutdown = pipeline.shutdown.clone();
        let stopping = stop.clone();
        let server = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            stopping.cancelled().await;
            tracing::info!(
                inflight = shutdown.inflight(),
                "shutting down: draining running calls"
            );
            let interrupted = shutdown.drain(drain_timeout).await;
            if interrupted > 0 {
                tracing::warn!(interrupted, "calls interrupted at the drain deadline");
            }
            // Give the last replies (interrupted calls' included) a moment to
            // reach their streams, then close sessions so open SSE streams
            // end and connections can close.
            tokio::time::sleep(REPLY_FLUSH).await;
            sessions_stop.cancel();
        });
        server.await.map_err(HttpError::Serve)
    }

    fn router(
        &self,
        pipeline: Arc<Pipeline>,
        bound: SocketAddr,
        sessions_stop: CancellationToken,
    ) -> Result<Router, HttpError> {
        let port = bound.port();
        let mut hosts = self.settings.allowed_hosts.clone();
        let mut origins = self.settings.allowed_origins.clone();
        if hosts.is_empty() {
            hosts = local_forms(bound, |h| format!("{h}:{port}"));
            hosts.extend(local_forms(bound, |h| {
                h.trim_matches(['[', ']']).to_string()
            }));
        }
        if origins.is_empty() {
            origins = local_forms(bound, |h| format!("http://{h}:{port}"));
        }
        let max_body = self
            .settings
            .max_body_bytes
            .unwrap_or(DEFAULT_MAX_BODY_BYTES)
            .max(pipeline.max_args_bytes.saturating_add(64 * 1024));
        let config = StreamableHttpServerConfig::default()
            .with_allowed_hosts(hosts)
            .with_allowed_origins(origins)
            .enforce_origin_validation()
            .with_max_request_body_bytes(max_body)
            .with_legacy_session_mode(!self.settings.json_response)
            .with_json_response(self.settings.json_response)
            .with_cancellation_token(sessions_stop);
        let tools = Arc::new(definitions(&pipeline.catalog));
        let caller = match &self.anonymous {
            Some(identity) => Caller::Fixed(identity.clone()),
            None => Caller::PerRequest,
        };
        let factory_pipeline = pipeline.clone();
        let origin = Origin {
            transport: "http".into(),
            session: None,
        };
        let mcp = StreamableHttpService::new(
            move || {
                Ok(TollgateServer::new(
                    factory_pipeline.clone(),
                    tools.clone(),
                    caller.clone(),
                    origin.clone(),
                )
                .counted())
            },
            LocalSessionManager::default().into(),
            config,
        );
        let per_minute = self.settings.auth_failures_per_minute.unwrap_or(20);
        let guard = guard::Guard::new(
            self.auth.clone(),
            pipeline.shutdown.clone(),
            FailureLimiter::new(per_minute).ok_or(HttpError::Setting {
                field: "http.auth_failures_per_minute",
                message: "must be at least 1".into(),
            })?,
        );
        // Layers run outside-in: the guard first (no body is read for an
        // unauthenticated caller), then the envelope check.
        let mcp = Router::new()
            .nest_service("/mcp", mcp)
            .layer(axum::middleware::from_fn_with_state(
                jsonrpc::BodyLimit(max_body),
                jsonrpc::check,
            ))
            .layer(axum::middleware::from_fn_with_state(
                guard,
                guard::authenticate,
            ));
        let ops = ops::router(ops::OpsState {
            store: self.store.clone(),
            pipeline,
            metrics: if self.metrics_addr.is_none() {
                self.metrics.clone()
            } else {
                None
            },
            resource_metadata: self.auth.as_ref().and_then(|a| a.resource_metadata()),
            readiness: ops::Readiness::default(),
        });
        Ok(mcp.merge(ops))
    }
}

/// The localhost spellings of a bound address (`localhost`, `127.0.0.1`,
/// `[::1]`, or the bound IP itself when it is not a wildcard).
fn local_forms(bound: SocketAddr, f: impl Fn(&str) -> String) -> Vec<String> {
    let mut hosts = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "[::1]".to_string(),
    ];
    let ip = bound.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        hosts.push(match ip {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    hosts.iter().map(|h| f(h)).collect()
}
