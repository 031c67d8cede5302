//! Which AcsIdentities may have waited for one that is leaving: those asking for the ACS
//! identity it held, and, when its connection caps a namespace's share, those of its
//! namespace on the same connection that hold none yet (a place in the share is freed). The
//! cleanup nudges them; a nudge lost to a restart is covered by their periodic look.

use crate::api::ConnectionRef;

/// The AcsIdentity that is leaving.
#[derive(Debug, Clone, Copy)]
pub struct Leaving<'a> {
    pub uid: Option<&'a str>,
    /// The ACS identity it held.
    pub held: Option<&'a str>,
    pub namespace: Option<&'a str>,
    /// The connection whose share it took a place in: the one its identity lives on.
    pub share: &'a ConnectionRef,
    /// That connection caps each namespace's share (`maxIdentitiesPerNamespace`).
    pub capped: bool,
}

/// Another AcsIdentity, as the nudge sees it.
#[derive(Debug, Clone, Copy)]
pub struct Other<'a> {
    pub uid: Option<&'a str>,
    /// `spec.identityId`: the ACS identity it asks to adopt.
    pub adopts: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub connection_ref: &'a ConnectionRef,
    /// Its status records an ACS identity.
    pub holds_one: bool,
}

/// Whether anyone can have waited for `leaving` (so the others need not be looked at).
pub fn may_free_anything(leaving: &Leaving<'_>) -> bool {
    leaving.held.is_some() || leaving.capped
}

/// Whether `other` may have waited for `leaving` to go.
pub fn waited_for(leaving: &Leaving<'_>, other: &Other<'_>) -> bool {
    if other.uid == leaving.uid {
        return false;
    }
    let wants_it = leaving.held.is_some() && other.adopts == leaving.held;
    let same_share = leaving.capped
        && other.namespace == leaving.namespace
        && other.connection_ref == leaving.share
        && !other.holds_one;
    wants_it || same_share
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConnectionKind;

    fn cref(name: &str) -> ConnectionRef {
        ConnectionRef {
            kind: ConnectionKind::ClusterAcsConnection,
            name: name.into(),
        }
    }

    #[test]
    fn table() {
        let (shared, other_conn) = (cref("shared"), cref("other"));
        let leaving = |held: Option<&'static str>, capped: bool| Leaving {
            uid: Some("me"),
            held,
            namespace: Some("team-a"),
            share: &shared,
            capped,
        };
        let other = |uid, adopts, namespace, connection_ref, holds_one| Other {
            uid: Some(uid),
            adopts,
            namespace: Some(namespace),
            connection_ref,
            holds_one,
        };
        let asks = other("o", Some("8:acs:1"), "team-b", &other_conn, false);
        let peer_without = other("o", None, "team-a", &shared, false);
        let peer_with = other("o", None, "team-a", &shared, true);
        let peer_elsewhere = other("o", None, "team-b", &shared, false);
        let peer_other_conn = other("o", None, "team-a", &other_conn, false);
        let myself = other("me", Some("8:acs:1"), "team-a", &shared, false);
        let cases = [
            // (held, capped, other) -> waited
            (Some("8:acs:1"), false, asks, true),
            (Some("8:acs:2"), false, asks, false),
            (None, false, asks, false),
            (None, true, peer_without, true),
            (None, false, peer_without, false),
            (None, true, peer_with, false),
            (None, true, peer_elsewhere, false),
            (None, true, peer_other_conn, false),
            (Some("8:acs:1"), true, myself, false),
        ];
        for (i, (held, capped, other, waited)) in cases.into_iter().enumerate() {
            assert_eq!(
                waited_for(&leaving(held, capped), &other),
                waited,
                "case {i}"
            );
        }
        assert!(!may_free_anything(&leaving(None, false)));
        assert!(may_free_anything(&leaving(Some("8:acs:1"), false)));
        assert!(may_free_anything(&leaving(None, true)));
    }
}
