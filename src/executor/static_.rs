//! The `static` executor: a fixed result, optionally filled in from the
//! arguments. Useful for canned answers, tests and demos; it cannot fail.

use serde_json::{Map, Value};

use super::{CompileContext, ExecOutput};
use crate::spec::issue::SpecIssue;
use crate::template::{JsonTemplate, Template};

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
        match (&self.text, &self.json) {
            (Some(text), None) => Template::compile(text, "run.static.text", &ctx.properties)
                .map(CompiledStatic::Text),
            (None, Some(json)) => JsonTemplate::compile(json, "run.static.json", &ctx.properties)
                .map(CompiledStatic::Json),
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
        assert_eq!(out.text, r#"{"echoed":"hi","fixed":[1,true],"n":2}"#);
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
}
