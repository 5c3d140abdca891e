//! Stage 3: are the arguments what the tool's input schema says.
//!
//! The size limit is checked first so a huge payload is refused before any
//! schema work is spent on it.

use serde_json::{Map, Value};

use super::{CallError, Violation};
use crate::catalog::CompiledTool;

/// Arguments that passed the tool's input schema. Only [`validate`] builds one.
#[derive(Debug, Clone)]
pub struct ValidArgs(Map<String, Value>);

impl ValidArgs {
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Arguments taken as valid without a schema (unit tests only).
    #[cfg(test)]
    pub(crate) fn for_tests(args: Value) -> ValidArgs {
        ValidArgs(args.as_object().cloned().unwrap_or_default())
    }
}

/// Most violations listed in one reply; the rest are counted.
const MAX_VIOLATIONS: usize = 20;

/// Check size and schema. `size` is the JSON length of the arguments.
pub fn validate(
    tool: &CompiledTool,
    args: Map<String, Value>,
    size: usize,
    limit: usize,
) -> Result<ValidArgs, CallError> {
    if size > limit {
        return Err(CallError::ArgsTooLarge {
            tool: tool.spec.name.clone(),
            size,
            limit,
        });
    }
    let instance = Value::Object(args);
    let mut violations: Vec<Violation> = tool
        .validator
        .iter_errors(&instance)
        .map(|e| Violation {
            pointer: e.instance_path().to_string(),
            message: e.to_string(),
        })
        .collect();
    if !violations.is_empty() {
        let extra = violations.len().saturating_sub(MAX_VIOLATIONS);
        violations.truncate(MAX_VIOLATIONS);
        if extra > 0 {
            violations.push(Violation {
                pointer: String::new(),
                message: format!("… and {extra} more"),
            });
        }
        return Err(CallError::InvalidArgs {
            tool: tool.spec.name.clone(),
            violations,
        });
    }
    match instance {
        Value::Object(map) => Ok(ValidArgs(map)),
        _ => unreachable!("constructed as an object above"),
    }
}
