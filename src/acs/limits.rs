//! A client-side limiter at the ACS Identity rate limits, so that many identities sharing one
//! resource queue up locally instead of drawing 429s.
//!
//! ACS counts requests per operation in 30-second windows. A token bucket whose burst (1 % of
//! the limit) plus what it refills in 30 s equals the limit can never put more than `limit`
//! requests into any 30-second span, whatever the window alignment. The burst is kept small:
//! every request it allows at once is one fewer in the steady refill, so a larger burst only
//! lowers the sustained rate and lets a backlog go out as a spike.

use governor::{Quota, RateLimiter, clock::DefaultClock, state::InMemoryState, state::NotKeyed};
use std::num::NonZeroU32;
use std::time::Duration;

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

/// One token bucket per operation, for one ACS resource.
pub struct AcsRateLimiter {
    buckets: [Bucket; 5],
}

impl std::fmt::Debug for AcsRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcsRateLimiter")
    }
}

impl AcsRateLimiter {
    /// A limiter at the service's documented limits.
    pub fn at_acs_limits() -> Self {
        Self::with_limits(|op| op.acs_limit())
    }

    /// A limiter with `limit(op)` requests per 30-second window for each operation.
    pub fn with_limits(limit: impl Fn(Operation) -> u32) -> Self {
        Self {
            buckets: Operation::ALL.map(|op| RateLimiter::direct(quota(limit(op)))),
        }
    }

    /// Waits until one more `operation` request fits under the limit.
    pub async fn acquire(&self, operation: Operation) {
        self.buckets[operation as usize].until_ready().await;
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

    #[test]
    fn operation_indices_match_bucket_order() {
        for (i, op) in Operation::ALL.into_iter().enumerate() {
            assert_eq!(op as usize, i);
        }
    }
}
