//! A seeded random walk of a hostile tenant's actions against the operator's tenancy
//! decisions ([`super::tenancy::admit`], [`super::provenance::check_created`],
//! [`super::tenancy::release`]), with a model of the platform's ACS resource and of the fake
//! ACS server team-b runs. After every step:
//!
//! - **Provenance**: team-b never issues a token for, revokes or deletes an identity on the
//!   platform resource unless its object created it there, or adopted it there where adoption
//!   is allowed; team-a's identity is never touched by team-b, and team-a is never refused.
//! - **No squatting**: an id of the platform's resource is never held against the platform by
//!   a team-b object whose claim lives elsewhere.
//! - **The bill**: without adoption rights, team-b's live identities on the platform resource
//!   are at most `maxIdentitiesPerNamespace`, besides those a tenant orphaned by removing the
//!   finalizer of an object being deleted (out of the operator's reach, SECURITY.md).

use super::provenance::{Here, Home, Recorded, Via, check_created};
use super::tenancy::{self, Claimant, Leaving, Legacy, Release, Rules, admit, holder_of};
use crate::api::{ConnectionKind, DeletionPolicy};
use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};

const PLATFORM: &str = "https://platform.communication.azure.com";
const FAKE: &str = "https://acs.team-b.example";
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
const ALICE: &str = "8:acs:P_alice";
/// An identity of the platform's resource that no AcsIdentity holds.
const FREE: &str = "8:acs:P_free";
const CAP: u32 = 2;
const SLOTS: usize = 4;

#[derive(Debug, Clone)]
struct Obj {
    namespace: &'static str,
    uid: String,
    created: i64,
    via: Via<'static>,
    adopts: Option<String>,
    policy: Option<DeletionPolicy>,
    skip: bool,
    refresh: bool,
    revoke: bool,
    holds: Option<String>,
    home: Option<Home<'static>>,
    finalizer: bool,
    leaving: bool,
    /// Cleanup done; the cache still shows it until it forgets it.
    released: bool,
}

impl Obj {
    fn claimant(&self) -> Claimant<'_> {
        Claimant {
            uid: &self.uid,
            created_at: Some(Timestamp::from_second(1_800_000_000 + self.created).unwrap()),
            holds: if self.leaving && self.released {
                None
            } else {
                self.holds.as_deref()
            },
            home: self.home,
            adopts: self.adopts.as_deref(),
            via: self.via,
            leaving: self.leaving,
        }
    }

    fn recorded(&self) -> Option<Recorded<'_>> {
        Some(Recorded {
            uid: &self.uid,
            namespace: self.namespace,
            id: self.holds.as_deref()?,
            home: self.home,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Issue,
    Revoke,
    Delete,
}

struct PlatformId {
    /// The uid of the object whose create made it (`None`: made outside the operator).
    creator: Option<String>,
    deleted: bool,
}

struct World {
    rng: StdRng,
    adoption_allowed: bool,
    alice: Obj,
    team_b: Vec<Option<Obj>>,
    platform: HashMap<String, PlatformId>,
    next: u64,
    clock: i64,
    /// Where team-b's own connection reaches (its Secret is team-b's to edit).
    own_endpoint: &'static str,
    own_exists: bool,
    /// What team-b's server answers to a create.
    fake_answer: usize,
    outage: bool,
    /// Platform identities left behind by removing the finalizer of a deletion.
    orphaned: HashSet<String>,
    /// Platform identities team-b's objects adopted where adoption was allowed.
    adopted_by_b: HashSet<String>,
    steps: u64,
}

impl World {
    fn new(seed: u64, adoption_allowed: bool) -> Self {
        let mut platform = HashMap::new();
        for id in [ALICE, FREE] {
            let creator = (id == ALICE).then(|| "alice".to_string());
            platform.insert(
                id.to_string(),
                PlatformId {
                    creator,
                    deleted: false,
                },
            );
        }
        let alice = Obj {
            namespace: "team-a",
            uid: "alice".into(),
            created: 0,
            via: SHARED,
            adopts: None,
            policy: None,
            skip: false,
            refresh: false,
            revoke: false,
            holds: Some(ALICE.into()),
            home: Some(Home {
                endpoint: PLATFORM,
                via: SHARED,
                adopted: false,
            }),
            finalizer: true,
            leaving: false,
            released: false,
        };
        Self {
            rng: StdRng::seed_from_u64(seed),
            adoption_allowed,
            alice,
            team_b: vec![None; SLOTS],
            platform,
            next: 0,
            clock: 1,
            own_endpoint: FAKE,
            own_exists: true,
            fake_answer: 0,
            outage: false,
            orphaned: HashSet::new(),
            adopted_by_b: HashSet::new(),
            steps: 0,
        }
    }

    fn fresh(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn endpoint_of(&self, via: Via<'_>) -> &'static str {
        if via == SHARED {
            PLATFORM
        } else {
            self.own_endpoint
        }
    }

    fn all(&self) -> Vec<&Obj> {
        std::iter::once(&self.alice)
            .chain(self.team_b.iter().flatten())
            .collect()
    }

    fn rules(&self, o: &Obj, via: Via<'_>) -> Rules {
        Rules {
            may_adopt: via == OWN || (o.namespace == "team-b" && self.adoption_allowed),
            max: via.shared().then_some(CAP),
        }
    }

    /// Whether `x`'s claim counts against `o` adopting here (the controller's filter: one that
    /// only asks counts where its namespace may adopt).
    fn may_claim(&self, x: &Obj, o: &Obj, here: Here<'_>) -> bool {
        let Some(id) = o.adopts.as_deref() else {
            return true;
        };
        !x.claimant().only_asks(id, here)
            || x.namespace == o.namespace
            || self.rules(x, here.via).may_adopt
    }

    /// An ACS call (issue, revoke or delete of `id`) by `actor` at `endpoint` through `via`;
    /// checks the provenance invariant for every call that reaches the platform's resource.
    fn call(&mut self, call: Call, endpoint: &str, via: Via<'_>, id: &str, actor: &Obj) -> bool {
        if endpoint == FAKE {
            return true;
        }
        if via == OWN || self.outage {
            // team-b holds no key of the platform's resource; or ACS is down.
            return false;
        }
        if actor.namespace == "team-b" {
            let created = self
                .platform
                .get(id)
                .is_some_and(|p| p.creator.as_deref() == Some(actor.uid.as_str()));
            let adopted_here = self.adoption_allowed
                && actor
                    .home
                    .is_some_and(|h| h.adopted && h.endpoint == PLATFORM);
            assert!(
                id != ALICE && (created || adopted_here),
                "step {}: team-b's {} sent {call:?} for {id} to the platform: {actor:?}",
                self.steps,
                actor.uid
            );
            if adopted_here {
                self.adopted_by_b.insert(id.to_string());
            }
        }
        match self.platform.get_mut(id) {
            Some(p) if !p.deleted => {
                if call == Call::Delete {
                    p.deleted = true;
                }
                true
            }
            _ => false,
        }
    }

    /// What a create sent to `endpoint` answers.
    fn create_at(&mut self, endpoint: &str, via: Via<'_>, uid: &str) -> Option<String> {
        if endpoint == PLATFORM {
            if via == OWN || self.outage {
                return None;
            }
            let id = format!("8:acs:P_{}", self.fresh());
            self.platform.insert(
                id.clone(),
                PlatformId {
                    creator: Some(uid.to_string()),
                    deleted: false,
                },
            );
            return Some(id);
        }
        let n = self.fresh();
        Some(match self.fake_answer {
            0 => ALICE.to_string(),
            1 => FREE.to_string(),
            2 => format!("8:acs:P_{n}"),
            3 => "alice".to_string(),
            _ => format!("8:acs:B_{n}"),
        })
    }

    /// The reconcile of a staying object: the gate, then create, adopt or issue.
    fn apply(&mut self, mut o: Obj) -> Obj {
        o.finalizer = true;
        let here = Here {
            endpoint: self.endpoint_of(o.via),
            via: o.via,
        };
        let rules = self.rules(&o, o.via);
        let legacy = Legacy {
            issued_here: None,
            id_fits_here: true,
        };
        let decision = {
            let all = self.all();
            let others: Vec<_> = all
                .iter()
                .filter(|x| !x.leaving && x.uid != o.uid)
                .filter(|x| self.may_claim(x, &o, here))
                .map(|x| x.claimant())
                .collect();
            let peers: Vec<_> = all
                .iter()
                .filter(|x| x.namespace == o.namespace && x.uid != o.uid)
                .map(|x| x.claimant())
                .collect();
            // The home admitted: the one recorded, or here's (new, or moved here).
            admit(o.claimant(), here, rules, legacy, &others, &peers)
                .map(|h| (h.endpoint == here.endpoint, h.via == here.via, h.adopted))
        };
        let home = match decision {
            Ok((at_here, via_here, adopted)) => {
                let old = o.home.unwrap_or(here.home(adopted));
                Home {
                    endpoint: if at_here { here.endpoint } else { old.endpoint },
                    via: if via_here { here.via } else { old.via },
                    adopted,
                }
            }
            Err(refusal) => {
                assert_ne!(
                    o.uid, "alice",
                    "step {}: team-a refused: {refusal:?}",
                    self.steps
                );
                return o;
            }
        };
        match (o.holds.clone(), o.adopts.clone()) {
            (None, Some(id)) => {
                // The adoption's first token, by the object the gate admitted to adopt here.
                let adopting = Obj {
                    home: Some(home),
                    ..o.clone()
                };
                if self.call(Call::Issue, here.endpoint, here.via, &id, &adopting) {
                    o.holds = Some(id);
                    o.home = Some(home);
                }
            }
            (None, None) => {
                let Some(id) = self.create_at(here.endpoint, here.via, &o.uid.clone()) else {
                    return o;
                };
                let accepted = {
                    let all = self.all();
                    let recorded = all.iter().filter_map(|x| x.recorded());
                    check_created(&id, here, &o.uid, recorded).is_ok()
                };
                if accepted {
                    o.holds = Some(id);
                    o.home = Some(home);
                }
            }
            (Some(id), _) => {
                // Calls go out for the home admitted (moved here as an adoption, if so).
                o.home = Some(home);
                if o.revoke && self.call(Call::Revoke, here.endpoint, here.via, &id, &o) {
                    o.revoke = false;
                }
                if self.call(Call::Issue, here.endpoint, here.via, &id, &o) {
                    o.refresh = false;
                }
            }
        }
        o
    }

    /// The cleanup of an object being deleted.
    fn cleanup(&mut self, mut o: Obj) -> Obj {
        let Some(id) = o.holds.clone().filter(|_| !o.released) else {
            o.released = true;
            return o;
        };
        let home = o
            .home
            .expect("the model records a home with every identity");
        let reaches = self.endpoint_of(home.via);
        let reachable = (home.via != OWN || self.own_exists) && reaches == home.endpoint;
        let rightful = {
            let all = self.all();
            let here = Here {
                endpoint: home.endpoint,
                via: home.via,
            };
            tenancy::is_holder(&id, here, o.claimant(), all.iter().map(|x| x.claimant()))
        };
        let release = tenancy::release(Leaving {
            adopted: home.adopted,
            policy: o.policy,
            rightful,
            may_adopt: self.rules(&o, home.via).may_adopt,
            skip: o.skip,
            shared: home.via.shared(),
            reachable,
        });
        if let Release::Delete { .. } = release {
            self.call(Call::Revoke, home.endpoint, home.via, &id, &o);
            self.call(Call::Delete, home.endpoint, home.via, &id, &o);
            let gone = self.platform.get(&id).is_none_or(|p| p.deleted);
            if home.endpoint == PLATFORM && !gone {
                // A failure: the finalizer stays, cleanup runs again.
                return o;
            }
        }
        o.released = true;
        o
    }

    fn step(&mut self) {
        self.steps += 1;
        self.clock += 1;
        let slot = self.rng.random_range(0..SLOTS);
        let action = self.rng.random_range(0..16);
        let exists = self.team_b[slot].is_some();
        match action {
            0 if !exists => {
                let via = if self.rng.random_bool(0.5) {
                    SHARED
                } else {
                    OWN
                };
                let adopts = match self.rng.random_range(0..4) {
                    0 => Some(ALICE.to_string()),
                    1 => Some(FREE.to_string()),
                    _ => None,
                };
                let uid = format!("b{}", self.fresh());
                self.team_b[slot] = Some(Obj {
                    namespace: "team-b",
                    uid,
                    created: self.clock,
                    via,
                    adopts,
                    policy: None,
                    skip: false,
                    refresh: false,
                    revoke: false,
                    holds: None,
                    home: None,
                    finalizer: false,
                    leaving: false,
                    released: false,
                });
            }
            1 => self.edit(slot, |o, _| {
                o.via = if o.via == SHARED { OWN } else { SHARED };
            }),
            2 => self.edit(slot, |o, r| {
                o.policy = match r.random_range(0..3) {
                    0 => None,
                    1 => Some(DeletionPolicy::Retain),
                    _ => Some(DeletionPolicy::Delete),
                }
            }),
            3 => self.edit(slot, |o, _| o.skip = !o.skip),
            4 => self.edit(slot, |o, _| o.refresh = true),
            5 => self.edit(slot, |o, _| o.revoke = true),
            // identityId may be set once, never changed.
            6 => self.edit(slot, |o, r| {
                if o.adopts.is_none() {
                    o.adopts = Some(if r.random_bool(0.5) { ALICE } else { FREE }.to_string());
                }
            }),
            7 => self.delete(slot),
            8 => self.remove_finalizer(slot),
            9 => {
                self.own_endpoint = if self.own_endpoint == FAKE {
                    PLATFORM
                } else {
                    FAKE
                }
            }
            10 => self.own_exists = !self.own_exists,
            11 => self.fake_answer = self.rng.random_range(0..5),
            12 => self.outage = self.rng.random_bool(0.3),
            13 => {
                // The cache forgets an object whose finalizer is gone.
                if self.team_b[slot]
                    .as_ref()
                    .is_some_and(|o| o.leaving && o.released)
                {
                    self.team_b[slot] = None;
                }
            }
            _ => self.reconcile(slot),
        }
        self.check();
    }

    fn edit(&mut self, slot: usize, f: impl FnOnce(&mut Obj, &mut StdRng)) {
        if let Some(o) = self.team_b[slot].as_mut().filter(|o| !o.leaving) {
            f(o, &mut self.rng);
        }
    }

    fn remove_finalizer(&mut self, slot: usize) {
        let Some(o) = self.team_b[slot].as_mut() else {
            return;
        };
        o.finalizer = false;
        if o.leaving {
            self.gone_without_cleanup(slot);
        }
    }

    fn delete(&mut self, slot: usize) {
        let Some(o) = self.team_b[slot].as_mut() else {
            return;
        };
        o.leaving = true;
        if !o.finalizer {
            self.gone_without_cleanup(slot);
        }
    }

    /// Deleted without its cleanup (the tenant removed the finalizer): what it held stays in
    /// ACS, out of the operator's reach.
    fn gone_without_cleanup(&mut self, slot: usize) {
        if let Some(o) = self.team_b[slot].take()
            && let Some(id) = o.holds.filter(|_| !o.released)
        {
            self.orphaned.insert(id);
        }
    }

    fn reconcile(&mut self, slot: usize) {
        if self.rng.random_bool(0.2) {
            let alice = self.alice.clone();
            self.alice = self.apply(alice);
            return;
        }
        let Some(o) = self.team_b[slot].take() else {
            return;
        };
        let o = match (o.leaving, o.finalizer) {
            (false, _) => self.apply(o),
            (true, false) => return,
            (true, true) => self.cleanup(o),
        };
        self.team_b[slot] = Some(o);
    }

    fn check(&self) {
        let steps = self.steps;
        assert_eq!(self.alice.holds.as_deref(), Some(ALICE), "step {steps}");
        assert!(
            !self.platform[ALICE].deleted,
            "step {steps}: alice's identity deleted"
        );
        // No team-b object holds an id of the platform against the platform from elsewhere.
        let all = self.all();
        let at_platform = Here {
            endpoint: PLATFORM,
            via: SHARED,
        };
        for id in self.platform.keys() {
            // As a platform adopter of `id` (another namespace) would see the claims.
            let asker = Obj {
                namespace: "platform",
                uid: "asker".into(),
                adopts: Some(id.clone()),
                ..self.alice.clone()
            };
            let claims = all
                .iter()
                .filter(|o| !o.leaving && self.may_claim(o, &asker, at_platform));
            let holder = holder_of(id, at_platform, claims.map(|o| o.claimant()));
            if let Some(b) = self
                .team_b
                .iter()
                .flatten()
                .find(|o| Some(o.uid.as_str()) == holder)
            {
                let home_here = b.home.is_some_and(|h| h.endpoint == PLATFORM);
                let asking_here = b.holds.is_none() && b.via == SHARED && self.adoption_allowed;
                assert!(
                    home_here || asking_here,
                    "step {steps}: {id} held against the platform by {b:?}"
                );
            }
        }
        if !self.adoption_allowed {
            let live: Vec<_> = self
                .platform
                .iter()
                .filter(|(id, p)| {
                    !p.deleted
                        && p.creator.as_deref().is_some_and(|c| c.starts_with('b'))
                        && !self.orphaned.contains(*id)
                })
                .map(|(id, _)| id)
                .collect();
            assert!(
                live.len() <= CAP as usize,
                "step {steps}: team-b has {} live identities on the platform: {live:?}; {:#?}",
                live.len(),
                self.team_b
            );
        }
    }
}

const STEPS: u64 = 5_000;
const SEEDS: u64 = 8;

#[test]
fn a_tenant_never_touches_what_it_may_not() {
    let mut total = 0;
    for adoption_allowed in [false, true] {
        for seed in 0..SEEDS {
            let mut world = World::new(seed, adoption_allowed);
            for _ in 0..STEPS {
                world.step();
            }
            total += world.steps;
            // The walk reaches the states that matter.
            let created_by_b = world
                .platform
                .values()
                .filter(|p| p.creator.as_deref().is_some_and(|c| c.starts_with('b')))
                .count();
            assert!(
                created_by_b > 0,
                "seed {seed}: team-b never created on the platform"
            );
        }
    }
    assert_eq!(total, 2 * SEEDS * STEPS);
    // `cargo test --lib tenancy_walk -- --nocapture` shows the step count.
    println!("tenancy walk: {total} steps");
}
