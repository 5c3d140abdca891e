//! The properties behind tollgate's fuzz targets, shared by the libFuzzer
//! binaries in `fuzz_targets/` and by the proptest suite in
//! `tests/fuzz_props.rs` (which includes this file with `#[path]`, so it may
//! only use crates the main crate also has: tollgate, serde_json, rmcp,
//! reqwest).
//!
//! Each entry point takes raw bytes, never panics on its own account, and
//! panics (fails the fuzzer or the test) only when tollgate breaks a promise:
//!
//! - [`spec_parse`]: YAML bytes → spec loader → catalog compile.
//! - [`args_template`]: (fixed spec, JSON arguments) → validate → render.
//! - [`jsonrpc`]: bytes → HTTP JSON-RPC envelope check → rmcp message →
//!   what the server does with `tools/call` params.
//!
//! See `docs/fuzzing.md`.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rmcp::model::{CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use serde_json::{Map, Value};
use tollgate::catalog::{self, Catalog, CompiledTool};
use tollgate::executor::{CompiledRun, ExecError};
use tollgate::pipeline::CallError;
use tollgate::spec::SpecIssue;
use tollgate::spec::load::{self, MAX_SPEC_BYTES};

/// The server's default argument size limit.
const ARGS_LIMIT: usize = tollgate::config::DEFAULT_MAX_ARGS_BYTES;

/// The principals file the spec target compiles against (so `allow` roles
/// are checked, as `serve` does).
const PRINCIPALS: &str = "\
roles:
  admin: operators
  support: support agents
  viewer: read only
principals:
  alice: { roles: [admin, support] }
";

fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| tollgate::executor::http_client().expect("HTTP client"))
}

fn principals() -> &'static tollgate::principals::Principals {
    static P: OnceLock<tollgate::principals::Principals> = OnceLock::new();
    P.get_or_init(|| tollgate::principals::Principals::parse(PRINCIPALS).expect("principals"))
}

/// Compile one spec the way `serve` does (principals checked).
fn compile(spec: tollgate::spec::ToolSpec) -> Result<CompiledTool, Vec<SpecIssue>> {
    catalog::compile(spec, Some(principals()), http_client())
}

fn assert_issue(issue: &SpecIssue) {
    assert!(
        !issue.message.trim().is_empty(),
        "spec issue without a message: {issue:?}"
    );
}

// ───────────────────────────── spec_parse ─────────────────────────────

/// Bytes as a spec file: parse, hash, compile (schema, executor templates,
/// quotas), rebuild from canonical JSON, build the `tools/list` entry.
pub fn spec_parse(data: &[u8]) {
    // The loader refuses larger files and files that are not UTF-8 before parsing.
    if data.len() as u64 > MAX_SPEC_BYTES {
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.yaml");
    let loaded = match load::parse(text, file) {
        Ok(loaded) => loaded,
        Err(issue) => return assert_issue(&issue),
    };

    // The hash is of the canonical form, and the canonical form is a fixed point.
    assert_eq!(
        loaded.hash,
        tollgate::canonical::sha256_hex(loaded.canonical.as_bytes())
    );
    let value: Value =
        serde_json::from_str(&loaded.canonical).expect("canonical form is valid JSON");
    assert_eq!(
        tollgate::canonical::to_string(&value),
        loaded.canonical,
        "canonical form is not canonical"
    );
    // Reformatting a spec does not make a new version: the canonical JSON,
    // written as the spec file, loads with the same hash.
    match load::parse(&as_spec_file(&loaded.canonical), file) {
        Ok(again) => assert_eq!(
            again.hash, loaded.hash,
            "the canonical form of a spec hashes differently when loaded"
        ),
        Err(issue) => panic!(
            "a spec's canonical form does not load: {issue}\ncanonical: {}",
            loaded.canonical
        ),
    }

    let tool = match compile(loaded.spec.clone()) {
        Ok(tool) => tool,
        Err(issues) => {
            assert!(!issues.is_empty(), "compile failed without an issue");
            issues.iter().for_each(assert_issue);
            return;
        }
    };
    // A pinned version is rebuilt from its stored canonical JSON: whatever
    // compiled from YAML must rebuild and compile from it too.
    let rebuilt = load::from_canonical(&loaded.canonical)
        .unwrap_or_else(|e| panic!("compiled spec does not rebuild from canonical JSON: {e}"));
    if let Err(issues) = compile(rebuilt) {
        panic!("spec compiled from YAML but not from its canonical JSON: {issues:?}");
    }
    // tools/list: one definition, named as the spec, serializable.
    let name = tool.spec.name.clone();
    let catalog = Catalog::from_tools([tool]);
    let defs = tollgate::server::definitions(&catalog);
    assert_eq!(defs.len(), 1);
    assert_eq!(defs[0].name, name);
    serde_json::to_string(&defs[0]).expect("tool definition serializes");
    // Its own rendering with no arguments must not panic either.
    if let Some(tool) = catalog.get(&name) {
        render_any(tool, &Map::new());
    }
}

/// Canonical JSON as a spec author would write it to a file: the same JSON
/// value, with the characters YAML does not allow raw in a file (DEL, the C1
/// controls, U+FFFE/U+FFFF) or reads as line breaks (NEL, U+2028, U+2029)
/// written as `\u` escapes. The canonical form
/// keeps them raw, as JSON allows, and is never itself read as YAML.
fn as_spec_file(canonical: &str) -> String {
    let printable = |c: char| {
        matches!(c, '\t' | '\n' | '\r' | ' '..='~')
            || (('\u{a0}'..='\u{d7ff}').contains(&c) && !matches!(c, '\u{2028}' | '\u{2029}'))
            || ('\u{e000}'..='\u{fffd}').contains(&c)
            || c >= '\u{10000}'
    };
    let mut out = String::with_capacity(canonical.len());
    for c in canonical.chars() {
        if printable(c) {
            out.push(c);
        } else {
            out.push_str(&format!("\\u{:04x}", c as u32));
        }
    }
    out
}

// ──────────────────────────── args_template ────────────────────────────

/// The fixed specs the argument target calls: the repository's example
/// specs plus three that put placeholders everywhere a kind allows.
pub const SPECS: &[&str] = &[
    include_str!("../../tool-specs/echo.yaml"),
    include_str!("../../tool-specs/http_get.yaml"),
    include_str!("../../tool-specs/list_files.yaml"),
    include_str!("../../tool-specs/support_hours.yaml"),
    FUZZ_HTTP,
    FUZZ_COMMAND,
    FUZZ_STATIC,
];

const FUZZ_HTTP: &str = r#"
name: fuzz_http
description: URL path, query, headers and body all filled from arguments.
input_schema:
  type: object
  properties: { id: {}, n: {}, tag: {}, q: {}, body: {} }
  required: [id]
allow: [admin]
run:
  http:
    method: POST
    url: "https://api.example.com:8443/v1/items/{{ args.id }}/sub/{{ args.n }}?fixed=1&x={{ args.tag }}#frag"
    query: { q: "{{ args.q }}", n: "{{ args.n }}" }
    headers: { X-Tag: "t-{{ args.tag }}" }
    body: { id: "{{ args.id }}", list: ["{{ args.body }}", "q={{ args.q }}"], q: "{{ args.q }}" }
"#;

const FUZZ_COMMAND: &str = r#"
name: fuzz_command
description: Every argv element a template.
input_schema:
  type: object
  properties: { id: {}, obj: {}, n: {} }
  required: [id]
allow: [admin]
run:
  command:
    argv: ["prog", "--id={{ args.id }}", "{{ args.id }}", "{{ args.obj.k }}", "x{{ args.n }}y", "literal"]
"#;

const FUZZ_STATIC: &str = r#"
name: fuzz_static
description: A structured result with typed and text placeholders.
input_schema:
  type: object
  properties: { id: {}, obj: {}, n: {} }
allow: [admin]
run:
  static:
    json:
      id: "{{ args.id }}"
      text: "id={{ args.id }} n={{ args.n }}"
      list: ["{{ args.n }}", 1, "{{ args.obj.k }}"]
      deep: { k: "{{ args.obj.k }}", fixed: true }
"#;

/// The fixed specs, compiled once, in [`SPECS`] order.
pub fn tools() -> &'static [Arc<CompiledTool>] {
    static TOOLS: OnceLock<Vec<Arc<CompiledTool>>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        SPECS
            .iter()
            .map(|yaml| {
                let loaded = load::parse(yaml, Path::new("fixed.yaml")).expect("fixed spec parses");
                Arc::new(compile(loaded.spec).expect("fixed spec compiles"))
            })
            .collect()
    })
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        Catalog::from_tools(SPECS.iter().map(|yaml| {
            let loaded = load::parse(yaml, Path::new("fixed.yaml")).expect("fixed spec parses");
            compile(loaded.spec).expect("fixed spec compiles")
        }))
    })
}

/// First byte picks a spec; the rest are the arguments: a JSON object if
/// they parse as one (readable seeds), else decoded by [`Decoder`].
pub fn args_template(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let args = match serde_json::from_slice::<Value>(rest) {
        Ok(Value::Object(map)) => map,
        _ => match Decoder::new(rest).value(0) {
            Value::Object(map) => map,
            other => Map::from_iter([("id".to_owned(), other)]),
        },
    };
    check_args(pick as usize % SPECS.len(), args);
}

/// Validate `args` against fixed spec `index`, then render them whether or
/// not they passed (executors must be robust either way).
pub fn check_args(index: usize, args: Map<String, Value>) {
    let tool = &tools()[index];
    let size = serde_json::to_string(&args).expect("args serialize").len();
    let valid = match tollgate::pipeline::validate(tool, args.clone(), size, ARGS_LIMIT) {
        Ok(valid) => {
            assert_eq!(valid.as_map(), &args, "validation changed the arguments");
            true
        }
        Err(err) => {
            assert_refusal(&err);
            false
        }
    };
    let rendered = render_any(tool, &args);
    if valid {
        valid_args_render(&tool.spec.name, &args, rendered);
    }
    match tool.spec.name.as_str() {
        "fuzz_http" => fuzz_http_url(tool, &args),
        "fuzz_command" => fuzz_command_argv(tool, &args),
        "fuzz_static" => fuzz_static_json(tool, &args),
        _ => {}
    }
}

fn assert_refusal(err: &CallError) {
    assert!(!err.to_string().trim().is_empty(), "empty refusal: {err:?}");
    match err {
        CallError::InvalidArgs { violations, .. } => {
            assert!(!violations.is_empty(), "invalid without a violation");
            for v in violations {
                assert!(
                    !v.message.trim().is_empty(),
                    "violation without a message: {v:?}"
                );
            }
            assert!(
                violations.len() <= 21,
                "violations are capped at 20 + a count"
            );
        }
        CallError::ArgsTooLarge { size, limit, .. } => assert!(size > limit),
        other => panic!("validation refused with an unexpected error: {other:?}"),
    }
}

/// What rendering produced, for [`valid_args_render`].
enum Rendered {
    Text(String),
    Json(Value),
    Argv(Result<Vec<String>, ExecError>),
    Url(Result<reqwest::Url, String>),
}

/// Render with whatever the kind offers, without running anything.
fn render_any(tool: &CompiledTool, args: &Map<String, Value>) -> Rendered {
    match &tool.run {
        CompiledRun::Static(s) => {
            let out = s.run(args);
            assert!(!out.is_error, "a static tool cannot fail");
            match out.structured {
                Some(v) => {
                    assert_eq!(out.text, v.to_string());
                    Rendered::Json(v)
                }
                None => Rendered::Text(out.text),
            }
        }
        CompiledRun::Command(c) => {
            let argv = c.render_args(args);
            if let Err(e) = &argv {
                assert!(!e.to_string().trim().is_empty());
            }
            Rendered::Argv(argv)
        }
        CompiledRun::Http(h) => {
            let url = h.render_url(args);
            if let Err(e) = &url {
                assert!(!e.trim().is_empty(), "empty URL refusal");
            }
            Rendered::Url(url)
        }
    }
}

fn text(args: &Map<String, Value>, name: &str) -> String {
    tollgate::template::value_text(&args[name])
}

/// Arguments that passed the example specs' schemas render as the spec says.
fn valid_args_render(name: &str, args: &Map<String, Value>, rendered: Rendered) {
    match (name, rendered) {
        ("echo", Rendered::Text(t)) => assert_eq!(t, text(args, "message")),
        ("list_files", Rendered::Argv(argv)) => {
            // The directory is exactly one argv element, after `--`.
            let argv = argv.expect("valid list_files args render");
            assert_eq!(argv, ["-1", "--", text(args, "dir").as_str()]);
        }
        ("support_hours", Rendered::Json(v)) => {
            assert_eq!(v["region"], args["region"]);
            assert_eq!(v["timezone"], "local");
        }
        // The caller chooses the whole URL, but only an http(s) one.
        ("http_get", Rendered::Url(Ok(url))) => {
            assert!(matches!(url.scheme(), "http" | "https"), "{url}");
            assert!(url.has_host(), "{url}");
            assert_eq!(Ok(&url), reqwest::Url::parse(&text(args, "url")).as_ref());
        }
        _ => {}
    }
}

/// Placeholder lookup, written again independently of `template.rs`.
fn lookup<'a>(args: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let mut v = args.get(path[0])?;
    for seg in &path[1..] {
        v = v.as_object()?.get(*seg)?;
    }
    (!v.is_null()).then_some(v)
}

fn lookup_text(args: &Map<String, Value>, path: &[&str]) -> Option<String> {
    lookup(args, path).map(tollgate::template::value_text)
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The operator picks where requests go: whatever the arguments, the URL
/// keeps the spec's scheme, host, port, fixed path segments, fixed query
/// pair and fragment; each path placeholder stays one segment.
fn fuzz_http_url(tool: &CompiledTool, args: &Map<String, Value>) {
    let CompiledRun::Http(h) = &tool.run else {
        unreachable!()
    };
    let Ok(url) = h.render_url(args) else {
        return;
    };
    assert_eq!(url.scheme(), "https", "{url}");
    assert_eq!(url.host_str(), Some("api.example.com"), "{url}");
    assert_eq!(url.port(), Some(8443), "{url}");
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{url}"
    );
    assert_eq!(url.fragment(), Some("frag"), "{url}");
    let segments: Vec<&str> = url.path_segments().expect("a base URL").collect();
    assert_eq!(
        segments.len(),
        5,
        "a value split or joined path segments: {url}"
    );
    assert_eq!(
        [segments[0], segments[1], segments[3]],
        ["v1", "items", "sub"],
        "{url}"
    );
    let id = lookup_text(args, &["id"]).expect("rendered, so `id` is present");
    let n = lookup_text(args, &["n"]).expect("rendered, so `n` is present");
    assert_eq!(decode(segments[2]), id, "{url}");
    assert_eq!(decode(segments[4]), n, "{url}");
    let tag = lookup_text(args, &["tag"]).expect("rendered, so `tag` is present");
    let mut want = vec![("fixed".to_owned(), "1".to_owned()), ("x".to_owned(), tag)];
    want.push(("n".to_owned(), n));
    if let Some(q) = lookup_text(args, &["q"]) {
        want.push(("q".to_owned(), q));
    }
    let got: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(got, want, "query of {url}");
}

/// Each argv template is exactly one element (or left out when its
/// placeholder is absent); a value never splits, joins or changes.
fn fuzz_command_argv(tool: &CompiledTool, args: &Map<String, Value>) {
    let CompiledRun::Command(c) = &tool.run else {
        unreachable!()
    };
    let mut want = Vec::new();
    if let Some(id) = lookup_text(args, &["id"]) {
        want.push(format!("--id={id}"));
        want.push(id);
    }
    if let Some(k) = lookup_text(args, &["obj", "k"]) {
        want.push(k);
    }
    if let Some(n) = lookup_text(args, &["n"]) {
        want.push(format!("x{n}y"));
    }
    want.push("literal".to_owned());
    match c.render_args(args) {
        Ok(argv) => assert_eq!(argv, want),
        Err(e) => {
            assert!(
                want.iter().any(|a| a.contains('\0')),
                "refused without a NUL: {e}"
            );
            assert!(e.to_string().contains("NUL"), "{e}");
        }
    }
}

/// Typed placeholders keep the argument's JSON value; text ones its text;
/// absent members vanish, absent array items become null.
fn fuzz_static_json(tool: &CompiledTool, args: &Map<String, Value>) {
    let CompiledRun::Static(s) = &tool.run else {
        unreachable!()
    };
    let got = s.run(args).structured.expect("a json result");
    let mut want = Map::new();
    if let Some(id) = lookup(args, &["id"]) {
        want.insert("id".into(), id.clone());
    }
    if let (Some(id), Some(n)) = (lookup_text(args, &["id"]), lookup_text(args, &["n"])) {
        want.insert("text".into(), Value::String(format!("id={id} n={n}")));
    }
    let k = lookup(args, &["obj", "k"]).cloned();
    want.insert(
        "list".into(),
        Value::Array(vec![
            lookup(args, &["n"]).cloned().unwrap_or(Value::Null),
            Value::from(1),
            k.clone().unwrap_or(Value::Null),
        ]),
    );
    let mut deep = Map::new();
    if let Some(k) = k {
        deep.insert("k".into(), k);
    }
    deep.insert("fixed".into(), Value::Bool(true));
    want.insert("deep".into(), Value::Object(deep));
    assert_eq!(got, Value::Object(want));
}

/// Turns arbitrary bytes into a JSON value biased towards what matters:
/// the fixed specs' argument names and URL/argv/template metacharacters.
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

/// Argument names (and a few hostile ones) the decoder picks from.
pub const KEYS: &[&str] = &[
    "id",
    "n",
    "tag",
    "q",
    "body",
    "obj",
    "k",
    "message",
    "url",
    "dir",
    "region",
    "",
    "__proto__",
    "$ref",
    "a.b",
    "{{ args.id }}",
];

/// String pieces the decoder glues together.
pub const PIECES: &[&str] = &[
    "",
    "a",
    ".",
    "..",
    "/",
    "?",
    "#",
    "&",
    "=",
    "+",
    "%",
    "%2F",
    "%2e%2e",
    "@",
    ":",
    "//",
    "\\",
    " ",
    "\0",
    "\n",
    "\r\n",
    "\t",
    "{{",
    "}}",
    "{{ args.id }}",
    "http://",
    "https://",
    "ftp://",
    "file:///etc/passwd",
    "evil.example",
    "127.0.0.1",
    "[::1]",
    ":80",
    "user:pw@",
    "é",
    "😀",
    "\u{202e}",
    "\u{feff}",
    "-",
    "--",
    "-rf",
    "$(id)",
    "`id`",
    ";",
    "|",
    "'",
    "\"",
    "eu",
    "us",
    "apac",
    "tool-specs",
    "0",
    "-1",
    "1e309",
    "null",
    "\u{7f}",
    "\u{0085}",
    "\u{2028}",
];

impl<'a> Decoder<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Decoder { data, pos: 0 }
    }

    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn value(&mut self, depth: usize) -> Value {
        match self.byte() % 9 {
            0 => Value::Null,
            1 => Value::Bool(self.byte() & 1 == 1),
            2 => {
                let raw = i64::from_le_bytes(std::array::from_fn(|_| self.byte()));
                Value::from(raw >> (self.byte() % 64))
            }
            3 => {
                let raw = f64::from_bits(u64::from_le_bytes(std::array::from_fn(|_| self.byte())));
                serde_json::Number::from_f64(raw).map_or(Value::Null, Value::Number)
            }
            4..=5 => Value::String(self.string()),
            6 if depth < 4 => {
                let n = self.byte() % 5;
                Value::Array((0..n).map(|_| self.value(depth + 1)).collect())
            }
            _ if depth < 4 => {
                let n = self.byte() % 6;
                let mut map = Map::new();
                for _ in 0..n {
                    if self.done() {
                        break;
                    }
                    let key = self.key();
                    let value = self.value(depth + 1);
                    map.insert(key, value);
                }
                Value::Object(map)
            }
            _ => Value::String(self.string()),
        }
    }

    fn key(&mut self) -> String {
        let b = self.byte();
        if (b as usize) < 240 {
            KEYS[b as usize % KEYS.len()].to_owned()
        } else {
            self.string()
        }
    }

    fn string(&mut self) -> String {
        let n = self.byte() % 8;
        let mut s = String::new();
        for _ in 0..n {
            let b = self.byte();
            if b < 192 {
                s.push_str(PIECES[b as usize % PIECES.len()]);
            } else {
                let code = u32::from_le_bytes([self.byte(), self.byte(), self.byte() % 0x11, 0]);
                s.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
        }
        s
    }
}

// ─────────────────────────────── jsonrpc ───────────────────────────────

/// The fixed texts the malformed-call path may answer with.
const MALFORMED_WHY: &[&str] = &[
    "`params` must be an object with `name` and `arguments`",
    "`params.name` must be a string naming the tool",
    "`params.arguments` must be a JSON object",
    "the params do not match the tools/call schema",
];

/// One HTTP POST body: the envelope check, then rmcp's decoding, then
/// what tollgate does with a `tools/call`'s params.
pub fn jsonrpc(data: &[u8]) {
    let envelope = tollgate::http::jsonrpc::envelope(data);
    if let Err((code, message)) = &envelope {
        assert!(matches!(code, -32700 | -32600), "unexpected code {code}");
        assert!(!message.trim().is_empty());
    }
    let Ok(message) = serde_json::from_slice::<ClientJsonRpcMessage>(data) else {
        return;
    };
    // What rmcp decodes, it re-encodes as a message that decodes to the same
    // message; and if the envelope check let the original through, it lets
    // the re-encoding through. rmcp decodes some messages the check refuses
    // (`"params": null`; those never reach rmcp over HTTP), and re-encodes a
    // `tools/call` without params as `"params": null`: that member is
    // dropped before comparing.
    let out = serde_json::to_vec(&message).expect("a decoded message re-encodes");
    let mut stripped: Value = serde_json::from_slice(&out).expect("re-encoding is JSON");
    if let Some(obj) = stripped.as_object_mut()
        && obj.get("params").is_some_and(Value::is_null)
    {
        obj.remove("params");
    }
    let stripped = serde_json::to_vec(&stripped).expect("JSON");
    if let (Ok(()), Err(e)) = (&envelope, tollgate::http::jsonrpc::envelope(&stripped)) {
        panic!(
            "rmcp's re-encoding fails the envelope check: {e:?}\n{}",
            String::from_utf8_lossy(&out)
        );
    }
    let again: ClientJsonRpcMessage =
        serde_json::from_slice(&out).expect("a re-encoded message decodes");
    assert_eq!(
        serde_json::to_value(&again).expect("re-encodes"),
        serde_json::from_slice::<Value>(&out).expect("JSON"),
        "decode → encode is not stable"
    );
    let JsonRpcMessage::Request(request) = message else {
        return;
    };
    match request.request {
        ClientRequest::CallToolRequest(call) => tools_call(call.params),
        ClientRequest::CustomRequest(custom) if custom.method == "tools/call" => {
            let params = custom.params.unwrap_or(Value::Null);
            // Only params rmcp could not decode take the malformed path.
            assert!(
                serde_json::from_value::<CallToolRequestParams>(params.clone()).is_err(),
                "decodable tools/call params reached on_custom_request: {params}"
            );
            let (name, why) = tollgate::server::malformed_call(&params);
            assert!(MALFORMED_WHY.contains(&why.as_str()), "{why}");
            assert_eq!(
                Some(name),
                params.get("name").and_then(Value::as_str).or(Some(""))
            );
            let refusal = CallError::Malformed(why);
            assert!(!refusal.to_string().is_empty());
        }
        _ => {}
    }
}

/// A decoded `tools/call`: resolve against the fixed catalog, then the
/// argument checks of [`check_args`].
fn tools_call(params: CallToolRequestParams) {
    let args = params.arguments.unwrap_or_default();
    match tollgate::pipeline::resolve(catalog(), &params.name) {
        Ok(tool) => {
            let index = tools()
                .iter()
                .position(|t| t.spec.name == tool.spec.name)
                .expect("resolved tool is a fixed spec");
            check_args(index, args);
        }
        Err(err) => {
            assert!(matches!(err, CallError::UnknownTool { .. }));
            assert!(!err.to_string().is_empty());
        }
    }
}
