//! Stage 7: write the receipt, and only then let the reply go.
//!
//! A [`Draft`] is started when the call arrives and filled in as stages pass,
//! so that a call refused at any stage still has everything known about it
//! recorded. [`record`] hands it to the receipt writer and waits for the
//! commit of *this* receipt's batch.

use std::time::Instant;

use serde_json::{Value, json};

use super::Principal;
use crate::canonical;
use crate::catalog::CompiledTool;
use crate::executor::ExecOutput;
use crate::receipt::{Decision, NewReceipt, Outcome, now_ts};
use crate::store::{Committed, ReceiptWriter};

/// Longest result excerpt kept in a receipt, in characters.
pub const EXCERPT_CHARS: usize = 512;

/// Where the call came from, as the transport saw it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub transport: String,
    pub session: Option<String>,
}

/// A receipt being assembled while the call moves through the stages.
#[derive(Debug, Clone)]
pub struct Draft {
    pub id: String,
    ts: String,
    started: Instant,
    origin: Origin,
    auth: String,
    tool: String,
    args: Value,
    principal: Option<(String, Vec<String>, String)>,
    version: Option<(i64, String)>,
    cost_usd: Option<f64>,
    policy_set: Option<String>,
    policies: Vec<String>,
    approval_id: Option<String>,
    replay_of: Option<String>,
    /// Why an allowed call ran, when it is not simply "a policy allowed it".
    run_reason: Option<String>,
}

impl Draft {
    /// Start a receipt for a call to `tool` with `args` as received.
    /// `auth` is how the transport established the caller's identity; it is
    /// recorded even when authentication then refuses the call.
    pub fn start(origin: Origin, auth: &str, tool: &str, args: Value) -> Draft {
        Draft {
            id: uuid::Uuid::now_v7().to_string(),
            ts: now_ts(),
            started: Instant::now(),
            origin,
            auth: auth.to_string(),
            tool: tool.to_string(),
            args,
            principal: None,
            version: None,
            cost_usd: None,
            policy_set: None,
            policies: Vec::new(),
            approval_id: None,
            replay_of: None,
            run_reason: None,
        }
    }

    /// Say why the call ran (an approval) instead of naming the permits.
    pub fn ran_because(&mut self, reason: String) {
        self.run_reason = Some(reason);
    }

    /// The receipt reason of a call that ran.
    pub fn reason_for_run(&self) -> String {
        if let Some(r) = &self.run_reason {
            return r.clone();
        }
        match self.policies.as_slice() {
            [] => "allowed".to_owned(),
            [one] => format!("allowed by policy `{one}`"),
            many => format!("allowed by policies `{}`", many.join("`, `")),
        }
    }

    /// The receipt to append if this call never completes (see the
    /// writer's intents): everything known so far, outcome `interrupted`.
    pub fn intent(&self) -> NewReceipt {
        let reason = self.reason_for_run();
        self.clone()
            .finish(Decision::Allowed, Some(reason), Outcome::Interrupted, None)
    }

    /// The tool name as recorded.
    pub fn tool_name(&self) -> &str {
        &self.tool
    }

    /// The policy set that judged the call, and the deciding policies.
    pub fn policies(&mut self, set: &str, policies: &[String]) {
        self.policy_set = Some(set.to_owned());
        self.policies = policies.to_vec();
    }

    /// The approval this receipt belongs to.
    pub fn approval(&mut self, id: &str) {
        self.approval_id = Some(id.to_owned());
    }

    /// The receipt whose stored result this call returned.
    pub fn replay_of(&mut self, id: &str) {
        self.replay_of = Some(id.to_owned());
    }

    /// The call's actual cost (from its result).
    pub fn cost(&mut self, usd: Option<f64>) {
        if usd.is_some() {
            self.cost_usd = usd;
        }
    }

    /// Replace the arguments as stored (sensitive values masked).
    pub fn args(&mut self, args: Value) {
        self.args = args;
    }

    /// The stored arguments.
    pub fn stored_args(&self) -> &Value {
        &self.args
    }

    /// Where the call came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// When the call arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn principal(&mut self, p: &Principal) {
        self.principal = Some((p.name().into(), p.roles().to_vec(), p.auth().into()));
    }

    pub fn tool(&mut self, t: &CompiledTool) {
        self.version = Some((t.version, t.hash.clone()));
    }

    pub fn charge(&mut self, t: &CompiledTool) {
        self.cost_usd = t.spec.cost.as_ref().and_then(|c| c.usd);
    }

    /// Finish the receipt with the decision and, if the tool ran, its output.
    pub fn finish(
        self,
        decision: Decision,
        reason: Option<String>,
        outcome: Outcome,
        output: Option<&ExecOutput>,
    ) -> NewReceipt {
        let (principal, roles, auth) = match self.principal {
            Some((n, r, a)) => (Some(n), r, a),
            None => (None, Vec::new(), self.auth),
        };
        let (version, spec_hash) = match self.version {
            Some((v, h)) => (Some(v), Some(h)),
            None => (None, None),
        };
        NewReceipt {
            id: self.id,
            ts: self.ts,
            principal,
            roles,
            auth,
            transport: self.origin.transport,
            session: self.origin.session,
            tool: self.tool,
            version,
            spec_hash,
            args: self.args,
            decision,
            reason,
            outcome,
            result_digest: output.map(digest),
            result_excerpt: output.map(|o| excerpt(&o.text)),
            duration_us: i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX),
            cost_usd: if outcome == Outcome::NotRun {
                None
            } else {
                self.cost_usd
            },
            policy_set: self.policy_set,
            policies: self.policies,
            approval_id: self.approval_id,
            replay_of: self.replay_of,
        }
    }
}

/// Commit `receipt` through the writer; the caller replies only after this.
pub async fn record(writer: &ReceiptWriter, receipt: NewReceipt) -> Result<Committed, String> {
    writer.commit(receipt).await.map_err(|e| e.to_string())
}

/// SHA-256 over the canonical form of everything the client is sent.
fn digest(output: &ExecOutput) -> String {
    canonical::digest(&json!({
        "text": output.text,
        "structured": output.structured,
        "is_error": output.is_error,
    }))
}

fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The stand-in stored for arguments too large to keep in a receipt.
pub fn oversized_args(size: usize, raw: &str) -> Value {
    json!({
        "_tollgate_omitted": format!("{size} bytes of arguments, over the limit"),
        "sha256": canonical::sha256_hex(raw.as_bytes()),
    })
}

/// Longest tool name kept verbatim in receipts, logs and messages. Served
/// names are at most 64 characters; anything longer is client noise, and an
/// append-only table must not store megabytes of it per call.
const MAX_NAME_CHARS: usize = 64;

/// `name`, or its first 64 characters plus a digest of the whole.
pub fn bounded_name(name: &str) -> std::borrow::Cow<'_, str> {
    match name.char_indices().nth(MAX_NAME_CHARS) {
        None => std::borrow::Cow::Borrowed(name),
        Some((cut, _)) => std::borrow::Cow::Owned(format!(
            "{}…(sha256:{})",
            &name[..cut],
            &canonical::sha256_hex(name.as_bytes())[..16]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_bounded() {
        assert_eq!(bounded_name("echo"), "echo");
        let long = "é".repeat(10_000);
        let b = bounded_name(&long);
        assert!(b.chars().count() < 100, "{b}");
        assert!(b.starts_with(&"é".repeat(64)));
        assert!(b.contains("…(sha256:"));
    }
}
