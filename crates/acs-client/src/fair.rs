//! Turns for a sliding-window operation (creates), shared fairly between tenants
//! (namespaces). Pure bookkeeping over the times given; [`super::AcsRateLimiter`] runs it.
//!
//! - A caller goes at once while the window has room and nobody is waiting who should go
//!   first; otherwise it waits in its tenant's line and is told when its turn comes. So a
//!   burst of one tenant still goes out at once, but a backlog holds no worker.
//! - Turns go by start-time fair queuing: each request gets a tag one past the later of its
//!   tenant's last tag and the tag last served, and the smallest tag goes first (first come
//!   first served within a tenant and among equal tags). A tenant's backlog takes
//!   consecutive tags, so another tenant's first request waits behind at most one of them;
//!   a tenant that was idle gets no credit for it.
//! - On a **shared** limiter (a ClusterAcsConnection uses it), no tenant may hold more than
//!   `limit - reserve` of a window, so that some room is always left for the others: one
//!   tenant's thousands of creates cannot leave another waiting for the window to turn.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The share of a window kept for other tenants on a shared limiter.
pub const RESERVE_SHARE: f64 = 0.05;

#[derive(Debug)]
pub struct FairWindow {
    limit: usize,
    window: Duration,
    reserve: usize,
    /// Sticky: once a shared connection used the limiter, the reserve holds.
    shared: bool,
    /// Turns taken within the last `window`, oldest first, with their tenant.
    used: VecDeque<(Instant, Arc<str>)>,
    /// Turns of each tenant within the last `window`.
    used_by: HashMap<Arc<str>, usize>,
    /// Waiting callers by tenant, first come first, with their tag and arrival.
    waiting: HashMap<Arc<str>, VecDeque<(u64, u64, String)>>,
    /// Each tenant's last tag.
    finish: HashMap<Arc<str>, u64>,
    /// The tag last served.
    virtual_time: u64,
    arrivals: u64,
    queued: HashSet<String>,
    /// Turns given and not yet taken, with the time given.
    granted: HashMap<String, Instant>,
}

impl FairWindow {
    pub fn new(limit: u32, window: Duration) -> Self {
        let limit = limit.max(1) as usize;
        Self {
            limit,
            window,
            reserve: ((limit as f64 * RESERVE_SHARE).floor() as usize).max(1),
            shared: false,
            used: VecDeque::new(),
            used_by: HashMap::new(),
            waiting: HashMap::new(),
            finish: HashMap::new(),
            virtual_time: 0,
            arrivals: 0,
            queued: HashSet::new(),
            granted: HashMap::new(),
        }
    }

    /// How many callers wait for a turn.
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Asks for a turn for `key` of `tenant`: `true` to go now (its given turn, or room
    /// now), `false` when it waits in line (asking again keeps its place).
    pub fn admit(&mut self, key: &str, tenant: &str, shared: bool, now: Instant) -> bool {
        if self.granted.remove(key).is_some() {
            return true;
        }
        self.shared |= shared;
        self.expire(now);
        if self.queued.contains(key) {
            return false;
        }
        let tenant: Arc<str> = Arc::from(tenant);
        let tag = self
            .virtual_time
            .max(self.finish.get(&tenant).copied().unwrap_or(0))
            + 1;
        let seq = self.arrivals;
        self.arrivals += 1;
        self.finish.insert(tenant.clone(), tag);
        let own_line_empty = self.waiting.get(&tenant).is_none_or(VecDeque::is_empty);
        let first = self.next_head().is_none_or(|head| (tag, seq) < head);
        if own_line_empty && first && self.has_room(&tenant) {
            self.virtual_time = self.virtual_time.max(tag);
            self.take(tenant, now);
            return true;
        }
        self.queued.insert(key.to_string());
        let line = self.waiting.entry(tenant).or_default();
        line.push_back((tag, seq, key.to_string()));
        false
    }

    /// Gives the next turn, if there is room for a waiting tenant: its key.
    pub fn grant_next(&mut self, now: Instant) -> Option<String> {
        self.expire(now);
        let tenant = self.next_tenant()?;
        let line = self.waiting.get_mut(&tenant)?;
        let (tag, _, key) = line.pop_front()?;
        self.virtual_time = self.virtual_time.max(tag);
        if line.is_empty() {
            self.waiting.remove(&tenant);
        }
        self.queued.remove(&key);
        self.take(tenant, now);
        self.granted.insert(key.clone(), now);
        Some(key)
    }

    /// When the oldest turn in the window leaves it (room may come then).
    pub fn next_room_at(&self) -> Option<Instant> {
        self.used.front().map(|(at, _)| *at + self.window)
    }

    /// Forgets turns given before `cutoff` and never taken. Returns how many.
    pub fn drop_grants_before(&mut self, cutoff: Instant) -> usize {
        let before = self.granted.len();
        self.granted.retain(|_, at| *at >= cutoff);
        before - self.granted.len()
    }

    /// The waiting tenant with room whose first caller has the smallest (tag, arrival).
    fn next_tenant(&self) -> Option<Arc<str>> {
        self.heads()
            .min_by_key(|(_, head)| *head)
            .map(|(t, _)| t.clone())
    }

    fn next_head(&self) -> Option<(u64, u64)> {
        self.heads().map(|(_, head)| head).min()
    }

    fn heads(&self) -> impl Iterator<Item = (&Arc<str>, (u64, u64))> {
        self.waiting.iter().filter_map(|(t, line)| {
            let (tag, seq, _) = line.front()?;
            self.has_room(t).then_some((t, (*tag, *seq)))
        })
    }

    fn usage(&self, tenant: &Arc<str>) -> usize {
        self.used_by.get(tenant).copied().unwrap_or(0)
    }

    fn has_room(&self, tenant: &Arc<str>) -> bool {
        let cap = if self.shared {
            self.limit.saturating_sub(self.reserve).max(1)
        } else {
            self.limit
        };
        self.used.len() < self.limit && self.usage(tenant) < cap
    }

    fn take(&mut self, tenant: Arc<str>, now: Instant) {
        *self.used_by.entry(tenant.clone()).or_default() += 1;
        self.used.push_back((now, tenant));
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.used.front() {
            if *at + self.window > now {
                break;
            }
            let (_, tenant) = self.used.pop_front().expect("front exists");
            if let Some(n) = self.used_by.get_mut(&tenant) {
                *n -= 1;
                if *n == 0 {
                    self.used_by.remove(&tenant);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    fn keys(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}/{i}")).collect()
    }

    #[test]
    fn a_burst_goes_at_once_up_to_the_limit_then_waits() {
        let t0 = Instant::now();
        let mut w = FairWindow::new(10, W);
        let went = keys("a", 15)
            .iter()
            .filter(|k| w.admit(k, "a", false, t0))
            .count();
        assert_eq!((went, w.len()), (10, 5));
        assert_eq!(
            w.grant_next(t0 + Duration::from_secs(1)),
            None,
            "no room yet"
        );
        assert_eq!(w.next_room_at(), Some(t0 + W));
        assert_eq!(
            w.grant_next(t0 + W).as_deref(),
            Some("a/10"),
            "first come first"
        );
        assert!(w.admit("a/10", "a", false, t0 + W), "its turn, taken once");
        assert!(!w.admit("a/11", "a", false, t0 + W), "still in line");
    }

    #[test]
    fn another_tenants_first_request_passes_a_backlog() {
        let t0 = Instant::now();
        let mut w = FairWindow::new(10, W);
        for k in keys("a", 30) {
            w.admit(&k, "a", false, t0);
        }
        assert!(!w.admit("b/0", "b", false, t0), "no room: waits too");
        let order: Vec<_> = (0..3).filter_map(|_| w.grant_next(t0 + W)).collect();
        assert_eq!(
            order,
            ["a/10", "b/0", "a/11"],
            "behind one of a's 20, not all"
        );
    }

    #[test]
    fn a_shared_window_keeps_room_for_other_tenants() {
        let t0 = Instant::now();
        let mut w = FairWindow::new(100, W);
        let went = keys("a", 200)
            .iter()
            .filter(|k| w.admit(k, "a", true, t0))
            .count();
        assert_eq!(went, 95, "5 % kept for others");
        // Seconds later, with a's backlog waiting, b goes at once.
        let later = t0 + Duration::from_secs(3);
        assert!(w.admit("b/0", "b", true, later));
        assert_eq!(w.grant_next(later), None, "a holds its whole share");
    }

    #[test]
    fn backlogs_interleave_and_latecomers_wait_for_at_most_one_turn_of_each() {
        let t0 = Instant::now();
        let mut w = FairWindow::new(4, W);
        for k in ["a/0", "a/1", "a/2", "b/0"] {
            assert!(w.admit(k, &k[..1], false, t0));
        }
        for k in ["a/3", "a/4", "a/5", "b/1", "b/2", "c/0"] {
            assert!(!w.admit(k, &k[..1], false, t0));
        }
        let order: Vec<_> = std::iter::from_fn(|| w.grant_next(t0 + W)).collect();
        assert_eq!(order, ["a/3", "b/1", "c/0", "a/4"], "room for four");
        let order: Vec<_> = std::iter::from_fn(|| w.grant_next(t0 + W * 2)).collect();
        assert_eq!(order, ["b/2", "a/5"]);
    }

    #[test]
    fn a_turn_nobody_took_is_forgotten() {
        let t0 = Instant::now();
        let mut w = FairWindow::new(1, W);
        assert!(w.admit("a/0", "a", false, t0));
        assert!(!w.admit("a/1", "a", false, t0));
        assert_eq!(w.grant_next(t0 + W).as_deref(), Some("a/1"));
        assert_eq!(w.drop_grants_before(t0 + W + Duration::from_secs(1)), 1);
        assert!(!w.admit("a/1", "a", false, t0 + W + Duration::from_secs(1)));
    }
}
