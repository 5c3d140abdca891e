//! A fake payments HTTP API: the upstream that the `examples/refund-desk/`
//! tools call, and that tollgate's tests use as a dangerous, non-idempotent
//! service to protect.
//!
//! It keeps refunds in memory and forgets them on exit. It deliberately does
//! **not** deduplicate: two identical `POST /refunds` make two refunds, so a
//! retried call that tollgate fails to stop shows up here twice.
//!
//! ```sh
//! cargo run --example payments_api -- --port 8088 --api-key sk_test_123
//! curl -H 'Authorization: Bearer sk_test_123' http://127.0.0.1:8088/refunds
//! ```
//!
//! Endpoints (every request needs `Authorization: Bearer <key>`, else 401):
//!
//! - `POST /refunds` with `{"order_id":"ord_…","amount_cents":1200,"reason":"…"}`:
//!   201 with the refund (`refund_id`, `status`, `fee_usd`, …); 422 naming
//!   the bad field; 400 when the body is not JSON.
//! - `GET /refunds`: `{"refunds":[…]}`, every refund in the order received.
//! - `GET /debug/headers`: `{"headers":{…}}`, the request's headers echoed
//!   back (Authorization included), so the redaction of secrets in tool
//!   output can be shown and tested.
//!
//! On start it prints exactly one line to stdout,
//! `payments_api listening on http://127.0.0.1:PORT` (tests read the port
//! from it; `--port 0` picks a free one). Logs go to stderr
//! (`PAYMENTS_API_LOG=debug` for more).

use std::io::{IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use clap::Parser;
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Parser, Debug)]
#[command(
    about = "A fake payments API (in-memory refunds, no deduplication) for the refund-desk example and tests",
    after_help = "Example:\n  cargo run --example payments_api -- --port 8088 --api-key sk_test_123"
)]
struct Args {
    /// Port to listen on, on 127.0.0.1 (0 picks a free port).
    #[arg(long, default_value_t = 8088)]
    port: u16,
    /// The API key callers must send as `Authorization: Bearer KEY`.
    #[arg(long, env = "PAYMENTS_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Wait this many milliseconds before answering `POST /refunds`
    /// (for concurrency tests).
    #[arg(long, value_name = "N", default_value_t = 0)]
    delay_ms: u64,
}

/// One recorded refund, as `GET /refunds` lists it.
#[derive(Debug, Clone, Serialize)]
struct Refund {
    refund_id: String,
    order_id: String,
    amount_cents: u64,
    reason: String,
    status: &'static str,
    fee_usd: f64,
    received_at: String,
}

/// The fee this fake provider charges per refund.
const FEE_USD: f64 = 0.3;

struct AppState {
    /// SHA-256 of the expected key: comparing fixed-length digests in
    /// constant time reveals neither the key's content nor its length.
    key_digest: [u8; 32],
    delay: Duration,
    refunds: Mutex<Vec<Refund>>,
}

type Shared = Arc<AppState>;

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// An error answer: `{"error": message}`, plus `field` when one request
/// field is to blame.
struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// 422 for one bad field: `{"error":"FIELD: MESSAGE","field":"FIELD"}`.
    fn field(field: &'static str, message: &str) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: format!("{field}: {message}"),
            field: Some(field),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let Some(field) = self.field {
            body["field"] = json!(field);
        }
        (self.status, Json(body)).into_response()
    }
}

/// Refuses every request without the right `Authorization: Bearer <key>`.
async fn require_key(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(digest);
    let ok = presented.is_some_and(|d| bool::from(d.ct_eq(&state.key_digest)));
    if ok {
        return next.run(request).await;
    }
    tracing::info!(
        method = %request.method(),
        path = request.uri().path(),
        "refused: missing or wrong API key"
    );
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong API key").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// A validated `POST /refunds` body.
struct RefundRequest {
    order_id: String,
    amount_cents: u64,
    reason: String,
}

/// Checks a `POST /refunds` body; the error names the field at fault.
fn parse_refund(body: &[u8]) -> Result<RefundRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body must be a JSON object with order_id, amount_cents and reason",
        ));
    };
    let invalid = ApiError::field;
    let order_id = match fields.get("order_id") {
        None => return Err(invalid("order_id", "is required")),
        Some(Value::String(s)) if s.starts_with("ord_") && s.len() > 4 => s.clone(),
        Some(_) => {
            return Err(invalid(
                "order_id",
                "must be a string starting with `ord_`, e.g. \"ord_123\"",
            ));
        }
    };
    let amount_cents = match fields.get("amount_cents") {
        None => return Err(invalid("amount_cents", "is required")),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                return Err(invalid(
                    "amount_cents",
                    "must be an integer of at least 1 (cents, e.g. 1200 for 12.00)",
                ));
            }
        },
    };
    let reason = match fields.get("reason") {
        None => return Err(invalid("reason", "is required")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("reason", "must be a string")),
    };
    Ok(RefundRequest {
        order_id,
        amount_cents,
        reason,
    })
}

/// `POST /refunds`: records a refund. Never deduplicates.
async fn create_refund(State(state): State<Shared>, body: Bytes) -> Response {
    let request = match parse_refund(&body) {
        Ok(r) => r,
        Err(refused) => return refused.into_response(),
    };
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    let refund = {
        let mut refunds = match state.refunds.lock() {
            Ok(guard) => guard,
            // A panic elsewhere cannot leave a half-pushed Vec: keep going.
            Err(poisoned) => poisoned.into_inner(),
        };
        let refund = Refund {
            refund_id: format!("re_{}", refunds.len() + 1),
            order_id: request.order_id,
            amount_cents: request.amount_cents,
            reason: request.reason,
            status: "succeeded",
            fee_usd: FEE_USD,
            received_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        refunds.push(refund.clone());
        refund
    };
    tracing::info!(
        refund_id = refund.refund_id,
        order_id = refund.order_id,
        amount_cents = refund.amount_cents,
        "refund recorded"
    );
    let body = json!({
        "refund_id": refund.refund_id,
        "order_id": refund.order_id,
        "amount_cents": refund.amount_cents,
        "reason": refund.reason,
        "status": refund.status,
        "fee_usd": refund.fee_usd,
    });
    (StatusCode::CREATED, Json(body)).into_response()
}

/// `GET /refunds`: every refund, oldest first.
async fn list_refunds(State(state): State<Shared>) -> Response {
    let refunds = match state.refunds.lock() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    Json(json!({ "refunds": refunds })).into_response()
}

/// `GET /debug/headers`: the request headers, like httpbin's `/headers`.
/// Repeated headers are joined with `, `.
async fn debug_headers(headers: HeaderMap) -> Response {
    let mut echoed = Map::new();
    for (name, value) in &headers {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match echoed.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&text);
            }
            _ => {
                echoed.insert(name.as_str().to_owned(), Value::String(text));
            }
        }
    }
    Json(json!({ "headers": echoed })).into_response()
}

async fn not_found() -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; try POST /refunds, GET /refunds or GET /debug/headers",
    )
    .into_response()
}

fn router(state: Shared) -> Router {
    Router::new()
        .route("/refunds", get(list_refunds).post(create_refund))
        .route("/debug/headers", get(debug_headers))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), require_key))
        .with_state(state)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PAYMENTS_API_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let key = match args.api_key.as_deref() {
        Some(k) if !k.trim().is_empty() => k.to_owned(),
        _ => {
            eprintln!(
                "payments_api: no API key given; pass --api-key KEY or set PAYMENTS_API_KEY \
                 (callers must then send `Authorization: Bearer KEY`)"
            );
            return std::process::ExitCode::from(2);
        }
    };
    let state = Arc::new(AppState {
        key_digest: digest(key.as_bytes()),
        delay: Duration::from_millis(args.delay_ms),
        refunds: Mutex::new(Vec::new()),
    });

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("payments_api: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            eprintln!("payments_api: cannot read the bound address: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    {
        let mut stdout = std::io::stdout().lock();
        let printed = writeln!(stdout, "payments_api listening on http://127.0.0.1:{port}")
            .and_then(|()| stdout.flush());
        if let Err(e) = printed {
            eprintln!("payments_api: cannot write to stdout: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    tracing::info!(port, delay_ms = args.delay_ms, "payments_api started");

    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await;
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payments_api: server error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
