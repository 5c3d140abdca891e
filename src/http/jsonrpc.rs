//! Malformed JSON-RPC gets a JSON-RPC error, not a plain-text 4xx.
//!
//! rmcp answers a body it cannot decode with a bare HTTP error. Clients
//! (and the MCP spec) expect a JSON-RPC `-32700 Parse error` or
//! `-32600 Invalid Request` object, so this layer reads the POST body once
//! (bounded by the body limit, so it is also where 413 comes from), checks
//! the envelope, and passes well-formed messages on untouched.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// Largest body accepted, in bytes.
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

pub async fn check(
    State(BodyLimit(limit)): State<BodyLimit>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) if is_length_limit(&e) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {limit} bytes (settings: http.max_body_bytes, max_args_bytes)\n"),
            )
                .into_response();
        }
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}\n"),
            )
                .into_response();
        }
    };
    if let Err((code, message)) = envelope(&bytes) {
        let error =
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            error.to_string(),
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Whether reading the body failed because it hit the size limit.
fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// Is `bytes` one JSON-RPC 2.0 message? Err = (code, message) to send back.
/// Public so the fuzz targets and property tests can drive it directly.
pub fn envelope(bytes: &[u8]) -> Result<(), (i64, String)> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        (
            -32700,
            format!("Parse error: the body is not valid JSON ({e})"),
        )
    })?;
    let Value::Object(msg) = value else {
        return Err((
            -32600,
            "Invalid Request: expected one JSON-RPC message object (batches are not supported)"
                .into(),
        ));
    };
    if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((-32600, "Invalid Request: `jsonrpc` must be \"2.0\"".into()));
    }
    // JSON-RPC 2.0: params are structured, ids are strings, numbers or null.
    if msg
        .get("params")
        .is_some_and(|p| !p.is_object() && !p.is_array())
    {
        return Err((
            -32600,
            "Invalid Request: `params` must be an object or an array".into(),
        ));
    }
    if msg
        .get("id")
        .is_some_and(|id| !(id.is_string() || id.is_number() || id.is_null()))
    {
        return Err((
            -32600,
            "Invalid Request: `id` must be a string, a number or null".into(),
        ));
    }
    let is_request = msg.get("method").is_some_and(Value::is_string);
    let is_response =
        msg.contains_key("id") && (msg.contains_key("result") || msg.contains_key("error"));
    if !is_request && !is_response {
        return Err((-32600, "Invalid Request: a message needs a string `method` (request or notification) or an `id` with `result`/`error` (response)".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_envelopes() {
        assert_eq!(envelope(b"{not json").unwrap_err().0, -32700);
        assert_eq!(envelope(b"[]").unwrap_err().0, -32600);
        assert_eq!(
            envelope(br#"{"jsonrpc":"1.0","method":"x"}"#)
                .unwrap_err()
                .0,
            -32600
        );
        assert_eq!(
            envelope(br#"{"jsonrpc":"2.0","id":1}"#).unwrap_err().0,
            -32600
        );
        assert!(envelope(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).is_ok());
        assert!(envelope(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_ok());
        assert!(envelope(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).is_ok());
        assert_eq!(
            envelope(br#"{"jsonrpc":"2.0","id":1,"method":"x","params":"s"}"#)
                .unwrap_err()
                .0,
            -32600
        );
        assert_eq!(
            envelope(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#)
                .unwrap_err()
                .0,
            -32600
        );
    }
}
