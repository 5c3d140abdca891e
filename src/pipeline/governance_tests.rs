//! The governance stages through the whole pipeline, in process: the
//! approval gate, idempotency keys and budgets, each against a real SQLite
//! file. (tests/refund_desk.rs proves the same through the binary.)

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::catalog::{Catalog, compile};
use crate::config::{BudgetConfig, BudgetPeriod};
use crate::policy::{PolicyEngine, Source, source};
use crate::receipt::{Decision, Outcome};
use crate::store::Store;

const PRINCIPALS: &str = "roles: {support: s, finance: f}\nprincipals:\n  agent-1: {roles: [support]}\n  agent-2: {roles: [support]}\n  fin-1: {roles: [finance]}\n";

const REFUND: &str = "name: refund\ndescription: d\ninput_schema: {type: object, properties: {order: {type: string}, cents: {type: integer}}, required: [order, cents]}\nidempotency: {key: [order]}\ncost: {usd: 0.25}\nrun: {static: {text: 'refunded {{ args.order }}'}}\n";

const NOTE: &str = "name: note\ndescription: d\ninput_schema: {type: object, properties: {t: {type: string}}}\nallow: [support]\nrun: {static: {text: '{{ args.t }}'}}\n";

const RULES: &str = "@id(\"small\") permit (principal in Tollgate::Role::\"support\", action == Tollgate::Action::\"refund\", resource) when { context.args.cents <= 100 };\n@id(\"large\") @approval(\"finance\") permit (principal in Tollgate::Role::\"support\", action == Tollgate::Action::\"refund\", resource) when { context.args.cents > 100 };\n";

struct Harness {
    pipeline: Pipeline,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn harness(budgets: &[BudgetConfig]) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let (writer, _handle) = crate::store::ReceiptWriter::spawn(&store);
    let client = crate::executor::http_client().unwrap();
    let tools =
        [REFUND, NOTE].map(|y| compile(serde_norway::from_str(y).unwrap(), None, &client).unwrap());
    let catalog = Catalog::from_tools(tools);
    let principals = Principals::parse(PRINCIPALS).unwrap();
    let sources = vec![
        Source {
            name: "rules.cedar".into(),
            text: RULES.into(),
        },
        source::generated(
            catalog
                .iter()
                .map(|t| (t.spec.name.as_str(), t.spec.allow.as_slice())),
        ),
    ];
    let policy = PolicyEngine::from_sources(sources, catalog.iter(), Some(&principals)).unwrap();
    let governance = Governance {
        policy: Arc::new(policy),
        budgets: Budgets::new(budgets, &principals).unwrap(),
        store: store.clone(),
        approval_ttl: std::time::Duration::from_secs(3600),
    };
    let pipeline = Pipeline::new(
        Arc::new(catalog),
        Arc::new(principals),
        writer,
        1 << 20,
        governance,
    );
    Harness {
        pipeline,
        store,
        _dir: dir,
    }
}

async fn call_with(h: &Harness, who: &str, tool: &str, args: Value, meta: CallMeta) -> CallReply {
    let req = CallRequest {
        tool: tool.into(),
        arguments: args.as_object().cloned(),
        meta,
    };
    let origin = Origin {
        transport: "test".into(),
        session: None,
    };
    h.pipeline
        .call(&Identity::local(who, "test"), origin, req)
        .await
}

async fn call(h: &Harness, who: &str, tool: &str, args: Value) -> CallReply {
    call_with(h, who, tool, args, CallMeta::default()).await
}

fn decision(r: &CallReply) -> &str {
    r.meta["tollgate/decision"].as_str().unwrap_or_default()
}

fn text(r: &CallReply) -> String {
    match &r.body {
        Ok(o) => o.text.clone(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn a_spec_key_runs_once_replays_and_refuses_other_arguments() {
    let h = harness(&[]).await;
    let first = call(&h, "agent-1", "refund", json!({"order": "o1", "cents": 50})).await;
    assert_eq!(
        (decision(&first), text(&first).as_str()),
        ("allowed", "refunded o1")
    );
    // Another caller, same order: still the same effect, not a second one.
    let again = call(&h, "agent-2", "refund", json!({"order": "o1", "cents": 50})).await;
    assert_eq!(decision(&again), "replayed");
    assert_eq!(again.meta["tollgate/replay_of"], json!(first.receipt_id));
    let receipt = h
        .store
        .get_receipt(again.receipt_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(receipt.content.replay_of, first.receipt_id);
    assert_eq!(receipt.content.cost_usd, None, "a replay costs nothing");
    let other = call(&h, "agent-1", "refund", json!({"order": "o1", "cents": 60})).await;
    assert_eq!(decision(&other), "conflict");
    assert!(
        text(&other)
            .starts_with("idempotency conflict: `refund` was already called with the same order"),
        "{}",
        text(&other)
    );
}

#[tokio::test]
async fn refused_calls_do_not_use_a_key_up() {
    let h = harness(&[]).await;
    // Denied (no permit for finance on refund): the key stays free.
    let denied = call(&h, "fin-1", "refund", json!({"order": "o2", "cents": 50})).await;
    assert_eq!(decision(&denied), "denied");
    let ok = call(&h, "agent-1", "refund", json!({"order": "o2", "cents": 50})).await;
    assert_eq!(decision(&ok), "allowed");
}

#[tokio::test]
async fn client_keys_are_scoped_to_principal_and_tool() {
    let h = harness(&[]).await;
    let key = |k: &str| CallMeta {
        idempotency_key: Some(k.into()),
        ..CallMeta::default()
    };
    let a = call_with(&h, "agent-1", "note", json!({"t": "x"}), key("k")).await;
    assert_eq!(decision(&a), "allowed");
    let b = call_with(&h, "agent-1", "note", json!({"t": "x"}), key("k")).await;
    assert_eq!(decision(&b), "replayed");
    let c = call_with(&h, "agent-2", "note", json!({"t": "x"}), key("k")).await;
    assert_eq!(decision(&c), "allowed", "another principal's key space");
    let long = call_with(
        &h,
        "agent-1",
        "note",
        json!({"t": "x"}),
        key(&"k".repeat(300)),
    )
    .await;
    assert_eq!(decision(&long), "conflict");
    assert!(text(&long).contains("1 to 255 bytes"), "{}", text(&long));
}

#[tokio::test]
async fn budgets_refuse_before_running_and_count_only_runs() {
    let budget = BudgetConfig {
        name: Some("support-day".into()),
        principal: None,
        role: Some("support".into()),
        each_principal: false,
        tool: Some("refund".into()),
        period: BudgetPeriod::Day,
        calls: Some(2),
        usd: None,
    };
    let h = harness(&[budget]).await;
    for order in ["a", "b"] {
        let r = call(&h, "agent-1", "refund", json!({"order": order, "cents": 1})).await;
        assert_eq!(decision(&r), "allowed");
    }
    // A replay is free: it does not count against the budget.
    let r = call(&h, "agent-2", "refund", json!({"order": "a", "cents": 1})).await;
    assert_eq!(decision(&r), "replayed");
    let over = call(&h, "agent-2", "refund", json!({"order": "c", "cents": 1})).await;
    assert_eq!(decision(&over), "over_budget");
    assert!(
        text(&over).starts_with("over budget: budget `support-day` (support) allows 2 calls today"),
        "{}",
        text(&over)
    );
    // The refused call gave its key back: only the two runs hold keys.
    let claimed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM idempotency WHERE key_hash IS NOT NULL")
            .fetch_one(h.store.pool())
            .await
            .unwrap();
    assert_eq!(claimed, 2, "only the two runs hold keys");
    // Other tools are not in this budget.
    assert_eq!(
        decision(&call(&h, "agent-1", "note", json!({"t": "x"})).await),
        "allowed"
    );
}

#[tokio::test]
async fn an_approval_runs_once_as_the_requester() {
    let h = harness(&[]).await;
    let args = json!({"order": "big", "cents": 500});
    let asked = call(&h, "agent-1", "refund", args.clone()).await;
    assert_eq!(decision(&asked), "pending_approval");
    let id = asked.meta["tollgate/approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text(&asked).contains(&id) && text(&asked).contains("`finance`"));
    // Asking again finds the same request.
    let again = call(&h, "agent-1", "refund", args.clone()).await;
    assert_eq!(again.meta["tollgate/approval_id"], json!(id));

    let principals = Principals::parse(PRINCIPALS).unwrap();
    let p = |n: &str| authenticate(&principals, &Identity::local(n, "cli")).unwrap();
    let own = h
        .pipeline
        .decide_approval(&id, &p("agent-1"), true, None)
        .await
        .unwrap_err();
    assert!(own.to_string().contains("four eyes"), "{own}");
    let role = h
        .pipeline
        .decide_approval(&id, &p("agent-2"), false, Some("nope"))
        .await
        .unwrap_err();
    assert!(role.to_string().contains("role `finance`"), "{role}");
    // Both refused attempts are receipted, named in the error, and change nothing.
    for (err, who, verb) in [(&own, "agent-1", "approve"), (&role, "agent-2", "deny")] {
        let ApprovalError::Refused {
            receipt: Some(receipt),
            ..
        } = err
        else {
            panic!("a refused attempt with its receipt: {err:?}");
        };
        assert!(
            err.to_string()
                .ends_with(&format!("this attempt is receipt {receipt}"))
        );
        let r = h.store.get_receipt(receipt).await.unwrap().unwrap().content;
        assert_eq!(r.decision, Decision::ApprovalRefused);
        assert_eq!(r.outcome, Outcome::NotRun);
        assert_eq!(r.principal.as_deref(), Some(who));
        assert_eq!(r.approval_id.as_deref(), Some(id.as_str()));
        let reason = r.reason.unwrap_or_default();
        assert!(reason.starts_with(&format!("{who} tried to {verb} the call of `refund` requested by agent-1 ({id}) and was refused: ")), "{reason}");
    }
    assert_eq!(
        h.store.get_approval(&id).await.unwrap().unwrap().status,
        "pending"
    );
    let done = h
        .pipeline
        .decide_approval(&id, &p("fin-1"), true, Some("ok"))
        .await
        .unwrap();
    let run = done.run.unwrap();
    assert_eq!(decision(&run), "allowed");
    let run_receipt = h
        .store
        .get_receipt(run.receipt_id.as_deref().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run_receipt.content.principal.as_deref(), Some("agent-1"));
    assert_eq!(
        run_receipt.content.reason.as_deref(),
        Some(format!("approved by fin-1 ({id})").as_str())
    );
    assert_eq!(run_receipt.content.policies, ["large"]);
    // Twice is not allowed.
    let twice = h
        .pipeline
        .decide_approval(&id, &p("fin-1"), true, None)
        .await
        .unwrap_err();
    assert!(twice.to_string().contains("not pending"), "{twice}");

    let later = call(&h, "agent-1", "refund", args).await;
    assert_eq!(decision(&later), "replayed");
    assert_eq!(text(&later), "refunded big");
    let story = h.store.receipts_of_approval(&id).await.unwrap();
    let decisions: Vec<Decision> = story.iter().map(|r| r.content.decision).collect();
    assert_eq!(
        decisions,
        [
            Decision::PendingApproval,
            Decision::PendingApproval,
            Decision::ApprovalRefused,
            Decision::ApprovalRefused,
            Decision::Approved,
            Decision::Allowed,
            Decision::Replayed
        ]
    );
}

#[tokio::test]
async fn a_denied_approval_is_what_the_requester_hears() {
    let h = harness(&[]).await;
    let args = json!({"order": "big2", "cents": 900});
    let asked = call(&h, "agent-1", "refund", args.clone()).await;
    let id = asked.meta["tollgate/approval_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let principals = Principals::parse(PRINCIPALS).unwrap();
    let fin = authenticate(&principals, &Identity::local("fin-1", "cli")).unwrap();
    let done = h
        .pipeline
        .decide_approval(&id, &fin, false, Some("duplicate"))
        .await
        .unwrap();
    assert!(done.run.is_none());
    let later = call(&h, "agent-1", "refund", args).await;
    assert_eq!(decision(&later), "denied");
    assert_eq!(
        text(&later),
        format!("permission denied: approval `{id}` was denied by fin-1: duplicate")
    );
}
