//! The approval gate (four eyes): a call that only an `@approval("ROLE")`
//! permit allows waits for a holder of ROLE.
//!
//! The request is stored and answered at once with a normal result naming
//! the approval id, so the model can tell its user. Repeating the same call
//! (same tool and arguments, or the id in `_meta`) finds the same approval:
//! still pending, denied, or approved and run, in which case the stored
//! result comes back and nothing runs again.

use serde_json::{Map, Value, json};

use super::dedupe::{self, Replay};
use super::{CallError, Principal};
use crate::canonical;
use crate::catalog::CompiledTool;
use crate::executor::ExecOutput;
use crate::store::{Approval, Store};

/// `_meta` key a client may send to name the approval it is following up.
pub const META_APPROVAL_ID: &str = "tollgate/approval_id";

/// What the gate decided.
#[derive(Debug)]
pub enum Gate {
    /// Waiting for `role`.
    Pending { approval_id: String, role: String },
    /// Approved and run: the stored result of that run.
    Ran { approval_id: String, replay: Replay },
}

/// A new or existing approval request for this call.
pub struct Request<'a> {
    pub store: &'a Store,
    pub principal: &'a Principal,
    pub tool: &'a CompiledTool,
    pub args: &'a Map<String, Value>,
    pub role: &'a str,
    pub policies: &'a [String],
    pub policy_set: &'a str,
    /// The receipt this call will get (the request's receipt).
    pub receipt_id: &'a str,
    pub ttl: std::time::Duration,
    /// An approval id the client named in `_meta`.
    pub named: Option<&'a str>,
}

/// Find this call's approval, or ask for one.
pub async fn gate(req: Request<'_>) -> Result<Gate, CallError> {
    let args_hash = canonical::digest(&Value::Object(req.args.clone()));
    let unavailable = |e: crate::store::StoreError| {
        CallError::ReceiptUnavailable(format!("the approval could not be stored or read: {e}"))
    };
    let existing = match req.named {
        Some(id) => {
            let found = req
                .store
                .get_approval(id)
                .await
                .map_err(|e| CallError::Denied {
                    message: format!("approval `{id}` cannot be used: {e}"),
                    policies: Vec::new(),
                })?;
            match found {
                Some(a)
                    if a.principal == req.principal.name()
                        && a.tool == req.tool.spec.name
                        && a.args_hash == args_hash =>
                {
                    Some(a)
                }
                Some(_) => {
                    return Err(CallError::Denied {
                        message: format!(
                            "approval `{id}` is for a different call (another caller, tool or arguments); repeat the exact call that was approved"
                        ),
                        policies: Vec::new(),
                    });
                }
                None => {
                    return Err(CallError::Denied {
                        message: format!("there is no approval `{id}`"),
                        policies: Vec::new(),
                    });
                }
            }
        }
        None => req
            .store
            .find_approval(req.principal.name(), &req.tool.spec.name, &args_hash)
            .await
            .map_err(unavailable)?,
    };
    if let Some(a) = existing {
        return follow_up(a);
    }
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::from_std(req.ttl).unwrap_or(chrono::Duration::days(1));
    let id = format!("ap_{}", uuid::Uuid::new_v4().simple());
    let approval = Approval {
        id: id.clone(),
        created_at: ts(now),
        expires_at: ts(expires),
        status: "pending".into(),
        request_receipt: req.receipt_id.into(),
        principal: req.principal.name().into(),
        roles: req.principal.roles().to_vec(),
        auth: req.principal.auth().into(),
        tool: req.tool.spec.name.clone(),
        version: req.tool.version,
        spec_hash: req.tool.hash.clone(),
        args: Value::Object(req.args.clone()),
        args_hash,
        approver_role: req.role.into(),
        policies: req.policies.to_vec(),
        policy_set: req.policy_set.into(),
        decided_by: None,
        decided_at: None,
        note: None,
        run_receipt: None,
        result: None,
    };
    req.store
        .create_approval(&approval)
        .await
        .map_err(unavailable)?;
    Ok(Gate::Pending {
        approval_id: id,
        role: req.role.into(),
    })
}

fn follow_up(a: Approval) -> Result<Gate, CallError> {
    match (a.status.as_str(), &a.result, &a.run_receipt) {
        ("pending", _, _) => Ok(Gate::Pending {
            approval_id: a.id,
            role: a.approver_role,
        }),
        ("approved", Some(result), Some(receipt)) => Ok(Gate::Ran {
            replay: Replay {
                receipt_id: receipt.clone(),
                output: dedupe::output_from(result),
            },
            approval_id: a.id,
        }),
        ("approved", _, _) => Err(CallError::Conflict(format!(
            "approval `{}` was approved by {} and its run has not finished; repeat the call shortly to get the result",
            a.id,
            a.decided_by.as_deref().unwrap_or("an approver")
        ))),
        (_, _, _) => Err(CallError::Denied {
            message: format!(
                "approval `{}` was denied by {}{}",
                a.id,
                a.decided_by.as_deref().unwrap_or("an approver"),
                a.note
                    .as_deref()
                    .map(|n| format!(": {n}"))
                    .unwrap_or_default()
            ),
            policies: Vec::new(),
        }),
    }
}

/// The result a waiting client gets: a normal result, not an error, that
/// says who must approve and gives the id.
pub fn pending_output(approval_id: &str, role: &str, tool: &str) -> ExecOutput {
    ExecOutput {
        text: format!(
            "This call to `{tool}` needs approval by someone with the role `{role}` before it runs. \
             It has not run yet. Approval id: {approval_id}. Tell the user; once it is approved, \
             repeat the same call (or send `_meta.{META_APPROVAL_ID}`) to get the result."
        ),
        structured: Some(json!({
            "status": "pending_approval",
            "approval_id": approval_id,
            "approver_role": role,
        })),
        is_error: false,
    }
}

fn ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}
