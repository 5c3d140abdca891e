//! The governance sections of a spec (`cost`, `idempotency`): their checks
//! at load, and the values the pipeline reads from them.

use std::time::Duration;

use super::issue::SpecIssue;
use super::model::ToolSpec;

/// How long an idempotency key is remembered when a spec does not say.
pub const DEFAULT_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// Every problem with `cost:` and `idempotency:`.
pub fn check(spec: &ToolSpec, properties: &std::collections::BTreeSet<String>) -> Vec<SpecIssue> {
    let mut issues = Vec::new();
    if let Some(cost) = &spec.cost {
        if cost.usd.is_none() && cost.from.is_none() {
            issues.push(SpecIssue::at("cost", "says nothing").hint(
                "give `usd: 0.02` (fixed), `from: /pointer` (read from the result), or both",
            ));
        }
        if let Some(usd) = cost.usd
            && !(usd.is_finite() && usd >= 0.0)
        {
            issues.push(SpecIssue::at("cost.usd", "must be a number ≥ 0"));
        }
        if let Some(from) = &cost.from
            && !(from.is_empty() || from.starts_with('/'))
        {
            issues.push(
                SpecIssue::at("cost.from", format!("`{from}` is not a JSON pointer"))
                    .hint("a pointer starts with `/`, e.g. `/usage/cost_usd`"),
            );
        }
    }
    if let Some(idem) = &spec.idempotency {
        if idem.key.is_empty() {
            issues
                .push(SpecIssue::at("idempotency.key", "is empty").hint(
                    "name the arguments whose values identify one effect, e.g. `[order_id]`",
                ));
        }
        for (i, name) in idem.key.iter().enumerate() {
            if !properties.contains(name) {
                issues.push(
                    SpecIssue::at(
                        format!("idempotency.key[{i}]"),
                        format!("`{name}` is not an argument of this tool"),
                    )
                    .hint(format!(
                        "arguments: {}",
                        properties.iter().cloned().collect::<Vec<_>>().join(", ")
                    )),
                );
            }
        }
        if let Err(m) = key_ttl(spec) {
            issues.push(SpecIssue::at("idempotency.ttl", m));
        }
    }
    issues
}

/// The spec's key lifetime (checked at load, so `Err` does not happen for a
/// served tool).
pub fn key_ttl(spec: &ToolSpec) -> Result<Duration, String> {
    match spec.idempotency.as_ref().and_then(|i| i.ttl.as_deref()) {
        None => Ok(DEFAULT_KEY_TTL),
        Some(text) => match humantime::parse_duration(text) {
            Ok(d) if d >= Duration::from_secs(1) => Ok(d),
            Ok(_) => Err("must be at least 1s".into()),
            Err(e) => Err(format!(
                "`{text}` is not a duration ({e}); write e.g. `24h` or `7d`"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ToolSpec {
        serde_norway::from_str(&format!(
            "name: t\ndescription: d\ninput_schema: {{type: object}}\nrun: {{static: {{text: x}}}}\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn bad_sections_are_named() {
        let props: std::collections::BTreeSet<String> = ["order_id".to_string()].into();
        let issues = check(
            &spec("cost: {}\nidempotency: {key: [order], ttl: soon}\n"),
            &props,
        );
        let text: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
        let all = text.join("\n");
        assert!(all.contains("cost"), "{all}");
        assert!(
            all.contains("idempotency.key[0]") && all.contains("`order`"),
            "{all}"
        );
        assert!(all.contains("idempotency.ttl"), "{all}");
        assert!(
            check(&spec("cost: {from: usage}\n"), &props)[0]
                .to_string()
                .contains("JSON pointer")
        );
        assert!(
            check(
                &spec("cost: {usd: 0.3, from: /fee}\nidempotency: {key: [order_id], ttl: 7d}\n"),
                &props
            )
            .is_empty()
        );
        assert_eq!(
            key_ttl(&spec("idempotency: {key: [order_id]}\n")).unwrap(),
            DEFAULT_KEY_TTL
        );
    }
}
