//! Which state the token Secret is in: the classification [`crate::policy::decide`] reads.
//! The controller compares what it found with the record (`controller::token_secret`); which
//! state those facts make is decided here.

use super::SecretState;

/// The token Secret as found, compared with what the operator last wrote there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// This AcsIdentity controls it (an owner reference with `controller: true`).
    pub controlled: bool,
    pub token: TokenMatch,
    /// Its labels, annotations and type are what the operator applies.
    pub metadata_matches: bool,
}

/// How the Secret's token compares with the one status recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMatch {
    /// The Secret holds no complete token, or status records none to compare with.
    Unknown,
    /// Another token (edited, or written by an older attempt).
    Differs,
    /// The recorded token, but its expiry, identity id or the set of keys differ.
    OtherData,
    /// The recorded token and data, as written.
    Same,
}

/// The state of the Secret `found` (`None`: there is none).
pub fn secret_state(found: Option<Found>) -> SecretState {
    let Some(found) = found else {
        return SecretState::Missing;
    };
    if !found.controlled {
        return SecretState::Foreign;
    }
    match found.token {
        TokenMatch::Unknown | TokenMatch::Differs => SecretState::TokenChanged,
        TokenMatch::OtherData => SecretState::MetadataDrift,
        TokenMatch::Same if found.metadata_matches => SecretState::Current,
        TokenMatch::Same => SecretState::MetadataDrift,
    }
}

#[cfg(test)]
mod tests {
    use super::SecretState::*;
    use super::TokenMatch::*;
    use super::*;

    #[test]
    fn table() {
        let found = |controlled, token, metadata_matches| {
            Some(Found {
                controlled,
                token,
                metadata_matches,
            })
        };
        let cases = [
            (None, Missing),
            // Never someone else's, whatever it holds.
            (found(false, Same, true), Foreign),
            (found(false, Unknown, false), Foreign),
            (found(true, Unknown, true), TokenChanged),
            (found(true, Differs, true), TokenChanged),
            (found(true, Differs, false), TokenChanged),
            (found(true, OtherData, true), MetadataDrift),
            (found(true, Same, false), MetadataDrift),
            (found(true, Same, true), Current),
        ];
        for (i, (found, state)) in cases.into_iter().enumerate() {
            assert_eq!(secret_state(found), state, "case {i}: {found:?}");
        }
    }
}
