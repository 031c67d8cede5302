//! Counts kept beside the identity cache, so that a create's check of its answer
//! ([`provenance::check_answer`]) does not walk every identity: at 10,000 identities that walk
//! was about a third of a create's CPU, and it grows with the count. Kept: how many cached
//! identities hold each id (by a hash of the id), and each (endpoint, resource) pair the shared
//! connections taught ([`provenance::shared_home`]), with how many identities teach it. Fed by
//! the cache's own changes ([`crate::controller::cache::reflect_in_place`]).

use super::observe;
use crate::api::AcsIdentity;
use crate::controller::cache::Follower;
use crate::policy::provenance;
use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, RwLock};

/// (endpoint, resource) taught through a shared connection.
pub type SharedHome = (Box<str>, Box<str>);

#[derive(Debug, Default)]
pub struct ProvenanceIndex {
    counts: RwLock<Counts>,
    hasher: RandomState,
}

#[derive(Debug, Default)]
struct Counts {
    /// Identities that hold an id, by a hash of it: a collision (random seed per process)
    /// only sends the check to the cache, never past a holder.
    held: HashMap<u64, u32>,
    shared: HashMap<SharedHome, u32>,
}

impl ProvenanceIndex {
    /// Whether some cached identity may hold `id` (then the cache says which).
    pub fn may_be_held(&self, id: &str) -> bool {
        let counts = self.counts.read().expect("provenance index lock");
        counts.held.contains_key(&self.hasher.hash_one(id))
    }

    /// [`provenance::check_created`]'s answer for `id`, answered to a create `here`, from the
    /// counts: `own` is the creating identity as cached (what it taught itself is no
    /// conflict), and `another_holds` looks in the cache for another identity holding `id`
    /// here, asked only when the counts say there may be one.
    pub fn check(
        &self,
        id: &str,
        here: provenance::Here<'_>,
        own: Option<&AcsIdentity>,
        another_holds: impl FnOnce() -> bool,
    ) -> Result<(), provenance::NotNew> {
        let held = self.may_be_held(id) && another_holds();
        let own = own.and_then(observe::recorded);
        let own = own.as_ref().and_then(provenance::shared_home);
        let counts = self.counts.read().expect("provenance index lock");
        // A pair only this identity teaches is taught by no other.
        let shared = counts
            .shared
            .iter()
            .map(|((endpoint, resource), n)| ((&**endpoint, &**resource), *n))
            .filter(|(pair, n)| *n > u32::from(own == Some(*pair)))
            .map(|(pair, _)| pair);
        provenance::check_answer(id, here, held, shared)
    }

    fn count(&self, obj: &AcsIdentity, entering: bool) {
        let Some(r) = observe::recorded(obj) else {
            return;
        };
        let mut counts = self.counts.write().expect("provenance index lock");
        bump(counts.held.entry(self.hasher.hash_one(r.id)), entering);
        if let Some((endpoint, resource)) = provenance::shared_home(&r) {
            bump(
                counts.shared.entry((endpoint.into(), resource.into())),
                entering,
            );
        }
    }
}

fn bump<K: Hash + Eq>(entry: Entry<'_, K, u32>, up: bool) {
    match (entry, up) {
        (Entry::Occupied(mut e), true) => *e.get_mut() += 1,
        (Entry::Vacant(e), true) => {
            e.insert(1);
        }
        (Entry::Occupied(e), false) if *e.get() <= 1 => {
            e.remove();
        }
        (Entry::Occupied(mut e), false) => *e.get_mut() -= 1,
        // Leaving without having entered cannot happen; nothing to take back.
        (Entry::Vacant(_), false) => {}
    }
}

impl Follower<AcsIdentity> for Arc<ProvenanceIndex> {
    fn clear(&mut self) {
        *self.counts.write().expect("provenance index lock") = Counts::default();
    }

    fn entered(&mut self, obj: &AcsIdentity) {
        self.count(obj, true);
    }

    fn left(&mut self, obj: &AcsIdentity) {
        self.count(obj, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::provenance::{Here, Via, check_created};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const ENDPOINTS: [&str; 2] = ["https://p.communication.azure.com", "https://fake.example"];
    const IDS: [&str; 5] = ["8:acs:P_1", "8:acs:P_2", "8:acs:Q_1", "8:acs:Q_2", "junk"];

    /// An AcsIdentity `n` of namespace `ns`, holding `id` with a home at `endpoint` through a
    /// shared or an own connection (or no home: the previous version's records).
    fn identity(n: usize, id: Option<&str>, home: Option<(&str, bool)>) -> AcsIdentity {
        let provenance = home.map(|(endpoint, shared)| {
            let kind = if shared {
                "ClusterAcsConnection"
            } else {
                "AcsConnection"
            };
            serde_json::json!({"endpoint": endpoint, "origin": "Created",
                "connectionRef": {"kind": kind, "name": "c"}})
        });
        serde_json::from_value(serde_json::json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
            "metadata": {"name": format!("i{n}"), "namespace": format!("ns{}", n % 3),
                         "uid": format!("u{n}")},
            "spec": {"connectionRef": {"name": "c"}, "scopes": ["chat"]},
            "status": {"identityId": id, "provenance": provenance},
        }))
        .unwrap()
    }

    fn random_identity(rng: &mut StdRng, n: usize) -> AcsIdentity {
        let id = rng
            .random_bool(0.9)
            .then(|| IDS[rng.random_range(0..IDS.len())]);
        let home = rng.random_bool(0.8).then(|| {
            (
                ENDPOINTS[rng.random_range(0..ENDPOINTS.len())],
                rng.random_bool(0.5),
            )
        });
        identity(n, id, home)
    }

    /// The index, fed the cache's changes in any order, answers every create's check as the
    /// walk over the cache does: entries, replacements, departures and clears, at random.
    #[test]
    fn the_counts_answer_as_the_walk_over_the_cache() {
        let mut rng = StdRng::seed_from_u64(21);
        let mut index = Arc::new(ProvenanceIndex::default());
        let mut cache: HashMap<usize, AcsIdentity> = HashMap::new();
        for step in 0..4000 {
            let n = rng.random_range(0..12);
            match rng.random_range(0..10) {
                0..6 => {
                    let new = random_identity(&mut rng, n);
                    if let Some(old) = cache.insert(n, new.clone()) {
                        index.left(&old);
                    }
                    index.entered(&new);
                }
                6..9 => {
                    if let Some(old) = cache.remove(&n) {
                        index.left(&old);
                    }
                }
                _ => {
                    index.clear();
                    cache.clear();
                }
            }
            // A create by identity `me` (cached or not) answered `id` at `here`.
            let me = rng.random_range(0..14);
            let id = IDS[rng.random_range(0..IDS.len())];
            let here = Here {
                endpoint: ENDPOINTS[rng.random_range(0..ENDPOINTS.len())],
                via: Via {
                    kind: crate::api::ConnectionKind::ClusterAcsConnection,
                    namespace: "",
                    name: "c",
                },
            };
            let uid = format!("u{me}");
            let walk = check_created(id, here, &uid, cache.values().filter_map(observe::recorded));

            let counted = index.check(id, here, cache.get(&me), || {
                cache
                    .values()
                    .filter_map(observe::recorded)
                    .any(|r| r.uid != uid && provenance::holds_here(&r, id, here))
            });
            assert_eq!(counted, walk, "step {step}: {id} at {}", here.endpoint);
        }
    }
}
