//! How a tool runs: one file per kind, this module only dispatches.
//!
//! A tool spec's `run:` field is a [`RunSpec`], an externally tagged enum, so
//! the YAML names the kind once (`run: { command: {..} }`). When a tool
//! version loads, [`RunSpec::compile`] checks everything that can be checked
//! without running (templates, unknown placeholders, methods, URLs, limits)
//! and reports *all* problems as [`SpecIssue`]s. The result, a
//! [`CompiledRun`], is what the pipeline calls with validated arguments.
//!
//! Adding a kind means one new file with a `…Spec` (config), its `compile`
//! and a `Compiled…` with `run`, plus one variant in each enum here.
//!
//! **Architecture Invariant:** executors know nothing about MCP or rmcp. They
//! return [`ExecOutput`] (the tool ran, perhaps reporting a failure) or
//! [`ExecError`] (it could not run, or ran out of time); the pipeline maps
//! both to protocol results.

pub mod command;
pub mod http;
pub mod static_;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::secrets::Secrets;
use crate::spec::issue::SpecIssue;
use crate::template::{Known, Template};

/// The `run:` section of a tool spec.
///
/// `Deserialize` is written by hand (below) so that the externally tagged
/// form `run: { command: {..} }` reads the same from YAML and JSON: YAML
/// libraries in the serde_yaml line expect `!command` tags for enums instead.
#[derive(Debug, Clone, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum RunSpec {
    /// Run a program directly (never through a shell).
    Command(command::CommandSpec),
    /// Make one HTTP request.
    Http(http::HttpSpec),
    /// Return a fixed result, optionally filled in from the arguments.
    Static(static_::StaticSpec),
}

impl<'de> serde::Deserialize<'de> for RunSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RunSpecVisitor)
    }
}

struct RunSpecVisitor;

impl<'de> serde::de::Visitor<'de> for RunSpecVisitor {
    type Value = RunSpec;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map with exactly one of: command, http, static")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RunSpec, A::Error> {
        use serde::de::Error;
        const KINDS: &[&str] = &["command", "http", "static"];
        const ONE_OF: &str = "`run` takes exactly one of: command, http, static";
        // Keys are read as plain strings (not a derived enum) so that
        // serde_path_to_error can name them in paths like `run.command.argv`.
        let Some(kind) = map.next_key::<String>()? else {
            return Err(A::Error::custom(format!("{ONE_OF}, but it is empty")));
        };
        let spec = match kind.as_str() {
            "command" => RunSpec::Command(map.next_value()?),
            "http" => RunSpec::Http(map.next_value()?),
            "static" => RunSpec::Static(map.next_value()?),
            other => return Err(A::Error::unknown_variant(other, KINDS)),
        };
        if let Some(extra) = map.next_key::<String>()? {
            return Err(A::Error::custom(format!(
                "{ONE_OF}, but it also has `{extra}`"
            )));
        }
        Ok(spec)
    }
}

/// What compilation may consult: built once per load, shared by all tools.
#[derive(Debug, Clone)]
pub struct CompileContext {
    /// Top-level property names of the tool's input schema; a placeholder
    /// naming anything else is a spec error.
    pub properties: BTreeSet<String>,
    /// The shared HTTP client (one connection pool for every `http` tool).
    pub http: reqwest::Client,
    /// The server's secrets: `{{ secret.NAME }}` must name a defined one,
    /// and compiled executors keep this handle to read values when a call
    /// runs (so a rotated secret file is used without a restart).
    pub secrets: Arc<Secrets>,
}

impl CompileContext {
    /// What templates are checked against: properties and defined secrets.
    pub fn known(&self) -> Known<'_> {
        Known {
            properties: &self.properties,
            secrets: Some(&self.secrets),
        }
    }
}

impl RunSpec {
    /// Names of every secret the spec refers to, found without compiling
    /// (so `tollgate check` can list them even for a spec with errors).
    /// Strings that do not parse as templates are skipped.
    pub fn secret_names(&self) -> BTreeSet<String> {
        let mut sources: Vec<&str> = Vec::new();
        match self {
            RunSpec::Command(c) => {
                sources.extend(c.argv.iter().map(String::as_str));
                sources.extend(c.set_env.values().map(String::as_str));
            }
            RunSpec::Http(h) => {
                sources.push(&h.url);
                sources.extend(h.query.values().map(String::as_str));
                sources.extend(h.headers.values().map(String::as_str));
                if let Some(body) = &h.body {
                    json_strings(body, &mut sources);
                }
            }
            RunSpec::Static(st) => {
                sources.extend(st.text.as_deref());
                if let Some(json) = &st.json {
                    json_strings(json, &mut sources);
                }
            }
        }
        sources
            .into_iter()
            .filter_map(|s| Template::parse(s).ok())
            .flat_map(|t| t.secret_names().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }
}

fn json_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| json_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| json_strings(v, out)),
        _ => {}
    }
}

/// Collect the distinct secret names of `templates`, in first-seen order:
/// what an executor resolves at the start of each call.
pub(crate) fn secret_names<'t>(templates: impl IntoIterator<Item = &'t Template>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for t in templates {
        for name in t.secret_names() {
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
    }
    names
}

impl RunSpec {
    /// Check the spec and prepare it to run. Reports every problem found.
    pub fn compile(&self, ctx: &CompileContext) -> Result<CompiledRun, Vec<SpecIssue>> {
        match self {
            RunSpec::Command(spec) => spec.compile(ctx).map(CompiledRun::Command),
            RunSpec::Http(spec) => spec.compile(ctx).map(CompiledRun::Http),
            RunSpec::Static(spec) => spec.compile(ctx).map(CompiledRun::Static),
        }
    }
}

/// A checked, ready-to-run `run:` section.
#[derive(Debug, Clone)]
pub enum CompiledRun {
    Command(command::CompiledCommand),
    Http(http::CompiledHttp),
    Static(static_::CompiledStatic),
}

impl CompiledRun {
    /// Run once with the call's validated arguments, within `timeout`.
    pub async fn run(
        &self,
        args: &Map<String, Value>,
        timeout: Duration,
    ) -> Result<ExecOutput, ExecError> {
        match self {
            CompiledRun::Command(c) => c.run(args, timeout).await,
            CompiledRun::Http(c) => c.run(args, timeout).await,
            CompiledRun::Static(c) => Ok(c.run(args)),
        }
    }

    /// The kind's name as written in specs (`command`, `http`, `static`).
    pub fn kind(&self) -> &'static str {
        match self {
            CompiledRun::Command(_) => "command",
            CompiledRun::Http(_) => "http",
            CompiledRun::Static(_) => "static",
        }
    }
}

/// What a tool produced. `is_error` marks a tool-level failure (non-zero
/// exit, non-2xx status): the tool ran and the caller should see why.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOutput {
    pub text: String,
    pub structured: Option<Value>,
    pub is_error: bool,
}

impl ExecOutput {
    /// A successful plain-text result.
    pub fn text(text: impl Into<String>) -> Self {
        ExecOutput {
            text: text.into(),
            structured: None,
            is_error: false,
        }
    }

    /// A tool-level failure with an explanation.
    pub fn error(text: impl Into<String>) -> Self {
        ExecOutput {
            text: text.into(),
            structured: None,
            is_error: true,
        }
    }
}

/// The tool could not run at all, or did not finish in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("the tool did not finish within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// What failed and why, ready to show to the caller.
    #[error("{0}")]
    Failed(String),
    /// The tool never started, so nothing was sent or run: the connection
    /// was refused or could not be made (before any redirect), exec refused
    /// the program (missing, not executable) or the working directory is
    /// missing, a secret is undefined. Said only when that is certain; the
    /// pipeline then gives the idempotency key back, so a retry may run the
    /// tool. (Arguments that cannot be sent, e.g. a NUL byte for argv, are
    /// `Failed`: those arguments fail the same way every time.)
    #[error("{0}")]
    NotStarted(String),
}

tokio::task_local! {
    /// Set around one `http` tool request (`http::exchange`): whether the
    /// redirect policy saw a redirect, which means a request was already
    /// answered, so a later failure to connect is not "nothing was sent".
    /// reqwest runs the policy inside the request future, on the task that
    /// awaits it, so the task-local reaches it.
    pub(crate) static REDIRECTED: std::cell::Cell<bool>;
}

/// The HTTP client for `http` tools: rustls, at most 5 redirects, only
/// within the same origin and only to http/https (never a downgrade from
/// https), and a `tollgate/<version>`
/// user agent so upstream logs can tell who called.
///
/// Timeouts are applied per call, not here, since each tool has its own.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        // Outside a tollgate request (no scope) there is nothing to tell.
        let _ = REDIRECTED.try_with(|r| r.set(true));
        let from = attempt.previous().last().map(|u| u.scheme().to_owned());
        let to = attempt.url().scheme();
        let allowed = match (from.as_deref(), to) {
            (_, "https") => true,
            (Some("https"), "http") => false,
            (_, "http") => true,
            _ => false,
        };
        // Spec headers (an API key, say) must not follow a redirect to
        // another host; reqwest strips only the standard credential headers.
        let first = attempt.previous().first().map(|u| u.origin());
        let cross_origin = first.is_some_and(|o| o != attempt.url().origin());
        if !allowed {
            let msg = format!("refusing to follow a redirect to a `{to}` URL");
            attempt.error(msg)
        } else if cross_origin {
            let msg = format!(
                "refusing to follow a redirect to another origin ({})",
                attempt.url().origin().ascii_serialization()
            );
            attempt.error(msg)
        } else if attempt.previous().len() > 5 {
            attempt.error("too many redirects (more than 5)")
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
        .redirect(policy)
        .connect_timeout(Duration::from_secs(10))
        .build()
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    pub fn ctx(properties: &[&str]) -> CompileContext {
        ctx_with(properties, Secrets::empty())
    }

    pub fn ctx_with(properties: &[&str], secrets: Secrets) -> CompileContext {
        CompileContext {
            properties: properties.iter().map(|s| s.to_string()).collect(),
            http: http_client().expect("test HTTP client"),
            secrets: Arc::new(secrets),
        }
    }

    /// Secrets with the given (NAME, value) pairs, as if from the environment.
    pub fn secrets(pairs: &[(&str, &str)]) -> Secrets {
        let vars: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (format!("{}{k}", crate::secrets::ENV_PREFIX), v.to_string()))
            .collect();
        Secrets::from_vars(vars, None).expect("test secrets")
    }

    pub fn args(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test args must be an object"),
        }
    }

    /// Deserialize a `run:` section from YAML, as the spec loader would.
    pub fn run_spec(yaml: &str) -> RunSpec {
        serde_norway::from_str(yaml).expect("test YAML parses")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn run_spec_is_externally_tagged_and_strict() {
        let spec = run_spec("static: { text: hi }");
        assert!(matches!(spec, RunSpec::Static(_)));
        let err = serde_norway::from_str::<RunSpec>("static: { txt: hi }").unwrap_err();
        assert!(err.to_string().contains("unknown field `txt`"), "{err}");
        let err = serde_norway::from_str::<RunSpec>("shell: { cmd: ls }").unwrap_err();
        assert!(err.to_string().contains("unknown variant `shell`"), "{err}");
        let err =
            serde_norway::from_str::<RunSpec>("{static: {text: a}, http: {url: x}}").unwrap_err();
        assert!(err.to_string().contains("also has `http`"), "{err}");
        let err = serde_norway::from_str::<RunSpec>("{}").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        // The same shape from JSON (specs are also re-read from canonical JSON).
        let json: RunSpec = serde_json::from_str(r#"{"command": {"argv": ["ls"]}}"#).unwrap();
        assert!(matches!(json, RunSpec::Command(_)));
        // serde_path_to_error (used by the spec loader) sees through to the field.
        let de = serde_norway::Deserializer::from_str("command: { argv: [ls], bogus: 1 }");
        let err = serde_path_to_error::deserialize::<_, RunSpec>(de).unwrap_err();
        assert_eq!(err.path().to_string(), "command.bogus");
    }

    #[test]
    fn secret_names_are_found_without_compiling() {
        let spec = run_spec(
            "http: { url: 'http://h/{{ secret.PATH_KEY }}', query: { k: '{{ secret.Q }}' }, \
             headers: { A: 'Bearer {{ secret.TOKEN }}', B: '{{ broken' }, body: { x: ['{{ secret.BODY }}'] } }",
        );
        let names: Vec<String> = spec.secret_names().into_iter().collect();
        assert_eq!(names, ["BODY", "PATH_KEY", "Q", "TOKEN"]);
        let spec = run_spec(
            "command: { argv: [x, '--key={{ secret.A }}'], set_env: { K: '{{ secret.B }}' } }",
        );
        assert_eq!(
            spec.secret_names().into_iter().collect::<Vec<_>>(),
            ["A", "B"]
        );
        assert!(run_spec("static: { text: hi }").secret_names().is_empty());
    }

    #[test]
    fn undefined_secret_is_a_spec_issue() {
        let spec = run_spec(
            "http: { url: 'http://h/x', headers: { Authorization: 'Bearer {{ secret.PAYMENTS_KEY }}' } }",
        );
        let issues = spec.compile(&ctx(&[])).unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].field, "run.http.headers.Authorization");
        assert_eq!(issues[0].message, "secret `PAYMENTS_KEY` is not defined");
        assert!(
            issues[0]
                .hint
                .as_deref()
                .unwrap()
                .starts_with("set TOLLGATE_SECRET_PAYMENTS_KEY"),
            "{:?}",
            issues[0].hint
        );
        let defined = ctx_with(&[], secrets(&[("PAYMENTS_KEY", "pk_test_123456")]));
        assert!(spec.compile(&defined).is_ok());
    }

    #[test]
    fn schema_describes_fields() {
        let schema = serde_json::to_string(&schemars::schema_for!(RunSpec)).unwrap();
        assert!(schema.contains("max_output_bytes"));
        assert!(schema.contains("additionalProperties"));
    }

    #[tokio::test]
    async fn dispatches_to_the_kind() {
        let compiled = run_spec("static: { text: 'hi {{ args.name }}' }")
            .compile(&ctx(&["name"]))
            .unwrap();
        assert_eq!(compiled.kind(), "static");
        let out = compiled
            .run(
                &args(serde_json::json!({"name": "ann"})),
                Duration::from_secs(1),
            )
            .await;
        assert_eq!(out, Ok(ExecOutput::text("hi ann")));
    }
}
