//! Reading a directory of spec files into parsed, hashed specs.
//!
//! Loading never stops at the first problem: every file is read and every
//! issue collected, so one `tollgate check` shows everything to fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::SpecIssue;
use super::model::ToolSpec;
use super::scalars;
use crate::canonical;

/// Spec files larger than this are refused before parsing.
pub const MAX_SPEC_BYTES: u64 = 1024 * 1024;

/// One spec file, parsed and hashed.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    pub spec: ToolSpec,
    pub file: PathBuf,
    /// The file's text as read (stored with each new version for `tools diff`).
    pub source_text: String,
    /// Canonical JSON of the spec (sorted keys, no whitespace): what is hashed
    /// and stored, so reformatting a file does not make a new version.
    pub canonical: String,
    /// SHA-256 of `canonical`, hex.
    pub hash: String,
}

/// Everything found in a spec directory.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub specs: Vec<LoadedSpec>,
    pub issues: Vec<SpecIssue>,
}

/// Read every `*.yaml` / `*.yml` file directly under `dir`, in name order.
pub fn load_dir(dir: &Path) -> LoadReport {
    let mut report = LoadReport::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            report.issues.push(
                SpecIssue::at("", format!("cannot read the spec directory: {e}"))
                    .hint("point --specs (or TOLLGATE_SPECS) at the directory holding your *.yaml tool specs")
                    .in_file(dir),
            );
            return report;
        }
    };
    let mut files: Vec<(PathBuf, bool)> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            // The entry's type comes with the directory listing: telling a
            // link from a file costs no system call.
            let link = e.file_type().map_or(true, |t| t.is_symlink());
            Some((e.path(), link))
        })
        .filter(|(p, _)| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let parsed = super::par::map(&files, |(file, link)| {
        read_file(&root, file, *link).and_then(|text| parse(&text, file))
    });
    for result in parsed {
        match result {
            Ok(spec) => report.specs.push(spec),
            Err(issue) => report.issues.push(issue),
        }
    }
    report.issues.extend(duplicate_names(&report.specs));
    report
}

/// Read one spec file. `link` says whether the directory entry is a
/// symbolic link (or of unknown type): only then is the path resolved.
fn read_file(root: &Path, file: &Path, link: bool) -> Result<String, SpecIssue> {
    let fail = |msg: String| SpecIssue::at("", msg).in_file(file);
    // A symlink may point anywhere; only follow it if it stays inside the spec
    // directory, so the directory is the whole truth about what is served.
    // Anything else listed in the directory is inside it by construction, so
    // resolving its path (a system call per component) would prove nothing.
    let real = if link {
        let real = file
            .canonicalize()
            .map_err(|e| fail(format!("cannot resolve path: {e}")))?;
        if !real.starts_with(root) {
            return Err(fail(format!(
                "is a link to {}, outside the spec directory",
                real.display()
            ))
            .hint("copy the spec into the spec directory instead of linking to it"));
        }
        real
    } else {
        file.to_path_buf()
    };
    // Checked before opening: opening a FIFO would block start-up.
    let meta = std::fs::metadata(&real).map_err(|e| fail(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    if meta.len() > MAX_SPEC_BYTES {
        return Err(fail(format!(
            "is {} bytes; spec files may be at most {MAX_SPEC_BYTES} bytes",
            meta.len()
        )));
    }
    std::fs::read_to_string(&real).map_err(|e| fail(format!("cannot read: {e}")))
}

/// Parse one spec's YAML text. `file` is only used in messages.
///
/// YAML is parsed once, into the JSON value that is hashed, and the spec is
/// read from that value. Only when that fails (or the YAML repeats a key,
/// which a JSON object would silently collapse) is the text parsed again
/// straight into the spec, the slow way that names the failing field and
/// line. Start-up time is dominated by YAML parsing, so parsing twice for
/// every valid file would double it.
pub fn parse(text: &str, file: &Path) -> Result<LoadedSpec, SpecIssue> {
    if let Ok(StrictJson(value)) = serde_norway::from_str::<StrictJson>(text)
        && let Ok(spec) = ToolSpec::deserialize(&value)
    {
        let canonical = canonical::to_string(&value);
        let hash = canonical::sha256_hex(canonical.as_bytes());
        return Ok(LoadedSpec {
            spec,
            file: file.to_path_buf(),
            source_text: text.to_string(),
            canonical,
            hash,
        });
    }
    parse_slowly(text, file)
}

/// [`parse`] as two passes: into the spec (for the error with its field
/// path), then into the JSON value that is hashed.
///
/// The spec returned is the one read back from that JSON value, not the one
/// read straight from YAML: a pinned version is rebuilt from its stored
/// canonical JSON, so the two must agree. Where YAML reads a scalar one way
/// into its field and another into the value (`argv: [ls, -1]`), the value
/// takes the field's reading first ([`scalars`]).
fn parse_slowly(text: &str, file: &Path) -> Result<LoadedSpec, SpecIssue> {
    let de = serde_norway::Deserializer::from_str(text);
    let typed: ToolSpec =
        serde_path_to_error::deserialize(de).map_err(|e| path_issue(e, file, None))?;
    // The one float field: `.inf` would be null (no fixed cost) in the JSON.
    if let Some(usd) = typed.cost.and_then(|c| c.usd)
        && !usd.is_finite()
    {
        return Err(
            SpecIssue::at("cost.usd", format!("`{usd}` is not an amount"))
                .hint("write a finite number of US dollars, e.g. `usd: 0.02`")
                .in_file(file),
        );
    }
    let mut value: serde_json::Value =
        serde_norway::from_str(text).map_err(|e| SpecIssue::at("", e.to_string()).in_file(file))?;
    let spec =
        scalars::reconcile(text, &mut value).map_err(|e| path_issue(e, file, Some(UNSETTLED)))?;
    let canonical = canonical::to_string(&value);
    let hash = canonical::sha256_hex(canonical.as_bytes());
    Ok(LoadedSpec {
        spec,
        file: file.to_path_buf(),
        source_text: text.to_string(),
        canonical,
        hash,
    })
}

/// The hint for a field that YAML reads as one type and the field as
/// another, when [`scalars::reconcile`] could not settle it: past
/// [`scalars::MAX_FIXES`] such values in one file, or a value the field reads
/// as a type it does not settle.
const UNSETTLED: &str = "YAML reads this value as another type than the field takes, and \
     tollgate could not settle it (it settles at most 64 such values per file); quote text \
     (`\"-1\"`) and write numbers plainly (`1`)";
// The hint names the limit.
const _: () = assert!(scalars::MAX_FIXES == 64);

/// A deserialization error as a spec issue naming the field.
fn path_issue<E: std::fmt::Display>(
    e: serde_path_to_error::Error<E>,
    file: &Path,
    fallback_hint: Option<&str>,
) -> SpecIssue {
    let field = e.path().to_string();
    let field = if field == "." { String::new() } else { field };
    let mut message = e.into_inner().to_string();
    // serde_norway prefixes its own copy of the path; we print ours.
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.contains(' ')
        && field.starts_with(prefix)
    {
        message = rest.to_string();
    }
    let hint = serde_hint(&message).or_else(|| fallback_hint.map(str::to_string));
    let issue = SpecIssue::at(field, message).in_file(file);
    match hint {
        Some(h) => issue.hint(h),
        None => issue,
    }
}

/// A JSON value read from YAML exactly as `serde_json::Value` reads it,
/// except that a mapping repeating a key is an error instead of keeping the
/// last value: read straight into a spec, a repeated field is an error, and
/// [`parse`] must not accept what that would refuse.
struct StrictJson(serde_json::Value);

impl<'de> Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON has no `.inf` or `.nan`: serde_json reads them as null. Leave
        // such a file to `parse_slowly`, which refuses one in a typed field
        // instead of letting it vanish.
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(StrictJson(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictJson(v) = map.next_value()?;
            if out.insert(key, v).is_some() {
                return Err(serde::de::Error::custom("repeated key"));
            }
        }
        Ok(Value::Object(out))
    }
}

/// Rebuild a spec from its stored canonical JSON (a pinned older version).
pub fn from_canonical(canonical: &str) -> Result<ToolSpec, String> {
    let mut de = serde_json::Deserializer::from_str(canonical);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        format!("field `{path}`: {}", e.into_inner())
    })
}

fn serde_hint(message: &str) -> Option<String> {
    if message.contains("unknown field") {
        Some("unknown fields are errors so that a typo cannot silently weaken governance; `tollgate schema` prints the full format".into())
    } else if message.contains("missing field") {
        Some("`tollgate schema` lists the required fields".into())
    } else if message.contains("unknown variant") {
        Some("`run` takes exactly one of: command, http, static".into())
    } else {
        None
    }
}

fn duplicate_names(specs: &[LoadedSpec]) -> Vec<SpecIssue> {
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut issues = Vec::new();
    for s in specs {
        if let Some(first) = seen.get(s.spec.name.as_str()) {
            issues.push(
                SpecIssue::at(
                    "name",
                    format!(
                        "tool name `{}` is already defined in {}",
                        s.spec.name,
                        first.display()
                    ),
                )
                .hint("tool names must be unique; rename one of the tools or delete one file")
                .in_file(&s.file),
            );
        } else {
            seen.insert(&s.spec.name, &s.file);
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECHO: &str = "name: echo\ndescription: d\ninput_schema:\n  type: object\n  properties: {m: {type: string, maximum: .inf}}\nallow: [a, b]\nrun: {static: {text: '{{ args.m }}'}}\n";

    #[test]
    fn one_pass_reads_what_two_passes_read() {
        let fast = parse(ECHO, Path::new("e.yaml")).unwrap();
        let slow = parse_slowly(ECHO, Path::new("e.yaml")).unwrap();
        assert_eq!(fast.canonical, slow.canonical);
        assert_eq!(fast.hash, slow.hash);
        assert_eq!(fast.spec.allow, slow.spec.allow);
    }

    #[test]
    fn a_repeated_field_is_still_an_error() {
        let text = format!("{ECHO}allow: [c]\n");
        let err = parse(&text, Path::new("e.yaml")).unwrap_err();
        let slow = parse_slowly(&text, Path::new("e.yaml")).unwrap_err();
        assert_eq!(err.to_string(), slow.to_string());
        // A field of the wrong type keeps its path in the message.
        let err = parse(
            &ECHO.replace("allow: [a, b]", "allow: 5"),
            Path::new("e.yaml"),
        )
        .unwrap_err();
        assert_eq!(err.field, "allow", "{err}");
    }

    /// Found by `spec_parse_mutated` in CI: `0001` is the number 1 to the
    /// `f64` field but the text "0001" to a JSON value, so the version stored
    /// could not be rebuilt. The stored JSON now holds what the field read.
    #[test]
    fn a_value_yaml_reads_two_ways_is_stored_as_its_field_reads_it() {
        for (extra, field, want) in [
            (
                "cost: {usd: 0001}\n",
                "cost",
                serde_json::json!({"usd": 1.0}),
            ),
            ("cost: {usd: 1}\n", "cost", serde_json::json!({"usd": 1})),
        ] {
            let text = format!("{ECHO}{extra}");
            let loaded = parse(&text, Path::new("e.yaml")).unwrap();
            let stored: Value = serde_json::from_str(&loaded.canonical).unwrap();
            assert_eq!(stored[field], want, "{extra}");
            let rebuilt = from_canonical(&loaded.canonical).unwrap();
            assert_eq!(rebuilt.cost.and_then(|c| c.usd), Some(1.0), "{extra}");
            assert_eq!(loaded.spec.cost.and_then(|c| c.usd), Some(1.0), "{extra}");
        }
        // A list of strings keeps each item's text as written.
        let text = ECHO.replace(
            "run: {static: {text: '{{ args.m }}'}}",
            "run: {command: {argv: [ls, -1, 0x10]}}",
        );
        let loaded = parse(&text, Path::new("e.yaml")).unwrap();
        assert!(
            loaded.canonical.contains(r#""argv":["ls","-1","0x10"]"#),
            "{}",
            loaded.canonical
        );
        assert!(from_canonical(&loaded.canonical).is_ok());
    }

    /// YAML `.inf` is null to JSON: in `cost.usd` it would silently mean
    /// "no fixed cost". In an input schema (plain JSON) it stays null.
    #[test]
    fn a_non_finite_cost_is_refused() {
        for usd in [".inf", "-.inf", ".nan"] {
            let text = format!("{ECHO}cost: {{usd: {usd}, from: /fee}}\n");
            let err = parse(&text, Path::new("e.yaml")).unwrap_err();
            assert_eq!(err.field, "cost.usd", "{usd}: {err}");
            assert!(err.to_string().contains("is not an amount"), "{err}");
        }
        let loaded = parse(ECHO, Path::new("e.yaml")).unwrap();
        assert!(
            loaded.canonical.contains(r#""maximum":null"#),
            "{}",
            loaded.canonical
        );
    }

    #[test]
    fn a_value_that_cannot_be_settled_names_its_field() {
        let many = vec!["-1"; scalars::MAX_FIXES + 1].join(", ");
        let text = ECHO.replace(
            "run: {static: {text: '{{ args.m }}'}}",
            &format!("run: {{command: {{argv: [ls, {many}]}}}}"),
        );
        let err = parse(&text, Path::new("e.yaml")).unwrap_err();
        assert_eq!(
            err.field,
            format!("run.command.argv[{}]", scalars::MAX_FIXES + 1),
            "{err}"
        );
        assert!(err.to_string().contains("quote text"), "{err}");
    }
}
