//! A client-side limiter at the ACS Identity rate limits, so that many identities sharing one
//! resource queue up locally instead of drawing 429s.
//!
//! ACS documents its limits as a count of requests per operation in 30-second windows; how
//! the service counts (fixed or sliding windows) is not documented. What this limiter assumes
//! and does:
//!
//! - Creates, revokes and deletes go through a **sliding window**: never more than the limit
//!   in any 30 s span (plus a small margin for time in transit), which keeps within the limit
//!   however the service aligns its windows. A burst of 1,000 creates goes out at once, the
//!   1,001st 30 s after the first.
//! - Token issues (mostly renewals) go through a **token bucket** whose burst (1 % of the
//!   limit) plus its 30-s refill equal the limit, which also never exceeds the limit in any
//!   30 s span, and spreads renewals evenly; callers queue by urgency ([`AcsRateLimiter::admit`]).
//! - If a 429 is ever seen anyway, that operation pauses until the `Retry-After` the service
//!   gave (one second without one) and, for [`CAUTION`] afterwards, sliding-window operations
//!   are paced evenly at the limit's average rate instead of in bursts.

use super::admission::AdmissionQueue;
use super::fair::FairWindow;
use governor::{Quota, RateLimiter, clock::DefaultClock, state::InMemoryState, state::NotKeyed};
use jiff::Timestamp;
use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The operations ACS limits separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateIdentity,
    CreateIdentityWithToken,
    IssueToken,
    RevokeTokens,
    DeleteIdentity,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::CreateIdentity,
        Operation::CreateIdentityWithToken,
        Operation::IssueToken,
        Operation::RevokeTokens,
        Operation::DeleteIdentity,
    ];

    /// Stable name, used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::CreateIdentity => "createIdentity",
            Operation::CreateIdentityWithToken => "createIdentityWithToken",
            Operation::IssueToken => "issueToken",
            Operation::RevokeTokens => "revokeTokens",
            Operation::DeleteIdentity => "deleteIdentity",
        }
    }

    /// The HTTP status ACS answers a successful request with.
    pub fn success_status(self) -> u16 {
        match self {
            Operation::CreateIdentity | Operation::CreateIdentityWithToken => 201,
            Operation::IssueToken => 200,
            Operation::RevokeTokens | Operation::DeleteIdentity => 204,
        }
    }

    /// Requests allowed per [`WINDOW`] by the service (current service-limits documentation).
    pub fn acs_limit(self) -> u32 {
        match self {
            Operation::CreateIdentity
            | Operation::CreateIdentityWithToken
            | Operation::IssueToken => 1000,
            Operation::RevokeTokens | Operation::DeleteIdentity => 500,
        }
    }
}

/// The length of an ACS rate-limit window.
pub const WINDOW: Duration = Duration::from_secs(30);

/// Share of the limit that refills steadily; the rest is the burst.
const FILL: f64 = 0.99;

/// Added to a sliding window's 30 s, for requests that spend different times in transit.
pub const TRANSIT_MARGIN: Duration = Duration::from_millis(500);

/// How long after a 429 sliding-window operations stay paced instead of bursting.
pub const CAUTION: Duration = Duration::from_secs(600);

/// The wait after a 429 that came without `Retry-After`.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// A grant nobody came back for within this time is dropped.
const GRANT_TTL: Duration = Duration::from_secs(60);

/// The operations whose callers queue by urgency ([`AcsRateLimiter::admit`]); they are spread
/// evenly by a token bucket, the others go through a sliding window.
pub const ADMITTED: [Operation; 1] = [Operation::IssueToken];

/// The operations whose callers take turns shared fairly between namespaces
/// ([`AcsRateLimiter::admit_fair`]) instead of waiting for the window in a worker.
pub const FAIR: [Operation; 1] = [Operation::CreateIdentityWithToken];

/// How one operation's requests are spread under its limit.
enum Pacing {
    Bucket(Bucket),
    Window(Mutex<SlidingWindow>),
}

/// The pacing of each operation, for one ACS resource, and a queue of callers by urgency for
/// the [`ADMITTED`] ones (see [`AcsRateLimiter::admit`]).
///
/// Every request waits for its pacing ([`AcsRateLimiter::acquire`]), admitted or not, so the
/// limit holds however late an admitted caller comes back. Turns are paced by a second bucket
/// of the same quota, which only decides who goes next.
pub struct AcsRateLimiter {
    pacing: [Pacing; 5],
    /// Set by a 429: no request of the operation before this time.
    paused_until: [Mutex<Option<Instant>>; 5],
    turns: [Bucket; 5],
    queues: [Mutex<AdmissionQueue<String>>; 5],
    enqueued: [Notify; 5],
    /// Requests waiting in [`AcsRateLimiter::acquire`] for their time.
    sleeping: [AtomicUsize; 5],
    /// Turns for the [`FAIR`] operations.
    fair: [Mutex<FairWindow>; 5],
}

/// The answer to [`AcsRateLimiter::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send the request now.
    Now,
    /// In line; the dispatcher calls back when the turn comes.
    Queued,
}

impl std::fmt::Debug for AcsRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcsRateLimiter")
    }
}

impl AcsRateLimiter {
    /// A limiter at the service's documented limits. (Identities created together do not
    /// renew together: their first renewals are spread over a cycle, see
    /// [`crate::policy::schedule`].)
    pub fn at_acs_limits() -> Self {
        Self::with_limits(Operation::acs_limit)
    }

    /// A limiter with `limit(op)` requests per 30-second window for each operation.
    pub fn with_limits(limit: impl Fn(Operation) -> u32) -> Self {
        Self {
            pacing: Operation::ALL.map(|op| {
                if ADMITTED.contains(&op) {
                    Pacing::Bucket(RateLimiter::direct(quota(limit(op))))
                } else {
                    let window = SlidingWindow::new(limit(op), WINDOW + TRANSIT_MARGIN);
                    Pacing::Window(Mutex::new(window))
                }
            }),
            paused_until: Default::default(),
            turns: Operation::ALL.map(|op| RateLimiter::direct(quota(limit(op)))),
            queues: Default::default(),
            enqueued: Default::default(),
            sleeping: Default::default(),
            fair: Operation::ALL
                .map(|op| Mutex::new(FairWindow::new(limit(op), WINDOW + TRANSIT_MARGIN))),
        }
    }

    /// How many `operation` requests wait for the limit right now: in line for a turn, or
    /// holding one and waiting for their time.
    pub fn waiting(&self, operation: Operation) -> usize {
        let i = operation as usize;
        let queued = self.queues[i].lock().expect("admission lock").len();
        let in_fair_line = self.fair[i].lock().expect("fair lock").len();
        queued + in_fair_line + self.sleeping[i].load(Ordering::Relaxed)
    }

    /// Waits until one more `operation` request fits under the limit.
    pub async fn acquire(&self, operation: Operation) {
        let i = operation as usize;
        self.sleeping[i].fetch_add(1, Ordering::Relaxed);
        let _counted = Decrement(&self.sleeping[i]);
        let paused = *self.paused_until[i].lock().expect("pause lock");
        if let Some(until) = paused {
            tokio::time::sleep_until(until.into()).await;
        }
        match &self.pacing[i] {
            Pacing::Bucket(bucket) => bucket.until_ready().await,
            Pacing::Window(window) => {
                let slot = window.lock().expect("window lock").reserve(Instant::now());
                tokio::time::sleep_until(slot.into()).await;
            }
        }
    }

    /// Records a 429 for `operation`: pause until `retry_after` has passed, then pace.
    pub fn throttled(&self, operation: Operation, retry_after: Option<Duration>) {
        let i = operation as usize;
        let now = Instant::now();
        let until = now + retry_after.unwrap_or(DEFAULT_PAUSE);
        let mut paused = self.paused_until[i].lock().expect("pause lock");
        *paused = Some(paused.map_or(until, |p| p.max(until)));
        if let Pacing::Window(window) = &self.pacing[i] {
            window
                .lock()
                .expect("window lock")
                .pace_until(now + CAUTION);
        }
        tracing::warn!(
            operation = operation.as_str(),
            pause_ms = until.duration_since(now).as_millis() as u64,
            "ACS answered 429 although the limiter kept to the documented limit; pausing, \
             then pacing this operation evenly"
        );
    }

    /// Asks for a turn to send one `operation` request for `key`, without waiting: `Now` if
    /// `key`'s turn has come, or nobody is in line and the pace allows it; otherwise `key` is
    /// put in line by `deadline` and [`AcsRateLimiter::dispatch`] calls back when its turn
    /// comes. The request itself still waits for the bucket in [`AcsRateLimiter::acquire`].
    pub fn admit(&self, operation: Operation, key: &str, deadline: Timestamp) -> Admission {
        let i = operation as usize;
        let key = key.to_string();
        let mut queue = self.queues[i].lock().expect("admission lock");
        if queue.take_grant(&key) {
            return Admission::Now;
        }
        if queue.is_empty() && self.turns[i].check().is_ok() {
            return Admission::Now;
        }
        queue.enqueue(key, deadline);
        self.enqueued[i].notify_one();
        Admission::Queued
    }

    /// Asks for a turn to send one [`FAIR`] `operation` request for `key` of `tenant` (its
    /// namespace), without waiting: `Now`, or `Queued` and [`AcsRateLimiter::dispatch`] calls
    /// back when the turn comes. `shared`: the request comes through a connection shared
    /// between namespaces, so some of each window is kept for the others (see [`FairWindow`]).
    pub fn admit_fair(
        &self,
        operation: Operation,
        key: &str,
        tenant: &str,
        shared: bool,
    ) -> Admission {
        let i = operation as usize;
        let now = Instant::now();
        let mut fair = self.fair[i].lock().expect("fair lock");
        if fair.admit(key, tenant, shared, now) {
            return Admission::Now;
        }
        self.enqueued[i].notify_one();
        Admission::Queued
    }

    /// Gives turns to the callers in line (most urgent first for [`ADMITTED`] operations,
    /// fairly between tenants for [`FAIR`] ones) at the pace of the limit, and calls
    /// `on_grant` with each one's key. Runs until dropped.
    pub async fn dispatch(&self, operation: Operation, on_grant: impl Fn(&str)) {
        if FAIR.contains(&operation) {
            return self.dispatch_fair(operation, on_grant).await;
        }
        let i = operation as usize;
        loop {
            let enqueued = self.enqueued[i].notified();
            if self.queues[i].lock().expect("admission lock").is_empty() {
                enqueued.await;
                continue;
            }
            self.turns[i].until_ready().await;
            let now = Timestamp::now();
            let granted = {
                let mut queue = self.queues[i].lock().expect("admission lock");
                queue.drop_grants_before(now - GRANT_TTL);
                queue.grant_next(now)
            };
            if let Some(key) = granted {
                on_grant(&key);
            }
        }
    }
}

impl AcsRateLimiter {
    async fn dispatch_fair(&self, operation: Operation, on_grant: impl Fn(&str)) {
        // However the window's times fall, never look again sooner than this.
        const LEAST_PAUSE: Duration = Duration::from_millis(10);
        let i = operation as usize;
        loop {
            let enqueued = self.enqueued[i].notified();
            let (granted, waiting, room_at) = {
                let mut fair = self.fair[i].lock().expect("fair lock");
                let now = Instant::now();
                fair.drop_grants_before(now.checked_sub(GRANT_TTL).unwrap_or(now));
                (fair.grant_next(now), fair.len(), fair.next_room_at())
            };
            if let Some(key) = granted {
                on_grant(&key);
                continue;
            }
            if waiting == 0 {
                enqueued.await;
                continue;
            }
            let at = room_at
                .unwrap_or_else(Instant::now)
                .max(Instant::now() + LEAST_PAUSE);
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = enqueued => {}
            }
        }
    }
}

/// Counts a waiting request out again however its wait ends (done or dropped).
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// At most `limit` requests in any span of `window`, by reserving each request's time.
#[derive(Debug)]
struct SlidingWindow {
    limit: usize,
    window: Duration,
    /// The reserved send times of the last `limit` requests, oldest first, non-decreasing.
    reserved: VecDeque<Instant>,
    /// Until then, requests are spaced `window / limit` apart (no burst).
    paced_until: Option<Instant>,
}

impl SlidingWindow {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1) as usize,
            window,
            reserved: VecDeque::new(),
            paced_until: None,
        }
    }

    /// Reserves the earliest time at or after `now` at which one more request keeps every
    /// span of `window` within `limit`, and returns it.
    fn reserve(&mut self, now: Instant) -> Instant {
        let mut at = now;
        if let Some(&last) = self.reserved.back() {
            at = at.max(last);
            if self.paced_until.is_some_and(|p| now < p) {
                at = at.max(last + self.window / self.limit as u32);
            }
        }
        if self.reserved.len() >= self.limit {
            // The request `limit` places back must be a whole window earlier.
            at = at.max(self.reserved[self.reserved.len() - self.limit] + self.window);
        }
        self.reserved.push_back(at);
        while self.reserved.len() > self.limit {
            self.reserved.pop_front();
        }
        at
    }

    fn pace_until(&mut self, until: Instant) {
        self.paced_until = Some(until);
    }
}

fn quota(limit: u32) -> Quota {
    let limit = limit.max(1);
    let burst = (((1.0 - FILL) * f64::from(limit)).floor() as u32).max(1);
    let refill = limit.saturating_sub(burst);
    // burst + refill = limit requests fit in any window; with no refill, one every 2 windows.
    let period = if refill == 0 {
        WINDOW * 2
    } else {
        WINDOW / refill
    };
    Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(NonZeroU32::new(burst).expect("burst is at least 1"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_thirty_second_span_exceeds_the_limit() {
        for limit in [1, 2, 10, 500, 1000] {
            let q = quota(limit);
            let burst = q.burst_size().get() as f64;
            let refilled = WINDOW.as_secs_f64() / q.replenish_interval().as_secs_f64();
            // Requests are whole: a fraction of a refill is not a request.
            assert!(
                (burst + refilled + 1e-9).floor() <= limit as f64,
                "limit {limit}: {burst} + {refilled}"
            );
            assert!(
                (burst + refilled + 1e-9).floor() >= 0.98 * limit as f64,
                "limit {limit} wastes capacity"
            );
        }
    }

    /// The largest number of `times` in any span shorter than `window`.
    fn busiest_span(times: &[Instant], window: Duration) -> usize {
        (0..times.len())
            .map(|i| {
                times[i..]
                    .iter()
                    .take_while(|t| **t < times[i] + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_sliding_window_sends_the_limit_at_once_and_never_more_in_any_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(30);
        let mut w = SlidingWindow::new(1000, window);
        let slots: Vec<_> = (0..2500).map(|_| w.reserve(t0)).collect();
        assert!(
            slots[..1000].iter().all(|s| *s == t0),
            "the first 1,000 go at once"
        );
        assert_eq!(slots[1000], t0 + window, "the 1,001st a window later");
        assert_eq!(slots[2000], t0 + 2 * window);
        assert_eq!(busiest_span(&slots, window), 1000);
        // Requests arriving spread out are never held back while under the limit.
        let mut w = SlidingWindow::new(10, window);
        for k in 0..10 {
            let now = t0 + Duration::from_secs(k);
            assert_eq!(w.reserve(now), now);
        }
        let late = w.reserve(t0 + Duration::from_secs(12));
        assert_eq!(
            late,
            t0 + window,
            "the 11th waits for the 1st to leave the window"
        );
    }

    #[test]
    fn after_a_429_a_window_is_paced_and_later_bursts_again() {
        let t0 = Instant::now();
        let window = Duration::from_secs(30);
        let mut w = SlidingWindow::new(100, window);
        w.pace_until(t0 + Duration::from_secs(60));
        let paced: Vec<_> = (0..3).map(|_| w.reserve(t0)).collect();
        assert_eq!(
            paced[1] - paced[0],
            Duration::from_millis(300),
            "30 s / 100"
        );
        assert_eq!(paced[2] - paced[1], Duration::from_millis(300));
        let later = t0 + Duration::from_secs(120);
        assert_eq!(w.reserve(later), later);
        assert_eq!(
            w.reserve(later),
            later,
            "no pacing once the caution is over"
        );
    }

    #[tokio::test]
    async fn a_429_pauses_the_operation_for_its_retry_after() {
        let limiter = AcsRateLimiter::with_limits(|_| 1000);
        let op = Operation::CreateIdentityWithToken;
        limiter.throttled(op, Some(Duration::from_millis(300)));
        let started = Instant::now();
        limiter.acquire(op).await;
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        let other = Instant::now();
        limiter.acquire(Operation::DeleteIdentity).await;
        assert!(
            other.elapsed() < Duration::from_millis(100),
            "other operations go on"
        );
    }

    /// Runs the dispatcher until it has given `count` turns (10 s at most); their keys in order.
    async fn turns_given(
        limiter: &std::sync::Arc<AcsRateLimiter>,
        op: Operation,
        count: usize,
    ) -> Vec<String> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let dispatcher = tokio::spawn({
            let limiter = limiter.clone();
            async move {
                limiter
                    .dispatch(op, |key| tx.send(key.to_string()).unwrap())
                    .await
            }
        });
        let mut keys = Vec::new();
        while keys.len() < count {
            let key = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("a turn within 10 s")
                .unwrap();
            keys.push(key);
        }
        dispatcher.abort();
        keys
    }

    #[tokio::test]
    async fn callers_in_line_are_served_most_urgent_first() {
        let limiter = std::sync::Arc::new(AcsRateLimiter::at_acs_limits());
        let op = Operation::IssueToken;
        let t0 = Timestamp::now();
        let at = |s: i64| t0 + jiff::SignedDuration::from_secs(s);
        // The burst goes through at once; then callers queue.
        let mut at_once = 0;
        while limiter.admit(op, "overdue", at(0)) == Admission::Now {
            at_once += 1;
            assert!(at_once <= 10, "the burst is 1 % of the limit");
        }
        for (key, expires) in [
            ("e50", 50),
            ("e10", 10),
            ("e40", 40),
            ("e30", 30),
            ("e20", 20),
        ] {
            assert_eq!(limiter.admit(op, key, at(expires)), Admission::Queued);
        }
        assert_eq!(
            limiter.admit(op, "e40", at(5)),
            Admission::Queued,
            "moves up"
        );

        let order = turns_given(&limiter, op, 6).await;
        assert_eq!(order, ["overdue", "e40", "e10", "e20", "e30", "e50"]);
        for key in &order {
            assert_eq!(
                limiter.admit(op, key, at(0)),
                Admission::Now,
                "{key} was granted"
            );
        }
    }

    #[tokio::test]
    async fn turns_used_late_do_not_let_requests_through_together() {
        // 100 per 30 s: a burst of 1, then one request every 0.3 s.
        let limiter = std::sync::Arc::new(AcsRateLimiter::with_limits(|_| 100));
        let op = Operation::IssueToken;
        let now = Timestamp::now();
        assert_eq!(limiter.admit(op, "a", now), Admission::Now);
        for key in ["b", "c", "d"] {
            assert_eq!(limiter.admit(op, key, now), Admission::Queued);
        }
        turns_given(&limiter, op, 3).await;
        for key in ["b", "c", "d"] {
            assert_eq!(limiter.admit(op, key, now), Admission::Now);
        }
        // All four send only now, after their turns: the bucket still lets one through at once.
        let send = || tokio::time::timeout(Duration::from_millis(150), limiter.acquire(op));
        let sent = futures::future::join_all((0..4).map(|_| send())).await;
        assert_eq!(sent.iter().filter(|r| r.is_ok()).count(), 1);
    }

    #[test]
    fn operation_indices_match_bucket_order() {
        for (i, op) in Operation::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i);
        }
    }
}
