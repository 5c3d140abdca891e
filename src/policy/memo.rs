//! Remembered decisions for tools whose policies never read `context`.
//!
//! Why: a Cedar decision costs a governed call more CPU than anything else
//! tollgate does on it (building the entities, the context, the request's
//! schema check, evaluating the set: ~80 µs of ~350 µs per call under load).
//! Yet for most tools the answer depends only on who calls and which tool:
//! the `allow:` lists and role rules never look at the arguments or the
//! time. Cedar's result is a pure function of the request, the entities and
//! the policy set; the entities are fixed per (principal, roles, tool) and
//! the set is fixed for this engine's lifetime, so when no policy that could
//! apply to a tool mentions `context`, the decision for (tool, principal,
//! roles) is the same on every call and can be reused exactly.
//!
//! Soundness rests on [`may_apply`] and [`reads_context`] erring towards
//! "yes": a policy whose scope might match the tool, or whose text cannot
//! be inspected, counts as reading `context`, and then nothing is
//! remembered for that tool. Decisions whose evaluation reported an error
//! are not remembered either, so their warning is logged on every call.

use std::collections::HashMap;
use std::sync::RwLock;

use cedar_policy::{ActionConstraint, EntityUid, Policy, ResourceConstraint};
use serde_json::Value;

use super::Verdict;

/// Past this many remembered decisions the memo starts over: a bound on
/// memory when principals come and go (JWT subjects), cheap to refill.
const CAPACITY: usize = 16_384;

/// Can `policy` apply to a call of the tool with `action` and `resource`?
/// Only exact scope mismatches say no; everything else says yes.
pub fn may_apply(policy: &Policy, action: &EntityUid, resource: &EntityUid) -> bool {
    let action_may = match policy.action_constraint() {
        ActionConstraint::Eq(a) => &a == action,
        // Action groups (`tools/call`) contain every tool.
        ActionConstraint::Any | ActionConstraint::In(_) => true,
    };
    let resource_may = match policy.resource_constraint() {
        ResourceConstraint::Eq(r) => &r == resource,
        _ => true,
    };
    action_may && resource_may
}

/// Does a policy's (or template's) condition mention the `context`
/// variable? Read from Cedar's JSON form (`to_json()`), where a variable is
/// `{"Var": "context"}`; a string that happens to say "context" is
/// `{"Value": ...}` and does not count. A policy Cedar cannot render counts
/// as reading it.
pub fn reads_context<E>(json: Result<Value, E>) -> bool {
    json.map_or(true, |json| mentions_context(&json))
}

fn mentions_context(json: &Value) -> bool {
    match json {
        Value::Object(map) => {
            map.get("Var").and_then(Value::as_str) == Some("context")
                || map.values().any(mentions_context)
        }
        Value::Array(items) => items.iter().any(mentions_context),
        _ => false,
    }
}

/// Decisions by (tool, principal, roles).
#[derive(Default)]
pub struct Memo {
    decisions: RwLock<HashMap<String, Verdict>>,
}

impl Memo {
    pub fn get(&self, key: &str) -> Option<Verdict> {
        // A poisoned lock means a panic elsewhere mid-insert of a whole
        // entry; the map itself is still consistent.
        let map = self
            .decisions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(key).cloned()
    }

    pub fn put(&self, key: String, verdict: &Verdict) {
        let mut map = self
            .decisions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= CAPACITY {
            map.clear();
        }
        map.insert(key, verdict.clone());
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.decisions.read().map(|m| m.len()).unwrap_or(0)
    }
}

/// The memo key. Each part is length-prefixed, so no choice of names (a
/// principal containing a separator, say) can make two different calls
/// share a key.
pub fn key(tool: &str, principal: &str, roles: &[String]) -> String {
    let mut key = String::with_capacity(
        tool.len() + principal.len() + roles.iter().map(|r| r.len() + 4).sum::<usize>() + 12,
    );
    for part in [tool, principal]
        .into_iter()
        .chain(roles.iter().map(String::as_str))
    {
        key.push_str(&part.len().to_string());
        key.push(':');
        key.push_str(part);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn policy(text: &str) -> Policy {
        Policy::from_str(text).unwrap()
    }

    fn reads(text: &str) -> bool {
        reads_context(policy(text).to_json())
    }

    #[test]
    fn finds_context_only_as_a_variable() {
        assert!(reads(
            r#"forbid (principal, action, resource) when { context.args.url like "*x*" };"#
        ));
        assert!(reads(
            r#"permit (principal, action, resource) when { context has args };"#
        ));
        assert!(reads(
            r#"permit (principal, action, resource) unless { [1, 2].contains(context.hour) };"#
        ));
        assert!(!reads(
            r#"permit (principal, action, resource) when { resource.name == "context" };"#
        ));
        assert!(!reads(
            r#"permit (principal in Tollgate::Role::"a", action, resource);"#
        ));
    }

    #[test]
    fn scope_mismatch_is_the_only_no() {
        let action = EntityUid::from_str(r#"Tollgate::Action::"echo""#).unwrap();
        let resource = EntityUid::from_str(r#"Tollgate::Tool::"echo""#).unwrap();
        let may = |text: &str| may_apply(&policy(text), &action, &resource);
        assert!(may("permit (principal, action, resource);"));
        assert!(may(
            r#"permit (principal, action == Tollgate::Action::"echo", resource);"#
        ));
        assert!(may(
            r#"permit (principal, action in [Tollgate::Action::"tools/call"], resource);"#
        ));
        assert!(may(
            r#"permit (principal, action, resource is Tollgate::Tool);"#
        ));
        assert!(!may(
            r#"permit (principal, action == Tollgate::Action::"http_get", resource);"#
        ));
        assert!(!may(
            r#"permit (principal, action, resource == Tollgate::Tool::"http_get");"#
        ));
    }

    #[test]
    fn keys_cannot_collide_through_separators() {
        assert_ne!(key("t", "a:b", &[]), key("t", "a", &["b".into()]));
        assert_ne!(key("t", "a", &["bc".into()]), key("t", "ab", &["c".into()]));
        assert_eq!(key("t", "p", &["r".into()]), key("t", "p", &["r".into()]));
    }

    #[test]
    fn starts_over_when_full() {
        let memo = Memo::default();
        let v = Verdict::Allow { policies: vec![] };
        for i in 0..CAPACITY {
            memo.put(i.to_string(), &v);
        }
        assert_eq!(memo.len(), CAPACITY);
        memo.put("one more".into(), &v);
        assert_eq!(memo.len(), 1);
        assert_eq!(memo.get("one more"), Some(v));
    }
}
