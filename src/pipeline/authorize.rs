//! Stage 4: may this principal call this tool.
//!
//! Today the rule is the spec's `allow: [roles]` list. A policy engine with
//! conditions on arguments slots in here, behind the same signature, and
//! still hands back a [`Permit`] (or a refusal that says why).

use super::{CallError, Principal};
use crate::catalog::CompiledTool;

/// Proof that a call was authorized. Only [`authorize`] builds one, and
/// `execute` takes one by value, so nothing runs unauthorized.
#[derive(Debug)]
pub struct Permit {
    /// The role that granted the call (recorded in the receipt's reason).
    pub granted_by: String,
}

/// Deny by default: permitted only when the principal holds an allowed role.
pub fn authorize(principal: &Principal, tool: &CompiledTool) -> Result<Permit, CallError> {
    tool.spec
        .allow
        .iter()
        .find(|role| principal.roles().contains(role))
        .map(|role| Permit {
            granted_by: role.clone(),
        })
        .ok_or_else(|| CallError::Denied {
            tool: tool.spec.name.clone(),
            principal: principal.name().to_string(),
            allowed_roles: tool.spec.allow.clone(),
        })
}
