//! The receipt record and its canonical, hash-chained form.
//!
//! Every governed call ends in exactly one receipt. Receipts form a hash chain
//! so that an auditor holding only the database can tell whether any receipt
//! was edited, deleted, inserted or reordered after it was written.
//!
//! # The audit contract
//!
//! For the receipt with sequence number `n`:
//!
//! ```text
//! hash(n)      = sha256_hex( prev_hash(n) + "\n" + canonical_json(content(n)) )
//! prev_hash(n) = hash(n - 1), and 64 "0" characters for the first receipt
//! ```
//!
//! `sha256_hex` is lower-case hex. `content` is a JSON object with exactly these
//! keys, one per [`NewReceipt`] field (`seq`, `prev_hash` and `hash` are *not*
//! part of it):
//!
//! | key              | JSON type                                         |
//! |------------------|---------------------------------------------------|
//! | `approval_id`    | string; **only present when set**                  |
//! | `args`           | the call arguments, any JSON value                 |
//! | `auth`           | string                                             |
//! | `cost_usd`       | number or null                                     |
//! | `decision`       | string, e.g. `"allowed"` (see [`Decision`])        |
//! | `duration_us`    | integer                                            |
//! | `id`             | string (UUIDv7)                                    |
//! | `outcome`        | string, e.g. `"ok"` (see [`Outcome`])              |
//! | `policies`       | array of strings; **only present when non-empty**  |
//! | `policy_set`     | string; **only present when set**                  |
//! | `principal`      | string or null                                     |
//! | `reason`         | string or null                                     |
//! | `replay_of`      | string; **only present when set**                  |
//! | `result_digest`  | string or null                                     |
//! | `result_excerpt` | string or null                                     |
//! | `roles`          | array of strings                                   |
//! | `session`        | string or null                                     |
//! | `spec_hash`      | string or null                                     |
//! | `tool`           | string                                             |
//! | `transport`      | string                                             |
//! | `ts`             | string, RFC 3339 UTC with microseconds             |
//! | `version`        | integer or null                                    |
//!
//! The four governance keys (`approval_id`, `policies`, `policy_set`,
//! `replay_of`) were added after the first release. They are left out of the
//! content when empty, so every receipt written before them still hashes
//! exactly as it did.
//!
//! `canonical_json` is [`crate::canonical::to_string`]: object keys sorted by
//! byte order at every depth, no whitespace, strings escaped as serde_json
//! escapes them, numbers as serde_json prints them (shortest round-trip form
//! for floats; a non-finite float becomes `null`).
//!
//! Because each hash covers the previous one, changing any byte of any receipt
//! changes every later hash, and removing, inserting or swapping receipts breaks
//! the `prev_hash` links. The only thing the chain alone cannot reveal is the
//! removal of receipts from the very end; compare the last hash with one kept
//! elsewhere for that.
//!
//! [`chain_hash`] is the one implementation of this formula; the writer and the
//! verifier both call it (the verifier through a borrowed view of a stored row,
//! so checking a million receipts does not allocate a million `NewReceipt`s).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first receipt in a database.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Defines a closed set of labels that are stored and hashed as strings.
///
/// One list per enum drives the variants, `as_str`, `FromStr`, `Display` and
/// serde, so adding a variant is a one-line change that cannot drift.
macro_rules! labels {
    (
        $(#[$meta:meta])*
        pub enum $name:ident as $kind:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and hashed) spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownLabel;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownLabel {
                        kind: $kind,
                        given: s.to_owned(),
                        valid: &[$($text),+],
                    }),
                }
            }
        }
    };
}

labels! {
    /// What the pipeline decided about a call, before (or instead of) running it.
    pub enum Decision as "decision" {
        /// Every check passed; the tool ran (see the outcome).
        Allowed = "allowed",
        /// Policy refused the caller.
        Denied = "denied",
        /// The caller exceeded a rate limit.
        RateLimited = "rate_limited",
        /// The arguments did not match the tool's input schema.
        Invalid = "invalid",
        /// No tool by that name is served.
        UnknownTool = "unknown_tool",
        /// tollgate was shutting down and took no new calls.
        Unavailable = "unavailable",
        /// A policy asked for a human approval; the call waits (see `approval_id`).
        PendingApproval = "pending_approval",
        /// An approver allowed a pending call (this receipt is the approver's act).
        Approved = "approved",
        /// An approver refused a pending call.
        ApprovalDenied = "approval_denied",
        /// Someone tried to approve or deny a pending call and was refused
        /// (it was their own request, or they lack the approver role);
        /// the approval stays pending. The attempt is evidence too.
        ApprovalRefused = "approval_refused",
        /// The idempotency key was seen before: the stored result was returned
        /// and nothing ran (see `replay_of`).
        Replayed = "replayed",
        /// The idempotency key is in use with other arguments, or by a call
        /// still running.
        Conflict = "conflict",
        /// The call would exceed a budget.
        OverBudget = "over_budget",
    }
}

labels! {
    /// What happened when the tool ran.
    pub enum Outcome as "outcome" {
        /// The tool ran and succeeded.
        Ok = "ok",
        /// The tool ran and failed.
        Error = "error",
        /// The tool ran out of time and was stopped.
        Timeout = "timeout",
        /// The tool never ran: the decision was not `allowed`, or, with
        /// `allowed`, it could not start (connection refused, program not
        /// found: the reason says which), so nothing was sent.
        NotRun = "not_run",
        /// tollgate shut down while the tool was running; whether its effect
        /// happened is unknown.
        Interrupted = "interrupted",
    }
}

/// A string that is not one of a label set's values, e.g. `--decision alowed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {given:?}; expected one of: {}", valid.join(", "))]
pub struct UnknownLabel {
    /// Which label set, e.g. "decision".
    pub kind: &'static str,
    /// What was given.
    pub given: String,
    /// The accepted spellings.
    pub valid: &'static [&'static str],
}

/// A receipt as the pipeline hands it to the writer: everything except its
/// place in the chain, which only the writer can know.
///
/// Every field here is covered by the hash (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewReceipt {
    /// UUIDv7, assigned at call start so logs can name the call before it ends.
    pub id: String,
    /// When the call started; see [`now_ts`].
    pub ts: String,
    /// The authenticated caller, if any.
    pub principal: Option<String>,
    /// The caller's roles at the time of the call (roles change; receipts don't).
    pub roles: Vec<String>,
    /// How the caller authenticated: "stdio", "cli", "api_key:<id>", "jwt:<iss>|<sub>".
    pub auth: String,
    /// "stdio", "cli" or "http".
    pub transport: String,
    /// The MCP session, when the transport has one.
    pub session: Option<String>,
    /// The tool name as requested (it may not exist: see [`Decision::UnknownTool`]).
    pub tool: String,
    /// The tool version that served the call, if the tool resolved.
    pub version: Option<i64>,
    /// The hash of that version's spec, so the receipt stands on its own.
    pub spec_hash: Option<String>,
    /// The arguments as received.
    pub args: serde_json::Value,
    pub decision: Decision,
    /// Why the decision went the way it did, in words.
    pub reason: Option<String>,
    pub outcome: Outcome,
    /// SHA-256 of the full result, so a result kept elsewhere can be matched.
    pub result_digest: Option<String>,
    /// The start of the result, for humans reading the log.
    pub result_excerpt: Option<String>,
    /// Wall time of the whole call, in microseconds.
    pub duration_us: i64,
    /// What the call cost, when the tool reports it.
    pub cost_usd: Option<f64>,
    /// Hash of the policy set that decided the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_set: Option<String>,
    /// Ids of the policies that decided the call (the permits that allowed
    /// it, or the forbids that denied it; empty when nothing permitted it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
    /// The approval this receipt belongs to: its request, decision or run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// For a replayed call, the receipt whose stored result was returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
}

/// A receipt as stored: its content plus its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// Position in the chain, 1-based and gap-free.
    pub seq: i64,
    /// The hashed part, flattened into the same JSON object when serialized.
    #[serde(flatten)]
    pub content: NewReceipt,
    /// The previous receipt's `hash` ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// `chain_hash(prev_hash, content)`.
    pub hash: String,
}

/// The current time as a receipt timestamp: RFC 3339, UTC, microseconds,
/// e.g. `2026-11-21T22:56:13.123456Z`.
///
/// A fixed width means timestamps sort correctly as strings, which the
/// `since` filter relies on.
pub fn now_ts() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The hash of receipt `r` when it follows a receipt whose hash is `prev_hash`.
///
/// This is the audit contract described in the module docs.
pub fn chain_hash(prev_hash: &str, r: &NewReceipt) -> String {
    let (args, roles) = (canonical_args(r), canonical_roles(r));
    let policies = canonical_policies(r);
    let mut scratch = Vec::with_capacity(512);
    let hex =
        ContentView::of(r, &args, &roles, policies.as_deref()).chain_hash(prev_hash, &mut scratch);
    // Hex digits are ASCII, so nothing is lost here.
    String::from_utf8_lossy(&hex).into_owned()
}

/// `r.args` as canonical JSON: the form that is both stored and hashed.
pub(crate) fn canonical_args(r: &NewReceipt) -> String {
    crate::canonical::to_string(&r.args)
}

/// `r.roles` as canonical JSON (a plain array of strings).
pub(crate) fn canonical_roles(r: &NewReceipt) -> String {
    let mut out = Vec::with_capacity(16 * r.roles.len() + 2);
    write_json(&mut out, &r.roles);
    String::from_utf8_lossy(&out).into_owned()
}

/// `r.policies` as canonical JSON, or `None` when there are none (the key
/// is then absent from the hashed content and the column is NULL).
pub(crate) fn canonical_policies(r: &NewReceipt) -> Option<String> {
    if r.policies.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(32 * r.policies.len() + 2);
    write_json(&mut out, &r.policies);
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// A borrowed view of a receipt's content, as the database stores it.
///
/// `args` and `roles` are already canonical JSON text: the writer stores them
/// that way, so the verifier can splice them in without re-parsing (which is
/// both slow and, for floats, not guaranteed to round-trip bit-for-bit).
/// `decision` and `outcome` are plain strings so that a tampered, unknown
/// label shows up as a hash mismatch rather than a parse error.
pub(crate) struct ContentView<'a> {
    pub args: &'a str,
    pub approval_id: Option<&'a str>,
    pub auth: &'a str,
    pub cost_usd: Option<f64>,
    pub decision: &'a str,
    pub duration_us: i64,
    pub id: &'a str,
    pub outcome: &'a str,
    /// Canonical JSON array text; `None` when there are no policies.
    pub policies: Option<&'a str>,
    pub policy_set: Option<&'a str>,
    pub principal: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub replay_of: Option<&'a str>,
    pub result_digest: Option<&'a str>,
    pub result_excerpt: Option<&'a str>,
    pub roles: &'a str,
    pub session: Option<&'a str>,
    pub spec_hash: Option<&'a str>,
    pub tool: &'a str,
    pub transport: &'a str,
    pub ts: &'a str,
    pub version: Option<i64>,
}

impl<'a> ContentView<'a> {
    /// A view of `r`, given its canonical `args` and `roles` text
    /// ([`canonical_args`], [`canonical_roles`]).
    pub(crate) fn of(
        r: &'a NewReceipt,
        args: &'a str,
        roles: &'a str,
        policies: Option<&'a str>,
    ) -> Self {
        ContentView {
            args,
            approval_id: r.approval_id.as_deref(),
            policies,
            policy_set: r.policy_set.as_deref(),
            replay_of: r.replay_of.as_deref(),
            auth: &r.auth,
            cost_usd: r.cost_usd,
            decision: r.decision.as_str(),
            duration_us: r.duration_us,
            id: &r.id,
            outcome: r.outcome.as_str(),
            principal: r.principal.as_deref(),
            reason: r.reason.as_deref(),
            result_digest: r.result_digest.as_deref(),
            result_excerpt: r.result_excerpt.as_deref(),
            roles,
            session: r.session.as_deref(),
            spec_hash: r.spec_hash.as_deref(),
            tool: &r.tool,
            transport: &r.transport,
            ts: &r.ts,
            version: r.version,
        }
    }

    /// The lower-case hex chain hash, using `scratch` as a reusable buffer.
    pub(crate) fn chain_hash(&self, prev_hash: &str, scratch: &mut Vec<u8>) -> [u8; 64] {
        scratch.clear();
        self.write_hash_tail(scratch);
        chain_hash_of_tail(prev_hash.as_bytes(), scratch)
    }

    /// Append everything the chain hash covers after `prev_hash`: `"\n"`
    /// and the canonical content. It does not depend on the chain head, so
    /// the receipt writer has callers build it before they queue a receipt,
    /// and its own thread only runs SHA-256 over `prev_hash` + these bytes
    /// ([`chain_hash_of_tail`]).
    pub(crate) fn write_hash_tail(&self, out: &mut Vec<u8>) {
        out.push(b'\n');
        self.write_canonical(out);
    }

    /// Canonical JSON of the content object. Keys are written in sorted order
    /// by hand; a test checks this against `canonical::to_string`.
    fn write_canonical(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        // "approval_id" sorts before "args".
        write_opt_key(out, b"\"approval_id\":", self.approval_id);
        if self.approval_id.is_some() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"args\":");
        out.extend_from_slice(self.args.as_bytes());
        out.extend_from_slice(b",\"auth\":");
        write_str(out, self.auth);
        out.extend_from_slice(b",\"cost_usd\":");
        match self.cost_usd {
            Some(c) => write_json(out, &c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"decision\":");
        write_str(out, self.decision);
        out.extend_from_slice(b",\"duration_us\":");
        write_json(out, &self.duration_us);
        out.extend_from_slice(b",\"id\":");
        write_str(out, self.id);
        out.extend_from_slice(b",\"outcome\":");
        write_str(out, self.outcome);
        if let Some(policies) = self.policies {
            out.extend_from_slice(b",\"policies\":");
            out.extend_from_slice(policies.as_bytes());
        }
        write_opt_key(out, b",\"policy_set\":", self.policy_set);
        out.extend_from_slice(b",\"principal\":");
        write_opt_str(out, self.principal);
        out.extend_from_slice(b",\"reason\":");
        write_opt_str(out, self.reason);
        write_opt_key(out, b",\"replay_of\":", self.replay_of);
        out.extend_from_slice(b",\"result_digest\":");
        write_opt_str(out, self.result_digest);
        out.extend_from_slice(b",\"result_excerpt\":");
        write_opt_str(out, self.result_excerpt);
        out.extend_from_slice(b",\"roles\":");
        out.extend_from_slice(self.roles.as_bytes());
        out.extend_from_slice(b",\"session\":");
        write_opt_str(out, self.session);
        out.extend_from_slice(b",\"spec_hash\":");
        write_opt_str(out, self.spec_hash);
        out.extend_from_slice(b",\"tool\":");
        write_str(out, self.tool);
        out.extend_from_slice(b",\"transport\":");
        write_str(out, self.transport);
        out.extend_from_slice(b",\"ts\":");
        write_str(out, self.ts);
        out.extend_from_slice(b",\"version\":");
        match self.version {
            Some(v) => write_json(out, &v),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
}

/// The lower-case hex chain hash of a receipt whose hash tail
/// ([`ContentView::write_hash_tail`]) is `tail`, after `prev_hash`:
/// `sha256_hex(prev_hash + tail)`, i.e. the contract in the module docs.
///
/// `prev_hash` comes first in the hashed text, so no part of SHA-256's work
/// can be done before the chain head is known: every block of the tail
/// depends on it. Building the tail is the part that can move elsewhere.
pub(crate) fn chain_hash_of_tail(prev_hash: &[u8], tail: &[u8]) -> [u8; 64] {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash);
    hasher.update(tail);
    let digest = hasher.finalize();
    let mut hex = [0u8; 64];
    // The buffer is exactly twice the digest length, so this cannot fail.
    let _ = hex::encode_to_slice(digest, &mut hex);
    hex
}

fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Most values need no escaping; copying them directly is what makes
    // verification fast. Anything else goes through serde_json, whose
    // escaping is the contract.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        write_json(out, s);
    }
}

/// A key that is written only when it has a value (the governance keys).
fn write_opt_key(out: &mut Vec<u8>, key: &[u8], s: Option<&str>) {
    if let Some(s) = s {
        out.extend_from_slice(key);
        write_str(out, s);
    }
}

fn write_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

// ------------------------------------------------------------------------
// The verifier's byte-level canonical writer.
//
// `receipts verify` recomputes millions of hashes from stored rows. Going
// through `ContentView` means validating every text column as UTF-8 and
// scanning it byte by byte for characters to escape. `RawContent` writes
// the same canonical text straight from the column bytes: a value that is
// plain printable ASCII (almost every value) is copied after a scan of 16
// bytes at a time, which also proves it is valid UTF-8; anything else is
// validated and then written exactly as `write_str` writes it. The tests in
// `store::verify` check that both writers produce the same text.
// ------------------------------------------------------------------------

/// A receipt's content as the raw bytes of its stored columns: the same
/// fields as [`ContentView`], for [`RawContent::chain_hash`].
pub(crate) struct RawContent<'a> {
    pub args: &'a [u8],
    pub approval_id: Option<&'a [u8]>,
    pub auth: &'a [u8],
    pub cost_usd: Option<f64>,
    pub decision: &'a [u8],
    pub duration_us: i64,
    pub id: &'a [u8],
    pub outcome: &'a [u8],
    /// Canonical JSON array text; `None` when there are no policies.
    pub policies: Option<&'a [u8]>,
    pub policy_set: Option<&'a [u8]>,
    pub principal: Option<&'a [u8]>,
    pub reason: Option<&'a [u8]>,
    pub replay_of: Option<&'a [u8]>,
    pub result_digest: Option<&'a [u8]>,
    pub result_excerpt: Option<&'a [u8]>,
    pub roles: &'a [u8],
    pub session: Option<&'a [u8]>,
    pub spec_hash: Option<&'a [u8]>,
    pub tool: &'a [u8],
    pub transport: &'a [u8],
    pub ts: &'a [u8],
    pub version: Option<i64>,
}

/// A text column that is not valid UTF-8, which [`ContentView`] cannot
/// represent: the caller reports the row through the `&str` path instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotUtf8;

impl RawContent<'_> {
    /// The lower-case hex chain hash, exactly as [`ContentView::chain_hash`]
    /// computes it for the same text, using `scratch` as a reusable buffer.
    pub(crate) fn chain_hash(
        &self,
        prev_hash: &[u8],
        scratch: &mut Vec<u8>,
    ) -> Result<[u8; 64], NotUtf8> {
        scratch.clear();
        // The hashed text is `prev_hash + "\n" + content`: build it whole, so
        // the hasher sees one contiguous slice.
        scratch.extend_from_slice(prev_hash);
        scratch.push(b'\n');
        self.write_canonical(scratch)?;
        let digest = Sha256::digest(&scratch[..]);
        let mut hex = [0u8; 64];
        // The buffer is exactly twice the digest length, so this cannot fail.
        let _ = hex::encode_to_slice(digest, &mut hex);
        Ok(hex)
    }

    /// The same keys, in the same order, as `ContentView::write_canonical`.
    fn write_canonical(&self, out: &mut Vec<u8>) -> Result<(), NotUtf8> {
        out.push(b'{');
        if let Some(v) = self.approval_id {
            out.extend_from_slice(b"\"approval_id\":");
            write_raw_str(out, v)?;
            out.push(b',');
        }
        out.extend_from_slice(b"\"args\":");
        write_raw_json(out, self.args)?;
        out.extend_from_slice(b",\"auth\":");
        write_raw_str(out, self.auth)?;
        out.extend_from_slice(b",\"cost_usd\":");
        match self.cost_usd {
            Some(c) => write_json(out, &c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"decision\":");
        write_raw_str(out, self.decision)?;
        out.extend_from_slice(b",\"duration_us\":");
        write_json(out, &self.duration_us);
        out.extend_from_slice(b",\"id\":");
        write_raw_str(out, self.id)?;
        out.extend_from_slice(b",\"outcome\":");
        write_raw_str(out, self.outcome)?;
        if let Some(policies) = self.policies {
            out.extend_from_slice(b",\"policies\":");
            write_raw_json(out, policies)?;
        }
        if let Some(v) = self.policy_set {
            out.extend_from_slice(b",\"policy_set\":");
            write_raw_str(out, v)?;
        }
        out.extend_from_slice(b",\"principal\":");
        write_raw_opt_str(out, self.principal)?;
        out.extend_from_slice(b",\"reason\":");
        write_raw_opt_str(out, self.reason)?;
        if let Some(v) = self.replay_of {
            out.extend_from_slice(b",\"replay_of\":");
            write_raw_str(out, v)?;
        }
        out.extend_from_slice(b",\"result_digest\":");
        write_raw_opt_str(out, self.result_digest)?;
        out.extend_from_slice(b",\"result_excerpt\":");
        write_raw_opt_str(out, self.result_excerpt)?;
        out.extend_from_slice(b",\"roles\":");
        write_raw_json(out, self.roles)?;
        out.extend_from_slice(b",\"session\":");
        write_raw_opt_str(out, self.session)?;
        out.extend_from_slice(b",\"spec_hash\":");
        write_raw_opt_str(out, self.spec_hash)?;
        out.extend_from_slice(b",\"tool\":");
        write_raw_str(out, self.tool)?;
        out.extend_from_slice(b",\"transport\":");
        write_raw_str(out, self.transport)?;
        out.extend_from_slice(b",\"ts\":");
        write_raw_str(out, self.ts)?;
        out.extend_from_slice(b",\"version\":");
        match self.version {
            Some(v) => write_json(out, &v),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
        Ok(())
    }
}

/// Whether every byte of `s` is printable ASCII other than `"` and `\`: such
/// a string is valid UTF-8 and its JSON form is the bytes between quotes.
///
/// The test has no early exit inside each 16-byte block, so the compiler
/// turns it into a few vector instructions per block instead of a branch per
/// byte (the byte loop in `write_str` was 14 % of verification time).
fn plain_ascii(s: &[u8]) -> bool {
    fn plain(b: u8) -> bool {
        // 0x20..=0x7e except '"' and '\\'; DEL (0x7f) is ASCII and needs
        // no escaping either.
        b.wrapping_sub(0x20) < 0x60 && b != b'"' && b != b'\\'
    }
    fn plain_block(block: &[u8]) -> bool {
        block.iter().fold(true, |ok, &b| ok & plain(b))
    }
    if s.len() < 16 {
        return s.iter().all(|&b| plain(b));
    }
    let mut blocks = s.chunks_exact(16);
    if !blocks.all(plain_block) {
        return false;
    }
    // The last 16 bytes as one more block (overlapping the previous one)
    // instead of a byte loop over the remainder.
    blocks.remainder().is_empty() || plain_block(&s[s.len() - 16..])
}

/// A JSON string value: the bytes of `s` as `write_str` writes the same text.
fn write_raw_str(out: &mut Vec<u8>, s: &[u8]) -> Result<(), NotUtf8> {
    if plain_ascii(s) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
    } else {
        write_str(out, std::str::from_utf8(s).map_err(|_| NotUtf8)?);
    }
    Ok(())
}

fn write_raw_opt_str(out: &mut Vec<u8>, s: Option<&[u8]>) -> Result<(), NotUtf8> {
    match s {
        Some(s) => write_raw_str(out, s),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// Stored canonical JSON text (`args`, `roles`, `policies`), spliced in as
/// is once it is known to be UTF-8, like the `&str` it would otherwise be.
fn write_raw_json(out: &mut Vec<u8>, s: &[u8]) -> Result<(), NotUtf8> {
    if !s.is_ascii() {
        std::str::from_utf8(s).map_err(|_| NotUtf8)?;
    }
    out.extend_from_slice(s);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    /// A receipt with every optional field set, for tests across the crate.
    pub(crate) fn sample(id: &str) -> NewReceipt {
        NewReceipt {
            id: id.to_owned(),
            ts: "2026-11-21T22:56:13.123456Z".to_owned(),
            principal: Some("alice".to_owned()),
            roles: vec!["ops".to_owned(), "dev\"s".to_owned()],
            auth: "cli".to_owned(),
            transport: "cli".to_owned(),
            session: Some("s-1".to_owned()),
            tool: "echo".to_owned(),
            version: Some(3),
            spec_hash: Some("ab".repeat(32)),
            args: json!({"z": [1, 2.5, {"b": null, "a": "é\n"}], "a": 1e300}),
            decision: Decision::Allowed,
            reason: Some("role ops may call echo".to_owned()),
            outcome: Outcome::Ok,
            result_digest: Some("cd".repeat(32)),
            result_excerpt: Some("hello\u{1}".to_owned()),
            duration_us: 1234,
            cost_usd: Some(0.0025),
            policy_set: Some("ef".repeat(32)),
            policies: vec!["refund-cap".to_owned(), "a\"b".to_owned()],
            approval_id: Some("ap-1".to_owned()),
            replay_of: Some("0190a5f0-0000-7000-8000-000000000000".to_owned()),
        }
    }

    /// The contract spelled out the slow, obvious way.
    fn reference_hash(prev: &str, r: &NewReceipt) -> String {
        let content = json!({
            "id": r.id, "ts": r.ts, "principal": r.principal, "roles": r.roles,
            "auth": r.auth, "transport": r.transport, "session": r.session,
            "tool": r.tool, "version": r.version, "spec_hash": r.spec_hash,
            "args": r.args, "decision": r.decision.as_str(), "reason": r.reason,
            "outcome": r.outcome.as_str(), "result_digest": r.result_digest,
            "result_excerpt": r.result_excerpt, "duration_us": r.duration_us,
            "cost_usd": r.cost_usd,
        });
        let mut content = content;
        if let Some(obj) = content.as_object_mut() {
            let mut opt = |k: &str, v: Option<serde_json::Value>| {
                if let Some(v) = v {
                    obj.insert(k.to_owned(), v);
                }
            };
            opt("policy_set", r.policy_set.clone().map(Into::into));
            opt("approval_id", r.approval_id.clone().map(Into::into));
            opt("replay_of", r.replay_of.clone().map(Into::into));
            opt(
                "policies",
                (!r.policies.is_empty()).then(|| json!(r.policies)),
            );
        }
        let text = format!("{prev}\n{}", crate::canonical::to_string(&content));
        crate::canonical::sha256_hex(text.as_bytes())
    }

    #[test]
    fn chain_hash_matches_the_documented_contract() {
        let full = sample("0190a5f0-0000-7000-8000-000000000001");
        let bare = NewReceipt {
            principal: None,
            roles: vec![],
            session: None,
            version: None,
            spec_hash: None,
            args: json!(null),
            decision: Decision::UnknownTool,
            reason: None,
            outcome: Outcome::NotRun,
            result_digest: None,
            result_excerpt: None,
            cost_usd: None,
            policy_set: None,
            policies: vec![],
            approval_id: None,
            replay_of: None,
            ..full.clone()
        };
        let odd_cost = NewReceipt {
            cost_usd: Some(1.0),
            ..full.clone()
        };
        for r in [&full, &bare, &odd_cost] {
            assert_eq!(chain_hash(GENESIS_HASH, r), reference_hash(GENESIS_HASH, r));
        }
    }

    #[test]
    fn every_field_is_covered() {
        let base = sample("0190a5f0-0000-7000-8000-000000000001");
        let h = chain_hash(GENESIS_HASH, &base);
        let mut edits: Vec<NewReceipt> = Vec::new();
        let mut e = |f: &dyn Fn(&mut NewReceipt)| {
            let mut r = base.clone();
            f(&mut r);
            edits.push(r);
        };
        e(&|r| r.id.push('x'));
        e(&|r| r.ts.push('x'));
        e(&|r| r.principal = None);
        e(&|r| {
            r.roles.pop();
        });
        e(&|r| r.auth.push('x'));
        e(&|r| r.transport.push('x'));
        e(&|r| r.session = None);
        e(&|r| r.tool.push('x'));
        e(&|r| r.version = Some(4));
        e(&|r| r.spec_hash = None);
        e(&|r| r.args = json!({}));
        e(&|r| r.decision = Decision::Denied);
        e(&|r| r.reason = None);
        e(&|r| r.outcome = Outcome::Error);
        e(&|r| r.result_digest = None);
        e(&|r| r.result_excerpt = None);
        e(&|r| r.duration_us += 1);
        e(&|r| r.cost_usd = None);
        e(&|r| r.policy_set = None);
        e(&|r| {
            r.policies.pop();
        });
        e(&|r| r.approval_id = None);
        e(&|r| r.replay_of = None);
        for r in &edits {
            assert_ne!(chain_hash(GENESIS_HASH, r), h, "{r:?}");
        }
        assert_ne!(chain_hash(&"1".repeat(64), &base), h);
    }

    #[test]
    fn labels_round_trip_and_explain_mistakes() {
        for d in Decision::ALL {
            assert_eq!(d.as_str().parse::<Decision>(), Ok(*d));
            assert_eq!(serde_json::to_value(d).unwrap(), json!(d.as_str()));
        }
        for o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>(), Ok(*o));
        }
        let err = "alowed".parse::<Decision>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown decision \"alowed\"; expected one of: allowed, denied, rate_limited, invalid, unknown_tool, unavailable, pending_approval, approved, approval_denied, approval_refused, replayed, conflict, over_budget"
        );
    }

    #[test]
    fn timestamps_have_fixed_width() {
        let ts = now_ts();
        assert_eq!(ts.len(), "2026-11-21T22:56:13.123456Z".len(), "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn receipt_json_is_flat() {
        let r = Receipt {
            seq: 1,
            content: sample("x"),
            prev_hash: GENESIS_HASH.to_owned(),
            hash: "h".to_owned(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["seq"], 1);
        assert_eq!(v["tool"], "echo");
        assert_eq!(v["decision"], "allowed");
        let back: Receipt = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
