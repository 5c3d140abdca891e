//! The pipeline, stage by stage and as a whole: one case per refusal stage,
//! plus the cases where the order of stages matters. Uses a real SQLite file.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::catalog::{Catalog, compile};
use crate::receipt::{Decision, Outcome};
use crate::store::{ReceiptFilter, Store};

const PRINCIPALS: &str = "roles: {admin: a, support: s}\nprincipals:\n  alice: {roles: [admin]}\n  bob: {roles: [support]}\n";

fn tool(yaml: &str) -> crate::catalog::CompiledTool {
    let spec = serde_norway::from_str(yaml).expect("spec parses");
    let client = crate::executor::http_client().expect("client");
    compile(spec, None, &client).expect("spec compiles")
}

const ECHO: &str = "name: echo\ndescription: d\ninput_schema: {type: object, properties: {m: {type: string}}, required: [m]}\nallow: [admin]\nrate_limit: {per_principal: {rate: 1/minute}}\nrun: {static: {text: '{{ args.m }}'}}\n";

struct Harness {
    pipeline: Pipeline,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let (writer, _handle) = crate::store::ReceiptWriter::spawn(&store);
    let catalog = Catalog::from_tools([tool(ECHO)]);
    let principals = Principals::parse(PRINCIPALS).unwrap();
    let governance = Governance::allow_lists(&catalog, store.clone());
    let pipeline = Pipeline::new(
        Arc::new(catalog),
        Arc::new(principals),
        writer,
        64,
        governance,
    );
    Harness {
        pipeline,
        store,
        _dir: dir,
    }
}

fn who(name: &str) -> Identity {
    Identity::local(name, "test")
}

fn origin() -> Origin {
    Origin {
        transport: "test".into(),
        session: None,
    }
}

async fn call(h: &Harness, principal: &str, tool: &str, args: Value) -> CallReply {
    let arguments = args.as_object().cloned();
    let req = CallRequest {
        tool: tool.into(),
        arguments,
        meta: CallMeta::default(),
    };
    h.pipeline.call(&who(principal), origin(), req).await
}

#[tokio::test]
async fn each_refusal_stage_has_its_decision_and_receipt() {
    let h = harness().await;
    // (principal, tool, args, expected decision, expected message prefix)
    let cases: &[(&str, &str, Value, Decision, &str)] = &[
        (
            "eve",
            "echo",
            json!({"m": "x"}),
            Decision::Denied,
            "not authenticated",
        ),
        (
            "alice",
            "nope",
            json!({}),
            Decision::UnknownTool,
            "unknown tool `nope`",
        ),
        (
            "alice",
            "echo",
            json!({"m": 1}),
            Decision::Invalid,
            "invalid arguments",
        ),
        (
            "alice",
            "echo",
            json!({"m": "y".repeat(100)}),
            Decision::Invalid,
            "arguments for `echo` are",
        ),
        (
            "bob",
            "echo",
            json!({"m": "x"}),
            Decision::Denied,
            "permission denied",
        ),
        ("alice", "echo", json!({"m": "x"}), Decision::Allowed, ""),
        (
            "alice",
            "echo",
            json!({"m": "x"}),
            Decision::RateLimited,
            "rate limited",
        ),
    ];
    for (principal, tool, args, decision, prefix) in cases {
        let reply = call(&h, principal, tool, args.clone()).await;
        let id = reply.receipt_id.clone().expect("receipt committed");
        let receipt = h.store.get_receipt(&id).await.unwrap().expect("stored");
        assert_eq!(
            receipt.content.decision, *decision,
            "{principal} {tool} {args}"
        );
        match reply.body {
            Ok(out) => {
                assert_eq!(*decision, Decision::Allowed);
                assert_eq!(out.text, "x");
                assert_eq!(receipt.content.outcome, Outcome::Ok);
            }
            Err(e) => {
                assert!(e.to_string().starts_with(prefix), "{e}");
                assert_eq!(receipt.content.outcome, Outcome::NotRun);
                assert_eq!(
                    receipt.content.reason.as_deref(),
                    Some(e.to_string().as_str())
                );
            }
        }
    }
    let all = h
        .store
        .list_receipts(&ReceiptFilter {
            limit: 100,
            ..ReceiptFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), cases.len(), "one receipt per call");
    assert!(h.store.verify_chain().await.unwrap().first_bad.is_none());
}

#[tokio::test]
async fn denied_calls_spend_no_rate_limit_tokens() {
    let h = harness().await;
    // bob is denied: authorization runs before limits, so alice's and bob's
    // buckets are untouched; then alice's single token is still there.
    for _ in 0..3 {
        let r = call(&h, "bob", "echo", json!({"m": "x"})).await;
        assert!(matches!(r.body, Err(CallError::Denied { .. })));
    }
    let r = call(&h, "alice", "echo", json!({"m": "x"})).await;
    assert!(r.body.is_ok());
}

#[tokio::test]
async fn invalid_calls_spend_no_rate_limit_tokens() {
    let h = harness().await;
    let r = call(&h, "alice", "echo", json!({})).await;
    assert!(matches!(r.body, Err(CallError::InvalidArgs { .. })));
    let r = call(&h, "alice", "echo", json!({"m": "x"})).await;
    assert!(r.body.is_ok(), "the token was not used by the invalid call");
}

#[test]
fn limiter_memory_is_bounded_by_pruning() {
    let fast = ECHO.replace("1/minute", "1000/second");
    let catalog = Catalog::from_tools([tool(&fast)]);
    let limiter = Limiter::new(&catalog);
    let t = catalog.get("echo").unwrap();
    let p = Principals::parse(&format!(
        "roles: {{admin: a}}\nprincipals:\n{}",
        (0..500)
            .map(|i| format!("  p{i}: {{roles: [admin]}}\n"))
            .collect::<String>()
    ))
    .unwrap();
    for i in 0..500 {
        let principal = authenticate(&p, &who(&format!("p{i}"))).unwrap();
        limiter.check(&principal, t).unwrap();
    }
    assert_eq!(limiter.tracked_keys(), 500);
    std::thread::sleep(std::time::Duration::from_millis(50));
    limiter.prune();
    assert_eq!(limiter.tracked_keys(), 0, "idle principals are forgotten");
}

#[tokio::test]
async fn authorize_is_deny_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let p = Principals::parse(PRINCIPALS).unwrap();
    let alice = authenticate(&p, &who("alice")).unwrap();
    let nobody = Catalog::from_tools([tool(&ECHO.replace("allow: [admin]", "allow: []"))]);
    let engine = Governance::allow_lists(&nobody, store.clone()).policy;
    let args = ValidArgs::for_tests(json!({"m": "x"}));
    let t = nobody.get("echo").unwrap();
    let err = authorize(&engine, &alice, t, &args, "test").unwrap_err();
    assert_eq!(
        err.to_string(),
        "permission denied: no policy permits principal `alice` to call `echo` with these arguments"
    );
    let allowed = Catalog::from_tools([tool(ECHO)]);
    let engine = Governance::allow_lists(&allowed, store).policy;
    match authorize(&engine, &alice, allowed.get("echo").unwrap(), &args, "test").unwrap() {
        Authorized::Run(permit) => assert_eq!(permit.policies, ["allow:echo:admin"]),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn calls_after_drain_began_are_refused_and_receipted() {
    let h = harness().await;
    h.pipeline
        .shutdown
        .drain(std::time::Duration::from_millis(10))
        .await;
    let r = call(&h, "alice", "echo", json!({"m": "x"})).await;
    assert!(matches!(r.body, Err(CallError::ShuttingDown)));
    let id = r.receipt_id.expect("refusal receipted");
    let receipt = h.store.get_receipt(&id).await.unwrap().unwrap();
    assert_eq!(receipt.content.decision, Decision::Unavailable);
    assert_eq!(receipt.content.outcome, Outcome::NotRun);
}
