//! The `context` of one call's Cedar request, built as Cedar values.
//!
//! Why not `Context::from_json_value`: with a schema it parses the JSON by
//! trying each of Cedar's JSON value shapes in turn (entity reference,
//! extension call, record, …), and every failed try builds a `serde_json`
//! error. Measured under load that was a fifth of a governed call's server
//! CPU. The arguments have already been reduced to the tool's Cedar types
//! ([`schema::cedar_value`]), so the shape of every value is known and it
//! can be built directly. `Request::new` still validates the finished
//! context against the schema, so a value of the wrong type is refused
//! (fail closed) just as before.

use std::str::FromStr;
use std::sync::{LazyLock, Mutex};

use cedar_policy::{Context, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::{Map, Value};

use super::schema;

/// Cedar parses type names with its full grammar; do it once, not per call
/// (or per generated allow-list link at start-up).
static PRINCIPAL: LazyLock<EntityTypeName> = LazyLock::new(|| type_name("Principal"));
static ROLE: LazyLock<EntityTypeName> = LazyLock::new(|| type_name("Role"));
static TOOL: LazyLock<EntityTypeName> = LazyLock::new(|| type_name("Tool"));
static ACTION: LazyLock<EntityTypeName> = LazyLock::new(|| type_name("Action"));

/// The entity types of tollgate's Cedar schema.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Principal,
    Role,
    Tool,
    Action,
}

fn type_name(kind: &str) -> EntityTypeName {
    // A fixed identifier in a fixed namespace: parsing cannot fail.
    EntityTypeName::from_str(&format!("{}::{kind}", schema::NAMESPACE))
        .expect("fixed Cedar type name")
}

/// `Tollgate::<kind>::"<id>"`.
pub fn uid(kind: Kind, id: &str) -> EntityUid {
    let ty = match kind {
        Kind::Principal => &*PRINCIPAL,
        Kind::Role => &*ROLE,
        Kind::Tool => &*TOOL,
        Kind::Action => &*ACTION,
    };
    EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
}

/// The last second's `datetime(...)` expression. Building one parses the
/// extension's name with Cedar's grammar; calls within the same second
/// share it, which is why `context.time` is the call's time to the second.
static TIME: Mutex<Option<(i64, RestrictedExpression)>> = Mutex::new(None);

fn time(now: DateTime<Utc>) -> RestrictedExpression {
    let second = now.timestamp();
    // A poisoned lock only means another thread panicked mid-update; the
    // cached pair is replaced whole, so it is never half-written.
    let mut cached = TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match &*cached {
        Some((s, expr)) if *s == second => expr.clone(),
        _ => {
            let expr =
                RestrictedExpression::new_datetime(now.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            *cached = Some((second, expr.clone()));
            expr
        }
    }
}

/// The call facts a policy can read as `context.*`.
pub struct Facts<'a> {
    /// The tool's `args` record type (from [`schema`]).
    pub args_type: &'a Value,
    pub args: &'a Map<String, Value>,
    pub transport: &'a str,
    pub auth_method: &'a str,
    pub now: DateTime<Utc>,
}

/// Build the context. `Err` names what cannot be represented (an integer
/// beyond 64 bits), so the call is denied rather than judged on part of it.
pub fn build(facts: &Facts<'_>) -> Result<Context, String> {
    let args = restricted(schema::cedar_args(facts.args_type, facts.args)?);
    let now = facts.now;
    let pairs = [
        ("args".to_owned(), args),
        (
            "transport".to_owned(),
            RestrictedExpression::new_string(facts.transport.to_owned()),
        ),
        (
            "auth_method".to_owned(),
            RestrictedExpression::new_string(facts.auth_method.to_owned()),
        ),
        ("time".to_owned(), time(now)),
        (
            "hour".to_owned(),
            RestrictedExpression::new_long(i64::from(now.hour())),
        ),
        (
            "weekday".to_owned(),
            RestrictedExpression::new_string(now.weekday().to_string()),
        ),
    ];
    Context::from_pairs(pairs).map_err(|e| format!("cannot build the policy request: {e}"))
}

/// A value produced by [`schema::cedar_value`] as a Cedar expression. That
/// function only yields strings, booleans, 64-bit integers, arrays (sets)
/// and objects (records), so this mapping is exact; anything else cannot
/// occur and would become an empty record, which the schema check refuses.
fn restricted(value: Value) -> RestrictedExpression {
    match value {
        Value::String(s) => RestrictedExpression::new_string(s),
        Value::Bool(b) => RestrictedExpression::new_bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => RestrictedExpression::new_long(i),
            None => RestrictedExpression::new_string(n.to_string()),
        },
        Value::Array(items) => RestrictedExpression::new_set(items.into_iter().map(restricted)),
        Value::Object(fields) => {
            // Keys of a JSON object are distinct, so this cannot fail.
            RestrictedExpression::new_record(fields.into_iter().map(|(k, v)| (k, restricted(v))))
                .unwrap_or_else(|_| RestrictedExpression::new_set(Vec::new()))
        }
        Value::Null => RestrictedExpression::new_set(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A context built directly must equal the one Cedar parses from JSON:
    /// same keys, same values, same types.
    #[test]
    fn equals_the_json_form() {
        let args_type = json!({"type": "Record", "attributes": {
            "n": {"type": "Long", "required": false},
            "s": {"type": "String", "required": false},
            "tags": {"type": "Set", "element": {"type": "String"}, "required": false},
            "inner": {"type": "Record", "attributes": {"ok": {"type": "Boolean", "required": false}}, "required": false},
        }});
        let args = json!({"n": 7, "s": "x", "tags": ["a", "b"], "inner": {"ok": true}});
        let now = DateTime::parse_from_rfc3339("2026-11-22T10:11:12.345Z")
            .unwrap()
            .with_timezone(&Utc);
        let built = build(&Facts {
            args_type: &args_type,
            args: args.as_object().unwrap(),
            transport: "http",
            auth_method: "api_key",
            now,
        })
        .unwrap();
        let parsed = Context::from_json_value(
            json!({
                "args": args,
                "transport": "http",
                "auth_method": "api_key",
                "time": {"__extn": {"fn": "datetime", "arg": "2026-11-22T10:11:12Z"}},
                "hour": 10,
                "weekday": "Sun",
            }),
            None,
        )
        .unwrap();
        let keys = [
            "args",
            "transport",
            "auth_method",
            "time",
            "hour",
            "weekday",
        ];
        for key in keys {
            assert_eq!(
                format!("{:?}", built.get(key)),
                format!("{:?}", parsed.get(key)),
                "context.{key}"
            );
        }
    }

    #[test]
    fn an_integer_beyond_64_bits_is_refused_with_its_name() {
        let args_type =
            json!({"type": "Record", "attributes": {"n": {"type": "Long", "required": false}}});
        let args = json!({"n": 1e30});
        let err = build(&Facts {
            args_type: &args_type,
            args: args.as_object().unwrap(),
            transport: "stdio",
            auth_method: "stdio",
            now: Utc::now(),
        })
        .unwrap_err();
        assert!(err.contains("`n`"), "{err}");
    }
}
