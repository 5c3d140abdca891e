//! `tollgate check` and `tollgate schema`.

use super::EXIT_FAILED;
use super::app::{http_client, print_issues};
use tollgate::catalog::{CatalogError, check_dir};
use tollgate::config::Settings;
use tollgate::principals::Principals;

pub fn check(settings: &Settings) -> anyhow::Result<u8> {
    let principals = match Principals::load(&settings.principals) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    };
    match check_dir(&settings.specs, principals.as_ref(), &http_client()?) {
        Ok((loaded, compiled)) => {
            for (spec, tool) in loaded.iter().zip(&compiled) {
                let who = if spec.spec.allow.is_empty() {
                    "nobody (allow is empty)".to_string()
                } else {
                    spec.spec.allow.join(", ")
                };
                println!(
                    "ok  {:<24} {}  {}  allow: {who}  timeout: {}",
                    spec.spec.name,
                    &spec.hash[..12],
                    spec.file.display(),
                    humantime::format_duration(tool.timeout)
                );
            }
            println!(
                "{} tool(s) would be loaded from {}",
                loaded.len(),
                settings.specs.display()
            );
            Ok(if principals.is_some() { 0 } else { EXIT_FAILED })
        }
        Err(CatalogError::Specs(issues)) => {
            print_issues(&issues);
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

pub fn schema() -> anyhow::Result<u8> {
    println!(
        "{}",
        serde_json::to_string_pretty(&tollgate::spec::json_schema())?
    );
    Ok(0)
}
