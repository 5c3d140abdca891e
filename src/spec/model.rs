//! The tool-spec file format: one YAML file per tool under `tool-specs/`.
//!
//! Every struct here denies unknown fields. A typo such as `alow:` must be an
//! error, because silently ignoring it would weaken governance.
//! `tollgate schema` prints the JSON Schema generated from these types, so the
//! doc comments below are what editors show as field help.

use schemars::JsonSchema;
use serde::Deserialize;

use crate::executor::RunSpec;

/// One governed tool.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// Tool name as clients see it: 1-64 characters of `A-Za-z0-9_-.`.
    pub name: String,
    /// Optional human-readable title.
    #[serde(default)]
    pub title: Option<String>,
    /// What the tool does, written for the model that will call it.
    pub description: String,
    /// JSON Schema (draft 2020-12) of the arguments. Must be `type: object`.
    pub input_schema: serde_json::Value,
    /// Optional JSON Schema of the structured result.
    #[serde(default)]
    pub output_schema: Option<serde_json::Value>,
    /// MCP tool annotations (hints for clients; they do not grant anything).
    #[serde(default)]
    pub annotations: Option<Annotations>,
    /// Roles allowed to call the tool. Empty or missing means nobody may.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Rate limits: per calling principal and for the tool as a whole.
    #[serde(default)]
    pub rate_limit: Option<RateLimits>,
    /// Longest a call may run, e.g. `10s`, `2m`. Default `30s`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Cost charged per call, recorded in each receipt and counted against
    /// budgets.
    #[serde(default)]
    pub cost: Option<Cost>,
    /// Derive an idempotency key from argument values, so a retried call
    /// with the same key never runs twice (for any caller).
    #[serde(default)]
    pub idempotency: Option<Idempotency>,
    /// Free-form labels; policies see them as `resource.tags`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// How the tool runs: exactly one of `command`, `http`, `static`.
    pub run: RunSpec,
}

/// The MCP annotations, spelled as in the MCP specification.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Annotations {
    /// The tool does not modify its environment.
    #[serde(default, rename = "readOnlyHint")]
    pub read_only_hint: Option<bool>,
    /// The tool may perform destructive updates.
    #[serde(default, rename = "destructiveHint")]
    pub destructive_hint: Option<bool>,
    /// Repeating a call with the same arguments has no additional effect.
    #[serde(default, rename = "idempotentHint")]
    pub idempotent_hint: Option<bool>,
    /// The tool interacts with an open world of external entities.
    #[serde(default, rename = "openWorldHint")]
    pub open_world_hint: Option<bool>,
}

/// Rate limits of one tool.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// Limit for each calling principal separately.
    #[serde(default)]
    pub per_principal: Option<Rate>,
    /// Limit for all callers together.
    #[serde(default)]
    pub global: Option<Rate>,
}

/// A rate such as `10/minute`, with an optional burst.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// `N/second`, `N/minute`, `N/hour` or `N/day` (N ≥ 1).
    pub rate: String,
    /// How many calls may arrive at once before the rate applies.
    /// Default: N (a full period's worth).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// Cost of one call: a fixed amount, read from the result, or both (the
/// fixed amount then applies when the result does not say).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    /// Fixed cost in US dollars per call, e.g. `0.02`.
    #[serde(default)]
    pub usd: Option<f64>,
    /// JSON pointer into the structured result whose number is the call's
    /// cost in US dollars, e.g. `/usage/cost_usd`.
    #[serde(default)]
    pub from: Option<String>,
}

/// A key made of argument values: one execution per key within `ttl`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Idempotency {
    /// Names of the arguments whose values form the key, e.g. `[order_id]`.
    pub key: Vec<String>,
    /// How long a key is remembered, e.g. `24h` (the default), `7d`.
    #[serde(default)]
    pub ttl: Option<String>,
}
