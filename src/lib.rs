//! tollgate: a Model Context Protocol server that exposes *governed* tools.
//!
//! Every `tools/call` flows through one pipeline and ends in exactly one
//! hash-chained receipt that is committed before the reply leaves:
//!
//! ```text
//! authenticate → resolve → validate → authorize → limit → execute → record
//! ```
//!
//! # Layout
//!
//! - [`config`]: layered settings (flags > env > file > defaults).
//! - [`spec`]: the tool-spec file format, loading, validation and hashing.
//! - [`principals`]: who exists and which roles they hold.
//! - [`template`]: the strict `{{ args.x }}` placeholder syntax used by executors.
//! - [`executor`]: how a tool runs; one file per kind (`command`, `http`, `static`).
//! - [`receipt`]: the receipt record and its canonical, hash-chained form.
//! - [`store`]: SQLite: migrations, the tool-version registry, the receipt writer, queries.
//! - [`pipeline`]: one governed call, one module per stage.
//! - [`server`]: the MCP front end (one rmcp handler for every transport) that feeds the pipeline.
//! - [`http`]: Streamable HTTP: authentication guard, operations endpoints, graceful drain.
//! - [`auth`]: API keys and JWT bearer tokens.
//! - [`metrics`]: Prometheus metrics.
//! - [`secrets`]: server-side secrets (`{{ secret.NAME }}`), redaction, `x-sensitive` hashing.
//! - [`catalog`]: the compiled, servable set of tools built at start-up.
//! - [`shutdown`]: draining running calls and interrupting the rest.
//! - [`bench_stage`]: benchmark short cuts that cut a stage out; they act only in a build with
//!   the `bench-decompose` feature.

pub mod auth;
pub mod bench_stage;
pub mod canonical;
pub mod catalog;
pub mod config;
pub mod executor;
pub mod http;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod principals;
pub mod receipt;
pub mod secrets;
pub mod server;
pub mod shutdown;
pub mod spec;
pub mod store;
pub mod template;
