//! Tool specs: the YAML files under `tool-specs/` that define each tool.
//!
//! - [`model`]: the file format (also the source of `tollgate schema`).
//! - [`load`]: reading a directory into parsed, hashed specs.
//! - [`rate`]: rates (`10/minute`) and durations (`30s`).
//! - [`scalars`]: YAML values read one way by a field, another by the stored JSON.
//! - [`issue`]: a problem in a spec, with file, field and hint.
//! - [`par`]: start-up work spread over the cores.

pub mod governance;
pub mod issue;
pub mod load;
pub mod model;
pub mod par;
pub mod rate;
pub mod scalars;

pub use issue::SpecIssue;
pub use load::{LoadReport, LoadedSpec, load_dir};
pub use model::ToolSpec;

/// The JSON Schema of the spec format, for editors (`tollgate schema`).
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ToolSpec)).unwrap_or_default()
}
