//! Stage 4: may this principal make this call, with these arguments.
//!
//! The policy engine decides (see [`crate::policy`]); this stage turns its
//! verdict into either a [`Permit`] to run, a request for approval, or a
//! refusal the client can read.

use super::{CallError, Principal, ValidArgs};
use crate::catalog::CompiledTool;
use crate::policy::{CallFacts, PolicyEngine, Verdict};

/// Proof that a call may run. Only [`authorize`] builds one, and `execute`
/// takes one by value, so nothing runs unauthorized.
#[derive(Debug)]
pub struct Permit {
    /// The permits that allowed the call (recorded in the receipt).
    pub policies: Vec<String>,
}

/// What authorization decided, short of a refusal.
#[derive(Debug)]
pub enum Authorized {
    /// Run it.
    Run(Permit),
    /// Only an `@approval` permit allows it: a holder of `role` must approve
    /// first. No [`Permit`] exists for such a call.
    NeedsApproval { role: String, policies: Vec<String> },
}

impl Authorized {
    /// The policies behind the decision, for the receipt.
    pub fn policies(&self) -> &[String] {
        match self {
            Authorized::Run(p) => &p.policies,
            Authorized::NeedsApproval { policies, .. } => policies,
        }
    }
}

/// Ask the policies about this call. Deny by default; forbid wins.
pub fn authorize(
    engine: &PolicyEngine,
    principal: &Principal,
    tool: &CompiledTool,
    args: &ValidArgs,
    transport: &str,
) -> Result<Authorized, CallError> {
    let facts = CallFacts {
        principal: principal.name(),
        roles: principal.roles(),
        tool: &tool.spec.name,
        args: args.as_map(),
        transport,
        auth_method: auth_method(principal.auth()),
        now: chrono::Utc::now(),
    };
    match engine.decide(&facts) {
        Verdict::Allow { policies } => Ok(Authorized::Run(Permit { policies })),
        Verdict::Approval { role, policies } => Ok(Authorized::NeedsApproval { role, policies }),
        Verdict::Deny { policies, message } => Err(CallError::Denied { message, policies }),
    }
}

/// The kind of credential, without the identifying part: "api_key:3f9a…"
/// → "api_key", "jwt:iss|sub" → "jwt".
fn auth_method(auth: &str) -> &str {
    auth.split(':').next().unwrap_or(auth)
}

/// A permit for an approved call: the approval is the authorization.
pub(super) fn approved(policies: Vec<String>) -> Permit {
    Permit { policies }
}
