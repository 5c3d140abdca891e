//! Stage 5c: has this effect already happened (idempotency keys).
//!
//! A key comes from the spec (`idempotency: {key: [order_id]}`, scoped to
//! the tool, so no caller can repeat the effect) or from the client
//! (`_meta["tollgate/idempotency_key"]`, scoped to principal and tool). The
//! spec's key wins when both exist: it is the stronger promise.
//!
//! Claiming happens after every check that could refuse the call, so refused
//! calls never use a key up; a claim whose call then does not run is given
//! back.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::{CallError, Principal};
use crate::canonical;
use crate::catalog::CompiledTool;
use crate::executor::ExecOutput;
use crate::receipt::Outcome;
use crate::store::{Claim, KeyRef, Store};

/// Longest client-chosen key accepted.
pub const MAX_CLIENT_KEY: usize = 255;
/// How long a repeat waits for a running call with its key to finish.
const WAIT_FOR_RUNNING: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(25);

/// A claimed key: the call may run, then must [`Key::finish`] or [`Key::release`].
#[derive(Debug)]
pub struct Key {
    scope: String,
    key_hash: String,
}

/// An earlier call's result, returned instead of running again.
#[derive(Debug)]
pub struct Replay {
    pub receipt_id: String,
    pub output: ExecOutput,
}

/// What the key check decided.
#[derive(Debug)]
pub enum Dedupe {
    /// No key applies: run as usual.
    NoKey,
    /// The key is ours: run, then finish it.
    Claimed(Key),
    /// Already done: return this instead.
    Replay(Replay),
}

/// The key for this call, if any: `(scope, sha256(key))`.
fn key_for(
    principal: &Principal,
    tool: &CompiledTool,
    args: &Map<String, Value>,
    client_key: Option<&str>,
) -> Option<(String, String, Duration)> {
    let name = &tool.spec.name;
    if let Some(idem) = &tool.spec.idempotency {
        let values: Vec<&Value> = idem
            .key
            .iter()
            .map(|k| args.get(k).unwrap_or(&Value::Null))
            .collect();
        let ttl = crate::spec::governance::key_ttl(&tool.spec)
            .unwrap_or(crate::spec::governance::DEFAULT_KEY_TTL);
        return Some((
            format!("tool:{name}"),
            canonical::digest(&json!(values)),
            ttl,
        ));
    }
    client_key.map(|k| {
        (
            format!("principal:{}|tool:{name}", principal.name()),
            canonical::sha256_hex(k.as_bytes()),
            crate::spec::governance::DEFAULT_KEY_TTL,
        )
    })
}

/// Check a client key's shape before anything else uses it.
pub fn check_client_key(key: &str) -> Result<(), CallError> {
    if key.is_empty() || key.len() > MAX_CLIENT_KEY {
        return Err(CallError::Conflict(format!(
            "`_meta.tollgate/idempotency_key` must be 1 to {MAX_CLIENT_KEY} bytes, not {}",
            key.len()
        )));
    }
    Ok(())
}

/// Claim the call's key, or find the earlier result, or refuse.
pub async fn claim(
    store: &Store,
    principal: &Principal,
    tool: &CompiledTool,
    args: &Map<String, Value>,
    client_key: Option<&str>,
    receipt_id: &str,
) -> Result<Dedupe, CallError> {
    let Some((scope, key_hash, ttl)) = key_for(principal, tool, args, client_key) else {
        return Ok(Dedupe::NoKey);
    };
    let args_hash = canonical::digest(&Value::Object(args.clone()));
    let expires_at = (chrono::Utc::now()
        + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1)))
    .format("%Y-%m-%dT%H:%M:%S%.6fZ")
    .to_string();
    let key = KeyRef {
        scope: &scope,
        key_hash: &key_hash,
    };
    let waited = Instant::now();
    let mut saw_receipt = false;
    loop {
        let claim = store
            .claim_key(&key, &args_hash, receipt_id, &expires_at)
            .await
            .map_err(|e| {
                CallError::Conflict(format!(
                    "the idempotency key could not be checked ({e}); the call was not run"
                ))
            })?;
        match claim {
            Claim::Claimed => {
                return Ok(Dedupe::Claimed(Key {
                    scope: scope.clone(),
                    key_hash: key_hash.clone(),
                }));
            }
            Claim::Done {
                same_args: false,
                receipt_id,
                ..
            }
            | Claim::Running {
                same_args: false,
                receipt_id,
            } => return Err(different_args(tool, &receipt_id)),
            Claim::Done {
                receipt_id, result, ..
            } => {
                return Ok(Dedupe::Replay(Replay {
                    receipt_id,
                    output: output_from(&result),
                }));
            }
            Claim::Running { receipt_id, .. } => {
                // A running key whose call has a receipt: either the call
                // finished between our two reads (look again), or it ended
                // without storing its result because its process died and
                // the intent became an `interrupted` receipt. Its effect is
                // then unknown; never repeat it blindly.
                if store.receipt_exists(&receipt_id).await.unwrap_or(false) {
                    if !saw_receipt {
                        saw_receipt = true;
                        continue;
                    }
                    return Err(CallError::Conflict(format!(
                        "an earlier call with this idempotency key (receipt {receipt_id}) was interrupted, so whether it took effect is unknown; it is not repeated automatically. Check its effect, then retry with another key once the key expires"
                    )));
                }
                if waited.elapsed() >= WAIT_FOR_RUNNING {
                    return Err(CallError::Conflict(format!(
                        "a call with the same idempotency key (receipt {receipt_id}) is still running; retry in a few seconds to get its result"
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

fn different_args(tool: &CompiledTool, receipt_id: &str) -> CallError {
    let what = match &tool.spec.idempotency {
        Some(idem) => format!("the same {}", idem.key.join(", ")),
        None => "this idempotency key".to_owned(),
    };
    CallError::Conflict(format!(
        "`{}` was already called with {what} but different arguments (receipt {receipt_id}); one key stands for one effect, so this call was not run",
        tool.spec.name
    ))
}

impl Key {
    /// Store the result for every later repeat.
    pub async fn finish(
        self,
        store: &Store,
        receipt_id: &str,
        outcome: Outcome,
        output: &ExecOutput,
    ) {
        let key = KeyRef {
            scope: &self.scope,
            key_hash: &self.key_hash,
        };
        if let Err(e) = store
            .finish_key(&key, receipt_id, &stored(outcome, output))
            .await
        {
            tracing::error!(error = %e, "idempotent result not stored; a repeat will be told the call is still running until the key expires");
        }
    }

    /// Give the key back: the call did not run.
    pub async fn release(self, store: &Store, receipt_id: &str) {
        let key = KeyRef {
            scope: &self.scope,
            key_hash: &self.key_hash,
        };
        if let Err(e) = store.release_key(&key, receipt_id).await {
            tracing::error!(error = %e, "idempotency key not released");
        }
    }
}

/// What is stored for a key, and for an approved call's result.
pub fn stored(outcome: Outcome, output: &ExecOutput) -> Value {
    json!({
        "outcome": outcome.as_str(),
        "text": output.text,
        "structured": output.structured,
        "is_error": output.is_error,
    })
}

/// The output a stored result stands for.
pub fn output_from(stored: &Value) -> ExecOutput {
    ExecOutput {
        text: stored
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        structured: stored.get("structured").filter(|v| !v.is_null()).cloned(),
        is_error: stored
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    }
}
