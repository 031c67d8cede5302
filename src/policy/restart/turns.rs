//! Whose restart goes next when the cluster-wide rate holds several back.
//!
//! - A restart that follows a revoke goes before any renewal: the old token no longer works,
//!   while a renewal's old token still does until it expires.
//! - Within each of the two lanes, turns go by start-time fair queuing between namespaces:
//!   each restart gets a tag, the later of the tag last served and its namespace's next
//!   (one past its previous restart's), and the smallest tag goes first (first come first
//!   served among equal tags). A namespace's backlog takes consecutive tags, so another
//!   namespace's restart waits behind at most two of them however long it is; a namespace
//!   that was idle gets no credit for it.
//!
//! Pure bookkeeping: the restart controller pushes the restarts that are due and pops one
//! each time the rate allows a start.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::Hash;

/// Why a restart is wanted; it decides the restart's lane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The identity's tokens were revoked: the workload holds a token that no longer works.
    Revoke,
    /// A token was renewed: the old one works until it expires.
    Renewal,
}

/// The restarts waiting for the cluster-wide rate, in the order they go.
#[derive(Debug)]
pub struct Turns<K> {
    revokes: Lane<K>,
    renewals: Lane<K>,
    /// Each waiting restart's lane and namespace.
    index: HashMap<K, (Cause, String)>,
}

impl<K: Clone + Eq + Hash> Default for Turns<K> {
    fn default() -> Self {
        Self {
            revokes: Lane::default(),
            renewals: Lane::default(),
            index: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash> Turns<K> {
    /// Puts `key` of `namespace` in line for `cause`. One already waiting keeps its place,
    /// unless a revoke now moves it to the revoke lane.
    pub fn push(&mut self, namespace: &str, key: K, cause: Cause) {
        match self.index.get(&key) {
            Some((c, _)) if *c == cause || cause == Cause::Renewal => return,
            Some(_) => self.remove(&key),
            None => {}
        }
        self.lane(cause).push(namespace, key.clone());
        self.index.insert(key, (cause, namespace.to_string()));
    }

    /// Takes `key` out of line (its workload is gone, or no longer wants a restart).
    pub fn remove(&mut self, key: &K) {
        if let Some((cause, namespace)) = self.index.remove(key) {
            self.lane(cause).remove(&namespace, key);
        }
    }

    /// The restart whose turn it is, taken out of line, with its cause.
    pub fn pop(&mut self) -> Option<(K, Cause)> {
        let (key, cause) = match self.revokes.pop() {
            Some(key) => (key, Cause::Revoke),
            None => (self.renewals.pop()?, Cause::Renewal),
        };
        self.index.remove(&key);
        Some((key, cause))
    }

    pub fn contains(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every waiting restart, in no particular order.
    pub fn waiting(&self) -> impl Iterator<Item = &K> {
        self.index.keys()
    }

    fn lane(&mut self, cause: Cause) -> &mut Lane<K> {
        match cause {
            Cause::Revoke => &mut self.revokes,
            Cause::Renewal => &mut self.renewals,
        }
    }
}

/// One lane: a line per namespace, and the tags of start-time fair queuing.
#[derive(Debug)]
struct Lane<K> {
    /// Waiting restarts by namespace, first come first: (tag, arrival, key).
    lines: BTreeMap<String, VecDeque<(u64, u64, K)>>,
    /// Each namespace's next tag: one past its last restart's. Dropped once the tag served
    /// has caught up (it would add nothing).
    next: HashMap<String, u64>,
    /// The tag last served.
    served: u64,
    arrivals: u64,
}

impl<K> Default for Lane<K> {
    fn default() -> Self {
        Self {
            lines: BTreeMap::new(),
            next: HashMap::new(),
            served: 0,
            arrivals: 0,
        }
    }
}

impl<K: PartialEq> Lane<K> {
    fn push(&mut self, namespace: &str, key: K) {
        let tag = self
            .served
            .max(self.next.get(namespace).copied().unwrap_or(0));
        self.next.insert(namespace.to_string(), tag + 1);
        let arrival = self.arrivals;
        self.arrivals += 1;
        self.lines
            .entry(namespace.to_string())
            .or_default()
            .push_back((tag, arrival, key));
    }

    fn pop(&mut self) -> Option<K> {
        let namespace = self
            .lines
            .iter()
            .filter_map(|(ns, line)| line.front().map(|(tag, arrival, _)| ((*tag, *arrival), ns)))
            .min()
            .map(|(_, ns)| ns.clone())?;
        let line = self.lines.get_mut(&namespace)?;
        let (tag, _, key) = line.pop_front()?;
        if line.is_empty() {
            self.lines.remove(&namespace);
        }
        self.served = self.served.max(tag);
        let served = self.served;
        self.next.retain(|_, next| *next > served);
        Some(key)
    }

    /// A restart taken out of line frees its namespace's last place, not a place ahead:
    /// its namespace's next tag is one past the last that still waits, or at most one past
    /// the tag served (as for a namespace just served) when none waits. So leaving the line
    /// and coming back gains nothing, and costs nothing either.
    fn remove(&mut self, namespace: &str, key: &K) {
        let Some(line) = self.lines.get_mut(namespace) else {
            return;
        };
        line.retain(|(_, _, k)| k != key);
        let next = match line.back() {
            Some((tag, _, _)) => tag + 1,
            None => {
                self.lines.remove(namespace);
                self.served + 1
            }
        };
        if let Some(n) = self.next.get_mut(namespace) {
            *n = (*n).min(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn drain(t: &mut Turns<String>) -> Vec<String> {
        std::iter::from_fn(|| t.pop().map(|(k, _)| k)).collect()
    }

    fn push_all(t: &mut Turns<String>, ns: &str, n: usize, cause: Cause) {
        for i in 0..n {
            t.push(ns, format!("{ns}/{i}"), cause);
        }
    }

    /// Pushes in order: namespace, key, cause.
    type Pushes = Vec<(&'static str, &'static str, Cause)>;

    #[test]
    fn turns_table() {
        use Cause::*;
        // (what, pushes, the order they go)
        let cases: Vec<(&str, Pushes, Vec<&str>)> = vec![
            (
                "one namespace: first come first served",
                vec![
                    ("b", "b1", Renewal),
                    ("b", "b2", Renewal),
                    ("b", "b3", Renewal),
                ],
                vec!["b1", "b2", "b3"],
            ),
            (
                "a backlog is interleaved with a later namespace",
                vec![
                    ("b", "b1", Renewal),
                    ("b", "b2", Renewal),
                    ("b", "b3", Renewal),
                    ("a", "a1", Renewal),
                    ("a", "a2", Renewal),
                ],
                vec!["b1", "a1", "b2", "a2", "b3"],
            ),
            (
                "three namespaces take turns",
                vec![
                    ("b", "b1", Renewal),
                    ("b", "b2", Renewal),
                    ("c", "c1", Renewal),
                    ("c", "c2", Renewal),
                    ("a", "a1", Renewal),
                ],
                vec!["b1", "c1", "a1", "b2", "c2"],
            ),
            (
                "a revoke goes before every renewal",
                vec![
                    ("b", "b1", Renewal),
                    ("b", "b2", Renewal),
                    ("a", "a1", Revoke),
                ],
                vec!["a1", "b1", "b2"],
            ),
            (
                "revokes take turns between namespaces too",
                vec![
                    ("b", "b1", Revoke),
                    ("b", "b2", Revoke),
                    ("b", "b3", Revoke),
                    ("a", "a1", Revoke),
                    ("c", "c1", Renewal),
                ],
                vec!["b1", "a1", "b2", "b3", "c1"],
            ),
            (
                "a waiting renewal that is revoked moves up",
                vec![
                    ("b", "b1", Renewal),
                    ("a", "a1", Renewal),
                    ("a", "a1", Revoke),
                ],
                vec!["a1", "b1"],
            ),
            (
                "pushed again, a restart keeps its place and goes once",
                vec![
                    ("b", "b1", Renewal),
                    ("b", "b2", Renewal),
                    ("b", "b1", Renewal),
                    ("b", "b2", Revoke),
                    ("b", "b2", Renewal),
                ],
                vec!["b2", "b1"],
            ),
        ];
        for (what, pushes, order) in cases {
            let mut t = Turns::default();
            for (ns, key, cause) in pushes {
                t.push(ns, key.to_string(), cause);
            }
            assert_eq!(drain(&mut t), order, "{what}");
            assert!(t.is_empty(), "{what}");
        }
    }

    #[test]
    fn an_idle_namespace_gets_no_credit_and_leaving_the_line_gains_nothing() {
        let mut t = Turns::default();
        push_all(&mut t, "b", 4, Cause::Renewal);
        assert_eq!(t.pop().unwrap().0, "b/0");
        // a is served at once, then goes to the back like everyone else.
        t.push("a", "a/0".into(), Cause::Renewal);
        assert_eq!(t.pop().unwrap().0, "a/0");
        t.push("a", "a/1".into(), Cause::Renewal);
        assert_eq!(drain(&mut t), ["b/1", "a/1", "b/2", "b/3"]);

        // A restart withdrawn and pushed again does not jump its namespace's line.
        let mut t = Turns::default();
        push_all(&mut t, "b", 3, Cause::Renewal);
        push_all(&mut t, "a", 2, Cause::Renewal);
        t.remove(&"b/0".to_string());
        t.push("b", "b/0".into(), Cause::Renewal);
        assert!(t.contains(&"b/0".to_string()) && t.len() == 5);
        assert_eq!(drain(&mut t), ["a/0", "b/1", "a/1", "b/2", "b/0"]);
    }

    /// Random backlogs of up to 200 restarts in one namespace beside a few others, pushed,
    /// withdrawn and served in random order: a restart that finds its namespace's line empty
    /// is served within two turns of each other namespace (of its lane), however long their
    /// backlogs; a revoke never waits while a renewal goes; within a namespace and lane, first
    /// come first served.
    #[test]
    fn waits_are_bounded_by_the_namespaces_not_the_backlogs() {
        const SEEDS: u64 = 300;
        let mut longest_backlog = 0;
        let mut steps = 0;
        for seed in 0..SEEDS {
            let mut rng = StdRng::seed_from_u64(seed);
            let namespaces = rng.random_range(2..6usize);
            let ns = |i: usize| format!("ns{i}");
            let mut t: Turns<(usize, u32)> = Turns::default();
            // Per waiting key: its lane, and the turns of its lane served since it came
            // if its namespace's line in that lane was empty then (else None).
            let mut watched: HashMap<(usize, u32), (Cause, Option<usize>)> = HashMap::new();
            let mut order: HashMap<(usize, Cause), VecDeque<(usize, u32)>> = HashMap::new();
            let mut next_id = 0u32;
            // The heavy namespace starts with a long backlog of renewals.
            let backlog = rng.random_range(0..200);
            longest_backlog = longest_backlog.max(backlog);
            for _ in 0..backlog {
                next_id += 1;
                t.push(&ns(0), (0, next_id), Cause::Renewal);
                watched.insert((0, next_id), (Cause::Renewal, None));
                order
                    .entry((0, Cause::Renewal))
                    .or_default()
                    .push_back((0, next_id));
            }
            for _ in 0..rng.random_range(50..600) {
                steps += 1;
                match rng.random_range(0..10) {
                    // Push: the heavy namespace most often.
                    0..=4 => {
                        let n = if rng.random_bool(0.6) {
                            0
                        } else {
                            rng.random_range(0..namespaces)
                        };
                        let cause = if rng.random_bool(0.15) {
                            Cause::Revoke
                        } else {
                            Cause::Renewal
                        };
                        next_id += 1;
                        let key = (n, next_id);
                        let line_empty = !watched
                            .iter()
                            .any(|((m, _), (c, _))| *m == n && *c == cause);
                        t.push(&ns(n), key, cause);
                        watched.insert(key, (cause, line_empty.then_some(0)));
                        order.entry((n, cause)).or_default().push_back(key);
                    }
                    // Withdraw a random waiting restart.
                    5 => {
                        let Some(key) = watched
                            .keys()
                            .nth(rng.random_range(0..watched.len().max(1)))
                            .copied()
                        else {
                            continue;
                        };
                        t.remove(&key);
                        let (cause, _) = watched.remove(&key).unwrap();
                        order
                            .get_mut(&(key.0, cause))
                            .unwrap()
                            .retain(|k| *k != key);
                    }
                    // Serve.
                    _ => {
                        let Some((key, cause)) = t.pop() else {
                            assert!(watched.is_empty(), "seed {seed}: nothing served");
                            continue;
                        };
                        let (lane, _) = watched.remove(&key).expect("served what waits");
                        assert_eq!(lane, cause, "seed {seed}");
                        if cause == Cause::Renewal {
                            assert!(
                                watched.values().all(|(c, _)| *c == Cause::Renewal),
                                "seed {seed}: a renewal went while a revoke waited"
                            );
                        }
                        let first = order.get_mut(&(key.0, cause)).unwrap().pop_front();
                        assert_eq!(first, Some(key), "seed {seed}: order within a namespace");
                        for (c, waited) in watched.values_mut() {
                            if *c == cause
                                && let Some(w) = waited
                            {
                                *w += 1;
                                assert!(
                                    *w <= 2 * (namespaces - 1),
                                    "seed {seed}: waited {w} turns with {namespaces} namespaces"
                                );
                            }
                        }
                    }
                }
                assert_eq!(t.len(), watched.len(), "seed {seed}");
            }
        }
        assert!(
            longest_backlog >= 190 && steps > 50_000,
            "{longest_backlog} {steps}"
        );
    }
}
