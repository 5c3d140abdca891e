//! Reading a directory of spec files into parsed, hashed specs.
//!
//! Loading never stops at the first problem: every file is read and every
//! issue collected, so one `tollgate check` shows everything to fix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::SpecIssue;
use super::model::ToolSpec;
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
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    for file in files {
        match read_file(&root, &file) {
            Ok(text) => match parse(&text, &file) {
                Ok(spec) => report.specs.push(spec),
                Err(issue) => report.issues.push(issue),
            },
            Err(issue) => report.issues.push(issue),
        }
    }
    report.issues.extend(duplicate_names(&report.specs));
    report
}

fn read_file(root: &Path, file: &Path) -> Result<String, SpecIssue> {
    let fail = |msg: String| SpecIssue::at("", msg).in_file(file);
    // A symlink may point anywhere; only follow it if it stays inside the spec
    // directory, so the directory is the whole truth about what is served.
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
pub fn parse(text: &str, file: &Path) -> Result<LoadedSpec, SpecIssue> {
    let de = serde_norway::Deserializer::from_str(text);
    let spec: ToolSpec = serde_path_to_error::deserialize(de).map_err(|e| {
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
        let hint = serde_hint(&message);
        let issue = SpecIssue::at(field, message).in_file(file);
        match hint {
            Some(h) => issue.hint(h),
            None => issue,
        }
    })?;
    let value: serde_json::Value =
        serde_norway::from_str(text).map_err(|e| SpecIssue::at("", e.to_string()).in_file(file))?;
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
