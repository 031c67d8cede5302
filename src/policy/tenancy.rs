//! Who may hold which ACS identity, and how many a namespace may have through a shared
//! connection. Pure: the controller lists the AcsIdentities from its cache and acts on the
//! answers; [`admit`] is the one gate every reconcile passes, [`release`] the one decision
//! of every deletion.
//!
//! - **One holder per ACS identity on a resource.** An identity is an id on the resource
//!   that issued it ([`super::provenance`]). Among the AcsIdentities that hold it there (in
//!   status, with its home) or ask for it through the same connection (`spec.identityId`),
//!   the rightful holder is, in this order: one that holds it, one that created it rather than
//!   adopted it, the oldest, the smallest uid. Every other one is refused and never told which
//!   object holds it. A claim recorded on another resource (a tenant's own server answering
//!   with someone else's id) claims nothing here, so ids no one holds cannot be squatted from
//!   a fake resource.
//! - **An identity stays home.** A holder whose connection now reaches another resource is
//!   refused (`IdentityOnOtherResource`) when it lives on a shared resource, or goes to a
//!   shared one without the right to adopt there; a move between a namespace's own
//!   connections follows; its deletion goes to its home or nowhere.
//! - **A namespace's share of a shared connection is of the bill.** With a cap, what counts
//!   is every identity the namespace holds that lives on the connection (wherever its
//!   `connectionRef` points now, and while its AcsIdentity is being deleted until its cleanup
//!   is done), then the newcomers asking for one, oldest first: the first `max` are served.
//!   Those that hold keep what they hold when the cap is lowered.

use super::Reason;
use super::provenance::{Here, Home, Via};
use crate::api::DeletionPolicy;
use jiff::Timestamp;

/// One AcsIdentity, as the claim rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimant<'a> {
    pub uid: &'a str,
    pub created_at: Option<Timestamp>,
    /// `status.identityId`: the ACS identity it holds.
    pub holds: Option<&'a str>,
    /// Where that identity lives (`status.provenance`); `None` for a status of the previous
    /// version.
    pub home: Option<Home<'a>>,
    /// `spec.identityId`: the ACS identity it adopts.
    pub adopts: Option<&'a str>,
    /// Its `connectionRef` now.
    pub via: Via<'a>,
    /// Being deleted.
    pub leaving: bool,
}

impl Claimant<'_> {
    /// Whether it claims `id` on the resource `here` reaches: it holds the id there (or holds
    /// it where nobody knows), or, holding nothing of it and staying, asks for it through the
    /// same connection.
    fn claims(&self, id: &str, here: Here<'_>) -> bool {
        if self.holds == Some(id) {
            return self.home.is_none_or(|h| h.endpoint == here.endpoint);
        }
        self.holds.is_none() && self.adopts == Some(id) && self.via == here.via && !self.leaving
    }

    /// Whether it claims `id` here only by asking for it (holding nothing of it): such a
    /// claim counts only where its namespace may adopt, which the caller checks.
    pub fn only_asks(&self, id: &str, here: Here<'_>) -> bool {
        self.holds != Some(id) && self.claims(id, here)
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

    /// Whether it takes a place in the share of connection `on`: it holds an identity that
    /// lives there, or, holding none and staying, asks for one there.
    pub fn counts_on(&self, on: Via<'_>) -> bool {
        match (self.holds, self.home) {
            (Some(_), Some(home)) => home.via == on,
            (Some(_), None) => self.via == on,
            (None, _) => !self.leaving && self.via == on,
        }
    }
}

/// The uid of the rightful holder of `id` on the resource `here` reaches, among `claimants`
/// (those that claim it neither there nor through the same connection are ignored).
pub fn holder_of<'a>(
    id: &str,
    here: Here<'_>,
    claimants: impl IntoIterator<Item = Claimant<'a>>,
) -> Option<&'a str> {
    claimants
        .into_iter()
        .filter(|c| c.claims(id, here))
        .min_by(|a, b| a.rank(id).cmp(&b.rank(id)))
        .map(|c| c.uid)
}

/// Whether `me` is the rightful holder of `id` on the resource `here` reaches, among `others`
/// (which may include an older version of `me`: it is replaced by `me`).
pub fn is_holder<'a>(
    id: &str,
    here: Here<'_>,
    me: Claimant<'a>,
    others: impl IntoIterator<Item = Claimant<'a>>,
) -> bool {
    let others = others.into_iter().filter(|c| c.uid != me.uid);
    holder_of(id, here, others.chain([me])) == Some(me.uid)
}

/// Whether `me` is among the first `max` of its namespace's identities on connection `on`
/// (`peers`: the namespace's AcsIdentities, may include `me`).
pub fn within_share<'a>(
    me: &Claimant<'a>,
    on: Via<'_>,
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
        .filter(|c| c.uid != me.uid && c.counts_on(on) && key(c) < mine)
        .count();
    ahead < max as usize
}

/// What a connection lets the namespace of the AcsIdentity being reconciled do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// May adopt existing identities through it.
    pub may_adopt: bool,
    /// `maxIdentitiesPerNamespace`.
    pub max: Option<u32>,
}

/// What the previous version left in status, for an identity held without a home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Legacy {
    /// Whether the token recorded was issued through the connection reached now (`None`: no
    /// token recorded).
    pub issued_here: Option<bool>,
    /// Whether its id's resource fits here ([`super::provenance::check_created`] does not
    /// find it another endpoint's); who else holds it is the holder rule's to decide.
    pub id_fits_here: bool,
}

/// Why a reconcile may not go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    AdoptionNotAllowed,
    IdentityClaimed,
    LimitReached(u32),
    /// The identity lives on another resource than the connection reaches now.
    OnOtherResource,
    /// Held since the previous version, and where it lives cannot be told.
    ProvenanceUnknown,
    /// `spec.identityId` names another identity than the one held (set after a create): the
    /// one held would be forgotten, so neither is touched.
    HoldsAnother,
}

impl Refusal {
    pub fn reason(self) -> Reason {
        match self {
            Refusal::AdoptionNotAllowed => Reason::AdoptionNotAllowed,
            Refusal::IdentityClaimed => Reason::IdentityClaimed,
            Refusal::LimitReached(_) => Reason::IdentityLimitReached,
            Refusal::OnOtherResource => Reason::IdentityOnOtherResource,
            Refusal::ProvenanceUnknown => Reason::ProvenanceUnknown,
            Refusal::HoldsAnother => Reason::InvalidSpec,
        }
    }
}

/// Whether [`admit`] needs the other AcsIdentities (the cache is not read otherwise: a
/// created identity held at home is renewed without looking at anyone else).
pub fn needs_others(me: &Claimant<'_>, here: Here<'_>, rules: Rules) -> bool {
    me.adopts.is_some()
        || me.home.is_some_and(|h| h.endpoint != here.endpoint)
        || (me.holds.is_some() && me.home.is_none())
        || (me.holds.is_none() && rules.max.is_some())
}

/// The one tenancy gate of a reconcile: whether `me`, whose connection reaches `here` now,
/// may go on, and the home its identity has (or will have once created or adopted here).
/// `others`: every other AcsIdentity that is staying (read only when [`needs_others`]),
/// `peers`: those of its namespace, leaving ones included. `legacy`: for an identity held
/// without a home.
pub fn admit<'a>(
    me: Claimant<'a>,
    here: Here<'a>,
    rules: Rules,
    legacy: Legacy,
    others: &[Claimant<'a>],
    peers: &[Claimant<'a>],
) -> Result<Home<'a>, Refusal> {
    if let (Some(held), Some(asked)) = (me.holds, me.adopts)
        && held != asked
    {
        return Err(Refusal::HoldsAnother);
    }
    let home = match (me.holds, me.home) {
        (Some(id), Some(home)) if home.endpoint != here.endpoint => {
            moved(id, home, me, here, rules, others)?
        }
        (Some(_), Some(home)) => home,
        (Some(_), None) => {
            legacy_home(me, here, legacy, others).ok_or(Refusal::ProvenanceUnknown)?
        }
        (None, _) => here.home(me.adopts.is_some()),
    };
    if let Some(id) = me.adopts {
        if !rules.may_adopt {
            return Err(Refusal::AdoptionNotAllowed);
        }
        if !is_holder(id, here, me, others.iter().copied()) {
            return Err(Refusal::IdentityClaimed);
        }
    }
    if let Some(max) = rules.max
        && !within_share(&me, here.via, peers.iter().copied(), max)
    {
        return Err(Refusal::LimitReached(max));
    }
    Ok(home)
}

/// The home of an identity held at `home` whose connection now reaches another resource
/// (`here`). What lives on a shared resource never leaves it (its bill stays counted); one
/// of a namespace's own connections moves to another of them (the namespace holds both
/// keys: the same as adopting it there) keeping its origin; and moving to a shared
/// connection is an adoption there, with its rules: allowed to adopt, and the rightful holder
/// there.
fn moved<'a>(
    id: &str,
    home: Home<'a>,
    me: Claimant<'a>,
    here: Here<'a>,
    rules: Rules,
    others: &[Claimant<'a>],
) -> Result<Home<'a>, Refusal> {
    if home.via.shared() || (here.via.shared() && !rules.may_adopt) {
        return Err(Refusal::OnOtherResource);
    }
    if !here.via.shared() {
        return Ok(Home {
            adopted: home.adopted,
            ..here.home(false)
        });
    }
    let there = here.home(true);
    let me = Claimant {
        home: Some(there),
        ..me
    };
    if !is_holder(id, here, me, others.iter().copied()) {
        return Err(Refusal::IdentityClaimed);
    }
    Ok(there)
}

/// The home of an identity `me` holds since the previous version (which recorded none):
/// where its connection reaches now (`here`), once, if nothing says otherwise: its last token
/// came through that connection, its id fits that resource, and no other AcsIdentity is the
/// rightful holder there. `None`: where it lives cannot be told.
pub fn legacy_home<'a>(
    me: Claimant<'a>,
    here: Here<'a>,
    legacy: Legacy,
    others: &[Claimant<'a>],
) -> Option<Home<'a>> {
    let id = me.holds?;
    let rightful = is_holder(id, here, me, others.iter().copied());
    if legacy.issued_here == Some(false) || !legacy.id_fits_here || !rightful {
        return None;
    }
    Some(here.home(me.adopts == Some(id)))
}

/// What deleting an AcsIdentity does to the ACS identity it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Revoke its tokens and delete it; `despite` what the object asked, when it asked to keep
    /// an identity it created on the shared bill.
    Delete { despite: Option<Despite> },
    /// Leave it in ACS, for this reason.
    Keep(KeepReason),
}

/// What a deletion asked for and was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Despite {
    Skip,
    Retain,
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
    /// The connection it came through no longer reaches the resource it lives on (or where
    /// it lives is not known): nothing is sent anywhere else.
    Unreachable,
}

/// The facts a release is decided from.
#[derive(Debug, Clone, Copy)]
pub struct Leaving {
    /// Adopted, not created by this object (its home says so).
    pub adopted: bool,
    pub policy: Option<DeletionPolicy>,
    /// Whether this object is the rightful holder ([`holder_of`]).
    pub rightful: bool,
    /// Whether the namespace may adopt through the connection the identity lives on.
    pub may_adopt: bool,
    pub skip: bool,
    /// It lives on a ClusterAcsConnection's resource: the shared bill.
    pub shared: bool,
    /// The connection it came through still reaches the resource it lives on.
    pub reachable: bool,
}

/// The operator deletes only what it created, unless told to delete an adopted identity too,
/// never one another AcsIdentity holds, and never through a connection that reaches another
/// resource. What a namespace created on the shared bill is deleted with its AcsIdentity
/// (skip-cleanup and Retain are not honoured there) unless the namespace may adopt there.
pub fn release(leaving: Leaving) -> Release {
    let policy = leaving.policy.unwrap_or(if leaving.adopted {
        DeletionPolicy::Retain
    } else {
        DeletionPolicy::Delete
    });
    if !leaving.rightful {
        Release::Keep(KeepReason::HeldElsewhere)
    } else if !leaving.reachable {
        Release::Keep(KeepReason::Unreachable)
    } else if leaving.shared && !leaving.adopted && !leaving.may_adopt {
        let despite = if leaving.skip {
            Some(Despite::Skip)
        } else {
            (policy == DeletionPolicy::Retain).then_some(Despite::Retain)
        };
        Release::Delete { despite }
    } else if leaving.skip {
        Release::Keep(KeepReason::Skipped)
    } else if policy == DeletionPolicy::Retain {
        Release::Keep(KeepReason::Retained)
    } else if leaving.adopted && !leaving.may_adopt {
        Release::Keep(KeepReason::AdoptionNotAllowed)
    } else {
        Release::Delete { despite: None }
    }
}

impl KeepReason {
    /// What the Event that says the identity was kept gives as reason, if one is published.
    pub fn event_reason(self) -> Option<Reason> {
        match self {
            KeepReason::HeldElsewhere => Some(Reason::IdentityClaimed),
            KeepReason::AdoptionNotAllowed => Some(Reason::AdoptionNotAllowed),
            KeepReason::Unreachable => Some(Reason::IdentityOnOtherResource),
            KeepReason::Retained | KeepReason::Skipped => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConnectionKind;

    const PLATFORM: &str = "https://platform.communication.azure.com";
    const FAKE: &str = "https://fake.team-b.example";
    const SHARED: Via = Via {
        kind: ConnectionKind::ClusterAcsConnection,
        namespace: "",
        name: "shared",
    };
    const OWN: Via = Via {
        kind: ConnectionKind::AcsConnection,
        namespace: "team-b",
        name: "own",
    };
    const AT_PLATFORM: Here = Here {
        endpoint: PLATFORM,
        via: SHARED,
    };
    const AT_FAKE: Here = Here {
        endpoint: FAKE,
        via: OWN,
    };

    fn at(s: i64) -> Option<Timestamp> {
        Some(Timestamp::from_second(1_800_000_000 + s).unwrap())
    }

    /// A claimant on the shared connection; what it holds lives there.
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
            home: holds.map(|_| AT_PLATFORM.home(adopts.is_some())),
            adopts,
            via: SHARED,
            leaving: false,
        }
    }

    #[test]
    fn the_rightful_holder_of_an_identity() {
        let id = Some("8:acs:r_1");
        let other = Some("8:acs:r_2");
        let faked = Claimant {
            home: Some(AT_FAKE.home(false)),
            via: SHARED,
            ..c("squatter", 0, id, None)
        };
        let asking_elsewhere = Claimant {
            via: OWN,
            ..c("elsewhere", 0, None, id)
        };
        let legacy = Claimant {
            home: None,
            ..c("legacy", 9, id, None)
        };
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
            (
                "a holder on a fake resource claims nothing here",
                vec![faked, c("adopter", 5, None, id)],
                Some("adopter"),
            ),
            (
                "an older adopter through another connection claims nothing here",
                vec![asking_elsewhere, c("adopter", 5, None, id)],
                Some("adopter"),
            ),
            (
                "a holder of the previous version (home unknown) claims it everywhere",
                vec![legacy, c("adopter", 5, None, id)],
                Some("legacy"),
            ),
        ];
        for (what, claimants, want) in cases {
            assert_eq!(
                holder_of("8:acs:r_1", AT_PLATFORM, claimants),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn the_newest_view_of_oneself_decides() {
        let id = Some("8:acs:r_1");
        // The cache still shows me without the identity my last status write recorded.
        let cached = [c("me", 9, None, id), c("older", 1, None, id)];
        let here = AT_PLATFORM;
        assert!(!is_holder("8:acs:r_1", here, c("me", 9, None, id), cached));
        assert!(is_holder("8:acs:r_1", here, c("me", 9, id, id), cached));
    }

    #[test]
    fn a_namespace_share_serves_holders_then_the_oldest() {
        let moved_away = Claimant {
            via: OWN,
            ..c("moved-away", 8, Some("i2"), None)
        };
        let leaving = Claimant {
            leaving: true,
            ..c("leaving", 0, Some("i3"), None)
        };
        let leaving_newcomer = Claimant {
            leaving: true,
            ..c("gone-newcomer", 0, None, None)
        };
        let elsewhere = Claimant {
            home: Some(AT_FAKE.home(false)),
            via: OWN,
            ..c("own-resource", 0, Some("i4"), None)
        };
        let peers = [
            c("holder-new", 9, Some("i1"), None),
            c("old", 1, None, None),
            c("young", 5, None, None),
            moved_away,
            leaving,
            leaving_newcomer,
            elsewhere,
        ];
        // Three holders count on the shared connection: holder-new, moved-away, leaving.
        let cases = [
            (
                "a holder keeps its place however young",
                "holder-new",
                1,
                true,
            ),
            ("the oldest newcomer is next", "old", 4, true),
            (
                "a holder moved away and one being deleted still count",
                "old",
                3,
                false,
            ),
            ("the youngest waits", "young", 4, false),
            ("all served under a large cap", "young", 5, true),
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
            assert_eq!(within_share(mine, SHARED, peers, max), want, "{what}");
        }
    }

    #[test]
    fn the_gate_of_every_reconcile() {
        let id = "8:acs:P_1";
        let fits = Legacy {
            issued_here: Some(true),
            id_fits_here: true,
        };
        let free = Rules {
            may_adopt: false,
            max: None,
        };
        let created_here = c("me", 5, Some(id), None);
        let created_on_fake = Claimant {
            home: Some(AT_FAKE.home(false)),
            ..c("me", 5, Some(id), None)
        };
        let legacy = Claimant {
            home: None,
            ..c("me", 5, Some(id), None)
        };
        let adopter = c("me", 5, None, Some(id));
        let victim = c("victim", 0, Some(id), None);
        type Case<'a> = (
            &'a str,
            Claimant<'a>,
            Here<'a>,
            Rules,
            Legacy,
            Vec<Claimant<'a>>,
            Result<Home<'a>, Refusal>,
        );
        let cases: Vec<Case> = vec![
            (
                "a created identity at home is renewed",
                created_here,
                AT_PLATFORM,
                free,
                fits,
                vec![],
                Ok(AT_PLATFORM.home(false)),
            ),
            (
                "a connection switched to another resource is refused",
                created_on_fake,
                AT_PLATFORM,
                free,
                fits,
                vec![],
                Err(Refusal::OnOtherResource),
            ),
            (
                "moved to the platform where it may adopt: an adoption there",
                created_on_fake,
                AT_PLATFORM,
                Rules {
                    may_adopt: true,
                    ..free
                },
                fits,
                vec![],
                Ok(AT_PLATFORM.home(true)),
            ),
            (
                "... not of an identity another object holds there",
                created_on_fake,
                AT_PLATFORM,
                Rules {
                    may_adopt: true,
                    ..free
                },
                fits,
                vec![victim],
                Err(Refusal::IdentityClaimed),
            ),
            (
                "a namespace's own connection renamed: its own resource, its own key",
                created_on_fake,
                Here {
                    endpoint: "https://renamed.team-b.example",
                    via: OWN,
                },
                free,
                fits,
                vec![],
                Ok(Home {
                    endpoint: "https://renamed.team-b.example",
                    via: OWN,
                    adopted: false,
                }),
            ),
            (
                "what lives on the shared resource never moves away",
                created_here,
                AT_FAKE,
                Rules {
                    may_adopt: true,
                    ..free
                },
                fits,
                vec![],
                Err(Refusal::OnOtherResource),
            ),
            (
                "the same resource through another connection keeps its home",
                created_here,
                Here {
                    endpoint: PLATFORM,
                    via: OWN,
                },
                free,
                fits,
                vec![],
                Ok(AT_PLATFORM.home(false)),
            ),
            (
                "the previous version's identity gets this connection's home once",
                legacy,
                AT_PLATFORM,
                free,
                fits,
                vec![],
                Ok(AT_PLATFORM.home(false)),
            ),
            (
                "... not when its token came through another connection",
                legacy,
                AT_PLATFORM,
                free,
                Legacy {
                    issued_here: Some(false),
                    ..fits
                },
                vec![],
                Err(Refusal::ProvenanceUnknown),
            ),
            (
                "... not when its id is another resource's",
                legacy,
                AT_FAKE,
                free,
                Legacy {
                    id_fits_here: false,
                    ..fits
                },
                vec![],
                Err(Refusal::ProvenanceUnknown),
            ),
            (
                "... not when an older object holds it too",
                legacy,
                AT_PLATFORM,
                free,
                fits,
                vec![victim],
                Err(Refusal::ProvenanceUnknown),
            ),
            (
                "adoption where not allowed",
                adopter,
                AT_PLATFORM,
                free,
                fits,
                vec![],
                Err(Refusal::AdoptionNotAllowed),
            ),
            (
                "adoption of a held identity",
                adopter,
                AT_PLATFORM,
                Rules {
                    may_adopt: true,
                    ..free
                },
                fits,
                vec![victim],
                Err(Refusal::IdentityClaimed),
            ),
            (
                "adoption of a free identity where allowed",
                adopter,
                AT_PLATFORM,
                Rules {
                    may_adopt: true,
                    ..free
                },
                fits,
                vec![],
                Ok(AT_PLATFORM.home(true)),
            ),
            (
                "identityId set after a create names another identity",
                c("me", 5, Some(id), Some("8:acs:P_2")),
                AT_PLATFORM,
                Rules {
                    may_adopt: true,
                    ..free
                },
                fits,
                vec![],
                Err(Refusal::HoldsAnother),
            ),
            (
                "a newcomer over the cap",
                c("me", 5, None, None),
                AT_PLATFORM,
                Rules {
                    max: Some(1),
                    ..free
                },
                fits,
                vec![victim],
                Err(Refusal::LimitReached(1)),
            ),
        ];
        for (what, me, here, rules, legacy, others, want) in cases {
            assert_eq!(
                admit(me, here, rules, legacy, &others, &others),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn only_what_was_created_is_deleted_by_default() {
        use DeletionPolicy::{Delete, Retain};
        let deleted = Release::Delete { despite: None };
        let base = Leaving {
            adopted: false,
            policy: None,
            rightful: true,
            may_adopt: true,
            skip: false,
            shared: false,
            reachable: true,
        };
        let shared = Leaving {
            shared: true,
            may_adopt: false,
            ..base
        };
        let cases = [
            ("created, default", base, deleted),
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
                deleted,
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
            (
                "its connection no longer reaches where it lives",
                Leaving {
                    reachable: false,
                    ..shared
                },
                Release::Keep(KeepReason::Unreachable),
            ),
            ("created on the shared bill", shared, deleted),
            (
                "created on the shared bill, skip annotation",
                Leaving {
                    skip: true,
                    ..shared
                },
                Release::Delete {
                    despite: Some(Despite::Skip),
                },
            ),
            (
                "created on the shared bill, Retain",
                Leaving {
                    policy: Some(Retain),
                    ..shared
                },
                Release::Delete {
                    despite: Some(Despite::Retain),
                },
            ),
            (
                "created on the shared bill by a namespace that may adopt there, Retain",
                Leaving {
                    policy: Some(Retain),
                    may_adopt: true,
                    ..shared
                },
                Release::Keep(KeepReason::Retained),
            ),
            (
                "adopted on the shared resource, default",
                Leaving {
                    adopted: true,
                    ..shared
                },
                Release::Keep(KeepReason::Retained),
            ),
        ];
        for (what, leaving, want) in cases {
            assert_eq!(release(leaving), want, "{what}");
        }
    }
}
