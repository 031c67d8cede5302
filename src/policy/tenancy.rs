//! Who may hold which ACS identity, and how many a namespace may have through a shared
//! connection. Pure: the controller lists the AcsIdentities from its cache and acts on the
//! answers.
//!
//! - **One holder per ACS identity.** An ACS id names its resource, so ids are unique across
//!   resources and the claim is keyed by the id alone. Among the AcsIdentities that hold an id
//!   (in status) or ask for it (`spec.identityId`), the rightful holder is, in this order:
//!   one that holds it, one that created it rather than adopted it, the oldest, the smallest
//!   uid. Every other one is refused and never told which object holds it.
//! - **A namespace's share of a shared connection.** With a cap, the identities that already
//!   hold an ACS identity come first (and keep it even when the cap is lowered below their
//!   count), then the oldest: the first `max` are served.

use super::Reason;
use crate::api::DeletionPolicy;
use jiff::Timestamp;

/// One AcsIdentity, as the claim rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimant<'a> {
    pub uid: &'a str,
    pub created_at: Option<Timestamp>,
    /// `status.identityId`: the ACS identity it holds.
    pub holds: Option<&'a str>,
    /// `spec.identityId`: the ACS identity it adopts.
    pub adopts: Option<&'a str>,
}

impl Claimant<'_> {
    fn claims(&self, id: &str) -> bool {
        self.holds == Some(id) || self.adopts == Some(id)
    }

    /// Smaller ranks first.
    fn rank(&self, id: &str) -> (bool, bool, Option<Timestamp>, &str) {
        (
            self.holds != Some(id),
            self.adopts.is_some(),
            self.created_at,
            self.uid,
        )
    }
}

/// The uid of the rightful holder of `id` among `claimants` (those that claim it neither in
/// status nor in spec are ignored).
pub fn holder_of<'a>(
    id: &str,
    claimants: impl IntoIterator<Item = Claimant<'a>>,
) -> Option<&'a str> {
    claimants
        .into_iter()
        .filter(|c| c.claims(id))
        .min_by(|a, b| a.rank(id).cmp(&b.rank(id)))
        .map(|c| c.uid)
}

/// Whether `me` is the rightful holder of `id`, among `others` (which may include an older
/// version of `me`: it is replaced by `me`).
pub fn is_holder<'a>(
    id: &str,
    me: Claimant<'a>,
    others: impl IntoIterator<Item = Claimant<'a>>,
) -> bool {
    let others = others.into_iter().filter(|c| c.uid != me.uid);
    holder_of(id, others.chain([me])) == Some(me.uid)
}

/// Whether `me` is among the first `max` of its namespace's identities on one connection
/// (`peers` may include `me`).
pub fn within_share<'a>(
    me: &Claimant<'a>,
    peers: impl IntoIterator<Item = Claimant<'a>>,
    max: u32,
) -> bool {
    if me.holds.is_some() {
        // A cap lowered later stops new identities; it never takes one away.
        return true;
    }
    let key = |c: &Claimant<'a>| (c.holds.is_none(), c.created_at, c.uid);
    let mine = key(me);
    let ahead = peers
        .into_iter()
        .filter(|c| c.uid != me.uid && key(c) < mine)
        .count();
    ahead < max as usize
}

/// What deleting an AcsIdentity does to the ACS identity it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Revoke its tokens and delete it.
    Delete,
    /// Leave it in ACS, for this reason.
    Keep(KeepReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepReason {
    /// `deletionPolicy: Retain`, or an adopted identity without `deletionPolicy: Delete`.
    Retained,
    /// Another AcsIdentity is the rightful holder.
    HeldElsewhere,
    /// Adopted through a connection that no longer allows this namespace to adopt.
    AdoptionNotAllowed,
    /// The cleanup-skip annotation.
    Skipped,
}

/// The facts a release is decided from.
#[derive(Debug, Clone, Copy)]
pub struct Leaving {
    /// `spec.identityId` names the identity held: it was adopted, not created.
    pub adopted: bool,
    pub policy: Option<DeletionPolicy>,
    /// Whether this object is the rightful holder ([`holder_of`]).
    pub rightful: bool,
    pub may_adopt: bool,
    pub skip: bool,
}

/// The operator deletes only what it created, unless told to delete an adopted identity too,
/// and never one another AcsIdentity holds.
pub fn release(leaving: Leaving) -> Release {
    let policy = leaving.policy.unwrap_or(if leaving.adopted {
        DeletionPolicy::Retain
    } else {
        DeletionPolicy::Delete
    });
    if leaving.skip {
        Release::Keep(KeepReason::Skipped)
    } else if !leaving.rightful {
        Release::Keep(KeepReason::HeldElsewhere)
    } else if policy == DeletionPolicy::Retain {
        Release::Keep(KeepReason::Retained)
    } else if leaving.adopted && !leaving.may_adopt {
        Release::Keep(KeepReason::AdoptionNotAllowed)
    } else {
        Release::Delete
    }
}

impl KeepReason {
    /// What the Event that says the identity was kept gives as reason, if one is published.
    pub fn event_reason(self) -> Option<Reason> {
        match self {
            KeepReason::HeldElsewhere => Some(Reason::IdentityClaimed),
            KeepReason::AdoptionNotAllowed => Some(Reason::AdoptionNotAllowed),
            KeepReason::Retained | KeepReason::Skipped => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Option<Timestamp> {
        Some(Timestamp::from_second(1_800_000_000 + s).unwrap())
    }

    fn c<'a>(
        uid: &'a str,
        created: i64,
        holds: Option<&'a str>,
        adopts: Option<&'a str>,
    ) -> Claimant<'a> {
        Claimant {
            uid,
            created_at: at(created),
            holds,
            adopts,
        }
    }

    #[test]
    fn the_rightful_holder_of_an_identity() {
        let id = Some("8:acs:r_1");
        let other = Some("8:acs:r_2");
        let cases: Vec<(&str, Vec<Claimant>, Option<&str>)> = vec![
            ("nobody claims it", vec![c("a", 0, other, None)], None),
            (
                "the creator keeps it against a later adopter",
                vec![c("victim", 0, id, None), c("thief", 5, None, id)],
                Some("victim"),
            ),
            (
                "an adopter that holds it is not displaced by an older adopter",
                vec![c("new", 9, id, id), c("old", 1, None, id)],
                Some("new"),
            ),
            (
                "two holders (written by an older version): the creator wins",
                vec![c("thief", 0, id, id), c("victim", 5, id, None)],
                Some("victim"),
            ),
            (
                "two adopters asking at once: the oldest",
                vec![c("b", 2, None, id), c("a", 1, None, id)],
                Some("a"),
            ),
            (
                "same age: the smaller uid",
                vec![c("y", 1, None, id), c("x", 1, None, id)],
                Some("x"),
            ),
        ];
        for (what, claimants, want) in cases {
            assert_eq!(holder_of("8:acs:r_1", claimants), want, "{what}");
        }
    }

    #[test]
    fn the_newest_view_of_oneself_decides() {
        let id = Some("8:acs:r_1");
        // The cache still shows me without the identity my last status write recorded.
        let cached = [c("me", 9, None, id), c("older", 1, None, id)];
        assert!(!is_holder("8:acs:r_1", c("me", 9, None, id), cached));
        assert!(is_holder("8:acs:r_1", c("me", 9, id, id), cached));
    }

    #[test]
    fn a_namespace_share_serves_holders_then_the_oldest() {
        let peers = [
            c("holder-new", 9, Some("i1"), None),
            c("old", 1, None, None),
            c("young", 5, None, None),
        ];
        let cases = [
            (
                "a holder keeps its place however young",
                "holder-new",
                1,
                true,
            ),
            ("the oldest newcomer is next", "old", 2, true),
            ("the oldest newcomer waits at the cap", "old", 1, false),
            ("the youngest waits", "young", 2, false),
            ("all served under a large cap", "young", 3, true),
            (
                "a holder keeps its identity over a lowered cap",
                "holder-new",
                0,
                true,
            ),
            ("a cap of zero serves no newcomer", "old", 0, false),
        ];
        for (what, me, max, want) in cases {
            let mine = peers.iter().find(|p| p.uid == me).unwrap();
            assert_eq!(within_share(mine, peers, max), want, "{what}");
        }
    }

    #[test]
    fn only_what_was_created_is_deleted_by_default() {
        use DeletionPolicy::{Delete, Retain};
        let base = Leaving {
            adopted: false,
            policy: None,
            rightful: true,
            may_adopt: true,
            skip: false,
        };
        let cases = [
            ("created, default", base, Release::Delete),
            (
                "created, Retain",
                Leaving {
                    policy: Some(Retain),
                    ..base
                },
                Release::Keep(KeepReason::Retained),
            ),
            (
                "adopted, default",
                Leaving {
                    adopted: true,
                    ..base
                },
                Release::Keep(KeepReason::Retained),
            ),
            (
                "adopted, Delete asked for",
                Leaving {
                    adopted: true,
                    policy: Some(Delete),
                    ..base
                },
                Release::Delete,
            ),
            (
                "adopted, Delete, adoption no longer allowed",
                Leaving {
                    adopted: true,
                    policy: Some(Delete),
                    may_adopt: false,
                    ..base
                },
                Release::Keep(KeepReason::AdoptionNotAllowed),
            ),
            (
                "another AcsIdentity holds it",
                Leaving {
                    adopted: true,
                    policy: Some(Delete),
                    rightful: false,
                    ..base
                },
                Release::Keep(KeepReason::HeldElsewhere),
            ),
            (
                "skip annotation",
                Leaving { skip: true, ..base },
                Release::Keep(KeepReason::Skipped),
            ),
        ];
        for (what, leaving, want) in cases {
            assert_eq!(release(leaving), want, "{what}");
        }
    }
}
