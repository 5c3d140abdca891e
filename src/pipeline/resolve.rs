//! Stage 2: which tool, at which version.

use std::sync::Arc;

use super::CallError;
use crate::catalog::{Catalog, CompiledTool};

/// Find the active version of `name`.
pub fn resolve(catalog: &Catalog, name: &str) -> Result<Arc<CompiledTool>, CallError> {
    catalog
        .get(name)
        .cloned()
        .ok_or_else(|| CallError::UnknownTool {
            name: name.to_string(),
            known: catalog.iter().map(|t| t.spec.name.clone()).collect(),
        })
}
