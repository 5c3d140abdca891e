//! Building the Cedar schema on its own thread, started as early as possible.
//!
//! # Why
//!
//! For 1,000 tools, building the Cedar schema takes longer than everything
//! else in loading the policies together (64–81 ms measured), and it needs
//! only each tool's argument types, which are known as soon as the spec
//! files are parsed. [`SchemaBuild::start_specs`] begins it then, so `check`
//! and `serve` build it while the specs compile (and `serve` while the
//! database opens and the registry records the specs), and a
//! first start builds it once for its two policy loads (one checks the
//! policies before the database file is created, the other loads them with
//! the versions the registry assigned).
//!
//! The tools a build was started with need not be the tools finally
//! served: a pinned tool serves an older version, whose arguments may
//! differ. So a build is only used for tools whose argument types are
//! exactly those it was started with ([`SchemaBuild::is_for`]);
//! otherwise the schema is built again.

use std::borrow::Borrow;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use cedar_policy::{Schema, Validator};
use serde_json::{Value, json};

use super::schema;
use crate::catalog::CompiledTool;
use crate::spec::ToolSpec;

/// Each tool's name and the Cedar type of its arguments, in tool order.
pub(crate) type ArgTypes = Vec<(String, Value)>;

/// A Cedar schema (held by its [`Validator`]) being built on another
/// thread. Share it by reference; the first [`SchemaBuild::validator`]
/// waits for the thread, later ones reuse its answer.
pub struct SchemaBuild {
    /// The types it was started with, kept to tell whether it fits other
    /// tools; `None` for a build made for one use only.
    arg_types: Option<ArgTypes>,
    job: Mutex<Option<JoinHandle<Result<Validator, String>>>>,
    built: OnceLock<Result<Arc<Validator>, String>>,
}

impl std::fmt::Debug for SchemaBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaBuild")
            .field("tools", &self.arg_types.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl SchemaBuild {
    /// Start building the schema of these specs' tools on a new thread, as
    /// soon as the files are parsed: the argument types come from the specs
    /// alone, so the build runs while they compile.
    pub fn start_specs<'a>(specs: impl IntoIterator<Item = &'a ToolSpec>) -> SchemaBuild {
        let arg_types = spec_arg_types(specs);
        let mut build = Self::spawn(arg_types.clone());
        build.arg_types = Some(arg_types);
        build
    }

    /// Start building the schema of tools with these argument types, for
    /// one use ([`SchemaBuild::is_for`] is then false).
    pub(crate) fn spawn(arg_types: ArgTypes) -> SchemaBuild {
        let job = std::thread::spawn(move || {
            Schema::from_json_value(schema::schema_json(arg_types))
                .map(Validator::new)
                .map_err(|e| e.to_string())
        });
        SchemaBuild {
            arg_types: None,
            job: Mutex::new(Some(job)),
            built: OnceLock::new(),
        }
    }

    /// Whether this build is the schema of tools with these argument types.
    pub(crate) fn is_for(&self, arg_types: &[(String, Value)]) -> bool {
        self.arg_types.as_deref() == Some(arg_types)
    }

    /// The schema, once built (this waits for the thread); the message of
    /// Cedar's error if it could not be built.
    pub(crate) fn validator(&self) -> Result<Arc<Validator>, String> {
        self.built
            .get_or_init(|| {
                let job = self
                    .job
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                match job.map(JoinHandle::join) {
                    Some(Ok(built)) => built.map(Arc::new),
                    Some(Err(panic)) => std::panic::resume_unwind(panic),
                    // `built` is set by whoever took the job.
                    None => Err("the schema build was already taken".into()),
                }
            })
            .clone()
    }
}

/// [`ArgTypes`] of `tools`: a tool whose input schema Cedar cannot type
/// gets an empty record.
pub(crate) fn arg_types<'a, T: Borrow<CompiledTool> + 'a>(
    tools: impl IntoIterator<Item = &'a T>,
) -> ArgTypes {
    spec_arg_types(tools.into_iter().map(|t| &t.borrow().spec))
}

fn spec_arg_types<'a>(specs: impl IntoIterator<Item = &'a ToolSpec>) -> ArgTypes {
    specs
        .into_iter()
        .map(|spec| {
            let ty = schema::cedar_type(&spec.input_schema)
                .unwrap_or_else(|| json!({"type": "Record", "attributes": {}}));
            (spec.name.clone(), ty)
        })
        .collect()
}
