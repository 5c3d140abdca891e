//! Operations endpoints: liveness, readiness, metrics, OAuth metadata.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::pipeline::Pipeline;
use crate::store::Store;

#[derive(Clone)]
pub struct OpsState {
    pub store: Store,
    pub pipeline: Arc<Pipeline>,
    /// `None` when metrics are served on their own address.
    pub metrics: Option<PrometheusHandle>,
    pub resource_metadata: Option<serde_json::Value>,
    pub readiness: Readiness,
}

/// The database probe behind `/readyz`, rate-limited: `/readyz` needs no
/// credentials, so a flood of probes must not compete with the receipt
/// writer for the write lock. At most one probe runs per second; others get
/// the last answer.
#[derive(Clone, Default)]
pub struct Readiness {
    last: Arc<tokio::sync::Mutex<Option<Probe>>>,
}

/// When the last probe ran, and what it found.
type Probe = (std::time::Instant, Result<(), String>);

impl Readiness {
    const FRESH: std::time::Duration = std::time::Duration::from_secs(1);
    const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

    async fn check(&self, store: &Store) -> Result<(), String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < Self::FRESH
        {
            return result.clone();
        }
        let result = match tokio::time::timeout(Self::PROBE_TIMEOUT, store.check_writable()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("the write lock was not free within 2 s".to_string()),
        };
        *last = Some((std::time::Instant::now(), result.clone()));
        result
    }
}

pub fn router(state: OpsState) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if state.metrics.is_some() {
        r = r.route("/metrics", get(metrics));
    }
    if state.resource_metadata.is_some() {
        r = r
            .route(
                "/.well-known/oauth-protected-resource",
                get(resource_metadata),
            )
            .route(
                "/.well-known/oauth-protected-resource/mcp",
                get(resource_metadata),
            );
    }
    r.with_state(state)
}

/// `/metrics` alone, for `--metrics ADDR`.
pub fn metrics_router(handle: Option<PrometheusHandle>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { render(handle.as_ref()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
}

/// Ready when specs are loaded, the database takes a write lock, and we are
/// not draining. A load balancer should stop sending calls otherwise.
async fn readyz(State(s): State<OpsState>) -> Response {
    if s.pipeline.shutdown.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    // Storage first: while receipts cannot be written no call runs, so the
    // load balancer should send traffic elsewhere until the writer recovers.
    let unwritable = match &*s.pipeline.writer.health().borrow() {
        crate::store::StorageHealth::Unhealthy { cause } => Some(cause.clone()),
        crate::store::StorageHealth::Healthy => None,
    };
    if let Some(cause) = unwritable {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("receipts cannot be written: {cause}\n"),
        )
            .into_response();
    }
    if s.pipeline.catalog.is_empty() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no tools loaded\n").into_response();
    }
    match s.readiness.check(&s.store).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database not writable: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<OpsState>) -> Response {
    render(s.metrics.as_ref())
}

fn render(handle: Option<&PrometheusHandle>) -> Response {
    match handle {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are disabled\n").into_response(),
    }
}

async fn resource_metadata(State(s): State<OpsState>) -> Response {
    match s.resource_metadata {
        Some(m) => axum::Json(m).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
