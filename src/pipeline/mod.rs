//! One governed call, one module per stage:
//!
//! ```text
//! authenticate → resolve → validate → authorize → limit → execute → record
//! ```
//!
//! [`Pipeline::call`] is the whole story. Every path out of it, refused or
//! run, passes through `record`, so every call has exactly one receipt and
//! the reply never leaves before that receipt is committed.

mod authenticate;
mod authorize;
mod error;
mod execute;
mod limit;
mod record;
mod resolve;
mod validate;

use std::sync::Arc;

use serde_json::{Map, Value};
use tracing::Instrument;

pub use authenticate::{Identity, Principal, authenticate};
pub use authorize::{Permit, authorize};
pub use error::{CallError, Violation};
pub use execute::{Executed, execute};
pub use limit::Limiter;
pub use record::{Draft, Origin};
pub use resolve::resolve;
pub use validate::{ValidArgs, validate};

use crate::catalog::Catalog;
use crate::executor::ExecOutput;
use crate::principals::Principals;
use crate::receipt::{Decision, Outcome};
use crate::shutdown::Shutdown;
use crate::store::ReceiptWriter;

/// A `tools/call` as any transport hands it over.
#[derive(Debug, Clone)]
pub struct CallRequest {
    pub tool: String,
    pub arguments: Option<Map<String, Value>>,
}

/// What the transport sends back.
#[derive(Debug)]
pub struct CallReply {
    /// Id of the committed receipt (`None` only when committing failed).
    pub receipt_id: Option<String>,
    pub body: Result<ExecOutput, CallError>,
}

/// Everything a call needs, shared by all transports and sessions.
pub struct Pipeline {
    pub catalog: Arc<Catalog>,
    pub principals: Arc<Principals>,
    pub limiter: Limiter,
    pub writer: ReceiptWriter,
    pub max_args_bytes: usize,
    /// Tracks running calls so shutdown can drain them.
    pub shutdown: Arc<Shutdown>,
}

impl Pipeline {
    pub fn new(
        catalog: Arc<Catalog>,
        principals: Arc<Principals>,
        writer: ReceiptWriter,
        max_args_bytes: usize,
    ) -> Pipeline {
        Pipeline {
            limiter: Limiter::new(&catalog),
            catalog,
            principals,
            writer,
            max_args_bytes,
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
            .govern(identity, &tool, args, size, &mut draft)
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

    /// Finish and commit the receipt, then build the reply (never before).
    async fn record(
        &self,
        draft: Draft,
        governed: Result<(Executed, String), CallError>,
    ) -> CallReply {
        let started = draft.started();
        let receipt = match &governed {
            Ok((executed, role)) => draft.finish(
                Decision::Allowed,
                Some(format!("allowed by role `{role}`")),
                executed.outcome,
                Some(&executed.output),
            ),
            Err(refusal) => draft.finish(
                refusal.decision(),
                Some(refusal.to_string()),
                Outcome::NotRun,
                None,
            ),
        };
        let (id, tool) = (receipt.id.clone(), receipt.tool.clone());
        let (decision, outcome) = (receipt.decision, receipt.outcome);
        // Only a resolved tool's name may become a metric label; a name the
        // client made up (refused before or at resolve) is counted as "(unknown)".
        let resolved = receipt.version.is_some();
        let committed = record::record(&self.writer, receipt).await;
        let exec = governed.as_ref().ok().map(|(e, _)| e.elapsed);
        crate::metrics::call_finished(&tool, resolved, decision, outcome, started.elapsed(), exec);
        match committed {
            Ok(_) => {
                let micros = started.elapsed().as_micros();
                tracing::info!(%decision, %outcome, duration_us = micros, "call recorded");
                CallReply {
                    receipt_id: Some(id),
                    body: governed.map(|(executed, _)| executed.output),
                }
            }
            Err(why) => {
                tracing::error!(%decision, %outcome, error = %why, "receipt not committed; result withheld");
                CallReply {
                    receipt_id: None,
                    body: Err(CallError::ReceiptUnavailable(why)),
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
        draft: &mut Draft,
    ) -> Result<(Executed, String), CallError> {
        // `call` registered this call before this check, and `drain` sets
        // the flag before it waits: a call either runs and is waited for, or
        // is refused here. None slips past a finished drain.
        if self.shutdown.is_draining() {
            return Err(CallError::ShuttingDown);
        }
        let principal = authenticate(&self.principals, identity)?;
        draft.principal(&principal);
        let tool = resolve(&self.catalog, tool)?;
        draft.tool(&tool);
        let args = validate(&tool, args, size, self.max_args_bytes)?;
        let permit = authorize(&principal, &tool)?;
        // Limits run after authorization, so denied calls spend no tokens.
        self.limiter.check(&principal, &tool)?;
        let granted_by = permit.granted_by.clone();
        draft.charge(&tool);
        Ok((
            execute(&tool, &args, permit, &self.shutdown).await,
            granted_by,
        ))
    }
}

#[cfg(test)]
mod tests;
