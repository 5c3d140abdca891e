//! The strict `{{ args.NAME }}` / `{{ secret.NAME }}` placeholder syntax
//! used by executors.
//!
//! A spec author writes placeholders in argv elements, URLs, headers, bodies
//! and static results; at call time they are filled from the call's validated
//! arguments and, for `secret`, from the server's secrets
//! ([`crate::secrets`]). The syntax is deliberately tiny and unforgiving:
//!
//! - `{{ args.NAME }}` or `{{ args.NAME.sub.field }}`, whitespace inside the
//!   braces optional; every segment matches `[A-Za-z_][A-Za-z0-9_-]*`.
//! - `{{ secret.NAME }}`, exactly one segment matching `[A-Z][A-Z0-9_]*`
//!   (upper case, like its `TOLLGATE_SECRET_NAME` variable).
//! - Anything else that involves `{{` or `}}` (an unknown root, an empty name,
//!   an unclosed `{{`, a stray `}}`, odd characters) is a parse error. A
//!   typo must fail when specs load, not turn into literal text that a
//!   program later receives.
//!
//! Templates are parsed once, when a tool version is compiled, and
//! [`check_placeholders`] turns every argument placeholder that names no
//! input-schema property into a [`SpecIssue`], and [`check_secrets`] every
//! secret placeholder that names no defined secret, so an unknown
//! placeholder is always a load error and never a runtime surprise.
//!
//! Rendering looks values up in a [`Scope`]: the arguments, plus the
//! secrets the executor resolved for this call.
//!
//! How a value is *inserted* depends on where it goes (one argv element, a
//! percent-encoded URL component, a typed JSON value), so this module offers
//! the pieces and each executor chooses: [`Template::render`],
//! [`Template::render_encoded`], [`Template::render_or_empty`] and
//! [`JsonTemplate::render`].

use std::collections::BTreeSet;
use std::fmt;

use serde_json::{Map, Value};

use crate::secrets::{Secrets, is_secret_name};
use crate::spec::issue::SpecIssue;

/// Where a placeholder's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Root {
    /// The call's validated arguments.
    Args,
    /// A server-side secret, resolved when the call runs (never from the caller).
    Secret,
}

impl Root {
    fn from_name(name: &str) -> Option<Root> {
        match name {
            "args" => Some(Root::Args),
            "secret" => Some(Root::Secret),
            _ => None,
        }
    }

    /// The name written in templates.
    pub fn name(self) -> &'static str {
        match self {
            Root::Args => "args",
            Root::Secret => "secret",
        }
    }
}

/// One `{{ root.path }}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub root: Root,
    /// Never empty: `path[0]` is the argument (or secret) name; for
    /// arguments, the rest descend into nested objects. A secret's path has
    /// exactly one element.
    pub path: Vec<String>,
}

/// The values placeholders are filled from: the call's arguments and the
/// secrets resolved for it. `From<&Map>` gives a scope with arguments only,
/// which is all a tool without secrets needs.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    args: &'a Map<String, Value>,
    secrets: Option<&'a Map<String, Value>>,
}

impl<'a> Scope<'a> {
    /// Arguments and resolved secrets (see [`crate::secrets::Resolved`]).
    pub fn new(args: &'a Map<String, Value>, secrets: &'a Map<String, Value>) -> Scope<'a> {
        Scope {
            args,
            secrets: Some(secrets),
        }
    }
}

impl<'a> From<&'a Map<String, Value>> for Scope<'a> {
    fn from(args: &'a Map<String, Value>) -> Scope<'a> {
        Scope {
            args,
            secrets: None,
        }
    }
}

impl fmt::Debug for Scope<'_> {
    /// Secret names only, never values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("args", &self.args.keys().collect::<Vec<_>>())
            .field(
                "secrets",
                &self.secrets.map(|s| s.keys().collect::<Vec<_>>()),
            )
            .finish()
    }
}

impl Placeholder {
    /// The value this placeholder refers to, or `None` when it is absent.
    ///
    /// JSON `null` counts as absent: a caller who sends `"x": null` for an
    /// optional argument means "not given", and treating it so keeps
    /// executors to one rule (absent → omitted).
    pub fn lookup<'a>(&self, scope: impl Into<Scope<'a>>) -> Option<&'a Value> {
        let scope = scope.into();
        let (first, rest) = self.path.split_first()?;
        let map = match self.root {
            Root::Args => scope.args,
            Root::Secret => scope.secrets?,
        };
        let mut value = map.get(first)?;
        for segment in rest {
            value = value.as_object()?.get(segment)?;
        }
        (!value.is_null()).then_some(value)
    }
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.root.name(), self.path.join("."))
    }
}

/// Why a template string could not be parsed. Offsets are byte offsets into
/// the string, so long argv strings still point at the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("`{{{{` at byte {offset} is never closed; end the placeholder with `}}}}`")]
    Unclosed { offset: usize },
    #[error(
        "`}}}}` at byte {offset} has no matching `{{{{`; placeholders look like `{{{{ args.NAME }}}}`"
    )]
    StrayClose { offset: usize },
    #[error("empty placeholder at byte {offset}; write `{{{{ args.NAME }}}}`")]
    Empty { offset: usize },
    #[error(
        "unknown placeholder root `{root}` in `{{{{ {inner} }}}}`; the roots are `args` and `secret`, as in `{{{{ args.NAME }}}}` or `{{{{ secret.NAME }}}}`"
    )]
    UnknownRoot { root: String, inner: String },
    #[error(
        "placeholder `{{{{ {inner} }}}}` names no argument or secret; write `{{{{ args.NAME }}}}` or `{{{{ secret.NAME }}}}`"
    )]
    MissingName { inner: String },
    #[error(
        "invalid secret name `{name}` in placeholder `{{{{ {inner} }}}}`; a secret name is one upper-case letter followed by A-Z, 0-9 and `_` ([A-Z][A-Z0-9_]*), as in `{{{{ secret.PAYMENTS_KEY }}}}`"
    )]
    BadSecretName { name: String, inner: String },
    #[error(
        "invalid name `{segment}` in placeholder `{{{{ {inner} }}}}`; a name starts with a letter or `_` and contains only letters, digits, `_` and `-`"
    )]
    BadName { segment: String, inner: String },
}

impl TemplateError {
    /// This error as a spec issue at `field`.
    pub fn to_issue(&self, field: &str) -> SpecIssue {
        SpecIssue::at(field, self.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Hole(Placeholder),
}

/// A parsed template string: literal text interleaved with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// A placeholder had no value when rendering (absent or `null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Absent<'a>(pub &'a Placeholder);

impl Template {
    /// Parse `source`, rejecting anything questionable (see the module docs).
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = source;
        let mut offset = 0;
        loop {
            let open = rest.find("{{");
            if let Some(c) = rest.find("}}")
                && open.is_none_or(|o| c < o)
            {
                return Err(TemplateError::StrayClose { offset: offset + c });
            }
            let Some(o) = open else { break };
            literal.push_str(&rest[..o]);
            let after = &rest[o + 2..];
            // The placeholder ends at the first `}}`; a `{{` before it means
            // the first one was never closed.
            let unclosed = TemplateError::Unclosed { offset: offset + o };
            let end = after.find("}}").ok_or(unclosed.clone())?;
            if after[..end].contains("{{") {
                return Err(unclosed);
            }
            let hole = parse_placeholder(&after[..end], offset + o)?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Hole(hole));
            let consumed = o + 2 + end + 2;
            rest = &rest[consumed..];
            offset += consumed;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template { pieces })
    }

    /// Every placeholder, in order of appearance.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Hole(h) => Some(h),
            Piece::Literal(_) => None,
        })
    }

    /// The placeholder, when the whole string is exactly one placeholder
    /// (no surrounding text, not even spaces).
    pub fn as_single_placeholder(&self) -> Option<&Placeholder> {
        match self.pieces.as_slice() {
            [Piece::Hole(h)] => Some(h),
            _ => None,
        }
    }

    /// True when the whole string is exactly one placeholder.
    pub fn is_single_placeholder(&self) -> bool {
        self.as_single_placeholder().is_some()
    }

    /// True when the string has no placeholders.
    pub fn is_literal(&self) -> bool {
        self.placeholders().next().is_none()
    }

    /// The text, when the template has no placeholders.
    pub fn as_literal(&self) -> Option<String> {
        self.is_literal().then(|| self.render_or_empty(&Map::new()))
    }

    /// Render with each value as text (see [`value_text`]); fails on the
    /// first absent placeholder so the caller can omit the whole thing.
    pub fn render<'t, 's>(&'t self, scope: impl Into<Scope<'s>>) -> Result<String, Absent<'t>> {
        self.render_encoded(scope, |s| s.to_owned())
    }

    /// Like [`render`](Self::render), but passes each value's text through
    /// `encode` (e.g. percent-encoding) while literal text is kept as written.
    pub fn render_encoded<'t, 's>(
        &'t self,
        scope: impl Into<Scope<'s>>,
        encode: impl Fn(&str) -> String,
    ) -> Result<String, Absent<'t>> {
        let scope = scope.into();
        self.substitute(|p| p.lookup(scope).map(|v| encode(&value_text(v))))
    }

    /// The general form: `fill` gives each placeholder's replacement text,
    /// or `None` for absent (which fails the whole rendering). Used e.g. to
    /// try a URL template with dummy values at compile time.
    pub fn substitute<'t>(
        &'t self,
        mut fill: impl FnMut(&'t Placeholder) -> Option<String>,
    ) -> Result<String, Absent<'t>> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Hole(h) => out.push_str(&fill(h).ok_or(Absent(h))?),
            }
        }
        Ok(out)
    }

    /// Render with absent placeholders as empty text: for display strings
    /// (static results) where a missing optional value should just vanish.
    pub fn render_or_empty<'s>(&self, scope: impl Into<Scope<'s>>) -> String {
        let scope = scope.into();
        self.substitute(|p| Some(p.lookup(scope).map(value_text).unwrap_or_default()))
            .unwrap_or_default()
    }

    /// Names of the secrets this template refers to, in order, repeated as written.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.placeholders()
            .filter(|p| p.root == Root::Secret)
            .map(|p| p.path[0].as_str())
    }

    /// Parse `source` and check its placeholders against the input schema's
    /// top-level `properties` (and, given secrets, that every secret is
    /// defined), reporting problems at `field`.
    pub fn compile<'k>(
        source: &str,
        field: &str,
        known: impl Into<Known<'k>>,
    ) -> Result<Template, Vec<SpecIssue>> {
        let known = known.into();
        let template = Template::parse(source).map_err(|e| vec![e.to_issue(field)])?;
        let mut issues = check_placeholders(field, template.placeholders(), known.properties);
        if let Some(secrets) = known.secrets {
            issues.extend(check_secrets(field, template.placeholders(), secrets));
        }
        if issues.is_empty() {
            Ok(template)
        } else {
            Err(issues)
        }
    }
}

fn parse_placeholder(raw: &str, offset: usize) -> Result<Placeholder, TemplateError> {
    let inner = raw.trim();
    if inner.is_empty() {
        return Err(TemplateError::Empty { offset });
    }
    let mut segments = inner.split('.');
    let root_name = segments.next().unwrap_or_default();
    let root = Root::from_name(root_name).ok_or_else(|| TemplateError::UnknownRoot {
        root: root_name.to_owned(),
        inner: inner.to_owned(),
    })?;
    let path: Vec<String> = segments.map(str::to_owned).collect();
    if path.is_empty() || path == [""] {
        return Err(TemplateError::MissingName {
            inner: inner.to_owned(),
        });
    }
    if root == Root::Secret {
        // A secret is one string: no fields to descend into.
        let name = path.join(".");
        if !is_secret_name(&name) {
            return Err(TemplateError::BadSecretName {
                name,
                inner: inner.to_owned(),
            });
        }
        return Ok(Placeholder {
            root,
            path: vec![name],
        });
    }
    if let Some(bad) = path.iter().find(|s| !is_name(s)) {
        return Err(TemplateError::BadName {
            segment: bad.clone(),
            inner: inner.to_owned(),
        });
    }
    Ok(Placeholder { root, path })
}

/// `[A-Za-z_][A-Za-z0-9_-]*`
fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A value as text: strings as-is, numbers and booleans via `to_string`,
/// objects and arrays as compact JSON.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What template compilation checks placeholders against: the input
/// schema's top-level property names and, when given, the defined secrets.
/// `From<&BTreeSet<String>>` gives properties only (secrets unchecked).
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    pub properties: &'a BTreeSet<String>,
    pub secrets: Option<&'a Secrets>,
}

impl<'a> From<&'a BTreeSet<String>> for Known<'a> {
    fn from(properties: &'a BTreeSet<String>) -> Known<'a> {
        Known {
            properties,
            secrets: None,
        }
    }
}

/// One issue per `secret` placeholder whose secret is not defined, with the
/// fix (`set TOLLGATE_SECRET_X or create <dir>/X`). Checked when a tool
/// loads, so `serve` refuses to start rather than a call failing later.
pub fn check_secrets<'a>(
    field: &str,
    placeholders: impl IntoIterator<Item = &'a Placeholder>,
    secrets: &Secrets,
) -> Vec<SpecIssue> {
    placeholders
        .into_iter()
        .filter(|p| p.root == Root::Secret && !secrets.is_defined(&p.path[0]))
        .map(|p| {
            let name = &p.path[0];
            SpecIssue::at(field, format!("secret `{name}` is not defined"))
                .hint(secrets.define_hint(name))
        })
        .collect()
}

/// One issue per placeholder whose argument name is not a top-level property
/// of the input schema. `field` is where the placeholders were written.
/// Secret placeholders are not arguments and are left to [`check_secrets`].
pub fn check_placeholders<'a>(
    field: &str,
    placeholders: impl IntoIterator<Item = &'a Placeholder>,
    properties: &BTreeSet<String>,
) -> Vec<SpecIssue> {
    placeholders
        .into_iter()
        .filter(|p| p.root == Root::Args && !properties.contains(&p.path[0]))
        .map(|p| {
            let hint = if properties.is_empty() {
                format!(
                    "the input schema has no properties; declare `{}` under input_schema.properties",
                    p.path[0]
                )
            } else {
                let names: Vec<&str> = properties.iter().map(String::as_str).collect();
                format!("the input schema has properties: {}", names.join(", "))
            };
            SpecIssue::at(field, format!("unknown placeholder `{p}`")).hint(hint)
        })
        .collect()
}

/// A JSON value whose strings are templates, for HTTP bodies and static
/// structured results.
///
/// A string that is exactly one placeholder becomes the argument's value
/// *with its JSON type* (so `n: "{{ args.n }}"` sends a number); a string
/// with surrounding text renders as text; other values pass through. When a
/// string's value is absent, its object member is omitted, or it becomes
/// `null` inside an array (so positions don't shift).
#[derive(Debug, Clone, PartialEq)]
pub enum JsonTemplate {
    /// A value with no strings to fill in (or a literal string).
    Literal(Value),
    /// A string containing at least one placeholder.
    String(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    /// Parse every string in `value` and check its placeholders, reporting
    /// each problem at its own path under `field` (e.g. `run.http.body.n`).
    pub fn compile<'k>(
        value: &Value,
        field: &str,
        known: impl Into<Known<'k>>,
    ) -> Result<JsonTemplate, Vec<SpecIssue>> {
        let known = known.into();
        let mut issues = Vec::new();
        let template = Self::compile_into(value, field, known, &mut issues);
        if issues.is_empty() {
            Ok(template)
        } else {
            Err(issues)
        }
    }

    fn compile_into(
        value: &Value,
        field: &str,
        known: Known<'_>,
        issues: &mut Vec<SpecIssue>,
    ) -> JsonTemplate {
        match value {
            Value::String(s) => match Template::compile(s, field, known) {
                Ok(t) if t.is_literal() => JsonTemplate::Literal(value.clone()),
                Ok(t) => JsonTemplate::String(t),
                Err(mut found) => {
                    issues.append(&mut found);
                    JsonTemplate::Literal(Value::Null)
                }
            },
            Value::Array(items) => JsonTemplate::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Self::compile_into(v, &format!("{field}[{i}]"), known, issues))
                    .collect(),
            ),
            Value::Object(map) => JsonTemplate::Object(
                map.iter()
                    .map(|(k, v)| {
                        let path = member_path(field, k);
                        (k.clone(), Self::compile_into(v, &path, known, issues))
                    })
                    .collect(),
            ),
            other => JsonTemplate::Literal(other.clone()),
        }
    }

    /// Fill in the arguments. A top-level absent value renders as `null`.
    pub fn render<'s>(&self, scope: impl Into<Scope<'s>>) -> Value {
        self.render_opt(scope.into()).unwrap_or(Value::Null)
    }

    fn render_opt(&self, scope: Scope<'_>) -> Option<Value> {
        match self {
            JsonTemplate::Literal(v) => Some(v.clone()),
            JsonTemplate::String(t) => match t.as_single_placeholder() {
                Some(p) => p.lookup(scope).cloned(),
                None => t.render(scope).ok().map(Value::String),
            },
            JsonTemplate::Array(items) => Some(Value::Array(
                items
                    .iter()
                    .map(|t| t.render_opt(scope).unwrap_or(Value::Null))
                    .collect(),
            )),
            JsonTemplate::Object(members) => Some(Value::Object(
                members
                    .iter()
                    .filter_map(|(k, t)| Some((k.clone(), t.render_opt(scope)?)))
                    .collect(),
            )),
        }
    }

    /// Every placeholder in the value, in document order.
    pub fn placeholders(&self) -> Vec<&Placeholder> {
        let mut out = Vec::new();
        self.collect_placeholders(&mut out);
        out
    }

    fn collect_placeholders<'t>(&'t self, out: &mut Vec<&'t Placeholder>) {
        match self {
            JsonTemplate::Literal(_) => {}
            JsonTemplate::String(t) => out.extend(t.placeholders()),
            JsonTemplate::Array(items) => items.iter().for_each(|t| t.collect_placeholders(out)),
            JsonTemplate::Object(members) => members
                .iter()
                .for_each(|(_, t)| t.collect_placeholders(out)),
        }
    }
}

/// `field.key`, or `field["key"]` when the key is not a plain name.
pub(crate) fn member_path(field: &str, key: &str) -> String {
    if is_name(key) {
        format!("{field}.{key}")
    } else {
        format!("{field}[{}]", Value::String(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test args must be an object"),
        }
    }

    fn props(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_placeholders_with_optional_whitespace() {
        for src in ["{{args.x}}", "{{ args.x }}", "{{\targs.x  }}"] {
            let t = Template::parse(src).unwrap();
            assert!(t.is_single_placeholder(), "{src}");
            assert_eq!(t.placeholders().next().unwrap().path, ["x"]);
        }
        let t = Template::parse("a {{ args.user.name }}-{{ args.n_2 }} b").unwrap();
        let found: Vec<String> = t.placeholders().map(|p| p.to_string()).collect();
        assert_eq!(found, ["args.user.name", "args.n_2"]);
        assert!(!t.is_single_placeholder() && !t.is_literal());
        assert!(
            !Template::parse(" {{ args.x }}")
                .unwrap()
                .is_single_placeholder()
        );
    }

    #[test]
    fn literals_and_single_braces_are_fine() {
        let t = Template::parse("plain {json: 1} text").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.as_literal().unwrap(), "plain {json: 1} text");
        assert!(Template::parse("").unwrap().is_literal());
    }

    #[test]
    fn rejects_bad_placeholders() {
        let cases = [
            ("{{ args.x", TemplateError::Unclosed { offset: 0 }),
            ("a {{ {{ args.x }}", TemplateError::Unclosed { offset: 2 }),
            ("x }} y", TemplateError::StrayClose { offset: 2 }),
            ("{{ args.x }} }}", TemplateError::StrayClose { offset: 13 }),
            ("{{  }}", TemplateError::Empty { offset: 0 }),
        ];
        for (src, want) in cases {
            assert_eq!(Template::parse(src), Err(want), "{src}");
        }
        let err = |s: &str| Template::parse(s).unwrap_err();
        assert!(
            matches!(err("{{ env.HOME }}"), TemplateError::UnknownRoot { root, .. } if root == "env")
        );
        assert!(matches!(err("{{ x }}"), TemplateError::UnknownRoot { .. }));
        assert!(matches!(
            err("{{ args }}"),
            TemplateError::MissingName { .. }
        ));
        assert!(matches!(
            err("{{ args. }}"),
            TemplateError::MissingName { .. }
        ));
        for bad in [
            "{{ args.1x }}",
            "{{ args.a b }}",
            "{{ args.a..b }}",
            "{{ args.a$ }}",
            "{{ args.x. }}",
        ] {
            assert!(matches!(err(bad), TemplateError::BadName { .. }), "{bad}");
        }
        assert!(
            err("{{ nope.x }}")
                .to_string()
                .contains("the roots are `args` and `secret`")
        );
    }

    #[test]
    fn parses_secret_placeholders() {
        let t = Template::parse("Bearer {{ secret.PAYMENTS_KEY }}").unwrap();
        let p = t.placeholders().next().unwrap();
        assert_eq!(p.root, Root::Secret);
        assert_eq!(p.path, ["PAYMENTS_KEY"]);
        assert_eq!(p.to_string(), "secret.PAYMENTS_KEY");
        assert_eq!(t.secret_names().collect::<Vec<_>>(), ["PAYMENTS_KEY"]);
        let t = Template::parse("{{secret.A}}-{{ args.a }}-{{ secret.B_2 }}").unwrap();
        assert_eq!(t.secret_names().collect::<Vec<_>>(), ["A", "B_2"]);
        for bad in [
            "{{ secret.lower }}",
            "{{ secret.Mixed }}",
            "{{ secret._X }}",
            "{{ secret.1X }}",
            "{{ secret.A-B }}",
            "{{ secret.A.B }}",
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(
                matches!(e, TemplateError::BadSecretName { .. }),
                "{bad}: {e:?}"
            );
            assert!(e.to_string().contains("[A-Z][A-Z0-9_]*"), "{e}");
        }
        assert!(matches!(
            Template::parse("{{ secret }}").unwrap_err(),
            TemplateError::MissingName { .. }
        ));
        assert!(matches!(
            Template::parse("{{ secrets.X }}").unwrap_err(),
            TemplateError::UnknownRoot { .. }
        ));
    }

    #[test]
    fn secrets_render_from_the_scope_only() {
        let a = args(json!({"id": "7", "KEY": "from-args"}));
        let s = args(json!({"KEY": "from-secrets"}));
        let t = Template::parse("{{ args.id }}:{{ secret.KEY }}").unwrap();
        assert_eq!(t.render(Scope::new(&a, &s)).unwrap(), "7:from-secrets");
        // Without resolved secrets a secret is absent, never taken from args.
        assert!(t.render(&a).is_err());
        let j = JsonTemplate::compile(&json!({"k": "{{ secret.KEY }}"}), "b", &props(&[])).unwrap();
        assert_eq!(j.render(Scope::new(&a, &s)), json!({"k": "from-secrets"}));
        assert_eq!(j.placeholders().len(), 1);
        let shown = format!("{:?}", Scope::new(&a, &s));
        assert!(!shown.contains("from-secrets"), "{shown}");
    }

    #[test]
    fn secret_placeholders_are_not_arguments_and_must_be_defined() {
        // Not an argument: no "unknown placeholder" issue without secrets to check.
        assert!(Template::compile("{{ secret.KEY }}", "f", &props(&[])).is_ok());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("DEFINED"), "value-123456").unwrap();
        let secrets = Secrets::from_vars(Vec::<(String, String)>::new(), Some(dir.path())).unwrap();
        let p = props(&["id"]);
        let known = Known {
            properties: &p,
            secrets: Some(&secrets),
        };
        assert!(Template::compile("{{ secret.DEFINED }}/{{ args.id }}", "f", known).is_ok());
        let issues =
            Template::compile("{{ secret.MISSING }}{{ args.nope }}", "run.x", known).unwrap_err();
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0].message, "unknown placeholder `args.nope`");
        assert_eq!(issues[1].field, "run.x");
        assert_eq!(issues[1].message, "secret `MISSING` is not defined");
        assert_eq!(
            issues[1].hint.as_deref().unwrap(),
            format!(
                "set TOLLGATE_SECRET_MISSING or create {}",
                dir.path().join("MISSING").display()
            )
        );
        let issues =
            JsonTemplate::compile(&json!({"a": ["{{ secret.GONE }}"]}), "run.http.body", known)
                .unwrap_err();
        assert_eq!(issues[0].field, "run.http.body.a[0]");
    }

    #[test]
    fn renders_values_as_text() {
        let a = args(json!({"s": "hi", "n": 3, "b": true, "o": {"k": [1, 2]}, "z": null}));
        let t = Template::parse("{{ args.s }}/{{ args.n }}/{{ args.b }}/{{ args.o }}").unwrap();
        assert_eq!(t.render(&a).unwrap(), r#"hi/3/true/{"k":[1,2]}"#);
        let nested = Template::parse("{{ args.o.k }}").unwrap();
        assert_eq!(nested.render(&a).unwrap(), "[1,2]");
        for absent in ["{{ args.z }}", "{{ args.missing }}", "x{{ args.s.deeper }}"] {
            let t = Template::parse(absent).unwrap();
            assert!(t.render(&a).is_err(), "{absent}");
        }
        assert_eq!(
            Template::parse("a{{ args.z }}b")
                .unwrap()
                .render_or_empty(&a),
            "ab"
        );
        let enc = Template::parse("/{{ args.s }}!").unwrap();
        assert_eq!(
            enc.render_encoded(&a, |v| v.to_uppercase()).unwrap(),
            "/HI!"
        );
    }

    #[test]
    fn json_template_keeps_types_and_omits_absent() {
        let spec = json!({
            "n": "{{ args.n }}",
            "text": "n is {{ args.n }}",
            "gone": "{{ args.missing }}",
            "list": ["{{ args.missing }}", "{{ args.flag }}", 7],
            "fixed": {"a": "literal", "b": null}
        });
        let t = JsonTemplate::compile(&spec, "body", &props(&["n", "flag", "missing"])).unwrap();
        let out = t.render(&args(json!({"n": 42, "flag": false})));
        assert_eq!(
            out,
            json!({
                "n": 42,
                "text": "n is 42",
                "list": [null, false, 7],
                "fixed": {"a": "literal", "b": null}
            })
        );
        let top = JsonTemplate::compile(&json!("{{ args.x }}"), "json", &props(&["x"])).unwrap();
        assert_eq!(top.render(&Map::new()), Value::Null);
    }

    #[test]
    fn unknown_placeholders_are_spec_issues() {
        let p = props(&["message", "count"]);
        let issues = Template::compile(
            "{{ args.mesage }} {{ args.count }}",
            "run.command.argv[1]",
            &p,
        )
        .unwrap_err();
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].field, "run.command.argv[1]");
        assert_eq!(issues[0].message, "unknown placeholder `args.mesage`");
        assert_eq!(
            issues[0].hint.as_deref(),
            Some("the input schema has properties: count, message")
        );

        let body = json!({"a": "{{ args.x }}", "b": ["{{ args.y }}"], "c d": "{{ args.z }}", "ok": "{{ args.count }}"});
        let issues = JsonTemplate::compile(&body, "run.http.body", &p).unwrap_err();
        let fields: Vec<&str> = issues.iter().map(|i| i.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "run.http.body.a",
                "run.http.body.b[0]",
                "run.http.body[\"c d\"]"
            ]
        );

        let none = Template::compile("{{ args.x }}", "f", &BTreeSet::new()).unwrap_err();
        assert!(none[0].hint.as_deref().unwrap().contains("no properties"));

        let parse = Template::compile("{{ args.x", "f", &p).unwrap_err();
        assert_eq!(parse[0].field, "f");
        assert!(parse[0].message.contains("never closed"));
    }
}
