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
    /// Principal name claimed by the transport's configuration.
    pub principal: String,
    /// How that claim was established, recorded in the receipt ("stdio", "cli").
    pub auth: String,
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
}

/// Resolve `identity` against the principals directory.
pub fn authenticate(principals: &Principals, identity: &Identity) -> Result<Principal, CallError> {
    let roles = principals.roles_of(&identity.principal).ok_or_else(|| {
        CallError::Unauthenticated(format!(
            "principal `{}` is not in the principals file",
            identity.principal
        ))
    })?;
    Ok(Principal {
        name: identity.principal.clone(),
        roles: roles.to_vec(),
        auth: identity.auth.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_principals() {
        let p = Principals::parse("roles: {a: x}\nprincipals:\n  alice: {roles: [a]}\n").unwrap();
        let ok = authenticate(
            &p,
            &Identity {
                principal: "alice".into(),
                auth: "stdio".into(),
            },
        )
        .unwrap();
        assert_eq!(ok.roles(), ["a".to_string()]);
        let err = authenticate(
            &p,
            &Identity {
                principal: "eve".into(),
                auth: "stdio".into(),
            },
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("`eve` is not in the principals file")
        );
    }
}
