//! The order in which callers waiting for a rate-limited ACS operation are let through: most
//! urgent deadline first (for a renewal, the expiry of the token it replaces), then first come.
//! Pure bookkeeping; [`super::AcsRateLimiter`] pairs it with the token bucket.
//!
//! Callers do not wait in line: one that finds the limit used up is queued and goes away, and
//! is told (by the limiter's dispatcher) when its turn has come. So a controller worker is not
//! held while a caller waits for its turn, and a renewal that is about to expire is not stuck
//! behind requests that could wait. (The request itself still waits for the token bucket,
//! briefly, when turns come back bunched.)

use jiff::Timestamp;
use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

/// Waiting callers, and callers whose turn has come but who have not come back yet.
#[derive(Debug)]
pub struct AdmissionQueue<K> {
    waiting: BTreeSet<(Timestamp, u64, K)>,
    position: HashMap<K, (Timestamp, u64)>,
    /// Granted and not yet used, with the time of the grant.
    granted: HashMap<K, Timestamp>,
    arrivals: u64,
}

impl<K> Default for AdmissionQueue<K> {
    fn default() -> Self {
        Self {
            waiting: BTreeSet::new(),
            position: HashMap::new(),
            granted: HashMap::new(),
            arrivals: 0,
        }
    }
}

impl<K: Ord + Hash + Clone> AdmissionQueue<K> {
    /// Nobody is waiting.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// How many callers are waiting for a turn.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    #[cfg(test)]
    fn is_waiting(&self, key: &K) -> bool {
        self.position.contains_key(key)
    }

    /// Uses `key`'s turn, if it has come.
    pub fn take_grant(&mut self, key: &K) -> bool {
        self.granted.remove(key).is_some()
    }

    /// Puts `key` in line by `deadline`. Already waiting: it keeps its place, moved up if the
    /// new deadline is earlier.
    pub fn enqueue(&mut self, key: K, deadline: Timestamp) {
        if let Some(&(old_deadline, seq)) = self.position.get(&key) {
            if deadline < old_deadline {
                self.waiting.remove(&(old_deadline, seq, key.clone()));
                self.waiting.insert((deadline, seq, key.clone()));
                self.position.insert(key, (deadline, seq));
            }
            return;
        }
        let seq = self.arrivals;
        self.arrivals += 1;
        self.waiting.insert((deadline, seq, key.clone()));
        self.position.insert(key, (deadline, seq));
    }

    /// Takes the most urgent caller out of line: its turn has come.
    pub fn grant_next(&mut self, now: Timestamp) -> Option<K> {
        let (_, _, key) = self.waiting.pop_first()?;
        self.position.remove(&key);
        self.granted.insert(key.clone(), now);
        Some(key)
    }

    /// Forgets grants made before `cutoff` (their caller was deleted or no longer needed the
    /// call). Returns how many.
    pub fn drop_grants_before(&mut self, cutoff: Timestamp) -> usize {
        let before = self.granted.len();
        self.granted.retain(|_, at| *at >= cutoff);
        before - self.granted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn drain(q: &mut AdmissionQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| q.grant_next(at(0))).collect()
    }

    #[test]
    fn most_urgent_first_then_first_come() {
        let mut q = AdmissionQueue::default();
        q.enqueue("later", at(300));
        q.enqueue("soon-a", at(10));
        q.enqueue("now", at(0));
        q.enqueue("soon-b", at(10));
        assert_eq!(drain(&mut q), ["now", "soon-a", "soon-b", "later"]);
        assert!(q.is_empty());
    }

    #[test]
    fn asking_again_keeps_the_place_or_moves_up() {
        let mut q = AdmissionQueue::default();
        q.enqueue("a", at(10));
        q.enqueue("b", at(20));
        q.enqueue("c", at(30));
        q.enqueue("a", at(50)); // a later deadline does not push it back
        q.enqueue("c", at(5)); // an earlier one moves it up
        assert!(q.is_waiting(&"b"));
        assert_eq!(drain(&mut q), ["c", "a", "b"]);
        assert!(!q.is_waiting(&"b"));
    }

    #[test]
    fn a_grant_is_used_once_and_only_by_its_caller() {
        let mut q = AdmissionQueue::default();
        q.enqueue("a", at(1));
        q.enqueue("b", at(2));
        assert_eq!(q.grant_next(at(0)), Some("a"));
        assert!(!q.take_grant(&"b"), "b is still waiting");
        assert!(q.take_grant(&"a"));
        assert!(!q.take_grant(&"a"), "used");
    }

    #[test]
    fn stale_grants_are_dropped() {
        let mut q = AdmissionQueue::default();
        for (key, deadline) in [("old", 1), ("new", 2)] {
            q.enqueue(key, at(deadline));
        }
        q.grant_next(at(0));
        q.grant_next(at(60));
        assert_eq!(q.drop_grants_before(at(30)), 1);
        assert!(!q.take_grant(&"old"));
        assert!(q.take_grant(&"new"));
    }
}
