//! Stage 1: who is calling.
//!
//! The transport says who it *believes* the caller is ([`Identity`]); this
//! stage turns that into a [`Principal`] with roles, which only this module
//! can construct. Over stdio and the CLI the identity is set by the operator
//! who started tollgate; over HTTP (later) it comes from verified credentials.

use super::CallError;
use crate::principals::Principals;

/// What the transport knows about the caller before authentication.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Principal name: set by the operator (stdio, CLI) or taken from a
    /// verified credential (HTTP).
    pub principal: String,
    /// How the identity was established, recorded in the receipt
    /// ("stdio", "cli", "api_key:<id>", "jwt:<iss>|<sub>").
    pub auth: String,
    /// Roles vouched for by the credential itself (a JWT's roles claim).
    /// `None`: the principal must be in the principals file, which gives the roles.
    pub roles: Option<Vec<String>>,
}

impl Identity {
    /// An identity named by the operator; roles come from the principals file.
    pub fn local(principal: impl Into<String>, auth: impl Into<String>) -> Identity {
        Identity {
            principal: principal.into(),
            auth: auth.into(),
            roles: None,
        }
    }
}

/// An authenticated caller. Only [`authenticate`] builds one.
#[derive(Debug, Clone)]
pub struct Principal {
    name: String,
    roles: Vec<String>,
    auth: String,
}

impl Principal {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
    pub fn auth(&self) -> &str {
        &self.auth
    }

    /// The requester of an approved call, as authenticated when it asked:
    /// the run happens as them, with the roles they had then.
    pub(super) fn restore(name: &str, roles: &[String], auth: &str) -> Principal {
        Principal {
            name: name.to_owned(),
            roles: roles.to_vec(),
            auth: auth.to_owned(),
        }
    }
}

/// Resolve `identity` against the principals directory.
pub fn authenticate(principals: &Principals, identity: &Identity) -> Result<Principal, CallError> {
    if identity.principal.is_empty() {
        return Err(CallError::Unauthenticated(
            "no verified identity came with this request".into(),
        ));
    }
    let roles = match &identity.roles {
        Some(vouched) => vouched.clone(),
        None => principals
            .roles_of(&identity.principal)
            .ok_or_else(|| {
                CallError::Unauthenticated(format!(
                    "principal `{}` is not in the principals file",
                    identity.principal
                ))
            })?
            .to_vec(),
    };
    Ok(Principal {
        name: identity.principal.clone(),
        roles,
        auth: identity.auth.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_principals() {
        let p = Principals::parse("roles: {a: x}\nprincipals:\n  alice: {roles: [a]}\n").unwrap();
        let ok = authenticate(&p, &Identity::local("alice", "stdio")).unwrap();
        assert_eq!(ok.roles(), ["a".to_string()]);
        let err = authenticate(&p, &Identity::local("eve", "stdio")).unwrap_err();
        assert!(
            err.to_string()
                .contains("`eve` is not in the principals file")
        );
    }
}
