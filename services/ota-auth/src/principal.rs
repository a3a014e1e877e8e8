//! Principals: the person or service a token belongs to. Tokens are many
//! and cheap (one per laptop, per CI job); the four-eyes rule is about
//! people, so it compares principals, never token names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::AuthError;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PrincipalKind {
    /// Someone who can be the second pair of eyes.
    #[default]
    Person,
    /// A program (CI, a dashboard): never approves.
    Service,
}

impl PrincipalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Service => "service",
        }
    }
}

impl fmt::Display for PrincipalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PrincipalKind {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "person" => Ok(Self::Person),
            "service" => Ok(Self::Service),
            _ => Err(AuthError::Invalid(format!(
                "unknown principal kind {:?}: expected person or service",
                bounded(s)
            ))),
        }
    }
}

/// The principal of what the platform does on its own, and of the
/// bootstrap: no token may belong to them.
pub const SYSTEM: &str = "system";
/// Names the audit log and `created_by` already use for something else.
const RESERVED: [&str; 3] = [SYSTEM, "anonymous", "migration"];
/// The bootstrap admin token's principal.
pub const ADMIN: &str = "admin";

/// A new principal's name: 1-64 ASCII letters, digits, `.`, `_`, `-` or `@`
/// (a handle or an email address), so names read the same everywhere the
/// audit log is shown. Principals migrated from older token names keep
/// whatever name they had.
pub(crate) fn check_new_name(name: &str) -> Result<(), AuthError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
        return Err(AuthError::Invalid(format!(
            "invalid principal name {:?}: use 1-64 characters of A-Z, a-z, 0-9, '.', '_', '-' and '@'",
            bounded(name)
        )));
    }
    if RESERVED.contains(&name) {
        return Err(AuthError::Invalid(format!(
            "principal name {name:?} is reserved for the platform itself"
        )));
    }
    Ok(())
}

/// At most 64 characters of user input, for error messages.
pub(crate) fn bounded(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_handles() {
        for ok in ["ann", "ann.lee@example.com", "ci-bot_2", &"a".repeat(64)] {
            check_new_name(ok).unwrap();
        }
        for bad in ["", "ann lee", "ann\n", "änn", &"a".repeat(65)] {
            let err = check_new_name(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("invalid principal name"),
                "{err}"
            );
        }
        let err = check_new_name("system").unwrap_err();
        assert_eq!(
            err.to_string(),
            "principal name \"system\" is reserved for the platform itself"
        );
    }

    #[test]
    fn messages_echo_a_bounded_prefix() {
        let long = "x".repeat(10_000);
        let err = check_new_name(&long).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
        let err = long.parse::<PrincipalKind>().unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }
}
