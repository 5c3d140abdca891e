//! Who exists and which roles they hold: `principals.yaml`.
//!
//! ```yaml
//! roles:
//!   support: Customer support agents
//!   admin: Operators of tollgate itself
//! principals:
//!   alice: { roles: [admin, support] }
//!   bob: { roles: [support] }
//! ```
//!
//! Roles are declared, not inferred, so that a spec that says `allow: [suport]`
//! is caught by `tollgate check` instead of quietly allowing nobody.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// An error reading or validating the principals file.
#[derive(Debug, thiserror::Error)]
pub enum PrincipalsError {
    #[error(
        "cannot read principals file {path}: {source}\n  hint: create it (see principals.yaml in the repository) or point --principals / TOLLGATE_PRINCIPALS at one"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalsFile {
    /// Role name → description.
    roles: BTreeMap<String, String>,
    principals: BTreeMap<String, PrincipalEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalEntry {
    roles: Vec<String>,
}

/// The directory of principals and roles, loaded once at start-up.
#[derive(Debug, Clone, Default)]
pub struct Principals {
    roles: BTreeSet<String>,
    members: BTreeMap<String, Vec<String>>,
}

impl Principals {
    /// Load and validate `path`. Every role a principal holds must be declared.
    pub fn load(path: &Path) -> Result<Principals, PrincipalsError> {
        let text = std::fs::read_to_string(path).map_err(|source| PrincipalsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|message| PrincipalsError::Invalid {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parse the YAML text of a principals file.
    pub fn parse(text: &str) -> Result<Principals, String> {
        let de = serde_norway::Deserializer::from_str(text);
        let file: PrincipalsFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            format!("field `{path}`: {}", e.into_inner())
        })?;
        let roles: BTreeSet<String> = file.roles.into_keys().collect();
        let mut members = BTreeMap::new();
        for (name, entry) in file.principals {
            for role in &entry.roles {
                if !roles.contains(role) {
                    return Err(format!(
                        "field `principals.{name}.roles`: role `{role}` is not declared\n  hint: declare it under `roles:` (declared: {})",
                        join(&roles)
                    ));
                }
            }
            members.insert(name, entry.roles);
        }
        Ok(Principals { roles, members })
    }

    /// The roles of `principal`, or `None` when no such principal exists.
    pub fn roles_of(&self, principal: &str) -> Option<&[String]> {
        self.members.get(principal).map(Vec::as_slice)
    }

    /// Whether `role` is declared.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    /// All declared roles, sorted.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.roles.iter().map(String::as_str)
    }

    /// All principal names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }
}

fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items.into_iter().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "roles:\n  admin: ops\n  support: help\nprincipals:\n  alice: { roles: [admin] }\n  bob: { roles: [support] }\n";

    #[test]
    fn loads_roles_and_members() {
        let p = Principals::parse(OK).unwrap();
        assert_eq!(p.roles_of("alice"), Some(&["admin".to_string()][..]));
        assert!(p.roles_of("mallory").is_none());
        assert!(p.has_role("support"));
    }

    #[test]
    fn undeclared_role_is_an_error() {
        let err = Principals::parse("roles: {admin: x}\nprincipals:\n  bob: { roles: [suport] }\n")
            .unwrap_err();
        assert!(err.contains("principals.bob.roles"), "{err}");
        assert!(err.contains("`suport` is not declared"), "{err}");
    }

    #[test]
    fn unknown_field_is_an_error() {
        let err = Principals::parse("roles: {admin: x}\nprincipals:\n  bob: { rolez: [admin] }\n")
            .unwrap_err();
        assert!(err.contains("unknown field `rolez`"), "{err}");
    }
}
