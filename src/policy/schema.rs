//! The Cedar schema tollgate derives from the tool specs, and the request
//! values that match it.
//!
//! Each tool becomes one Cedar action named after the tool, whose context
//! type carries that tool's arguments (`context.args`), typed from its input
//! schema. That is what lets Cedar's validator reject a policy that names an
//! argument the tool does not have, or compares a string with a number,
//! before anything is served. Every tool action is also a member of the
//! action group `Tollgate::Action::"tools/call"`, for rules about all tools.
//!
//! ```text
//! Tollgate::Principal::"alice"  in  Tollgate::Role::"support"
//! Tollgate::Action::"issue_refund"  in  Tollgate::Action::"tools/call"
//! Tollgate::Tool::"issue_refund"  { name, version, destructive, read_only,
//!                                   idempotent, open_world, tags }
//! context { args: {..}, transport, auth_method, time, hour, weekday }
//! ```
//!
//! JSON Schema is richer than Cedar's types, so only what maps exactly is
//! exposed: `string`, `integer` (Cedar `Long`), `boolean`, arrays of those
//! (`Set`), and objects with `properties` (`Record`). A property of another
//! type (a `number`, a union) is simply absent from `context.args`, so a
//! policy that names it fails validation with Cedar's own message.

use serde_json::{Map, Value, json};

/// The Cedar namespace of everything tollgate defines.
pub const NAMESPACE: &str = "Tollgate";
/// The action group every tool action belongs to.
pub const ALL_TOOLS: &str = "tools/call";

/// What [`cedar_type`] makes of one JSON Schema: a Cedar type (JSON schema
/// syntax) or nothing.
pub fn cedar_type(schema: &Value) -> Option<Value> {
    let obj = schema.as_object()?;
    match obj.get("type")?.as_str()? {
        "string" => Some(json!({"type": "String"})),
        "integer" => Some(json!({"type": "Long"})),
        "boolean" => Some(json!({"type": "Boolean"})),
        "array" => {
            let element = cedar_type(obj.get("items")?)?;
            Some(json!({"type": "Set", "element": element}))
        }
        "object" => Some(record_type(obj)),
        _ => None,
    }
}

/// A closed Cedar record of the properties that have a Cedar type. A
/// property is required in Cedar only when the JSON Schema requires it, so
/// policies must test `has` before reading an optional argument.
fn record_type(obj: &Map<String, Value>) -> Value {
    let required: Vec<&str> = obj
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut attributes = Map::new();
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            if let Some(mut ty) = cedar_type(prop) {
                if let Some(o) = ty.as_object_mut() {
                    o.insert("required".into(), json!(required.contains(&name.as_str())));
                }
                attributes.insert(name.clone(), ty);
            }
        }
    }
    json!({"type": "Record", "attributes": attributes})
}

/// `value` reduced to what `ty` (from [`cedar_type`]) describes, ready for
/// Cedar's JSON value format. `Err` names the argument that cannot be
/// represented (an integer beyond 64 bits), so the call fails closed rather
/// than being judged on partial facts.
pub fn cedar_value(ty: &Value, value: &Value, path: &str) -> Result<Option<Value>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let kind = ty.get("type").and_then(Value::as_str).unwrap_or_default();
    let out = match kind {
        "String" => value.as_str().map(|s| json!(s)),
        "Boolean" => value.as_bool().map(|b| json!(b)),
        "Long" => match value.as_i64().or_else(|| whole_f64(value)) {
            Some(n) => Some(json!(n)),
            None if value.is_number() => {
                return Err(format!(
                    "argument `{path}` ({value}) does not fit a 64-bit integer, so policies cannot judge it"
                ));
            }
            None => None,
        },
        "Set" => {
            let element = ty.get("element").unwrap_or(&Value::Null);
            match value.as_array() {
                Some(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, item) in items.iter().enumerate() {
                        if let Some(v) = cedar_value(element, item, &format!("{path}[{i}]"))? {
                            out.push(v);
                        }
                    }
                    Some(Value::Array(out))
                }
                None => None,
            }
        }
        "Record" => match value.as_object() {
            Some(fields) => Some(record_value(ty, fields, path)?),
            None => None,
        },
        _ => None,
    };
    Ok(out)
}

/// A call's arguments (a JSON object) reduced to the tool's `args` record
/// type `ty`, as [`cedar_value`] does, without copying them first.
pub fn cedar_args(ty: &Value, args: &Map<String, Value>) -> Result<Value, String> {
    record_value(ty, args, "")
}

/// JSON Schema's `integer` accepts `5.0`; Cedar needs the `5`.
fn whole_f64(value: &Value) -> Option<i64> {
    let f = value.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 9.0e18).then_some(f as i64)
}

fn record_value(ty: &Value, fields: &Map<String, Value>, path: &str) -> Result<Value, String> {
    let mut out = Map::new();
    if let Some(attrs) = ty.get("attributes").and_then(Value::as_object) {
        for (name, attr_ty) in attrs {
            let Some(v) = fields.get(name) else { continue };
            let sub = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            if let Some(v) = cedar_value(attr_ty, v, &sub)? {
                out.insert(name.clone(), v);
            }
        }
    }
    Ok(Value::Object(out))
}

/// The context type of one tool's action.
///
/// Values are moved in, never written inside `json!`: the macro takes a
/// `Value` by reference and deep-copies it through `Serialize`, which for
/// 1,000 tools was a visible share of start-up.
pub fn context_type(args: Value) -> Value {
    let mut ty = json!({
        "type": "Record",
        "attributes": {
            // "stdio", "http" or "cli".
            "transport": {"type": "String"},
            // "stdio", "cli", "api_key" or "jwt".
            "auth_method": {"type": "String"},
            // When the call arrived (UTC), for rules such as
            // `context.time.toTime() < duration("18h")`.
            "time": {"type": "Extension", "name": "datetime"},
            // The same instant, broken down for simple rules: 0-23 (UTC)
            // and "Mon".."Sun".
            "hour": {"type": "Long"},
            "weekday": {"type": "String"},
        }
    });
    ty["attributes"]["args"] = args;
    ty
}

/// The whole Cedar schema (JSON syntax) for tools whose argument types are
/// given as `(tool name, Cedar record type of its arguments)`.
pub fn schema_json<S: Into<String>>(tools: impl IntoIterator<Item = (S, Value)>) -> Value {
    let mut actions = Map::new();
    actions.insert(ALL_TOOLS.into(), json!({}));
    for (name, args) in tools {
        // Moved in, not copied (see `context_type`).
        let mut action = json!({
            "memberOf": [{"id": ALL_TOOLS}],
            "appliesTo": {
                "principalTypes": ["Principal"],
                "resourceTypes": ["Tool"],
            }
        });
        action["appliesTo"]["context"] = context_type(args);
        actions.insert(name.into(), action);
    }
    let mut schema = json!({
        NAMESPACE: {
            "entityTypes": {
                "Role": {},
                "Principal": {"memberOfTypes": ["Role"]},
                "Tool": {
                    "shape": {
                        "type": "Record",
                        "attributes": {
                            "name": {"type": "String"},
                            "version": {"type": "Long"},
                            "destructive": {"type": "Boolean"},
                            "read_only": {"type": "Boolean"},
                            "idempotent": {"type": "Boolean"},
                            "open_world": {"type": "Boolean"},
                            "tags": {"type": "Set", "element": {"type": "String"}},
                        }
                    }
                }
            },
        }
    });
    schema[NAMESPACE]["actions"] = Value::Object(actions);
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_exact_types_and_drops_the_rest() {
        let schema = json!({
            "type": "object",
            "required": ["order_id"],
            "properties": {
                "order_id": {"type": "string"},
                "amount_cents": {"type": "integer"},
                "ratio": {"type": "number"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "meta": {"type": "object", "properties": {"vip": {"type": "boolean"}}},
            }
        });
        let ty = cedar_type(&schema).unwrap();
        let attrs = &ty["attributes"];
        assert_eq!(
            attrs["order_id"],
            json!({"type": "String", "required": true})
        );
        assert_eq!(attrs["amount_cents"]["required"], json!(false));
        assert!(attrs.get("ratio").is_none());
        assert_eq!(attrs["tags"]["element"]["type"], "String");
        assert_eq!(attrs["meta"]["attributes"]["vip"]["type"], "Boolean");

        let v = cedar_value(
            &ty,
            &json!({"order_id": "ord_1", "amount_cents": 5, "ratio": 0.5, "tags": ["a"], "meta": {"vip": true}, "extra": 1}),
            "",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            v,
            json!({"order_id": "ord_1", "amount_cents": 5, "tags": ["a"], "meta": {"vip": true}})
        );
    }

    #[test]
    fn huge_integers_fail_closed_and_null_is_absent() {
        let ty = cedar_type(&json!({"type": "object", "properties": {"n": {"type": "integer"}}}))
            .unwrap();
        let err = cedar_value(&ty, &json!({"n": 1e30}), "").unwrap_err();
        assert!(err.contains("argument `n`"), "{err}");
        let v = cedar_value(&ty, &json!({"n": null}), "").unwrap().unwrap();
        assert_eq!(v, json!({}));
    }
}
