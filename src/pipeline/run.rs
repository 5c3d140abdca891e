//! Stage 6 and its guards: the part of a call that can have an effect.
//!
//! ```text
//! dedupe (idempotency key) → budget → execute → settle cost, store result
//! ```
//!
//! Also the approval paths: asking for an approval instead of running, and
//! an approver's decision, which runs the approved call once as its
//! requester.

use serde_json::{Map, Value};

use super::approve::{self, Gate};
use super::dedupe::{self, Dedupe};
use super::{
    CallError, CallMeta, CallReply, Draft, Governed, Origin, Permit, Pipeline, Principal,
    ValidArgs, budget, execute, validate,
};
use crate::catalog::CompiledTool;
use crate::receipt::{Decision, Outcome, now_ts};
use crate::store::{Approval, Charge, Store, StoreError};

/// Why an approver's decision was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("there is no approval `{0}`; `tollgate approvals list` shows them")]
    NotFound(String),
    #[error("approval `{id}` is {status}, not pending; nothing was changed")]
    NotPending { id: String, status: String },
    /// The approver may not decide this approval. The attempt is receipted
    /// (`approval_refused`); `receipt` is that receipt's id when it was
    /// committed.
    #[error("{why}; this attempt is receipt {}", receipt.as_deref().unwrap_or("none (not committed)"))]
    Refused {
        why: Refusal,
        receipt: Option<String>,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Why an approver may not decide a pending approval.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "`{approver}` cannot decide approval `{id}`: only a holder of the role `{role}` can, and `{approver}` holds {held}"
    )]
    WrongRole {
        id: String,
        approver: String,
        role: String,
        held: String,
    },
    #[error(
        "`{0}` asked for this call and cannot approve or deny it; four eyes means someone else decides"
    )]
    OwnRequest(String),
}

/// What an approver's decision led to.
#[derive(Debug)]
pub struct Decided {
    /// The receipt of the decision itself.
    pub decision_receipt: Option<String>,
    /// For an approval: the reply of the call's run.
    pub run: Option<CallReply>,
    /// `Some` when that run did not start (nothing was sent): what became
    /// of the approval, which such a run does not use up.
    pub unused: Option<Unused>,
}

/// What became of an approval whose approved run did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unused {
    /// Pending again, until `expires_at`: an approver decides again.
    Pending { expires_at: String },
    /// Pending again, but its time ran out meanwhile: the requester's
    /// repeat asks for a new approval.
    Expired,
    /// It could not be put back to pending (see the log) and keeps the
    /// run's result, which a repeat gets.
    Kept,
}

impl Pipeline {
    /// Run a permitted call: claim its idempotency key, charge its budgets,
    /// execute it, then settle the cost and store the result for repeats.
    pub(super) async fn run(
        &self,
        principal: &Principal,
        tool: &CompiledTool,
        args: ValidArgs,
        permit: Permit,
        client_key: Option<&str>,
        draft: &mut Draft,
    ) -> Result<Governed, CallError> {
        let store = &self.governance.store;
        if let Some(key) = client_key {
            dedupe::check_client_key(key)?;
        }
        let key = match dedupe::claim(store, principal, tool, args.as_map(), client_key, &draft.id)
            .await?
        {
            Dedupe::Replay(replay) => return Ok(Governed::Replayed(replay)),
            Dedupe::Claimed(key) => Some(key),
            Dedupe::NoKey => None,
        };
        let fixed = tool.spec.cost.as_ref().and_then(|c| c.usd).unwrap_or(0.0);
        let charges =
            self.governance
                .budgets
                .charges(principal, &tool.spec.name, fixed, chrono::Utc::now());
        if let Err(over) = budget::reserve(store, &charges).await {
            if let Some(key) = key {
                key.release(store, &draft.id).await;
            }
            return Err(over);
        }
        draft.charge(tool);
        // No side effect without a record: a tool that may change the world
        // runs only after its intent is committed. If tollgate dies before
        // the receipt, start-up turns the intent into an `interrupted` one.
        if !tool.read_only()
            && let Err(e) = self.writer.intent(&draft.intent()).await
        {
            give_back(store, key, &charges, fixed, &draft.id).await;
            return Err(CallError::StorageUnavailable(format!(
                "the intent record could not be committed: {e}"
            )));
        }
        let executed = execute(tool, &args, permit, &self.shutdown).await;
        if executed.outcome == Outcome::NotRun {
            // The tool never started: nothing to remember under the key (a
            // retry may run it) and nothing to charge (its receipt has no
            // cost either, see `Draft::finish`).
            give_back(store, key, &charges, fixed, &draft.id).await;
            return Ok(Governed::Ran(executed));
        }
        let actual = actual_cost(tool, &executed.output);
        draft.cost(actual);
        if let Some(actual) = actual {
            budget::adjust(store, &charges, 0, actual - fixed).await;
        }
        if let Some(key) = key {
            key.finish(store, &draft.id, executed.outcome, &executed.output)
                .await;
        }
        Ok(Governed::Ran(executed))
    }

    /// Ask for (or follow up on) the approval this call needs.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn await_approval(
        &self,
        principal: &Principal,
        tool: &CompiledTool,
        args: &ValidArgs,
        role: &str,
        policies: &[String],
        meta: &CallMeta,
        draft: &mut Draft,
    ) -> Result<Governed, CallError> {
        let gate = approve::gate(approve::Request {
            store: &self.governance.store,
            principal,
            tool,
            args: args.as_map(),
            role,
            policies,
            policy_set: self.governance.policy.hash(),
            receipt_id: &draft.id,
            ttl: self.governance.approval_ttl,
            named: meta.approval_id.as_deref(),
        })
        .await;
        match gate {
            Ok(Gate::Pending { approval_id, role }) => {
                draft.approval(&approval_id);
                Ok(Governed::Pending { approval_id, role })
            }
            Ok(Gate::Ran {
                approval_id,
                replay,
            }) => {
                draft.approval(&approval_id);
                Ok(Governed::Replayed(replay))
            }
            Err(e) => Err(e),
        }
    }

    /// An approver's decision on approval `id`. Approving runs the call
    /// once, as its requester; both the decision and the run are receipts
    /// linked by the approval id.
    pub async fn decide_approval(
        &self,
        id: &str,
        approver: &Principal,
        approve: bool,
        note: Option<&str>,
    ) -> Result<Decided, ApprovalError> {
        let store = &self.governance.store;
        let approval = store
            .get_approval(id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))?;
        let id = approval.id.clone();
        if approval.status != "pending" {
            return Err(ApprovalError::NotPending {
                id,
                status: approval.status,
            });
        }
        let refusal = if approver.name() == approval.principal {
            Some(Refusal::OwnRequest(approver.name().to_owned()))
        } else if !approver.roles().contains(&approval.approver_role) {
            Some(Refusal::WrongRole {
                id: id.clone(),
                approver: approver.name().to_owned(),
                role: approval.approver_role.clone(),
                held: if approver.roles().is_empty() {
                    "no roles".to_owned()
                } else {
                    format!("only {}", approver.roles().join(", "))
                },
            })
        } else {
            None
        };
        if let Some(why) = refusal {
            // A refused attempt changes nothing, but who tried is evidence.
            let verb = if approve { "approve" } else { "deny" };
            let reason = format!(
                "{} tried to {verb} {} and was refused: {why}",
                approver.name(),
                the_call(&approval)
            );
            let receipt = self
                .record_decision(&approval, approver, Decision::ApprovalRefused, reason)
                .await;
            return Err(ApprovalError::Refused { why, receipt });
        }
        let status = if approve { "approved" } else { "denied" };
        if !store
            .decide_approval(&id, status, approver.name(), note)
            .await?
        {
            // Someone else decided first, or it expired in between.
            let now = store.get_approval(&id).await?.map(|a| a.status);
            return Err(ApprovalError::NotPending {
                id,
                status: now.unwrap_or_else(|| "gone".into()),
            });
        }
        let (decision, verb) = if approve {
            (Decision::Approved, "approved")
        } else {
            (Decision::ApprovalDenied, "denied")
        };
        let reason = format!(
            "{} {verb} {}{}",
            approver.name(),
            the_call(&approval),
            note.map(|n| format!(": {n}")).unwrap_or_default()
        );
        let decision_receipt = self
            .record_decision(&approval, approver, decision, reason)
            .await;
        let (run, unused) = if approve {
            let (reply, unused) = self.run_approved(&approval, approver).await;
            (Some(reply), unused)
        } else {
            (None, None)
        };
        Ok(Decided {
            decision_receipt,
            run,
            unused,
        })
    }

    /// The approver's act, or refused attempt, as a receipt (principal: the
    /// approver; outcome `not_run`).
    async fn record_decision(
        &self,
        approval: &Approval,
        approver: &Principal,
        decision: Decision,
        reason: String,
    ) -> Option<String> {
        let origin = Origin {
            transport: "cli".into(),
            session: None,
        };
        let mut draft = Draft::start(
            origin,
            approver.auth(),
            &approval.tool,
            approval.args.clone(),
        );
        draft.principal(approver);
        if let Some(tool) = self.catalog.get(&approval.tool) {
            draft.tool(tool);
            draft.args(self.stored_args(tool, &approval.args));
        }
        draft.approval(&approval.id);
        draft.policies(&approval.policy_set, &approval.policies);
        let receipt = draft.finish(decision, Some(reason), Outcome::NotRun, None);
        let id = receipt.id.clone();
        match super::record::record(&self.writer, receipt).await {
            Ok(_) => Some(id),
            Err(e) => {
                tracing::error!(error = %e, "approval decision receipt not committed");
                None
            }
        }
    }

    /// Run an approved call exactly once, as the requester. The version that
    /// was approved must still be the one served, and no forbid may apply
    /// now: an approval overrides the need for a permit, never a forbid.
    ///
    /// A run that did not start (nothing was sent) does not use the
    /// approval up: it goes back to pending ([`Unused`] says how it went).
    async fn run_approved(
        &self,
        approval: &Approval,
        approver: &Principal,
    ) -> (CallReply, Option<Unused>) {
        let _running = self.shutdown.track();
        let origin = Origin {
            transport: "cli".into(),
            session: None,
        };
        let mut draft = Draft::start(
            origin,
            &approval.auth,
            &approval.tool,
            approval.args.clone(),
        );
        let requester = Principal::restore(&approval.principal, &approval.roles, &approval.auth);
        draft.principal(&requester);
        draft.approval(&approval.id);
        draft.policies(&approval.policy_set, &approval.policies);
        draft.ran_because(format!("approved by {} ({})", approver.name(), approval.id));
        let governed = self.govern_approved(approval, &requester, &mut draft).await;
        let not_started = matches!(&governed, Ok(Governed::Ran(e)) if e.outcome == Outcome::NotRun);
        let reply = self.record(draft, governed).await;
        if not_started {
            // Nothing ran, so reopening is safe whether or not the receipt
            // was committed.
            match self.governance.store.reopen_approval(&approval.id).await {
                Ok(true) if approval.expires_at.as_str() > now_ts().as_str() => {
                    let expires_at = approval.expires_at.clone();
                    return (reply, Some(Unused::Pending { expires_at }));
                }
                Ok(true) => return (reply, Some(Unused::Expired)),
                Ok(false) => {
                    tracing::error!(approval = %approval.id, "approval not reopened after its run did not start: it is no longer approved and unrun");
                }
                Err(e) => {
                    tracing::error!(error = %e, "approval not reopened after its run did not start");
                }
            }
        }
        let unused = not_started.then_some(Unused::Kept);
        if let (Some(receipt), Ok(output)) = (&reply.receipt_id, &reply.body) {
            let outcome = if not_started {
                Outcome::NotRun
            } else if output.is_error {
                Outcome::Error
            } else {
                Outcome::Ok
            };
            let stored = dedupe::stored(outcome, output);
            if let Err(e) = self
                .governance
                .store
                .approval_ran(&approval.id, receipt, &stored)
                .await
            {
                tracing::error!(error = %e, "approved call's result not stored on the approval");
            }
        } else if let Some(receipt) = &reply.receipt_id {
            // A refused run is a result too: the requester sees why.
            let text = match &reply.body {
                Err(e) => e.to_string(),
                Ok(o) => o.text.clone(),
            };
            let stored = dedupe::stored(Outcome::NotRun, &crate::executor::ExecOutput::error(text));
            let _ = self
                .governance
                .store
                .approval_ran(&approval.id, receipt, &stored)
                .await;
        }
        (reply, unused)
    }

    async fn govern_approved(
        &self,
        approval: &Approval,
        requester: &Principal,
        draft: &mut Draft,
    ) -> Result<Governed, CallError> {
        let tool = super::resolve(&self.catalog, &approval.tool)?;
        draft.tool(&tool);
        if tool.hash != approval.spec_hash {
            return Err(CallError::Denied {
                message: format!(
                    "`{}` changed since the approval was requested (approved version hash {}, now v{} {}); nothing ran. Ask for a new approval of the current version",
                    approval.tool,
                    &approval.spec_hash[..approval.spec_hash.len().min(12)],
                    tool.version,
                    &tool.hash[..tool.hash.len().min(12)]
                ),
                policies: Vec::new(),
            });
        }
        let args: Map<String, Value> = approval.args.as_object().cloned().unwrap_or_default();
        let size = serde_json::to_string(&args).map(|s| s.len()).unwrap_or(0);
        let args = validate(&tool, args, size, self.max_args_bytes)?;
        // Forbids still win: re-ask the policies with the requester's roles.
        let verdict = super::authorize(&self.governance.policy, requester, &tool, &args, "cli");
        if let Err(denied @ CallError::Denied { .. }) = verdict {
            return Err(denied);
        }
        let permit = super::authorize::approved(approval.policies.clone());
        self.run(requester, &tool, args, permit, None, draft).await
    }
}

/// Undo what a call that did not run had taken: its idempotency key and
/// its budget reservation (one call and the fixed cost).
async fn give_back(
    store: &Store,
    key: Option<dedupe::Key>,
    charges: &[Charge],
    fixed: f64,
    receipt_id: &str,
) {
    if let Some(key) = key {
        key.release(store, receipt_id).await;
    }
    budget::adjust(store, charges, -1, -fixed).await;
}

/// "the call of `TOOL` requested by PRINCIPAL (APPROVAL ID)", for the
/// receipts of approvers' acts.
fn the_call(approval: &Approval) -> String {
    format!(
        "the call of `{}` requested by {} ({})",
        approval.tool, approval.principal, approval.id
    )
}

/// The cost the result reports, when the spec reads it from the result.
fn actual_cost(tool: &CompiledTool, output: &crate::executor::ExecOutput) -> Option<f64> {
    let pointer = tool.spec.cost.as_ref()?.from.as_deref()?;
    output
        .structured
        .as_ref()?
        .pointer(pointer)?
        .as_f64()
        .filter(|c| c.is_finite() && *c >= 0.0)
}
