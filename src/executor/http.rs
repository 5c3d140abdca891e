//! The `http` executor: one HTTP request per call.
//!
//! Argument values are *encoded*, never spliced into structure: a URL
//! placeholder is percent-encoded as a component (everything but RFC 3986
//! unreserved characters), so `/`, `?`, `#` or `&` in a value cannot change
//! the path or add parameters; query values are form-encoded; the body is
//! JSON built by [`JsonTemplate`]. The one exception is a `url` that is
//! exactly one placeholder: then the value must be a whole http(s) URL.
//!
//! Responses are read with a byte cap, so a huge body costs at most
//! `max_response_bytes` of memory. Messages name the method, origin and path
//! but never the query string or header values, which may carry secrets.
//!
//! `{{ secret.NAME }}` works wherever an argument does except the scheme,
//! host and port (and a whole-URL placeholder): a secret may authenticate a
//! request, but it never decides where the request goes, and a host would
//! show in messages and DNS queries. Secret values are resolved when the
//! call runs and encoded exactly like arguments.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde_json::{Map, Value};

use super::{CompileContext, ExecError, ExecOutput};
use crate::secrets::{Resolved, Secrets};
use crate::spec::issue::SpecIssue;
use crate::template::{
    JsonTemplate, Known, Placeholder, Root, Scope, Template, member_path, value_text,
};

/// Everything except RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// How much of an error response's body a failure message shows.
const ERROR_BODY_BYTES: usize = 1024;

/// `run: { http: {..} }`
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct HttpSpec {
    /// HTTP method (default GET).
    #[serde(default)]
    pub method: HttpMethod,
    /// Absolute http(s) URL. Placeholders are percent-encoded as one
    /// component each. If the whole URL is one placeholder, the argument
    /// must itself be an absolute http(s) URL.
    pub url: String,
    /// Query parameters, name → template; form-encoded and appended to the
    /// URL. A parameter whose placeholder is absent is left out.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Request headers, name → template. A header whose placeholder is
    /// absent is left out.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// JSON request body, sent as `application/json`. A string that is
    /// exactly one placeholder takes the argument's JSON type.
    #[serde(default)]
    pub body: Option<Value>,
    /// Largest response body accepted, in bytes (default 1 MiB). A larger
    /// body fails the call rather than being held in memory.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

/// The HTTP methods a tool may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
}

impl HttpMethod {
    fn to_method(self) -> Method {
        match self {
            HttpMethod::Get => Method::GET,
            HttpMethod::Head => Method::HEAD,
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Patch => Method::PATCH,
            HttpMethod::Delete => Method::DELETE,
            HttpMethod::Options => Method::OPTIONS,
        }
    }
}

fn default_max_response_bytes() -> usize {
    1 << 20
}

/// A checked `http` spec.
#[derive(Debug, Clone)]
pub struct CompiledHttp {
    client: reqwest::Client,
    method: Method,
    url: UrlTemplate,
    query: Vec<(String, Template)>,
    headers: Vec<(HeaderName, Template)>,
    body: Option<JsonTemplate>,
    max_response_bytes: usize,
    secrets: Arc<Secrets>,
    /// The secrets the templates refer to, resolved at the start of each call.
    secret_names: Vec<String>,
}

#[derive(Debug, Clone)]
enum UrlTemplate {
    /// `url: "{{ args.url }}"`: the argument is the URL.
    Whole(Placeholder),
    /// Split at the first literal `?` or `#`, because path placeholders get
    /// an extra check (no empty, `.` or `..` values) that query ones don't.
    Parts { path: Template, rest: Template },
}

impl HttpSpec {
    pub fn compile(&self, ctx: &CompileContext) -> Result<CompiledHttp, Vec<SpecIssue>> {
        let mut issues = Vec::new();
        let props = ctx.known();
        let url = compile_url(&self.url, props, &mut issues);

        let mut query = Vec::new();
        for (name, source) in &self.query {
            let field = member_path("run.http.query", name);
            if name.is_empty() {
                issues.push(SpecIssue::at(&field, "query parameter name is empty"));
            }
            match Template::compile(source, &field, props) {
                Ok(t) => query.push((name.clone(), t)),
                Err(mut found) => issues.append(&mut found),
            }
        }

        let mut headers = Vec::new();
        for (name, source) in &self.headers {
            let field = member_path("run.http.headers", name);
            let header = match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    issues.push(
                        SpecIssue::at(&field, format!("`{name}` is not a valid HTTP header name"))
                            .hint("header names are letters, digits and `-`, e.g. X-Request-Id"),
                    );
                    None
                }
            };
            if let Some(h) = &header
                && (h == reqwest::header::CONTENT_LENGTH || h == reqwest::header::TRANSFER_ENCODING)
            {
                issues.push(SpecIssue::at(
                    &field,
                    format!("`{name}` is set by tollgate and cannot be overridden"),
                ));
            }
            match Template::compile(source, &field, props) {
                Ok(t) => {
                    if let Some(text) = t.as_literal()
                        && HeaderValue::from_str(&text).is_err()
                    {
                        issues.push(SpecIssue::at(
                            &field,
                            "the header value contains characters not allowed in HTTP headers",
                        ));
                    }
                    if let Some(h) = header {
                        headers.push((h, t));
                    }
                }
                Err(mut found) => issues.append(&mut found),
            }
        }

        let body = match &self.body {
            None => None,
            Some(value) => match JsonTemplate::compile(value, "run.http.body", props) {
                Ok(t) => Some(t),
                Err(mut found) => {
                    issues.append(&mut found);
                    None
                }
            },
        };

        if self.max_response_bytes == 0 {
            issues.push(
                SpecIssue::at(
                    "run.http.max_response_bytes",
                    "max_response_bytes must be greater than 0",
                )
                .hint("leave it out for the default of 1048576 (1 MiB)"),
            );
        }
        match url {
            Some(url) if issues.is_empty() => {
                let url_parts: Vec<&Template> = match &url {
                    UrlTemplate::Whole(_) => Vec::new(),
                    UrlTemplate::Parts { path, rest } => vec![path, rest],
                };
                let mut secret_names = super::secret_names(
                    url_parts
                        .into_iter()
                        .chain(query.iter().map(|(_, t)| t))
                        .chain(headers.iter().map(|(_, t)| t)),
                );
                for p in body.iter().flat_map(JsonTemplate::placeholders) {
                    if p.root == Root::Secret && !secret_names.contains(&p.path[0]) {
                        secret_names.push(p.path[0].clone());
                    }
                }
                Ok(CompiledHttp {
                    client: ctx.http.clone(),
                    method: self.method.to_method(),
                    url,
                    query,
                    headers,
                    body,
                    max_response_bytes: self.max_response_bytes,
                    secrets: ctx.secrets.clone(),
                    secret_names,
                })
            }
            _ => Err(issues),
        }
    }
}

fn compile_url(source: &str, props: Known<'_>, issues: &mut Vec<SpecIssue>) -> Option<UrlTemplate> {
    const FIELD: &str = "run.http.url";
    let template = match Template::compile(source, FIELD, props) {
        Ok(t) => t,
        Err(mut found) => {
            issues.append(&mut found);
            return None;
        }
    };
    if let Some(p) = template.as_single_placeholder() {
        if p.root == Root::Secret {
            issues.push(
                SpecIssue::at(
                    FIELD,
                    format!("the whole URL is the secret placeholder `{{{{ {p} }}}}`, which would put a secret in the scheme, host and port"),
                )
                .hint("write the scheme and host in the spec and put secrets in the path, query, headers or body, e.g. https://hooks.example.com/services/{{ secret.HOOK_ID }}"),
            );
            return None;
        }
        return Some(UrlTemplate::Whole(p.clone()));
    }
    // The operator chooses where requests go: a placeholder in the scheme,
    // host or port would let the caller pick any host (169.254.169.254, say)
    // without the explicit whole-URL form.
    let authority_end = source
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| source[start..].find(['/', '?', '#']).map(|j| start + j))
        .unwrap_or(source.len());
    if source[..authority_end].contains("{{") {
        issues.push(
            SpecIssue::at(
                FIELD,
                format!("`{source}` puts a placeholder in the scheme, host or port"),
            )
            .hint("placeholders may fill the path and query only; to let callers choose the whole URL, make `url` exactly one placeholder"),
        );
        return None;
    }
    // Try it with a dummy value that is valid as a host, port and path.
    let trial = template
        .substitute(|_| Some("1".to_owned()))
        .unwrap_or_default();
    if let Err(why) = check_absolute(&trial) {
        issues.push(
            SpecIssue::at(
                FIELD,
                format!("`{source}` is not an absolute http or https URL ({why})"),
            )
            .hint("write e.g. http://127.0.0.1:8080/items/{{ args.id }}"),
        );
        return None;
    }
    // `?` and `#` cannot occur inside a placeholder, so the first one is
    // literal and both halves parse whenever the whole did.
    let split = source.find(['?', '#']).unwrap_or(source.len());
    let path = Template::parse(&source[..split]);
    let rest = Template::parse(&source[split..]);
    match (path, rest) {
        (Ok(path), Ok(rest)) => Some(UrlTemplate::Parts { path, rest }),
        _ => None,
    }
}

fn check_absolute(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("the scheme is `{}`", url.scheme()));
    }
    if !url.has_host() {
        return Err("it has no host".to_owned());
    }
    Ok(url)
}

/// What messages (which reach the client and the receipt) may show of a
/// URL: scheme, host and port, plus the path only when the caller supplied
/// the whole URL. A path written in the spec may carry a token (webhook
/// URLs often do), and a query string often does.
fn redact(url: &Url, caller_supplied: bool) -> String {
    let origin = url.origin().ascii_serialization();
    if caller_supplied {
        format!("{origin}{}", url.path())
    } else {
        format!("{origin}/…")
    }
}

/// Why the request was not sent: a tool-level refusal the caller can fix,
/// or a failure to run at all.
enum Refusal {
    Tool(String),
    Exec(ExecError),
}

impl CompiledHttp {
    pub async fn run(
        &self,
        args: &Map<String, Value>,
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        let secrets = self.resolve_secrets()?;
        let args = Scope::new(args, secrets.map());
        let url = match self.url(args) {
            Ok(url) => url,
            Err(Refusal::Tool(text)) => return Ok(ExecOutput::error(text)),
            Err(Refusal::Exec(e)) => return Err(e),
        };
        let caller_supplied = matches!(self.url, UrlTemplate::Whole(_));
        let what = format!("{} {}", self.method, redact(&url, caller_supplied));
        let mut request = self.client.request(self.method.clone(), url);
        for (name, template) in &self.headers {
            let Ok(text) = template.render(args) else {
                continue;
            };
            let mut value = HeaderValue::from_str(&text).map_err(|_| {
                ExecError::Failed(format!(
                    "the value for header `{name}` contains characters not allowed in HTTP headers"
                ))
            })?;
            if template.secret_names().next().is_some() {
                // Keeps it out of HTTP/2 header compression tables (HPACK).
                value.set_sensitive(true);
            }
            request = request.header(name, value);
        }
        if let Some(body) = &self.body {
            request = request.json(&body.render(args));
        }
        match tokio::time::timeout(timeout, self.exchange(request, &what)).await {
            Ok(result) => result,
            Err(_) => Err(ExecError::Timeout(timeout)),
        }
    }

    /// The URL a call with `args` would request (placeholders encoded,
    /// query appended, checked), without sending anything; `Err` is the
    /// message the call would fail with. Public for the fuzz targets.
    pub fn render_url(&self, args: &Map<String, Value>) -> Result<Url, String> {
        let secrets = self.resolve_secrets().map_err(|e| e.to_string())?;
        let args = Scope::new(args, secrets.map());
        self.url(args).map_err(|refusal| match refusal {
            Refusal::Tool(text) => text,
            Refusal::Exec(e) => e.to_string(),
        })
    }

    /// This call's values of the secrets the spec refers to.
    fn resolve_secrets(&self) -> Result<Resolved, ExecError> {
        if self.secret_names.is_empty() {
            return Ok(Resolved::none());
        }
        self.secrets
            .resolve(self.secret_names.iter().map(String::as_str))
            .map_err(|e| ExecError::NotStarted(e.to_string()))
    }

    fn url(&self, args: Scope<'_>) -> Result<Url, Refusal> {
        let mut url = match &self.url {
            UrlTemplate::Whole(p) => {
                let text = p.lookup(args).map(value_text).ok_or_else(|| {
                    Refusal::Exec(ExecError::Failed(format!(
                        "the URL comes from argument `{}`, which was not given",
                        p.path.join(".")
                    )))
                })?;
                check_absolute(&text).map_err(|why| {
                    Refusal::Tool(format!(
                        "argument `{}` must be an absolute http or https URL ({why})",
                        p.path.join(".")
                    ))
                })?
            }
            UrlTemplate::Parts { path, rest } => {
                for p in path.placeholders() {
                    // Absent values fail below, when rendering.
                    let Some(text) = p.lookup(args).map(value_text) else {
                        continue;
                    };
                    if p.root == Root::Secret && matches!(text.as_str(), "" | "." | "..") {
                        // Never show a secret's value, not even a harmless one.
                        return Err(Refusal::Exec(ExecError::NotStarted(format!(
                            "secret `{}` is empty, `.` or `..`, which cannot be used in the URL path",
                            p.path[0]
                        ))));
                    }
                    if matches!(text.as_str(), "" | "." | "..") {
                        // Such values would silently change which resource is addressed.
                        return Err(Refusal::Tool(format!(
                            "argument `{}` is {}, which cannot be used in the URL path",
                            p.path.join("."),
                            if text.is_empty() {
                                "empty".to_owned()
                            } else {
                                format!("`{text}`")
                            }
                        )));
                    }
                }
                let encode = |v: &str| utf8_percent_encode(v, COMPONENT).to_string();
                let mut text = String::new();
                for part in [path, rest] {
                    let rendered = part.render_encoded(args, encode).map_err(|absent| {
                        Refusal::Exec(match absent.0.root {
                            Root::Args => ExecError::Failed(format!(
                                "the URL needs argument `{}`, which was not given",
                                absent.0.path.join(".")
                            )),
                            Root::Secret => ExecError::NotStarted(format!(
                                "the URL needs secret `{}`, which is not defined",
                                absent.0.path[0]
                            )),
                        })
                    })?;
                    text.push_str(&rendered);
                }
                check_absolute(&text).map_err(|why| {
                    Refusal::Tool(format!("the arguments did not make a valid URL ({why})"))
                })?
            }
        };
        let present: Vec<(&str, String)> = self
            .query
            .iter()
            .filter_map(|(name, t)| Some((name.as_str(), t.render(args).ok()?)))
            .collect();
        if !present.is_empty() {
            url.query_pairs_mut().extend_pairs(present);
        }
        Ok(url)
    }

    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<ExecOutput, ExecError> {
        let (sent, redirected) = super::REDIRECTED
            .scope(std::cell::Cell::new(false), async {
                let sent = request.send().await;
                (sent, super::REDIRECTED.with(std::cell::Cell::get))
            })
            .await;
        let mut response = sent.map_err(|e| failure(&e, redirected, what))?;
        let status = response.status();
        if !status.is_success() {
            let (body, more) = read_capped(&mut response, ERROR_BODY_BYTES)
                .await
                .unwrap_or_default();
            let reason = status
                .canonical_reason()
                .map(|r| format!(" {r}"))
                .unwrap_or_default();
            let mut text = format!("HTTP {}{reason} from {what}", status.as_u16());
            let body = String::from_utf8_lossy(&body);
            if !body.trim().is_empty() {
                text.push_str(": ");
                text.push_str(body.trim_end());
                if more {
                    text.push('…');
                }
            }
            return Ok(ExecOutput::error(text));
        }
        let cap = self.max_response_bytes;
        let too_big = || {
            ExecError::Failed(format!(
                "response body exceeded {cap} bytes (the spec's `run.http.max_response_bytes`)"
            ))
        };
        if response.content_length().is_some_and(|n| n > cap as u64) {
            return Err(too_big());
        }
        let (body, more) = read_capped(&mut response, cap)
            .await
            .map_err(|e| failure(&e, true, what))?;
        if more {
            return Err(too_big());
        }
        let structured = serde_json::from_slice::<Value>(&body).ok();
        let text = String::from_utf8_lossy(&body).into_owned();
        Ok(ExecOutput {
            text,
            structured,
            is_error: false,
        })
    }
}

/// Up to `cap` bytes of the body, and whether there was more. Stops reading
/// as soon as the cap is passed.
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// A short, user-facing description of a request failure. Built from the
/// error's causes, never its `Display`, which would include the full URL.
///
/// A failure to connect (refused, unreachable, DNS, TLS handshake, connect
/// timeout) happens before any byte of the request is written, so it is
/// [`ExecError::NotStarted`], unless a request was `answered` before it:
/// a failure to connect to a redirect's target comes after the first
/// request was sent and answered (a POST answered with 303 may have done
/// its work). Anything else may have reached the upstream.
fn failure(e: &reqwest::Error, answered: bool, what: &str) -> ExecError {
    let mut cause: Option<String> = None;
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = Some(s.to_string());
        source = s.source();
    }
    let stage = if e.is_connect() {
        Some("could not connect")
    } else if e.is_redirect() {
        Some("redirect not followed")
    } else if e.is_body() || e.is_decode() {
        Some("could not read the response")
    } else {
        None
    };
    let mut message = format!("{what} failed");
    for part in stage.into_iter().map(str::to_owned).chain(cause) {
        // "Connection refused (os error 111)" → "Connection refused"
        let part = match part.find(" (os error ") {
            Some(i) => &part[..i],
            None => &part,
        };
        message.push_str(": ");
        message.push_str(part);
    }
    if e.is_connect() && !answered {
        ExecError::NotStarted(message)
    } else {
        ExecError::Failed(message)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{args, ctx, run_spec};
    use super::*;
    use axum::Json;
    use axum::extract::{OriginalUri, Path};
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{any, get};
    use serde_json::json;

    const SEC: Duration = Duration::from_secs(5);

    /// A real server on 127.0.0.1:0 that reports what it received.
    async fn server() -> String {
        async fn item(Path(id): Path<String>, OriginalUri(uri): OriginalUri) -> Json<Value> {
            Json(json!({"id": id, "path": uri.path(), "query": uri.query()}))
        }
        async fn echo(headers: HeaderMap, body: String) -> Json<Value> {
            let header = |n: &str| {
                headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            Json(json!({
                "content_type": header("content-type"),
                "trace": header("x-trace"),
                "agent": header("user-agent"),
                "body": serde_json::from_str::<Value>(&body).ok(),
            }))
        }
        let app = axum::Router::new()
            .route("/items/{id}", get(item))
            .route("/echo", any(echo))
            .route("/text", get(|| async { "plain text" }))
            .route(
                "/loop",
                get(|| async { axum::response::Redirect::temporary("/loop") }),
            )
            .route(
                "/elsewhere",
                get(|headers: HeaderMap| async move {
                    // Same port, other host name: another origin.
                    let host = headers["host"]
                        .to_str()
                        .unwrap()
                        .replace("127.0.0.1", "localhost");
                    axum::response::Redirect::temporary(&format!("http://{host}/text"))
                }),
            )
            .route(
                "/to-file",
                get(|| async { axum::response::Redirect::temporary("file:///etc/passwd") }),
            )
            .route(
                "/missing",
                get(|| async { (StatusCode::NOT_FOUND, "no such thing") }),
            )
            .route("/big", get(|| async { "x".repeat(2 << 20) }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    async fn call(
        yaml: &str,
        props: &[&str],
        a: Value,
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        run_spec(yaml)
            .compile(&ctx(props))
            .expect("spec compiles")
            .run(&args(a), timeout)
            .await
    }

    #[tokio::test]
    async fn path_values_are_one_encoded_segment() {
        let base = server().await;
        let yaml = format!("http: {{ url: '{base}/items/{{{{ args.id }}}}' }}");
        let out = call(&yaml, &["id"], json!({"id": "a/b?c#d&e=f"}), SEC)
            .await
            .unwrap();
        assert!(!out.is_error, "{}", out.text);
        let got = out.structured.unwrap();
        assert_eq!(got["id"], "a/b?c#d&e=f");
        assert_eq!(got["path"], "/items/a%2Fb%3Fc%23d%26e%3Df");
        assert_eq!(got["query"], Value::Null);

        for bad in ["..", ".", ""] {
            let out = call(&yaml, &["id"], json!({"id": bad}), SEC).await.unwrap();
            assert!(
                out.is_error && out.text.contains("cannot be used in the URL path"),
                "{}",
                out.text
            );
        }
        let out = call(&yaml, &["id"], json!({}), SEC).await;
        assert!(matches!(out, Err(ExecError::Failed(m)) if m.contains("needs argument `id`")));
    }

    #[tokio::test]
    async fn query_is_encoded_and_absent_params_omitted() {
        let base = server().await;
        let yaml = format!(
            "http: {{ url: '{base}/items/x?fixed=1', query: {{ q: '{{{{ args.q }}}}', opt: '{{{{ args.opt }}}}' }} }}"
        );
        let out = call(&yaml, &["q", "opt"], json!({"q": "a&b=c d"}), SEC)
            .await
            .unwrap();
        assert_eq!(out.structured.unwrap()["query"], "fixed=1&q=a%26b%3Dc+d");
    }

    #[tokio::test]
    async fn body_keeps_json_types_and_headers_are_sent() {
        let base = server().await;
        let yaml = format!(
            "http: {{ method: POST, url: '{base}/echo', headers: {{ X-Trace: 't-{{{{ args.t }}}}' }}, \
             body: {{ any: 'json {{{{ args.x }}}}', n: '{{{{ args.n }}}}', gone: '{{{{ args.t }}}}' }} }}"
        );
        let out = call(&yaml, &["t", "x", "n"], json!({"x": "y", "n": 42}), SEC)
            .await
            .unwrap();
        let got = out.structured.unwrap();
        assert_eq!(got["body"], json!({"any": "json y", "n": 42}));
        assert_eq!(got["content_type"], "application/json");
        assert_eq!(got["trace"], Value::Null);
        assert_eq!(
            got["agent"],
            concat!("tollgate/", env!("CARGO_PKG_VERSION"))
        );
        let out = call(&yaml, &["t", "x", "n"], json!({"t": 7}), SEC)
            .await
            .unwrap();
        assert_eq!(out.structured.unwrap()["trace"], "t-7");
    }

    #[tokio::test]
    async fn whole_url_placeholder_must_be_http() {
        let base = server().await;
        let yaml = "http: { url: '{{ args.url }}' }";
        let out = call(yaml, &["url"], json!({"url": format!("{base}/text")}), SEC)
            .await
            .unwrap();
        assert_eq!(out, ExecOutput::text("plain text"));
        let out = call(yaml, &["url"], json!({"url": "file:///etc/passwd"}), SEC)
            .await
            .unwrap();
        assert!(
            out.is_error && out.text.contains("must be an absolute http or https URL"),
            "{}",
            out.text
        );
    }

    #[tokio::test]
    async fn non_2xx_is_a_tool_error_without_the_query() {
        let base = server().await;
        let yaml = format!("http: {{ url: '{base}/missing?token=secret' }}");
        let out = call(&yaml, &[], json!({}), SEC).await.unwrap();
        assert!(out.is_error);
        assert_eq!(
            out.text,
            format!("HTTP 404 Not Found from GET {base}/…: no such thing")
        );
    }

    #[tokio::test]
    async fn oversized_response_fails() {
        let base = server().await;
        let yaml = format!("http: {{ url: '{base}/big' }}");
        let out = call(&yaml, &[], json!({}), SEC).await;
        assert_eq!(
            out,
            Err(ExecError::Failed(
                "response body exceeded 1048576 bytes (the spec's `run.http.max_response_bytes`)"
                    .into()
            ))
        );
    }

    /// A POST answered with 303 may have done its work: if the redirect's
    /// target then refuses the connection, the call did start.
    #[tokio::test]
    async fn a_refused_redirect_target_is_not_a_call_that_never_started() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let served = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            // Nobody listens on the port any more when the redirect is followed.
            drop(listener);
            stream
                .write_all(
                    b"HTTP/1.1 303 See Other\r\nLocation: /done\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                )
                .unwrap();
        });
        let yaml = format!("http: {{ url: 'http://127.0.0.1:{port}/pay', method: POST }}");
        let out = call(&yaml, &[], json!({}), SEC).await;
        served.join().unwrap();
        let Err(ExecError::Failed(msg)) = out else {
            panic!("expected a failure after the request was sent, got {out:?}")
        };
        assert!(msg.contains("could not connect"), "{msg}");
    }

    #[tokio::test]
    async fn timeout_and_connection_errors() {
        let base = server().await;
        let yaml = format!("http: {{ url: '{base}/slow' }}");
        let start = std::time::Instant::now();
        let out = call(&yaml, &[], json!({}), Duration::from_millis(300)).await;
        assert_eq!(out, Err(ExecError::Timeout(Duration::from_millis(300))));
        assert!(start.elapsed() < Duration::from_secs(2));

        // Bind then drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let yaml = format!("http: {{ url: 'http://127.0.0.1:{port}/x?k=secret' }}");
        // Refused before any byte was sent: certain that nothing happened.
        let Err(ExecError::NotStarted(msg)) = call(&yaml, &[], json!({}), SEC).await else {
            panic!("expected failure")
        };
        let want =
            format!("GET http://127.0.0.1:{port}/… failed: could not connect: Connection refused");
        assert_eq!(msg, want);
    }

    #[tokio::test]
    async fn redirects_are_limited() {
        let base = server().await;
        let yaml = format!("http: {{ url: '{base}/loop' }}");
        let out = call(&yaml, &[], json!({}), SEC).await;
        let Err(ExecError::Failed(msg)) = out else {
            panic!("expected failure, got {out:?}")
        };
        let want =
            format!("GET {base}/… failed: redirect not followed: too many redirects (more than 5)");
        assert_eq!(msg, want);
        // Spec headers must not travel to another origin.
        let yaml = format!("http: {{ url: '{base}/elsewhere', headers: {{ X-Api-Key: k }} }}");
        let Err(ExecError::Failed(msg)) = call(&yaml, &[], json!({}), SEC).await else {
            panic!("a cross-origin redirect must not be followed")
        };
        assert!(
            msg.contains("refusing to follow a redirect to another origin (http://localhost:"),
            "{msg}"
        );
        // reqwest does not follow non-http(s) redirects at all; the 3xx comes back.
        let yaml = format!("http: {{ url: '{base}/to-file' }}");
        let out = call(&yaml, &[], json!({}), SEC).await.unwrap();
        assert!(
            out.is_error && out.text.starts_with("HTTP 307"),
            "{}",
            out.text
        );
    }

    #[tokio::test]
    async fn secrets_are_encoded_like_arguments_and_kept_from_the_host() {
        use super::super::test_support::{ctx_with, secrets};
        let base = server().await;
        let s = || secrets(&[("TOKEN", "a/b c&d=e"), ("KEY", "key-123456")]);
        let yaml = format!(
            "http: {{ url: '{base}/items/{{{{ secret.TOKEN }}}}?t={{{{ secret.TOKEN }}}}', \
             query: {{ q: '{{{{ secret.TOKEN }}}}' }} }}"
        );
        let out = run_spec(&yaml)
            .compile(&ctx_with(&[], s()))
            .unwrap()
            .run(&args(json!({})), SEC)
            .await
            .unwrap();
        let got = out.structured.unwrap();
        assert_eq!(got["path"], "/items/a%2Fb%20c%26d%3De");
        assert_eq!(got["query"], "t=a%2Fb%20c%26d%3De&q=a%2Fb+c%26d%3De");
        let yaml = format!(
            "http: {{ method: POST, url: '{base}/echo', headers: {{ X-Trace: 'k={{{{ secret.KEY }}}}' }}, body: {{ k: '{{{{ secret.KEY }}}}' }} }}"
        );
        let out = run_spec(&yaml)
            .compile(&ctx_with(&[], s()))
            .unwrap()
            .run(&args(json!({})), SEC)
            .await
            .unwrap();
        let got = out.structured.unwrap();
        assert_eq!(got["trace"], "k=key-123456");
        assert_eq!(got["body"], json!({"k": "key-123456"}));

        for url in [
            "{{ secret.KEY }}",
            "https://{{ secret.KEY }}/x",
            "http://h:{{ secret.KEY }}/x",
        ] {
            let issues = run_spec(&format!("http: {{ url: '{url}' }}"))
                .compile(&ctx_with(&[], s()))
                .unwrap_err();
            assert!(
                issues[0].message.contains("scheme, host"),
                "{url}: {}",
                issues[0].message
            );
        }
    }

    #[test]
    fn compile_reports_every_problem() {
        let yaml = r#"http:
  method: GET
  url: "ftp://host/{{ args.id }}"
  query: { q: "{{ args.qq }}" }
  headers: { "Bad Header": "x", X-Ok: "{{ args.nope }}", Content-Length: "1" }
  body: { n: "{{ args.m }}" }
  max_response_bytes: 0
"#;
        let issues = run_spec(yaml).compile(&ctx(&["id"])).unwrap_err();
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "run.http.url",
                "run.http.query.q",
                "run.http.headers[\"Bad Header\"]",
                "run.http.headers.Content-Length",
                "run.http.headers.X-Ok",
                "run.http.body.n",
                "run.http.max_response_bytes",
            ]
        );
        assert!(
            issues[0].message.contains("the scheme is `ftp`"),
            "{}",
            issues[0].message
        );
        let err = serde_norway::from_str::<super::super::RunSpec>(
            "http: { method: FETCH, url: 'http://h/' }",
        );
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("unknown variant `FETCH`")
        );
        assert!(
            run_spec("http: { url: 'relative/path' }")
                .compile(&ctx(&[]))
                .is_err()
        );
        // The operator, not the caller, picks scheme, host and port.
        for url in [
            "http://h:{{ args.p }}/x",
            "https://{{ args.p }}/x",
            "{{ args.p }}://h/x",
        ] {
            let issues = run_spec(&format!("http: {{ url: '{url}' }}"))
                .compile(&ctx(&["p"]))
                .unwrap_err();
            assert!(
                issues[0]
                    .message
                    .ends_with("puts a placeholder in the scheme, host or port"),
                "{url}: {}",
                issues[0].message
            );
        }
        assert!(
            run_spec("http: { url: 'http://h:8080/x/{{ args.p }}?q={{ args.p }}' }")
                .compile(&ctx(&["p"]))
                .is_ok()
        );
    }
}
