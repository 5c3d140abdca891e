//! YAML scalars that read one way into a spec field and another way into
//! the JSON value that is hashed and stored.
//!
//! A version is stored as the canonical JSON of its file read as a plain JSON
//! value, and a pinned version is rebuilt from that JSON, so the spec served
//! must be the one that JSON reads back to. YAML picks a plain scalar's type
//! from its text: `-1` is an integer and (to serde_norway) `0001` is text.
//! Read into a typed field, the same scalar follows the field: in
//! `argv: [ls, -1]` it is the string "-1", in `usd: 0001` the number 1.
//!
//! [`reconcile`] settles each such field the way the field reads it, taking
//! the typed reading from the YAML text itself (so `0x10` in `argv` stays
//! the string "0x10" rather than becoming "16"), and writes it into the JSON
//! value before reading the spec from that value.

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_path_to_error::{Error as PathError, Segment};

use super::model::ToolSpec;

/// Most fields one file may have settled. Each costs a reading of the whole
/// file, so a file made of thousands of them is refused instead.
pub const MAX_FIXES: usize = 64;

/// Read the spec from `value` (the JSON reading of the YAML `text`), first
/// settling every field whose two readings differ as the typed reading has it.
/// The error is the first field that cannot be settled.
pub fn reconcile(text: &str, value: &mut Value) -> Result<ToolSpec, PathError<serde_json::Error>> {
    let mut fixes = 0;
    loop {
        let err = match serde_path_to_error::deserialize::<_, ToolSpec>(&*value) {
            Ok(spec) => return Ok(spec),
            Err(err) => err,
        };
        if fixes == MAX_FIXES {
            return Err(err);
        }
        let Some(kind) = Kind::expected_in(&err.inner().to_string()) else {
            return Err(err);
        };
        let Some(steps) = steps(err.path()) else {
            return Err(err);
        };
        let Some(typed) = typed_reading(text, &steps, kind) else {
            return Err(err);
        };
        match slot(value, &steps) {
            Some(slot) if is_scalar(slot) && *slot != typed => *slot = typed,
            // No progress to make: report the field.
            _ => return Err(err),
        }
        fixes += 1;
    }
}

/// A value a fix may replace. `Null` is one: YAML `~`, an empty value and
/// `.inf` are null to a JSON value but text to a string field.
fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// The scalar types a spec field can expect, as serde names them after
/// "expected" in a type error.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Text,
    Float,
    Unsigned,
    Signed,
    Bool,
}

impl Kind {
    fn expected_in(message: &str) -> Option<Kind> {
        let (_, expected) = message.rsplit_once("expected ")?;
        Some(match expected {
            // `PathBuf` (a command's `cwd`) says "path string".
            "a string" | "path string" => Kind::Text,
            "f64" | "f32" => Kind::Float,
            "u8" | "u16" | "u32" | "u64" | "usize" => Kind::Unsigned,
            "i8" | "i16" | "i32" | "i64" | "isize" => Kind::Signed,
            "a boolean" => Kind::Bool,
            _ => return None,
        })
    }

    fn read<'de, D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        Ok(match self {
            Kind::Text => Some(Value::String(String::deserialize(d)?)),
            Kind::Float => serde_json::Number::from_f64(f64::deserialize(d)?).map(Value::Number),
            Kind::Unsigned => Some(Value::from(u64::deserialize(d)?)),
            Kind::Signed => Some(Value::from(i64::deserialize(d)?)),
            Kind::Bool => Some(Value::Bool(bool::deserialize(d)?)),
        })
    }
}

/// One step of a field path: a mapping key (or enum variant) or a list index.
#[derive(Debug)]
enum Step {
    Key(String),
    Index(usize),
}

fn steps(path: &serde_path_to_error::Path) -> Option<Vec<Step>> {
    path.iter()
        .map(|s| match s {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Enum { variant } => Some(Step::Key(variant.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Unknown => None,
        })
        .collect()
}

/// The JSON value at `steps`.
fn slot<'v>(value: &'v mut Value, steps: &[Step]) -> Option<&'v mut Value> {
    steps.iter().try_fold(value, |v, step| match step {
        Step::Key(k) => v.as_object_mut()?.get_mut(k),
        Step::Index(i) => v.as_array_mut()?.get_mut(*i),
    })
}

/// The scalar at `steps` in the YAML `text`, read as `kind`.
fn typed_reading(text: &str, steps: &[Step], kind: Kind) -> Option<Value> {
    let de = serde_norway::Deserializer::from_str(text);
    Probe { steps, kind }.deserialize(de).ok().flatten()
}

/// Walks the YAML document down `steps`, skipping everything else, and reads
/// the node it ends at as `kind`.
struct Probe<'s> {
    steps: &'s [Step],
    kind: Kind,
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        if self.steps.is_empty() {
            self.kind.read(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a mapping or a list")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Value>, A::Error> {
        let Some((Step::Key(want), rest)) = self.steps.split_first() else {
            return Err(de::Error::custom("not a list"));
        };
        let mut found = None;
        // Keys read as text, as the JSON value reads them (`1:` is "1"); a
        // repeated key keeps its last value, as the JSON value does.
        while let Some(key) = map.next_key::<String>()? {
            if key == *want {
                found = map.next_value_seed(Probe {
                    steps: rest,
                    kind: self.kind,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Value>, A::Error> {
        let Some((Step::Index(want), rest)) = self.steps.split_first() else {
            return Err(de::Error::custom("not a mapping"));
        };
        let mut found = None;
        let mut index = 0;
        loop {
            if index == *want {
                let probe = Probe {
                    steps: rest,
                    kind: self.kind,
                };
                match seq.next_element_seed(probe)? {
                    Some(v) => found = v,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "name: t\ndescription: d\ninput_schema: {type: object}\nallow: [a]\n";

    fn settle(text: &str) -> Result<(ToolSpec, Value), String> {
        let mut value: Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let spec = reconcile(text, &mut value).map_err(|e| e.to_string())?;
        Ok((spec, value))
    }

    #[test]
    fn a_list_item_takes_the_text_as_written() {
        let text = format!("{HEAD}run: {{command: {{argv: [ls, -1, 0x10, 1e3, true]}}}}\n");
        let (_, value) = settle(&text).unwrap();
        assert_eq!(
            value["run"]["command"]["argv"],
            serde_json::json!(["ls", "-1", "0x10", "1e3", "true"])
        );
    }

    #[test]
    fn null_numeric_keys_and_paths_settle_too() {
        let text = format!(
            "{HEAD}run: {{command: {{argv: [ls, ~, .inf], cwd: 2024, set_env: {{NO_COLOR: , N: x, N: 1}}}}}}\n"
        );
        let (spec, value) = settle(&text).unwrap();
        let command = &value["run"]["command"];
        assert_eq!(command["argv"], serde_json::json!(["ls", "~", ".inf"]));
        assert_eq!(command["cwd"], serde_json::json!("2024"));
        assert_eq!(
            command["set_env"],
            serde_json::json!({"NO_COLOR": "", "N": "1"})
        );
        assert!(format!("{:?}", spec.run).contains("2024"));
        let text = format!("{HEAD}run: {{http: {{url: 'http://x/', query: {{1: 2}}}}}}\n");
        let (_, value) = settle(&text).unwrap();
        assert_eq!(value["run"]["http"]["query"], serde_json::json!({"1": "2"}));
    }

    #[test]
    fn a_number_field_takes_the_number() {
        let text = format!("{HEAD}cost: {{usd: 0001}}\nrun: {{static: {{text: x}}}}\n");
        let (spec, value) = settle(&text).unwrap();
        assert_eq!(value["cost"]["usd"], serde_json::json!(1.0));
        assert_eq!(spec.cost.and_then(|c| c.usd), Some(1.0));
    }

    #[test]
    fn a_wrong_type_is_still_an_error() {
        // A list where a string belongs is not a scalar to settle.
        let text = format!("{HEAD}run: {{command: {{argv: [ls, [x]]}}}}\n");
        let err = settle(&text).unwrap_err();
        assert!(err.starts_with("run.command.argv[1]"), "{err}");
    }

    #[test]
    fn too_many_fields_to_settle_are_refused() {
        let many = vec!["-1"; MAX_FIXES + 1].join(", ");
        let text = format!("{HEAD}run: {{command: {{argv: [ls, {many}]}}}}\n");
        let err = settle(&text).unwrap_err();
        assert!(
            err.starts_with(&format!("run.command.argv[{}]", MAX_FIXES + 1)),
            "{err}"
        );
        let fewer = vec!["-1"; MAX_FIXES].join(", ");
        let text = format!("{HEAD}run: {{command: {{argv: [ls, {fewer}]}}}}\n");
        assert!(settle(&text).is_ok());
    }
}
