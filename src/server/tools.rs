//! The `tools/list` view of the catalog, built once at start-up.

use std::sync::Arc;

use rmcp::model::{MetaObject, Tool, ToolAnnotations};
use serde_json::json;

use crate::catalog::{Catalog, CompiledTool};

/// `_meta` key carrying the active version number of a tool.
pub const META_VERSION: &str = "tollgate/version";
/// `_meta` key carrying the SHA-256 of the active spec version.
pub const META_SPEC_HASH: &str = "tollgate/spec_hash";

/// The MCP tool definitions of every active tool, in name order.
pub fn definitions(catalog: &Catalog) -> Vec<Tool> {
    catalog.iter().map(definition).collect()
}

fn definition(tool: &Arc<CompiledTool>) -> Tool {
    let spec = &tool.spec;
    let input = spec.input_schema.as_object().cloned().unwrap_or_default();
    let mut def = Tool::new(spec.name.clone(), spec.description.clone(), Arc::new(input));
    if let Some(title) = &spec.title {
        def = def.with_title(title.clone());
    }
    if let Some(out) = spec.output_schema.as_ref().and_then(|o| o.as_object()) {
        def = def.with_raw_output_schema(Arc::new(out.clone()));
    }
    if let Some(a) = &spec.annotations {
        let value = json!({
            "readOnlyHint": a.read_only_hint,
            "destructiveHint": a.destructive_hint,
            "idempotentHint": a.idempotent_hint,
            "openWorldHint": a.open_world_hint,
        });
        if let Ok(annotations) = serde_json::from_value::<ToolAnnotations>(strip_nulls(value)) {
            def = def.with_annotations(annotations);
        }
    }
    let mut meta = MetaObject::new();
    meta.0.insert(META_VERSION.into(), json!(tool.version));
    meta.0.insert(META_SPEC_HASH.into(), json!(tool.hash));
    def.with_meta(meta)
}

fn strip_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}
