//! A problem found in a spec file, addressed to the person who wrote it.

use std::fmt;
use std::path::PathBuf;

/// One problem in one spec file: where it is, what is wrong, how to fix it.
///
/// `check` and `serve` print every issue they find, not just the first, so
/// that one run of `tollgate check` is enough to fix a whole directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecIssue {
    /// The file the problem is in (empty when it concerns no single file).
    pub file: PathBuf,
    /// Dotted path of the offending field, e.g. `run.command.argv[2]`
    /// (empty when the problem is the whole file).
    pub field: String,
    /// What is wrong, in one sentence.
    pub message: String,
    /// How to fix it, when we can say.
    pub hint: Option<String>,
}

impl SpecIssue {
    /// An issue at `field`, without a file yet (the loader fills it in).
    pub fn at(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecIssue {
            file: PathBuf::new(),
            field: field.into(),
            message: message.into(),
            hint: None,
        }
    }

    /// Attach a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Attach the file.
    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = file.into();
        self
    }
}

impl fmt::Display for SpecIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}
