//! A client-side limiter at the ACS Identity rate limits, so that many identities sharing one
//! resource queue up locally instead of drawing 429s.
//!
//! ACS counts requests per operation in 30-second windows. A token bucket whose burst (1 % of
//! the limit) plus what it refills in 30 s equals the limit can never put more than `limit`
//! requests into any 30-second span, whatever the window alignment. The burst is kept small:
//! every request it allows at once is one fewer in the steady refill, so a larger burst only
//! lowers the sustained rate and lets a backlog go out as a spike.

use super::admission::AdmissionQueue;
use governor::{Quota, RateLimiter, clock::DefaultClock, state::InMemoryState, state::NotKeyed};
use jiff::Timestamp;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;
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

type Bucket = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;

/// A grant nobody came back for within this time is dropped.
const GRANT_TTL: Duration = Duration::from_secs(60);

/// One token bucket per operation, for one ACS resource, and a queue of callers by urgency
/// (see [`AcsRateLimiter::admit`]).
///
/// Every request waits for its bucket ([`AcsRateLimiter::acquire`]), admitted or not, so the
/// limit holds however late an admitted caller comes back. Turns are paced by a second bucket
/// of the same quota, which only decides who goes next.
pub struct AcsRateLimiter {
    buckets: [Bucket; 5],
    turns: [Bucket; 5],
    queues: [Mutex<AdmissionQueue<String>>; 5],
    enqueued: [Notify; 5],
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
    /// A limiter at the service's documented limits, except that creates keep 5 % below
    /// theirs: identities created together renew together, at the rate they were created,
    /// and that must leave the issue limit headroom for retries and for other identities.
    pub fn at_acs_limits() -> Self {
        Self::with_limits(|op| match op {
            Operation::CreateIdentity | Operation::CreateIdentityWithToken => {
                op.acs_limit() * 95 / 100
            }
            _ => op.acs_limit(),
        })
    }

    /// A limiter with `limit(op)` requests per 30-second window for each operation.
    pub fn with_limits(limit: impl Fn(Operation) -> u32) -> Self {
        Self {
            buckets: Operation::ALL.map(|op| RateLimiter::direct(quota(limit(op)))),
            turns: Operation::ALL.map(|op| RateLimiter::direct(quota(limit(op)))),
            queues: Default::default(),
            enqueued: Default::default(),
        }
    }

    /// Waits until one more `operation` request fits under the limit.
    pub async fn acquire(&self, operation: Operation) {
        self.buckets[operation as usize].until_ready().await;
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

    /// Gives turns to the callers in line, most urgent first, at the pace of the limit, and
    /// calls `on_grant` with each one's key. Runs until dropped.
    pub async fn dispatch(&self, operation: Operation, on_grant: impl Fn(&str)) {
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
