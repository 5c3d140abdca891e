//! `tollgate check` and `tollgate schema`.

use std::io::Write;

use super::EXIT_FAILED;
use super::app::{http_client, load_secrets, print_issues};
use tollgate::catalog::{CatalogError, compile_report};
use tollgate::config::Settings;
use tollgate::policy::SchemaBuild;
use tollgate::principals::Principals;
use tollgate::secrets::Secrets;
use tollgate::spec::ToolSpec;

pub fn check(settings: &Settings) -> anyhow::Result<u8> {
    let principals = match Principals::load(&settings.principals) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    };
    let secrets = load_secrets(settings)?;
    let report = tollgate::spec::load_dir(&settings.specs);
    // The Cedar schema builds from the parsed specs while they compile.
    let schema = SchemaBuild::start_specs(report.specs.iter().map(|l| &l.spec));
    match compile_report(report, principals.as_ref(), &http_client()?, &secrets) {
        Ok((loaded, compiled)) => {
            // One write for the whole list, not one per line: with 1,000
            // tools, line-buffered stdout was thousands of system calls.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for (spec, tool) in loaded.iter().zip(compiled.iter()) {
                let who = if spec.spec.allow.is_empty() {
                    "(policies only)".to_string()
                } else {
                    spec.spec.allow.join(", ")
                };
                writeln!(
                    out,
                    "ok  {:<24} {}  {}  allow: {who}  timeout: {}",
                    spec.spec.name,
                    &spec.hash[..12],
                    spec.file.display(),
                    humantime::format_duration(tool.timeout)
                )?;
                if let Some(line) = secrets_line(&spec.spec, &secrets) {
                    writeln!(out, "    {line}")?;
                }
            }
            writeln!(
                out,
                "{} tool(s) would be loaded from {}",
                loaded.len(),
                settings.specs.display()
            )?;
            out.flush()?;
            drop(out);
            let tools: Vec<_> = compiled.into_iter().map(std::sync::Arc::new).collect();
            let governed =
                super::policies::check_governance(settings, &tools, principals.as_ref(), &schema);
            super::leak_at_exit((loaded, tools));
            Ok(if principals.is_some() && governed {
                0
            } else {
                EXIT_FAILED
            })
        }
        Err(CatalogError::Specs(issues)) => {
            print_issues(&issues);
            // Which secrets each tool needs, so one run shows everything
            // to define (the issues above name the undefined ones too).
            for loaded in tollgate::spec::load_dir(&settings.specs).specs {
                if let Some(line) = secrets_line(&loaded.spec, &secrets) {
                    eprintln!("{}: {line}", loaded.spec.name);
                }
            }
            eprintln!(
                "{} problem(s) found in {}",
                issues.len(),
                settings.specs.display()
            );
            Ok(EXIT_FAILED)
        }
        Err(e) => Err(e.into()),
    }
}

/// `secrets: A (defined), B (undefined)`: names only, never values.
fn secrets_line(spec: &ToolSpec, secrets: &Secrets) -> Option<String> {
    let names = spec.run.secret_names();
    if names.is_empty() {
        return None;
    }
    let listed: Vec<String> = names
        .iter()
        .map(|n| {
            let state = if secrets.is_defined(n) {
                "defined"
            } else {
                "undefined"
            };
            format!("{n} ({state})")
        })
        .collect();
    Some(format!("secrets: {}", listed.join(", ")))
}

pub fn schema() -> anyhow::Result<u8> {
    println!(
        "{}",
        serde_json::to_string_pretty(&tollgate::spec::json_schema())?
    );
    Ok(0)
}
