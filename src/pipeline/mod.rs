//! One governed call, one module per stage:
//!
//! ```text
//! authenticate → resolve → validate → authorize → limit → execute → record
//! ```
//!
//! [`Pipeline::call`] is the whole story. Every path out of it, refused or
//! run, passes through `record`, so every call has exactly one receipt and
//! the reply never leaves before that receipt is committed.

mod approve;
mod authenticate;
mod authorize;
mod budget;
mod dedupe;
mod error;
mod execute;
mod limit;
mod record;
mod resolve;
mod run;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tracing::Instrument;

pub use approve::{META_APPROVAL_ID, pending_output};
pub use authenticate::{Identity, Principal, authenticate};
pub use authorize::{Authorized, Permit, authorize};
pub use budget::Budgets;
pub use dedupe::Replay;
pub use error::{CallError, Violation};
pub use execute::{Executed, execute};
pub use limit::Limiter;
pub use record::{Draft, Origin};
pub use resolve::resolve;
pub use run::{ApprovalError, Decided, Refusal, Unused};
pub use validate::{ValidArgs, validate};

use crate::catalog::Catalog;
use crate::executor::ExecOutput;
use crate::policy::PolicyEngine;
use crate::principals::Principals;
use crate::receipt::{Decision, Outcome};
use crate::shutdown::Shutdown;
use crate::store::{ReceiptWriter, Store};

/// `_meta` key a client may send with its own idempotency key.
pub const META_IDEMPOTENCY_KEY: &str = "tollgate/idempotency_key";

/// A `tools/call` as any transport hands it over.
#[derive(Debug, Clone, Default)]
pub struct CallRequest {
    pub tool: String,
    pub arguments: Option<Map<String, Value>>,
    /// What tollgate reads from the request's `_meta`.
    pub meta: CallMeta,
}

/// The `_meta` fields tollgate understands.
#[derive(Debug, Clone, Default)]
pub struct CallMeta {
    /// `tollgate/idempotency_key`.
    pub idempotency_key: Option<String>,
    /// `tollgate/approval_id`.
    pub approval_id: Option<String>,
    /// A `_meta` field of ours with the wrong type: the call is invalid.
    pub invalid: Option<String>,
}

impl CallMeta {
    /// Read tollgate's keys from a request's `_meta` object.
    pub fn from_meta(meta: &Map<String, Value>) -> CallMeta {
        let mut out = CallMeta::default();
        let mut text = |key: &str| match meta.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                out.invalid = Some(format!(
                    "`_meta.{key}` must be a string, not {}",
                    crate::canonical::json_type(other)
                ));
                None
            }
        };
        let idempotency_key = text(META_IDEMPOTENCY_KEY);
        let approval_id = text(META_APPROVAL_ID);
        CallMeta {
            idempotency_key,
            approval_id,
            ..out
        }
    }
}

/// What the transport sends back.
#[derive(Debug)]
pub struct CallReply {
    /// Id of the committed receipt (`None` only when committing failed).
    pub receipt_id: Option<String>,
    pub body: Result<ExecOutput, CallError>,
    /// Extra `_meta` for the client: `tollgate/decision`, and
    /// `tollgate/approval_id` or `tollgate/replay_of` when they apply.
    pub meta: Map<String, Value>,
}

/// How a call that was not refused ended.
#[derive(Debug)]
pub enum Governed {
    /// The tool ran.
    Ran(Executed),
    /// It waits for an approval (see the draft's approval id).
    Pending { approval_id: String, role: String },
    /// An earlier result was returned; nothing ran.
    Replayed(Replay),
}

/// The governance parts of the pipeline: policies, budgets, and the store
/// that keeps approvals, idempotency keys and budget totals.
pub struct Governance {
    pub policy: Arc<PolicyEngine>,
    pub budgets: Budgets,
    pub store: Store,
    pub approval_ttl: Duration,
}

impl Governance {
    /// Policies from the catalog's `allow:` lists only, no budgets (tests,
    /// benchmarks).
    pub fn allow_lists(catalog: &Catalog, store: Store) -> Governance {
        let engine = PolicyEngine::from_sources(
            vec![crate::policy::source::generated(
                catalog
                    .iter()
                    .map(|t| (t.spec.name.as_str(), t.spec.allow.as_slice())),
            )],
            catalog.iter(),
            None,
        )
        .unwrap_or_else(|issues| panic!("allow lists always make a valid policy set: {issues:?}"));
        Governance {
            policy: Arc::new(engine),
            budgets: Budgets::default(),
            store,
            approval_ttl: crate::config::DEFAULT_APPROVAL_TTL,
        }
    }
}

/// Everything a call needs, shared by all transports and sessions.
pub struct Pipeline {
    pub catalog: Arc<Catalog>,
    pub principals: Arc<Principals>,
    pub limiter: Limiter,
    pub writer: ReceiptWriter,
    pub max_args_bytes: usize,
    pub governance: Governance,
    /// Tracks running calls so shutdown can drain them.
    pub shutdown: Arc<Shutdown>,
}

impl Pipeline {
    pub fn new(
        catalog: Arc<Catalog>,
        principals: Arc<Principals>,
        writer: ReceiptWriter,
        max_args_bytes: usize,
        governance: Governance,
    ) -> Pipeline {
        Pipeline {
            limiter: Limiter::new(&catalog),
            catalog,
            principals,
            writer,
            max_args_bytes,
            governance,
            shutdown: Shutdown::new(),
        }
    }

    /// Govern one call: run the stages, then record, then reply.
    pub async fn call(&self, identity: &Identity, origin: Origin, req: CallRequest) -> CallReply {
        let _running = self.shutdown.track();
        let args = req.arguments.unwrap_or_default();
        // Served names are short; a longer one cannot resolve, and is only
        // recorded and logged in bounded form.
        let tool = record::bounded_name(&req.tool);
        let (mut draft, size) = self.draft(origin, &identity.auth, &tool, &args);
        let span = tracing::info_span!("call", receipt_id = %draft.id, tool = %tool, principal = %identity.principal);
        let governed = self
            .govern(identity, &tool, args, size, &req.meta, &mut draft)
            .instrument(span.clone())
            .await;
        self.record(draft, governed).instrument(span).await
    }

    /// Record a `tools/call` whose params could not even be decoded (no
    /// tool name, arguments that are not an object): it was attempted, so it
    /// gets a receipt like any other refusal.
    pub async fn malformed(
        &self,
        identity: &Identity,
        origin: Origin,
        tool: &str,
        why: String,
    ) -> CallReply {
        let _running = self.shutdown.track();
        let tool = record::bounded_name(tool);
        let (draft, _) = self.draft(origin, &identity.auth, &tool, &Map::new());
        self.record(draft, Err(CallError::Malformed(why))).await
    }

    /// Start the receipt. Arguments over the size limit are stored as a
    /// digest: a 1 GiB payload must not become a 1 GiB receipt.
    fn draft(
        &self,
        origin: Origin,
        auth: &str,
        tool: &str,
        args: &Map<String, Value>,
    ) -> (Draft, usize) {
        let raw = serde_json::to_string(args).unwrap_or_default();
        let stored = if raw.len() > self.max_args_bytes {
            record::oversized_args(raw.len(), &raw)
        } else {
            Value::Object(args.clone())
        };
        (Draft::start(origin, auth, tool, stored), raw.len())
    }

    /// The arguments as a receipt may store them: properties the tool's
    /// input schema marks `x-sensitive` become keyed hashes.
    fn stored_args(&self, tool: &crate::catalog::CompiledTool, args: &Value) -> Value {
        tool.receipt_args(args).into_owned()
    }

    /// Finish and commit the receipt, then build the reply (never before).
    async fn record(&self, mut draft: Draft, governed: Result<Governed, CallError>) -> CallReply {
        let started = draft.started();
        // Storage is down: this refusal cannot be receipted either, and
        // trying would only hold the client for the busy timeout. The log
        // line is the evidence; the caller learns why at once.
        if let Err(CallError::StorageUnavailable(why)) = &governed {
            let refusal = CallError::StorageUnavailable(why.clone());
            tracing::warn!(reason = %refusal, "call refused while receipts cannot be written; no receipt");
            return CallReply {
                receipt_id: None,
                body: Err(refusal),
                meta: Map::new(),
            };
        }
        let mut meta = Map::new();
        let receipt = match &governed {
            Ok(Governed::Ran(executed)) => {
                let reason = draft.reason_for_run();
                draft.finish(
                    Decision::Allowed,
                    Some(reason),
                    executed.outcome,
                    Some(&executed.output),
                )
            }
            Ok(Governed::Pending { approval_id, role }) => {
                meta.insert(META_APPROVAL_ID.into(), json!(approval_id));
                let output = pending_output(approval_id, role, draft.tool_name());
                draft.finish(
                    Decision::PendingApproval,
                    Some(format!("awaits approval by role `{role}` ({approval_id})")),
                    Outcome::NotRun,
                    Some(&output),
                )
            }
            Ok(Governed::Replayed(replay)) => {
                meta.insert("tollgate/replay_of".into(), json!(replay.receipt_id));
                draft.replay_of(&replay.receipt_id);
                draft.finish(
                    Decision::Replayed,
                    Some(format!(
                        "returned the stored result of receipt {}; nothing ran",
                        replay.receipt_id
                    )),
                    Outcome::NotRun,
                    Some(&replay.output),
                )
            }
            Err(refusal) => draft.finish(
                refusal.decision(),
                Some(refusal.to_string()),
                Outcome::NotRun,
                None,
            ),
        };
        if let Some(id) = &receipt.approval_id {
            meta.insert(META_APPROVAL_ID.into(), json!(id));
        }
        meta.insert("tollgate/decision".into(), json!(receipt.decision.as_str()));
        let (id, tool) = (receipt.id.clone(), receipt.tool.clone());
        let (decision, outcome, cost) = (receipt.decision, receipt.outcome, receipt.cost_usd);
        // Only a resolved tool's name may become a metric label; a name the
        // client made up (refused before or at resolve) is counted as "(unknown)".
        let resolved = receipt.version.is_some();
        let committed = record::record(&self.writer, receipt).await;
        let exec = match &governed {
            Ok(Governed::Ran(e)) => Some(e.elapsed),
            _ => None,
        };
        crate::metrics::call_finished(&tool, resolved, decision, outcome, started.elapsed(), exec);
        if let Some(usd) = cost {
            crate::metrics::spent(&tool, usd);
        }
        match committed {
            Ok(_) => {
                let micros = started.elapsed().as_micros();
                tracing::info!(%decision, %outcome, duration_us = micros, "call recorded");
                let body = governed.map(|g| match g {
                    Governed::Ran(executed) => executed.output,
                    Governed::Pending { approval_id, role } => {
                        pending_output(&approval_id, &role, &tool)
                    }
                    Governed::Replayed(replay) => replay.output,
                });
                CallReply {
                    receipt_id: Some(id),
                    body,
                    meta,
                }
            }
            Err(why) => {
                tracing::error!(%decision, %outcome, error = %why, "receipt not committed; result withheld");
                CallReply {
                    receipt_id: None,
                    body: Err(CallError::ReceiptUnavailable(why)),
                    meta: Map::new(),
                }
            }
        }
    }

    /// The stages up to execution. Any `Err` is a refusal to be receipted.
    async fn govern(
        &self,
        identity: &Identity,
        tool: &str,
        args: Map<String, Value>,
        size: usize,
        meta: &CallMeta,
        draft: &mut Draft,
    ) -> Result<Governed, CallError> {
        // `call` registered this call before this check, and `drain` sets
        // the flag before it waits: a call either runs and is waited for, or
        // is refused here. None slips past a finished drain.
        if self.shutdown.is_draining() {
            return Err(CallError::ShuttingDown);
        }
        // Fail closed: with storage down no call may run, because none
        // could be recorded. The writer's heartbeat turns this green again.
        if let crate::store::StorageHealth::Unhealthy { cause } = &*self.writer.health().borrow() {
            return Err(CallError::StorageUnavailable(cause.clone()));
        }
        let principal = authenticate(&self.principals, identity)?;
        draft.principal(&principal);
        let tool = resolve(&self.catalog, tool)?;
        draft.tool(&tool);
        let masked = self.stored_args(&tool, draft.stored_args());
        draft.args(masked);
        if let Some(why) = &meta.invalid {
            return Err(CallError::Malformed(why.clone()));
        }
        let args = validate(&tool, args, size, self.max_args_bytes)?;
        let transport = draft.origin().transport.clone();
        let policy = &self.governance.policy;
        let verdict = authorize(policy, &principal, &tool, &args, &transport)
            // A denial records the policy set too, and the forbids that decided.
            .inspect_err(|e| draft.policies(policy.hash(), e.policies()))?;
        draft.policies(policy.hash(), verdict.policies());
        // Limits run after authorization, so denied calls spend no tokens.
        self.limiter.check(&principal, &tool)?;
        let permit = match verdict {
            Authorized::Run(permit) => permit,
            Authorized::NeedsApproval { role, policies } => {
                return self
                    .await_approval(&principal, &tool, &args, &role, &policies, meta, draft)
                    .await;
            }
        };
        self.run(
            &principal,
            &tool,
            args,
            permit,
            meta.idempotency_key.as_deref(),
            draft,
        )
        .await
    }
}

#[cfg(test)]
mod governance_tests;
#[cfg(test)]
mod tests;
