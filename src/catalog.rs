//! The catalog: every servable tool, compiled once at start-up.
//!
//! Start-up is where spec errors belong. Loading reads the spec directory,
//! compiles every file (schema validator, executor templates, quotas), and
//! only if *nothing* is wrong records the versions in the registry and
//! resolves which version of each tool is active. A pinned tool serves its
//! stored version even when the file now says something else.
//!
//! Every `{{ secret.NAME }}` must name a defined secret when a tool compiles,
//! so a missing secret stops `serve` (and fails `check`) instead of a call.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use governor::Quota;
use serde_json::Value;

use crate::executor::{CompileContext, CompiledRun};
use crate::principals::Principals;
use crate::secrets::{self, Secrets};
use crate::spec::{self, LoadedSpec, SpecIssue, ToolSpec, rate};
use crate::store::{SpecFile, Store};

/// Default time a call may run when a spec names no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One tool version, ready to serve.
pub struct CompiledTool {
    pub spec: ToolSpec,
    /// Stored version number (v1, v2, …); 0 when not yet registered (`check`).
    pub version: i64,
    /// SHA-256 of the spec's canonical content.
    pub hash: String,
    pub pinned: bool,
    /// The spec file this version was first seen in.
    pub source: PathBuf,
    /// Compiled once per version: validating arguments is on the hot path.
    pub validator: jsonschema::Validator,
    pub run: CompiledRun,
    pub timeout: Duration,
    pub per_principal: Option<Quota>,
    pub global: Option<Quota>,
    /// The server's secrets, shared by every tool: the executor reads values
    /// from it at call time, and the pipeline redacts output with it.
    pub secrets: Arc<Secrets>,
    /// Whether the input schema marks any property `x-sensitive: true`.
    pub sensitive_args: bool,
}

impl CompiledTool {
    /// The arguments as a receipt may hold them: every `x-sensitive`
    /// property replaced by its keyed hash (`hmac-sha256:<hex>`, see
    /// [`secrets::mask_sensitive`] and [`Secrets::hash_key`]). Borrowed
    /// unchanged when the schema marks nothing sensitive.
    ///
    /// Never fails: if the key cannot be read, sensitive values are replaced
    /// by a fixed text instead of being stored in clear.
    pub fn receipt_args<'a>(&self, args: &'a Value) -> Cow<'a, Value> {
        if !self.sensitive_args || !args.is_object() {
            return Cow::Borrowed(args);
        }
        let schema = &self.spec.input_schema;
        match self.secrets.hash_key() {
            Ok(key) => Cow::Owned(secrets::mask_sensitive(schema, args, key.as_bytes())),
            Err(e) => {
                tracing::error!(error = %e, "no receipt HMAC key; x-sensitive arguments are recorded as unavailable");
                let placeholder = Value::String(format!("{}unavailable", secrets::HASH_PREFIX));
                Cow::Owned(secrets::replace_sensitive(schema, args, &placeholder))
            }
        }
    }
}

impl CompiledTool {
    /// Whether the spec declares the tool read-only (`readOnlyHint: true`).
    /// Only such tools may run without an intent record first.
    pub fn read_only(&self) -> bool {
        self.spec
            .annotations
            .as_ref()
            .and_then(|a| a.read_only_hint)
            .unwrap_or(false)
    }
}

impl std::fmt::Debug for CompiledTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledTool")
            .field("name", &self.spec.name)
            .field("version", &self.version)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

/// The active tools, by name.
#[derive(Debug, Default)]
pub struct Catalog {
    tools: BTreeMap<String, Arc<CompiledTool>>,
}

impl Catalog {
    /// Load the spec directory, register versions in `store`, and compile the
    /// active version of every tool. Any problem anywhere is returned, all at once.
    pub async fn load(
        specs_dir: &std::path::Path,
        principals: &Principals,
        store: &Store,
        http: &reqwest::Client,
        secrets: &Arc<Secrets>,
    ) -> Result<Catalog, CatalogError> {
        let (loaded, compiled) = check_dir(specs_dir, Some(principals), http, secrets)?;
        Catalog::register(&loaded, compiled, principals, store, http, secrets).await
    }

    /// The second half of [`Catalog::load`], for specs already read and
    /// compiled by [`check_dir`]: register their versions in `store`, and
    /// take the active version of every tool.
    pub async fn register(
        loaded: &[LoadedSpec],
        compiled: Vec<CompiledTool>,
        principals: &Principals,
        store: &Store,
        http: &reqwest::Client,
        secrets: &Arc<Secrets>,
    ) -> Result<Catalog, CatalogError> {
        let active = store.sync_specs(&spec_files(loaded)).await?;
        let mut by_hash: BTreeMap<String, CompiledTool> =
            compiled.into_iter().map(|t| (t.hash.clone(), t)).collect();
        let mut tools = BTreeMap::new();
        let mut issues = Vec::new();
        for (state, version) in active {
            // The file's own version is already compiled; a pinned older
            // version is rebuilt from its stored canonical content.
            let compiled = match by_hash.remove(&version.hash) {
                Some(t) => Ok(t),
                None => spec::load::from_canonical(&version.canonical)
                    .map_err(|m| vec![SpecIssue::at("", m)])
                    .and_then(|s| compile_with_secrets(s, Some(principals), http, secrets)),
            };
            match compiled {
                Ok(mut tool) => {
                    tool.version = version.version;
                    tool.hash = version.hash.clone();
                    tool.pinned = state.pinned;
                    tool.source = version.source_path.clone().into();
                    tools.insert(state.name.clone(), Arc::new(tool));
                }
                Err(errs) => issues.extend(errs.into_iter().map(|i| {
                    SpecIssue {
                        message: format!(
                            "stored version v{} (pinned): {}",
                            version.version, i.message
                        ),
                        ..i
                    }
                    .in_file(&version.source_path)
                    .hint(format!(
                        "`tollgate tools unpin {}` serves the spec file again",
                        state.name
                    ))
                })),
            }
        }
        if !issues.is_empty() {
            return Err(CatalogError::Specs(issues));
        }
        Ok(Catalog { tools })
    }

    /// A catalog of already compiled tools (tests, benchmarks).
    pub fn from_tools(tools: impl IntoIterator<Item = CompiledTool>) -> Catalog {
        Catalog {
            tools: tools
                .into_iter()
                .map(|t| (t.spec.name.clone(), Arc::new(t)))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<CompiledTool>> {
        self.tools.get(name)
    }

    /// Active tools in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<CompiledTool>> {
        self.tools.values()
    }

    pub fn len(&self) -> usize {
        self.tools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

/// Why the catalog could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{} problem(s) in tool specs", .0.len())]
    Specs(Vec<SpecIssue>),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Load and compile every spec in `dir` without touching the registry
/// (`tollgate check`). With `principals`, `allow` roles must be declared;
/// every referenced secret must be defined in `secrets`.
pub fn check_dir(
    dir: &std::path::Path,
    principals: Option<&Principals>,
    http: &reqwest::Client,
    secrets: &Arc<Secrets>,
) -> Result<(Vec<LoadedSpec>, Vec<CompiledTool>), CatalogError> {
    compile_report(spec::load_dir(dir), principals, http, secrets)
}

/// The second half of [`check_dir`]: compile what [`spec::load_dir`] read.
/// Callers that start work from the parsed specs (the Cedar schema, see
/// [`crate::policy::SchemaBuild::start_specs`]) call the halves themselves,
/// so that work runs while the specs compile.
pub fn compile_report(
    report: spec::LoadReport,
    principals: Option<&Principals>,
    http: &reqwest::Client,
    secrets: &Arc<Secrets>,
) -> Result<(Vec<LoadedSpec>, Vec<CompiledTool>), CatalogError> {
    let mut issues = report.issues;
    let mut compiled = Vec::with_capacity(report.specs.len());
    // Compiling (JSON Schema validators above all) is per spec and
    // CPU-bound: spread it over the cores, results in file order.
    let results = spec::par::map(&report.specs, |loaded| {
        compile_with_secrets(loaded.spec.clone(), principals, http, secrets)
    });
    for (loaded, result) in report.specs.iter().zip(results) {
        match result {
            Ok(mut tool) => {
                tool.hash = loaded.hash.clone();
                tool.source = loaded.file.clone();
                compiled.push(tool);
            }
            Err(errs) => issues.extend(errs.into_iter().map(|i| i.in_file(&loaded.file))),
        }
    }
    if issues.is_empty() {
        Ok((report.specs, compiled))
    } else {
        Err(CatalogError::Specs(issues))
    }
}

/// The registry's view of loaded spec files.
pub fn spec_files(loaded: &[LoadedSpec]) -> Vec<SpecFile> {
    loaded
        .iter()
        .map(|s| SpecFile {
            name: s.spec.name.clone(),
            hash: s.hash.clone(),
            canonical: s.canonical.clone(),
            source_path: s.file.display().to_string(),
            source_text: s.source_text.clone(),
        })
        .collect()
}

/// Check one spec's meaning (beyond its shape) and compile it, with no
/// secrets defined (tests, benchmarks, fuzzing): a spec that refers to a
/// secret fails to compile.
pub fn compile(
    spec: ToolSpec,
    principals: Option<&Principals>,
    http: &reqwest::Client,
) -> Result<CompiledTool, Vec<SpecIssue>> {
    compile_with_secrets(spec, principals, http, &Arc::default())
}

/// Check one spec's meaning (beyond its shape) and compile it; its
/// `{{ secret.NAME }}`s must be defined in `secrets`, which the compiled
/// tool keeps to read values at call time.
pub fn compile_with_secrets(
    spec: ToolSpec,
    principals: Option<&Principals>,
    http: &reqwest::Client,
    secrets: &Arc<Secrets>,
) -> Result<CompiledTool, Vec<SpecIssue>> {
    let mut issues = Vec::new();
    if !valid_name(&spec.name) {
        issues.push(
            SpecIssue::at("name", format!("`{}` is not a valid tool name", spec.name))
                .hint("use 1 to 64 characters of A-Z, a-z, 0-9, `_`, `-` and `.`"),
        );
    }
    if spec.description.trim().is_empty() {
        issues.push(
            SpecIssue::at("description", "is empty")
                .hint("the model reads the description to decide when to call the tool"),
        );
    }
    let validator = compile_schema("input_schema", &spec.input_schema, &mut issues);
    check_sensitive_marks("input_schema", &spec.input_schema, &mut issues);
    if let Some(out) = &spec.output_schema {
        compile_schema("output_schema", out, &mut issues);
    }
    if let Some(principals) = principals {
        for (i, role) in spec.allow.iter().enumerate() {
            if !principals.has_role(role) {
                issues.push(
                    SpecIssue::at(
                        format!("allow[{i}]"),
                        format!("role `{role}` is not declared in the principals file"),
                    )
                    .hint(format!(
                        "declared roles: {}",
                        principals.roles().collect::<Vec<_>>().join(", ")
                    )),
                );
            }
        }
    }
    let mut quota_at = |field: &str, rate: Option<&spec::model::Rate>| {
        rate.and_then(|r| {
            rate::quota(r)
                .map_err(|m| {
                    // `field` names `….rate`; a bad burst is reported at `….burst`.
                    let at = match m.starts_with("burst") {
                        true => field.replace(".rate", ".burst"),
                        false => field.to_string(),
                    };
                    issues.push(SpecIssue::at(at, m))
                })
                .ok()
        })
    };
    let limits = spec.rate_limit.as_ref();
    let per_principal = quota_at(
        "rate_limit.per_principal.rate",
        limits.and_then(|l| l.per_principal.as_ref()),
    );
    let global = quota_at(
        "rate_limit.global.rate",
        limits.and_then(|l| l.global.as_ref()),
    );
    let timeout = match &spec.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) => rate::timeout(t).unwrap_or_else(|m| {
            issues.push(SpecIssue::at("timeout", m));
            DEFAULT_TIMEOUT
        }),
    };
    issues.extend(spec::governance::check(
        &spec,
        &property_names(&spec.input_schema),
    ));
    let ctx = CompileContext {
        properties: property_names(&spec.input_schema),
        http: http.clone(),
        secrets: secrets.clone(),
    };
    let run = spec
        .run
        .compile(&ctx)
        .map_err(|errs| issues.extend(errs))
        .ok();
    match (validator, run) {
        (Some(validator), Some(run)) if issues.is_empty() => Ok(CompiledTool {
            version: 0,
            hash: String::new(),
            pinned: false,
            source: PathBuf::new(),
            validator,
            run,
            timeout,
            per_principal,
            global,
            secrets: secrets.clone(),
            sensitive_args: secrets::has_sensitive(&spec.input_schema),
            spec,
        }),
        _ => Err(issues),
    }
}

/// `x-sensitive` must be a boolean wherever a property schema has it: a
/// string like `"yes"` would otherwise silently leave the value in clear.
fn check_sensitive_marks(field: &str, schema: &Value, issues: &mut Vec<SpecIssue>) {
    let props = schema.get("properties").and_then(Value::as_object);
    let nested = props
        .into_iter()
        .flatten()
        .map(|(name, sub)| (format!("{field}.properties.{name}"), sub))
        .chain(schema.get("items").map(|i| (format!("{field}.items"), i)));
    for (at, sub) in nested {
        if let Some(mark) = sub.get(secrets::SENSITIVE_KEYWORD)
            && !mark.is_boolean()
        {
            issues.push(
                SpecIssue::at(
                    format!("{at}.{}", secrets::SENSITIVE_KEYWORD),
                    format!("must be true or false, not {mark}"),
                )
                .hint("x-sensitive: true stores the value in receipts as a keyed hash"),
            );
        }
        check_sensitive_marks(&at, sub, issues);
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn compile_schema(
    field: &str,
    schema: &serde_json::Value,
    issues: &mut Vec<SpecIssue>,
) -> Option<jsonschema::Validator> {
    if schema.get("type").and_then(|t| t.as_str()) != Some("object") {
        issues.push(
            SpecIssue::at(field, "must be a JSON Schema with `type: object`")
                .hint("MCP tool arguments are always a JSON object; declare each argument under `properties`"),
        );
        return None;
    }
    match jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
    {
        Ok(v) => Some(v),
        Err(e) => {
            let at = e.instance_path().to_string();
            issues.push(
                SpecIssue::at(
                    format!("{field}{}", pointer_suffix(&at)),
                    format!("invalid JSON Schema: {e}"),
                )
                .hint("see https://json-schema.org/understanding-json-schema/ (draft 2020-12)"),
            );
            None
        }
    }
}

fn pointer_suffix(pointer: &str) -> String {
    pointer
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| format!(".{s}"))
        .collect()
}

/// Top-level argument names declared by an input schema.
pub fn property_names(schema: &serde_json::Value) -> BTreeSet<String> {
    schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PAY: &str = "name: pay\ndescription: d\nallow: [admin]\ninput_schema:\n  type: object\n  properties:\n    card: {type: string, x-sensitive: true}\n    note: {type: string}\nrun: {http: {url: 'http://127.0.0.1:1/x', headers: {Authorization: 'Bearer {{ secret.PAY_KEY }}'}}}\n";

    fn spec(yaml: &str) -> ToolSpec {
        serde_norway::from_str(yaml).expect("spec parses")
    }

    fn http() -> reqwest::Client {
        crate::executor::http_client().unwrap()
    }

    #[test]
    fn secrets_must_be_defined_and_sensitive_args_are_masked() {
        let issues = compile(spec(PAY), None, &http()).unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].message, "secret `PAY_KEY` is not defined");

        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::from_vars([("TOLLGATE_SECRET_PAY_KEY", "pk_live_123456")], None)
            .unwrap()
            .with_key_file(dir.path().join("t.db.hmac-key"));
        let secrets = Arc::new(secrets);
        let tool = compile_with_secrets(spec(PAY), None, &http(), &secrets).unwrap();
        assert!(tool.sensitive_args);
        let args = json!({"card": "4111111111111111", "note": "n"});
        let masked = tool.receipt_args(&args);
        let key = secrets.hash_key().unwrap();
        assert_eq!(
            masked.as_ref(),
            &json!({"card": secrets::keyed_hash(key.as_bytes(), &json!("4111111111111111")), "note": "n"})
        );
        // Nothing sensitive: borrowed, untouched.
        let plain = compile(
            spec(
                &PAY.replace(", x-sensitive: true", "")
                    .replace("Bearer {{ secret.PAY_KEY }}", "x"),
            ),
            None,
            &http(),
        )
        .unwrap();
        assert!(!plain.sensitive_args);
        assert!(matches!(plain.receipt_args(&args), Cow::Borrowed(_)));
    }

    #[test]
    fn x_sensitive_must_be_boolean() {
        let yaml = PAY
            .replace("x-sensitive: true", "x-sensitive: 'yes'")
            .replace("Bearer {{ secret.PAY_KEY }}", "x");
        let issues = compile(spec(&yaml), None, &http()).unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].field, "input_schema.properties.card.x-sensitive");
    }
}
