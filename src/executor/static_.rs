//! The `static` executor: a fixed result, optionally filled in from the
//! arguments. Useful for canned answers, tests and demos; it cannot fail.
//!
//! It refuses `{{ secret.NAME }}`: its result goes straight back to the
//! caller, so a secret there could only ever be leaked (or redacted).

use serde_json::{Map, Value};

use super::{CompileContext, ExecOutput};
use crate::spec::issue::SpecIssue;
use crate::template::{JsonTemplate, Placeholder, Root, Template};

/// `run: { static: {..} }`: exactly one of `text` or `json`.
#[derive(Debug, Clone, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct StaticSpec {
    /// A text result; placeholders render as text, absent ones as nothing.
    #[serde(default)]
    pub text: Option<String>,
    /// A structured result. A string that is exactly one placeholder takes
    /// the argument's JSON type; absent values are omitted from objects.
    #[serde(default)]
    pub json: Option<Value>,
}

/// A checked `static` spec.
#[derive(Debug, Clone)]
pub enum CompiledStatic {
    Text(Template),
    Json(JsonTemplate),
}

impl StaticSpec {
    pub fn compile(&self, ctx: &CompileContext) -> Result<CompiledStatic, Vec<SpecIssue>> {
        let props = &ctx.properties;
        match (&self.text, &self.json) {
            (Some(text), None) => {
                let t = Template::compile(text, "run.static.text", props)?;
                no_secrets("run.static.text", t.placeholders())?;
                Ok(CompiledStatic::Text(t))
            }
            (None, Some(json)) => {
                let t = JsonTemplate::compile(json, "run.static.json", props)?;
                no_secrets("run.static.json", t.placeholders())?;
                Ok(CompiledStatic::Json(t))
            }
            (Some(_), Some(_)) => Err(vec![
                SpecIssue::at("run.static", "both `text` and `json` are set")
                    .hint("keep exactly one of them"),
            ]),
            (None, None) => Err(vec![
                SpecIssue::at("run.static", "neither `text` nor `json` is set")
                    .hint("e.g. static: { text: \"{{ args.message }}\" }"),
            ]),
        }
    }
}

/// One issue per secret placeholder.
fn no_secrets<'p>(
    field: &str,
    placeholders: impl IntoIterator<Item = &'p Placeholder>,
) -> Result<(), Vec<SpecIssue>> {
    let issues: Vec<SpecIssue> = placeholders
        .into_iter()
        .filter(|p| p.root == Root::Secret)
        .map(|p| {
            SpecIssue::at(
                field,
                format!(
                    "a static result cannot use `{{{{ {p} }}}}`: it would be sent to the caller"
                ),
            )
            .hint("secrets belong in a command's argv or set_env, or an http request")
        })
        .collect();
    if issues.is_empty() {
        Ok(())
    } else {
        Err(issues)
    }
}

impl CompiledStatic {
    pub fn run(&self, args: &Map<String, Value>) -> ExecOutput {
        match self {
            CompiledStatic::Text(t) => ExecOutput::text(t.render_or_empty(args)),
            CompiledStatic::Json(t) => {
                let value = t.render(args);
                ExecOutput {
                    text: value.to_string(),
                    structured: Some(value),
                    is_error: false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::CompiledRun;
    use super::super::test_support::{args, ctx, run_spec};
    use serde_json::json;

    fn compile(yaml: &str) -> super::CompiledStatic {
        match run_spec(yaml).compile(&ctx(&["message", "n"])) {
            Ok(CompiledRun::Static(s)) => s,
            other => panic!("expected a static spec, got {other:?}"),
        }
    }

    #[test]
    fn text() {
        let s = compile("static: { text: 'you said: {{ args.message }}' }");
        assert_eq!(s.run(&args(json!({"message": "hi"}))).text, "you said: hi");
        assert_eq!(s.run(&args(json!({}))).text, "you said: ");
    }

    #[test]
    fn json() {
        let s = compile(
            "static: { json: { echoed: '{{ args.message }}', n: '{{ args.n }}', fixed: [1, true] } }",
        );
        let out = s.run(&args(json!({"message": "hi", "n": 2})));
        assert_eq!(
            out.structured,
            Some(json!({"echoed": "hi", "n": 2, "fixed": [1, true]}))
        );
        // Keys keep the spec's order (serde_json's preserve_order is on).
        assert_eq!(out.text, r#"{"echoed":"hi","n":2,"fixed":[1,true]}"#);
        assert!(!out.is_error);
    }

    #[test]
    fn exactly_one_of_text_or_json() {
        for yaml in ["static: { text: a, json: 1 }", "static: {}"] {
            let issues = run_spec(yaml).compile(&ctx(&[])).unwrap_err();
            assert_eq!(issues[0].field, "run.static", "{yaml}");
        }
        let issues = run_spec("static: { json: { a: '{{ args.nope }}' } }")
            .compile(&ctx(&["n"]))
            .unwrap_err();
        assert_eq!(issues[0].field, "run.static.json.a");
    }

    #[test]
    fn secrets_are_refused() {
        for yaml in [
            "static: { text: 'key {{ secret.KEY }}' }",
            "static: { json: { k: ['{{ secret.KEY }}'] } }",
        ] {
            let issues = run_spec(yaml).compile(&ctx(&[])).unwrap_err();
            assert_eq!(issues.len(), 1, "{yaml}");
            assert!(
                issues[0].message.contains("cannot use `{{ secret.KEY }}`"),
                "{}",
                issues[0].message
            );
        }
    }
}
