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
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::json;

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
///
/// Every POST body passes through here before rmcp decodes it, so this
/// reads it as a [`Parsed`], which keeps only the *kind* of each member and
/// copies nothing: building a `serde_json::Value` of every request only to
/// look at five members was about 2 % of a governed call's CPU. Nested
/// values are still walked through serde_json's `deserialize_any`, so the
/// same bodies are refused as before, its depth limit included (a unit test
/// compares the two on hostile bodies).
pub fn envelope(bytes: &[u8]) -> Result<(), (i64, String)> {
    let body: Parsed = serde_json::from_slice(bytes).map_err(|e| {
        (
            -32700,
            format!("Parse error: the body is not valid JSON ({e})"),
        )
    })?;
    let Parsed(Kind::Object, msg) = body else {
        return Err((
            -32600,
            "Invalid Request: expected one JSON-RPC message object (batches are not supported)"
                .into(),
        ));
    };
    if msg.jsonrpc != Some(Kind::Version2) {
        return Err((-32600, "Invalid Request: `jsonrpc` must be \"2.0\"".into()));
    }
    // JSON-RPC 2.0: params are structured, ids are strings, numbers or null.
    if msg
        .params
        .is_some_and(|p| !matches!(p, Kind::Object | Kind::Array))
    {
        return Err((
            -32600,
            "Invalid Request: `params` must be an object or an array".into(),
        ));
    }
    if msg.id.is_some_and(|id| {
        !matches!(
            id,
            Kind::String | Kind::Version2 | Kind::Number | Kind::Null
        )
    }) {
        return Err((
            -32600,
            "Invalid Request: `id` must be a string, a number or null".into(),
        ));
    }
    let is_request = matches!(msg.method, Some(Kind::String | Kind::Version2));
    let is_response = msg.id.is_some() && msg.has_result_or_error;
    if !is_request && !is_response {
        return Err((-32600, "Invalid Request: a message needs a string `method` (request or notification) or an `id` with `result`/`error` (response)".into()));
    }
    Ok(())
}

/// What [`envelope`] needs to know of a JSON value: its kind, and for a
/// string whether it is exactly `"2.0"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Bool,
    Number,
    String,
    /// The string `"2.0"`.
    Version2,
    Array,
    Object,
}

/// The members of a message object that [`envelope`] looks at. As in a
/// `serde_json::Value`, a member given twice counts with its last value.
#[derive(Debug, Default)]
struct Members {
    jsonrpc: Option<Kind>,
    method: Option<Kind>,
    params: Option<Kind>,
    id: Option<Kind>,
    has_result_or_error: bool,
}

/// A whole body: its kind, and if it is an object, the members
/// [`envelope`] looks at.
struct Parsed(Kind, Members);

/// A member name of a message object, read without copying it.
enum Member {
    Jsonrpc,
    Method,
    Params,
    Id,
    ResultOrError,
    Other,
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(KindVisitor(None))
    }
}

impl<'de> Deserialize<'de> for Parsed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Parsed, D::Error> {
        let mut members = Members::default();
        let kind = d.deserialize_any(KindVisitor(Some(&mut members)))?;
        Ok(Parsed(kind, members))
    }
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Member, D::Error> {
        d.deserialize_str(MemberVisitor)
    }
}

/// Reads any value as its [`Kind`], walking arrays and objects element by
/// element (each through `deserialize_any` again, so serde_json's depth
/// limit applies) without keeping them. With `Some(members)` (the body
/// itself), an object's members are noted there.
struct KindVisitor<'m>(Option<&'m mut Members>);

impl<'de> Visitor<'de> for KindVisitor<'_> {
    type Value = Kind;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Bool)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }
    fn visit_str<E>(self, s: &str) -> Result<Kind, E> {
        Ok(if s == "2.0" {
            Kind::Version2
        } else {
            Kind::String
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        while seq.next_element::<Kind>()?.is_some() {}
        Ok(Kind::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let Some(m) = self.0 else {
            // Keys are read as strings too, not skipped: skipping a string
            // skips its UTF-8 check, which a `Value` made.
            while map.next_entry::<Kind, Kind>()?.is_some() {}
            return Ok(Kind::Object);
        };
        while let Some(member) = map.next_key::<Member>()? {
            let kind = map.next_value::<Kind>()?;
            match member {
                Member::Jsonrpc => m.jsonrpc = Some(kind),
                Member::Method => m.method = Some(kind),
                Member::Params => m.params = Some(kind),
                Member::Id => m.id = Some(kind),
                Member::ResultOrError => m.has_result_or_error = true,
                Member::Other => {}
            }
        }
        Ok(Kind::Object)
    }
}

struct MemberVisitor;

impl Visitor<'_> for MemberVisitor {
    type Value = Member;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a member name")
    }
    fn visit_str<E>(self, s: &str) -> Result<Member, E> {
        Ok(match s {
            "jsonrpc" => Member::Jsonrpc,
            "method" => Member::Method,
            "params" => Member::Params,
            "id" => Member::Id,
            "result" | "error" => Member::ResultOrError,
            _ => Member::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check as it was written on `serde_json::Value` (before
    /// [`Parsed`]); [`envelope`] must answer every body the same way.
    fn envelope_on_value(bytes: &[u8]) -> Result<(), i64> {
        use serde_json::Value;
        let value: Value = serde_json::from_slice(bytes).map_err(|_| -32700)?;
        let Value::Object(msg) = value else {
            return Err(-32600);
        };
        if msg.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(-32600);
        }
        if msg
            .get("params")
            .is_some_and(|p| !p.is_object() && !p.is_array())
        {
            return Err(-32600);
        }
        if msg
            .get("id")
            .is_some_and(|id| !(id.is_string() || id.is_number() || id.is_null()))
        {
            return Err(-32600);
        }
        let is_request = msg.get("method").is_some_and(Value::is_string);
        let is_response =
            msg.contains_key("id") && (msg.contains_key("result") || msg.contains_key("error"));
        if !is_request && !is_response {
            return Err(-32600);
        }
        Ok(())
    }

    #[test]
    fn answers_as_the_value_based_check_did() {
        let deep = |n: usize| {
            format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"a":{}1{}}}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let mut bodies: Vec<Vec<u8>> = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hi"}}}"#,
            r#"{"jsonrpc":"2.0","id":"2.0","method":"2.0"}"#,
            r#"{"jsonrpc":"1.0","jsonrpc":"2.0","method":"x"}"#,
            r#"{"jsonrpc":"2.0","jsonrpc":"1.0","method":"x"}"#,
            r#"{"jsonrpc":"2.0","method":"x","method":1}"#,
            r#"{"jsonrpc":"2.0","id":1,"error":null}"#,
            r#"{"jsonrpc":"2.0","id":null,"result":1}"#,
            r#"{"jsonrpc":"2.0","id":true,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#,
            r#"{"jsonrpc":"2.0","method":"x","params":null}"#,
            r#"{"jsonrpc":"2.0","method":"x","params":[1,{"a":null}]}"#,
            r#"{"jsonrpc":"2\u002e0","method":"x"}"#,
            r#"{"json\u0072pc":"2.0","method":"x"}"#,
            r#"{"jsonrpc":"2.0","method":"x","params":{"n":1e400}}"#,
            r#"{"jsonrpc":"2.0","method":"x","params":{"s":"\ud800"}}"#,
            r#"{"jsonrpc":"2.0","method":"x"} trailing"#,
            r#"{"jsonrpc":"2.0","method":"x"}  "#,
            r#""2.0""#,
            "null",
            "12",
            "[]",
            "",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        bodies.push(deep(100).into_bytes());
        bodies.push(deep(200).into_bytes());
        // Invalid UTF-8 in a nested key, and in a nested string.
        bodies.push(b"{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":{\"\xff\":1}}".to_vec());
        bodies.push(b"{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":[\"\xc3\x28\"]}".to_vec());
        for body in &bodies {
            assert_eq!(
                envelope(body).map_err(|(code, _)| code),
                envelope_on_value(body),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

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
