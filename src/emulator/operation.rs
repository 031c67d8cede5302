//! The ACS Identity operations the emulator serves, named once so that throttling, fault
//! injection and the request counters all speak of the same things.

use std::fmt;
use std::str::FromStr;

/// One data-plane operation. Creating an identity together with its first token is its own
/// operation because ACS throttles it separately (`createUserAndToken`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    CreateIdentity,
    CreateUserAndToken,
    IssueToken,
    RevokeTokens,
    DeleteIdentity,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::CreateIdentity,
        Operation::CreateUserAndToken,
        Operation::IssueToken,
        Operation::RevokeTokens,
        Operation::DeleteIdentity,
    ];

    /// The stable name used in the CLI, the admin API and the counters.
    pub fn name(self) -> &'static str {
        match self {
            Operation::CreateIdentity => "createIdentity",
            Operation::CreateUserAndToken => "createUserAndToken",
            Operation::IssueToken => "issueToken",
            Operation::RevokeTokens => "revokeTokens",
            Operation::DeleteIdentity => "deleteIdentity",
        }
    }

    /// Whether a fault or filter naming `self` applies to a request doing `actual`. Both
    /// flavours of `POST /identities` are a `createIdentity`; `createUserAndToken` names only
    /// the one that also mints a token.
    pub fn covers(self, actual: Operation) -> bool {
        self == actual
            || (self == Operation::CreateIdentity && actual == Operation::CreateUserAndToken)
    }

    /// The service's documented limit per 30-second window (PROTOCOL.md §4).
    pub fn default_limit_per_window(self) -> u32 {
        match self {
            Operation::CreateIdentity | Operation::CreateUserAndToken | Operation::IssueToken => {
                1000
            }
            Operation::RevokeTokens | Operation::DeleteIdentity => 500,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown operation `{0}` (expected createIdentity, createUserAndToken, issueToken, revokeTokens or deleteIdentity)"
)]
pub struct UnknownOperation(pub String);

impl FromStr for Operation {
    type Err = UnknownOperation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Operation::ALL
            .into_iter()
            .find(|op| op.name() == s.trim())
            .ok_or_else(|| UnknownOperation(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for op in Operation::ALL {
            assert_eq!(op.name().parse::<Operation>(), Ok(op));
        }
        assert!("issue".parse::<Operation>().is_err());
    }

    #[test]
    fn create_covers_create_with_token_but_not_the_reverse() {
        assert!(Operation::CreateIdentity.covers(Operation::CreateUserAndToken));
        assert!(!Operation::CreateUserAndToken.covers(Operation::CreateIdentity));
        assert!(!Operation::IssueToken.covers(Operation::RevokeTokens));
    }
}
