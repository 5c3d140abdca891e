//! The refund rules of the issue, checked against the engine directly.

use std::sync::Arc;

use chrono::TimeZone;
use serde_json::{Map, Value, json};

use super::*;
use crate::catalog::CompiledTool;

const REFUND: &str = r#"
name: issue_refund
description: d
input_schema:
  type: object
  required: [order_id, amount_cents, reason]
  properties:
    order_id: {type: string}
    amount_cents: {type: integer, minimum: 1}
    reason: {type: string}
    note: {type: string}
annotations: {destructiveHint: true}
tags: [payments]
run: {static: {text: ok}}
"#;

const ECHO: &str = "name: echo\ndescription: d\ninput_schema: {type: object, properties: {m: {type: string}}}\nallow: [support]\nrun: {static: {text: '{{ args.m }}'}}\n";

const RULES: &str = r#"
// support: small refunds directly
@id("support-small")
permit (principal in Tollgate::Role::"support", action == Tollgate::Action::"issue_refund", resource)
when { context.args.amount_cents <= 5000 };

@id("support-large")
@approval("finance")
permit (principal in Tollgate::Role::"support", action == Tollgate::Action::"issue_refund", resource)
when { context.args.amount_cents > 5000 };

@id("finance")
permit (principal in Tollgate::Role::"finance", action == Tollgate::Action::"issue_refund", resource)
when { context.args.amount_cents <= 100000 };

@id("refund-cap")
@message("refunds above 1000 USD are never allowed")
forbid (principal, action == Tollgate::Action::"issue_refund", resource)
when { context.args.amount_cents > 100000 };
"#;

const PRINCIPALS: &str = "roles: {support: s, finance: f}\nprincipals:\n  agent-1: {roles: [support]}\n  fin-1: {roles: [finance]}\n";

fn tool(yaml: &str) -> Arc<CompiledTool> {
    let spec = serde_norway::from_str(yaml).expect("spec parses");
    let client = crate::executor::http_client().expect("client");
    Arc::new(crate::catalog::compile(spec, None, &client).expect("spec compiles"))
}

fn engine(rules: &str) -> Result<PolicyEngine, Vec<PolicyIssue>> {
    let tools = [tool(REFUND), tool(ECHO)];
    let principals = Principals::parse(PRINCIPALS).unwrap();
    let sources = vec![
        Source {
            name: "refunds.cedar".into(),
            text: rules.into(),
        },
        source::generated(
            tools
                .iter()
                .filter(|t| !t.spec.allow.is_empty())
                .map(|t| (t.spec.name.as_str(), t.spec.allow.as_slice())),
        ),
    ];
    PolicyEngine::from_sources(sources, tools.iter(), Some(&principals))
}

fn decide(e: &PolicyEngine, who: &str, role: &str, tool: &str, args: Value) -> Verdict {
    let args: Map<String, Value> = args.as_object().cloned().unwrap_or_default();
    let roles = vec![role.to_owned()];
    e.decide(&CallFacts {
        principal: who,
        roles: &roles,
        tool,
        args: &args,
        transport: "stdio",
        auth_method: "stdio",
        now: Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap(),
    })
}

fn refund(cents: i64) -> Value {
    json!({"order_id": "ord_1", "amount_cents": cents, "reason": "r"})
}

#[test]
fn the_refund_rules() {
    let e = engine(RULES).unwrap();
    assert_eq!(
        decide(&e, "agent-1", "support", "issue_refund", refund(5000)),
        Verdict::Allow {
            policies: vec!["support-small".into()]
        }
    );
    assert_eq!(
        decide(&e, "agent-1", "support", "issue_refund", refund(5001)),
        Verdict::Approval {
            role: "finance".into(),
            policies: vec!["support-large".into()]
        }
    );
    assert_eq!(
        decide(&e, "fin-1", "finance", "issue_refund", refund(100000)),
        Verdict::Allow {
            policies: vec!["finance".into()]
        }
    );
    // Forbid wins over the approval permit and over finance's permit.
    for (who, role) in [("agent-1", "support"), ("fin-1", "finance")] {
        assert_eq!(
            decide(&e, who, role, "issue_refund", refund(100001)),
            Verdict::Deny {
                policies: vec!["refund-cap".into()],
                message: "policy `refund-cap` forbids this call: refunds above 1000 USD are never allowed"
                    .into()
            }
        );
    }
    // Nothing permits: deny by default, no policy text leaks.
    match decide(&e, "eve", "viewer", "issue_refund", refund(1)) {
        Verdict::Deny { policies, message } => {
            assert!(policies.is_empty());
            assert_eq!(
                message,
                "no policy permits principal `eve` to call `issue_refund` with these arguments"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn allow_lists_become_policies() {
    let e = engine(RULES).unwrap();
    assert_eq!(
        decide(&e, "agent-1", "support", "echo", json!({"m": "hi"})),
        Verdict::Allow {
            policies: vec!["allow:echo:support".into()]
        }
    );
    assert!(matches!(
        decide(&e, "fin-1", "finance", "echo", json!({})),
        Verdict::Deny { .. }
    ));
    assert!(e.summary().contains_key("allow:echo:support"));
}

#[test]
fn a_policy_may_not_take_a_generated_id() {
    let rules = "@id(\"allow:echo:support\")\nforbid (principal, action, resource);\n";
    let issues = engine(rules).unwrap_err();
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].file, source::GENERATED);
    assert_eq!(issues[0].policy.as_deref(), Some("allow:echo:support"));
    assert!(issues[0].message.contains("refunds.cedar"), "{issues:?}");
}

#[test]
fn an_unknown_argument_is_an_error_with_file_and_line() {
    let rules = "\n\n@id(\"typo\")\npermit (principal, action == Tollgate::Action::\"issue_refund\", resource)\nwhen { context.args.amount > 5 };\n";
    let issues = engine(rules).unwrap_err();
    assert_eq!(issues.len(), 1, "{issues:?}");
    let text = issues[0].to_string();
    assert!(
        text.starts_with("refunds.cedar:5: policy `typo`:"),
        "{text}"
    );
    assert!(text.contains("amount"), "{text}");
}

#[test]
fn comparing_a_string_with_a_number_is_an_error() {
    let rules = "permit (principal, action == Tollgate::Action::\"issue_refund\", resource)\nwhen { context.args.order_id > 5 };\n";
    let issues = engine(rules).unwrap_err();
    let text = issues[0].to_string();
    // Without @id the policy is named by its file and line.
    assert!(
        text.starts_with("refunds.cedar:2: policy `refunds.cedar:1`"),
        "{text}"
    );
    assert!(text.contains("expected Long but saw String"), "{text}");
}

#[test]
fn syntax_errors_duplicate_ids_and_bad_approvals_are_reported() {
    let issues = engine("permit (principal, action, resource)\nwhen { };\n").unwrap_err();
    assert!(
        issues[0].to_string().starts_with("refunds.cedar:"),
        "{issues:?}"
    );

    let dup = "@id(\"a\") permit (principal, action, resource);\n@id(\"a\") forbid (principal, action, resource);\n";
    let issues = engine(dup).unwrap_err();
    assert!(issues[0].message.contains("also used"), "{issues:?}");

    let bad = "@id(\"x\") @approval(\"auditors\") permit (principal, action, resource);\n@id(\"y\") @approval(\"finance\") forbid (principal, action, resource);\n";
    let issues = engine(bad).unwrap_err();
    let all = issues
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        all.contains("`x`") && all.contains("nobody could approve"),
        "{all}"
    );
    assert!(
        all.contains("`y`") && all.contains("only makes sense on a permit"),
        "{all}"
    );
}

#[test]
fn optional_arguments_need_has_and_huge_numbers_fail_closed() {
    let rules = "@id(\"n\") permit (principal, action == Tollgate::Action::\"issue_refund\", resource)\nwhen { context.args.note == \"x\" };\n";
    let issues = engine(rules).unwrap_err();
    assert!(issues[0].to_string().contains("note"), "{issues:?}");

    let e = engine(RULES).unwrap();
    let v = decide(
        &e,
        "fin-1",
        "finance",
        "issue_refund",
        json!({"order_id": "o", "amount_cents": 1e20, "reason": "r"}),
    );
    match v {
        Verdict::Deny { message, .. } => assert!(message.contains("amount_cents"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn context_has_transport_and_time() {
    let rules = "@id(\"office-hours\") permit (principal, action == Tollgate::Action::\"issue_refund\", resource)\nwhen { context.transport == \"stdio\" && context.hour >= 9 && context.time.toTime() < duration(\"17h\") && resource.destructive && resource.tags.contains(\"payments\") };\n";
    let e = engine(rules).unwrap();
    assert!(matches!(
        decide(&e, "x", "y", "issue_refund", refund(1)),
        Verdict::Allow { .. }
    ));
}

#[test]
fn hash_changes_with_the_text() {
    let a = engine(RULES).unwrap();
    let b = engine(&format!("{RULES}\n// a comment\n")).unwrap();
    assert_ne!(a.hash(), b.hash());
    assert_eq!(a.hash(), engine(RULES).unwrap().hash());
}

fn memoized(e: &PolicyEngine, tool: &str) -> bool {
    e.tools.get(tool).is_some_and(|t| t.memoize)
}

#[test]
fn only_tools_no_context_policy_can_reach_are_memoized() {
    // RULES read context, but all are scoped to issue_refund.
    let e = engine(RULES).unwrap();
    assert!(!memoized(&e, "issue_refund"));
    assert!(memoized(&e, "echo"));
    // A context rule on every tool (unscoped, or through the action
    // group) reaches echo too.
    for scope in [
        "action",
        "action in Tollgate::Action::\"tools/call\"",
        "action, resource is Tollgate::Tool",
    ] {
        let (action, resource) = match scope.split_once(", ") {
            Some((a, r)) => (a.to_owned(), r.to_owned()),
            None => (scope.to_owned(), "resource".to_owned()),
        };
        let rules = format!(
            "{RULES}\n@id(\"stdio-only\") forbid (principal, {action}, {resource}) unless {{ context.transport == \"stdio\" }};\n"
        );
        let e = engine(&rules).unwrap();
        assert!(!memoized(&e, "echo"), "{scope}");
    }
    // A rule on echo that reads only the tool's facts keeps the memo.
    let rules = format!(
        "{RULES}\n@id(\"no-destructive\") forbid (principal, action, resource == Tollgate::Tool::\"echo\") when {{ resource.destructive }};\n"
    );
    assert!(memoized(&engine(&rules).unwrap(), "echo"));
}

/// A remembered decision is the decision: same verdict for the same
/// (tool, principal, roles), a different one when the roles differ, and
/// nothing remembered for a tool whose policies read the arguments.
#[test]
fn memoized_decisions_equal_fresh_ones() {
    let e = engine(RULES).unwrap();
    let fresh = engine(RULES).unwrap();
    for round in 0..3 {
        for (who, role) in [("agent-1", "support"), ("fin-1", "finance"), ("x", "none")] {
            let args = json!({"m": format!("round {round}")});
            let roles = vec![role.to_owned()];
            let args_map = args.as_object().cloned().unwrap();
            let facts = CallFacts {
                principal: who,
                roles: &roles,
                tool: "echo",
                args: &args_map,
                transport: "http",
                auth_method: "api_key",
                now: Utc::now(),
            };
            let (uncached, _) = fresh.judge(&fresh.tools["echo"], &facts).unwrap();
            assert_eq!(e.decide(&facts), uncached, "{who} round {round}");
        }
    }
    assert_eq!(e.memo.len(), 3);
    // issue_refund reads context: its verdicts vary with the arguments and
    // none is remembered.
    assert!(matches!(
        decide(&e, "agent-1", "support", "issue_refund", refund(1)),
        Verdict::Allow { .. }
    ));
    assert!(matches!(
        decide(&e, "agent-1", "support", "issue_refund", refund(100001)),
        Verdict::Deny { .. }
    ));
    assert_eq!(e.memo.len(), 3);
}

#[test]
fn memoized_tools_still_refuse_arguments_cedar_cannot_hold() {
    const TYPED: &str = "name: counter\ndescription: d\ninput_schema: {type: object, properties: {n: {type: integer}}}\nallow: [support]\nrun: {static: {text: ok}}\n";
    let tools = [tool(TYPED)];
    let principals = Principals::parse(PRINCIPALS).unwrap();
    let sources = vec![source::generated(
        tools
            .iter()
            .map(|t| (t.spec.name.as_str(), t.spec.allow.as_slice())),
    )];
    let e = PolicyEngine::from_sources(sources, tools.iter(), Some(&principals)).unwrap();
    assert!(memoized(&e, "counter"));
    assert!(matches!(
        decide(&e, "agent-1", "support", "counter", json!({"n": 3})),
        Verdict::Allow { .. }
    ));
    match decide(&e, "agent-1", "support", "counter", json!({"n": 1e30})) {
        Verdict::Deny { message, .. } => assert!(message.contains("`n`"), "{message}"),
        other => panic!("{other:?}"),
    }
}

/// A policy directory holding `rules` as `rules.cedar`.
fn policy_dir(rules: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.cedar"), rules).unwrap();
    dir
}

#[test]
fn a_schema_started_early_serves_every_load_for_the_same_tools() {
    let tools = [tool(REFUND), tool(ECHO)];
    let principals = Principals::parse(PRINCIPALS).unwrap();
    let dir = policy_dir(RULES);
    let schema = SchemaBuild::start_specs(tools.iter().map(|t| &t.spec));
    let first = PolicyEngine::load_with(dir.path(), tools.iter(), Some(&principals), &schema)
        .expect("first load");
    let second = PolicyEngine::load_with(dir.path(), tools.iter(), Some(&principals), &schema)
        .expect("second load");
    // One schema, built once, for both (the first start's two loads).
    assert!(Arc::ptr_eq(&first.validator, &second.validator));
    assert_eq!(first.hash(), second.hash());
    let alone = PolicyEngine::load(dir.path(), tools.iter(), Some(&principals)).unwrap();
    assert_eq!(alone.hash(), first.hash());
    assert!(!Arc::ptr_eq(&alone.validator, &first.validator));
    let small = json!({"order_id": "o1", "amount_cents": 100, "reason": "r"});
    assert_eq!(
        decide(&first, "agent-1", "support", "issue_refund", small.clone()),
        decide(&alone, "agent-1", "support", "issue_refund", small)
    );
}

/// `check` and `serve` start the build from the parsed spec files, before
/// they compile: the tools compiled from those specs must then use it.
#[test]
fn a_schema_started_from_the_parsed_specs_serves_their_compiled_tools() {
    let specs: Vec<crate::spec::ToolSpec> = [REFUND, ECHO]
        .iter()
        .map(|y| serde_norway::from_str(y).expect("spec parses"))
        .collect();
    let schema = SchemaBuild::start_specs(specs.iter());
    let tools = [tool(REFUND), tool(ECHO)];
    let principals = Principals::parse(PRINCIPALS).unwrap();
    let dir = policy_dir(RULES);
    let first = PolicyEngine::load_with(dir.path(), tools.iter(), Some(&principals), &schema)
        .expect("load");
    let second = PolicyEngine::load_with(dir.path(), tools.iter(), Some(&principals), &schema)
        .expect("load");
    assert!(
        Arc::ptr_eq(&first.validator, &second.validator),
        "the early build was not used"
    );
}

#[test]
fn a_schema_started_for_other_arguments_is_not_used() {
    // The build starts for the spec files, but the refund tool is served at
    // an older version (a rollback) that has no `reason` argument.
    let principals = Principals::parse(PRINCIPALS).unwrap();
    let files = [tool(REFUND), tool(ECHO)];
    let schema = SchemaBuild::start_specs(files.iter().map(|t| &t.spec));
    let older = REFUND
        .replace(
            "required: [order_id, amount_cents, reason]",
            "required: [order_id, amount_cents]",
        )
        .replace("    reason: {type: string}\n", "");
    assert_ne!(older, REFUND);
    let served = [tool(&older), tool(ECHO)];
    let reads_reason = "@id(\"reads-reason\")\nforbid (principal, action == Tollgate::Action::\"issue_refund\", resource)\nwhen { context.args.reason == \"x\" };\n";
    let dir = policy_dir(reads_reason);
    let issues = PolicyEngine::load_with(dir.path(), served.iter(), Some(&principals), &schema)
        .expect_err("the served version has no `reason`: the policy must fail validation");
    assert!(
        issues
            .iter()
            .any(|i| i.policy.as_deref() == Some("reads-reason")),
        "{issues:?}"
    );
    // With the spec files' tools the same policy is fine.
    PolicyEngine::load_with(dir.path(), files.iter(), Some(&principals), &schema)
        .expect("the file version has `reason`");
}
