//! The ACS operations as the emulator's CLI and admin API name them. The operations and their
//! limits are the client's ([`acs_client::Operation`]): one vocabulary for both sides of the
//! wire. This adds reading a name back, and what a fault's operation filter matches.

pub use acs_client::Operation;

/// The service documentation calls creating with a first token `createUserAndToken`; it is
/// accepted as another name of [`Operation::CreateIdentityWithToken`].
const ALIASES: [(&str, Operation); 1] =
    [("createUserAndToken", Operation::CreateIdentityWithToken)];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown operation `{0}` (expected createIdentity, createIdentityWithToken, issueToken, revokeTokens or deleteIdentity)"
)]
pub struct UnknownOperation(pub String);

/// An operation by its stable name ([`Operation::as_str`]) or alias.
pub fn parse(name: &str) -> Result<Operation, UnknownOperation> {
    let name = name.trim();
    Operation::ALL
        .into_iter()
        .map(|op| (op.as_str(), op))
        .chain(ALIASES)
        .find(|(known, _)| *known == name)
        .map(|(_, op)| op)
        .ok_or_else(|| UnknownOperation(name.to_string()))
}

/// Whether a filter naming `wanted` applies to a request doing `actual`: both kinds of
/// `POST /identities` are a `createIdentity`; `createIdentityWithToken` names only the one that
/// also mints a token.
pub fn covers(wanted: Operation, actual: Operation) -> bool {
    wanted == actual
        || (wanted == Operation::CreateIdentity && actual == Operation::CreateIdentityWithToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_alias_parse() {
        for op in Operation::ALL {
            assert_eq!(parse(op.as_str()), Ok(op));
        }
        assert_eq!(
            parse("createUserAndToken"),
            Ok(Operation::CreateIdentityWithToken)
        );
        assert!(parse("issue").is_err());
    }

    #[test]
    fn create_covers_create_with_token_but_not_the_reverse() {
        use Operation::*;
        assert!(covers(CreateIdentity, CreateIdentityWithToken));
        assert!(!covers(CreateIdentityWithToken, CreateIdentity));
        assert!(!covers(IssueToken, RevokeTokens));
        assert!(covers(IssueToken, IssueToken));
    }
}
