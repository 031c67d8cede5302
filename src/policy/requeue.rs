//! When the operator looks at an identity (or a connection) again. Every requeue delay of
//! every reconciler is chosen here, by [`next_look`] from the outcome of a reconcile; the
//! controllers only turn the answer into a kube-runtime `Action`. When a token *renews* is
//! [`super::schedule`]'s answer; this module says when the operator wakes up for it.

use super::schedule::time_until;
use jiff::Timestamp;
use std::time::Duration;

/// How a reconcile ended, as far as the next look is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The Secret holds a current token, due at `renew_at`.
    UpToDate { renew_at: Timestamp },
    /// Waiting in line for ACS capacity. The dispatcher calls back when the turn comes; this
    /// only bounds the wait should that call be lost.
    InLine { token_valid_for: Option<Duration> },
    /// The reconcile failed, was recorded in status, and retrying without any change may help
    /// (`attempts`: consecutive failures, including this one).
    Transient {
        attempts: u32,
        retry_after: Option<Duration>,
        token_valid_for: Option<Duration>,
    },
    /// The Secret name belongs to someone else. That Secret is not watched (only our own
    /// are), so its removal would go unnoticed without a periodic look.
    ForeignSecret,
    /// Held back by another AcsIdentity (one holds the ACS identity asked for, or the
    /// namespace's share of a connection is used up), or by the namespace's other
    /// AcsConnections (its share of clients is used up). Those objects' deletions nudge the
    /// waiting ones; the periodic look covers a nudge lost to a restart.
    HeldBackByOthers,
    /// The reconcile failed and only a change (spec, connection, Secret; all watched) can
    /// help: no timer.
    WaitsForChange,
    /// The Kubernetes API refused or missed a write, so the failure is not in status
    /// (`attempts` counted in memory).
    ApiFailed {
        attempts: u32,
        token_valid_for: Option<Duration>,
    },
    /// Adding the finalizer raced a newer version of the object (our own earlier write not yet
    /// in the cache): look again once the watch caught up.
    FinalizerRaced,
    /// A connection could not be checked (API failure reading it or its Secret).
    ConnectionFailed,
    /// A connection is checked and its status written; its changes are watched.
    ConnectionChecked,
    /// An ACS call found its endpoint or its namespace with the most calls in flight
    /// ([`super::bulkhead`]): it did not wait (holding a worker), it looks again shortly.
    Crowded,
}

/// The shortest requeue: a due item cannot spin.
pub const FLOOR: Duration = Duration::from_millis(500);
/// How long a foreign Secret blocks the name before the operator looks again.
pub const FOREIGN_SECRET_RECHECK: Duration = Duration::from_secs(300);
/// How long a connection that could not be checked waits.
pub const CONNECTION_RETRY: Duration = Duration::from_secs(30);

/// Who holds a wait for an identity's next look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// kube-runtime's scheduler: precise, and dedups with watch triggers, but holds two
    /// copies of the object's reference per wait.
    Scheduler(Duration),
    /// The operator's compact list of far wake-ups (`controller::later`).
    Later(Duration),
    /// Nobody: only a watched change brings the next look.
    Nobody,
}

/// Waits longer than this are held by the compact list: at most a few minutes' worth of
/// identities stay in kube-runtime's scheduler, while the hours-long waits for renewals (all
/// but a few of them) cost one string and two numbers each.
pub const SCHEDULER_HORIZON: Duration = Duration::from_secs(600);

/// Who holds a wait of `next` (as [`next_look`] answers).
pub fn holder(next: Option<Duration>) -> Holder {
    match next {
        None => Holder::Nobody,
        Some(d) if d > SCHEDULER_HORIZON => Holder::Later(d),
        Some(d) => Holder::Scheduler(d),
    }
}

/// When to look again after `outcome` (`None`: only when something watched changes). `now`
/// is the time the answer is given; `jitter` in `[0, 1)` spreads retries.
pub fn next_look(outcome: Outcome, now: Timestamp, jitter: f64) -> Option<Duration> {
    Some(
        match outcome {
            // A renewal time that passed while the reconcile ran is due now, not in an hour.
            Outcome::UpToDate { renew_at } => time_until(renew_at, now).unwrap_or(Duration::ZERO),
            Outcome::InLine { token_valid_for } => admission_recheck(token_valid_for),
            Outcome::Transient {
                attempts,
                retry_after,
                token_valid_for,
            } => retry_delay(attempts, retry_after, token_valid_for, jitter),
            Outcome::ApiFailed {
                attempts,
                token_valid_for,
            } => retry_delay(attempts, None, token_valid_for, jitter),
            Outcome::ForeignSecret | Outcome::HeldBackByOthers => FOREIGN_SECRET_RECHECK,
            Outcome::FinalizerRaced => FLOOR,
            Outcome::ConnectionFailed => CONNECTION_RETRY,
            Outcome::Crowded => crowded_recheck(jitter),
            Outcome::WaitsForChange | Outcome::ConnectionChecked => return None,
        }
        .max(FLOOR),
    )
}

/// Shortest wait: keeps a failing identity from spinning even when its token is about to expire.
pub const MIN_RETRY: Duration = Duration::from_secs(1);
/// First retry wait; doubled per consecutive failure.
pub const BASE_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between retries.
pub const MAX_RETRY: Duration = Duration::from_secs(300);

/// The wait before retry number `failed_attempts` (1 for the first failure).
///
/// Exponential from [`BASE_RETRY`] up to [`MAX_RETRY`], with "equal jitter" (`jitter` in
/// `[0, 1)` picks a point in the upper half) so failures of many identities do not retry in
/// step. While a token is still valid, the wait is at most a quarter of its remaining life, so
/// retries come closer together as expiry nears and several come before it (a 60 s token
/// renewed through a run of failures gets ten attempts; half its life gave six). A
/// `Retry-After` from ACS is a floor: retrying earlier would only be throttled again.
pub fn retry_delay(
    failed_attempts: u32,
    retry_after: Option<Duration>,
    token_valid_for: Option<Duration>,
    jitter: f64,
) -> Duration {
    let doublings = failed_attempts.saturating_sub(1).min(16);
    let exponential = BASE_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY);
    let jittered = exponential / 2 + (exponential / 2).mul_f64(jitter.clamp(0.0, 1.0));
    let before_expiry = match token_valid_for {
        Some(valid_for) if !valid_for.is_zero() => jittered.min(valid_for / 4),
        _ => jittered,
    };
    before_expiry
        .max(retry_after.unwrap_or_default())
        .max(MIN_RETRY)
}

/// When an identity waiting in line for ACS capacity looks again by itself: before half the
/// current token's remaining life is gone.
pub fn admission_recheck(token_valid_for: Option<Duration>) -> Duration {
    const LONGEST: Duration = Duration::from_secs(300);
    const SHORTEST: Duration = Duration::from_secs(5);
    token_valid_for
        .map_or(LONGEST, |v| v / 2)
        .clamp(SHORTEST, LONGEST)
}

/// The shortest wait of a crowded call, and how much longer jitter may make it.
pub const CROWDED_RECHECK: Duration = Duration::from_secs(1);
pub const CROWDED_JITTER: Duration = Duration::from_secs(3);

/// When a call that found no room looks again: soon, spread by `jitter` so a crowd does not
/// come back in step.
pub fn crowded_recheck(jitter: f64) -> Duration {
    CROWDED_RECHECK + CROWDED_JITTER.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Gap between consecutive nudges when many identities are nudged at once (a connection or its
/// Secret changed), and the longest a spread may take.
pub const NUDGE_GAP: Duration = Duration::from_millis(10);
pub const NUDGE_SPREAD: Duration = Duration::from_secs(5);

/// When each of `count` identities nudged together is queued, from the moment of the change:
/// spread evenly over `count` gaps of [`NUDGE_GAP`], at most [`NUDGE_SPREAD`] in all, so one
/// tenant's hundreds of identities do not all line up ahead of another tenant's work.
pub fn nudge_spread(count: usize) -> Vec<Duration> {
    let whole = NUDGE_GAP
        .saturating_mul(count.saturating_sub(1) as u32)
        .min(NUDGE_SPREAD);
    let gaps = count.saturating_sub(1).max(1) as u32;
    (0..count as u32).map(|i| whole * i / gaps).collect()
}

// Restarts of consuming workloads: the restart controller's own retries (its debounce,
// interval and rate waits are [`super::restart`]'s decisions, from the flags).

/// The least wait before a failed restart (or baseline) write is tried again, whatever the
/// minimum interval.
pub const RESTART_RETRY_FLOOR: Duration = Duration::from_secs(5);

/// When a workload whose restart (or baseline) write failed is tried again: after its minimum
/// interval (`--restart-min-interval-seconds`), and not before [`RESTART_RETRY_FLOOR`].
pub fn restart_retry(min_interval: Duration) -> Duration {
    min_interval.max(RESTART_RETRY_FLOOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn holder_table() {
        let cases = [
            (None, Holder::Nobody),
            (Some(FLOOR), Holder::Scheduler(FLOOR)),
            (Some(MAX_RETRY), Holder::Scheduler(MAX_RETRY)),
            (
                Some(SCHEDULER_HORIZON),
                Holder::Scheduler(SCHEDULER_HORIZON),
            ),
            (Some(S(601)), Holder::Later(S(601))),
            (Some(S(16 * 3600)), Holder::Later(S(16 * 3600))),
        ];
        for (next, want) in cases {
            assert_eq!(holder(next), want, "{next:?}");
        }
    }

    /// The one table of "when does the operator look again?".
    #[test]
    fn next_look_table() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |ms: i64| now + jiff::SignedDuration::from_millis(ms);
        let cases: Vec<(&str, Outcome, Option<Duration>)> = vec![
            (
                "renewal ahead",
                Outcome::UpToDate {
                    renew_at: at(40_000),
                },
                Some(S(40)),
            ),
            (
                "renewal in a moment: floor",
                Outcome::UpToDate { renew_at: at(100) },
                Some(FLOOR),
            ),
            // Passed while the reconcile ran: due now. (It once meant an hour, and the token
            // expired unrenewed.)
            (
                "renewal just passed",
                Outcome::UpToDate { renew_at: at(-281) },
                Some(FLOOR),
            ),
            (
                "in line, long token",
                Outcome::InLine {
                    token_valid_for: Some(S(3600)),
                },
                Some(S(300)),
            ),
            (
                "in line, short token",
                Outcome::InLine {
                    token_valid_for: Some(S(40)),
                },
                Some(S(20)),
            ),
            (
                "in line, no token",
                Outcome::InLine {
                    token_valid_for: None,
                },
                Some(S(300)),
            ),
            (
                "transient, first failure",
                Outcome::Transient {
                    attempts: 1,
                    retry_after: None,
                    token_valid_for: None,
                },
                Some(S(5)),
            ),
            (
                "transient, bounded by the token",
                Outcome::Transient {
                    attempts: 9,
                    retry_after: None,
                    token_valid_for: Some(S(120)),
                },
                Some(S(30)),
            ),
            (
                "throttled: Retry-After is a floor",
                Outcome::Transient {
                    attempts: 1,
                    retry_after: Some(S(30)),
                    token_valid_for: Some(S(10)),
                },
                Some(S(30)),
            ),
            (
                "API failure, bounded by the token",
                Outcome::ApiFailed {
                    attempts: 9,
                    token_valid_for: Some(S(40)),
                },
                Some(S(10)),
            ),
            ("foreign Secret", Outcome::ForeignSecret, Some(S(300))),
            (
                "held back by others",
                Outcome::HeldBackByOthers,
                Some(S(300)),
            ),
            ("waits for a change", Outcome::WaitsForChange, None),
            ("finalizer race", Outcome::FinalizerRaced, Some(FLOOR)),
            (
                "connection unchecked",
                Outcome::ConnectionFailed,
                Some(S(30)),
            ),
            ("connection checked", Outcome::ConnectionChecked, None),
            ("crowded: soon", Outcome::Crowded, Some(S(4))),
        ];
        for (case, outcome, want) in cases {
            assert_eq!(next_look(outcome, now, 1.0), want, "{case}");
        }
    }

    #[test]
    fn crowded_calls_come_back_spread() {
        assert_eq!(crowded_recheck(0.0), S(1));
        assert_eq!(crowded_recheck(0.5), Duration::from_millis(2500));
        assert_eq!(crowded_recheck(7.0), S(4));
    }

    #[test]
    fn nudges_are_spread_over_a_few_seconds_at_most() {
        let ms = Duration::from_millis;
        let cases: [(usize, Option<Duration>, Duration); 5] = [
            (0, None, Duration::ZERO),
            (1, Some(Duration::ZERO), Duration::ZERO),
            (2, Some(ms(10)), ms(10)),
            (150, Some(ms(1490)), ms(10)),
            (10_000, Some(S(5)), ms(1)),
        ];
        for (count, last, widest_gap) in cases {
            let delays = nudge_spread(count);
            assert_eq!(delays.len(), count);
            assert_eq!(delays.last().copied(), last, "{count}");
            assert_eq!(delays.first().copied(), last.map(|_| Duration::ZERO));
            assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{count}: in order");
            let gap = delays.windows(2).map(|w| w[1] - w[0]).max();
            assert!(gap.unwrap_or_default() <= widest_gap, "{count}: {gap:?}");
        }
    }

    #[test]
    fn doubles_then_caps() {
        let upper: Vec<_> = (1..=9).map(|n| retry_delay(n, None, None, 1.0)).collect();
        assert_eq!(
            upper,
            [
                S(5),
                S(10),
                S(20),
                S(40),
                S(80),
                S(160),
                S(300),
                S(300),
                S(300)
            ]
        );
        assert_eq!(retry_delay(u32::MAX, None, None, 1.0), S(300));
        assert_eq!(
            retry_delay(0, None, None, 1.0),
            S(5),
            "0 is treated as the first failure"
        );
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        for n in 1..=10 {
            let full = retry_delay(n, None, None, 1.0);
            for jitter in [0.0, 0.3, 0.99] {
                let d = retry_delay(n, None, None, jitter);
                assert!(d >= full / 2 && d <= full, "n={n} jitter={jitter}: {d:?}");
            }
        }
    }

    #[test]
    fn retries_before_a_valid_token_expires() {
        assert_eq!(retry_delay(9, None, Some(S(120)), 1.0), S(30));
        assert_eq!(retry_delay(1, None, Some(S(8)), 1.0), S(2));
        // At or past expiry there is nothing to protect: plain backoff.
        assert_eq!(retry_delay(3, None, Some(Duration::ZERO), 1.0), S(20));
    }

    /// Attempts made between the renewal time and expiry when every attempt fails, with the
    /// longest waits the jitter allows.
    fn attempts_before_expiry(margin: Duration) -> u32 {
        let (mut left, mut attempts) = (margin, 0);
        while !left.is_zero() {
            attempts += 1;
            left = left.saturating_sub(retry_delay(attempts, None, Some(left), 1.0));
        }
        attempts
    }

    #[test]
    fn a_failing_renewal_is_retried_many_times_before_expiry() {
        // Default margins (a third of the lifetime) from one minute to a day.
        for (lifetime, at_least) in [(60, 9), (180, 10), (3600, 16), (86_400, 90)] {
            let attempts = attempts_before_expiry(S(lifetime / 3));
            assert!(
                attempts >= at_least,
                "{lifetime} s token: {attempts} attempts before expiry"
            );
        }
    }

    #[test]
    fn admission_recheck_is_bounded_by_the_token() {
        assert_eq!(admission_recheck(None), S(300));
        assert_eq!(admission_recheck(Some(S(3600))), S(300));
        assert_eq!(admission_recheck(Some(S(40))), S(20));
        assert_eq!(admission_recheck(Some(S(1))), S(5));
    }

    #[test]
    fn retry_after_is_a_floor() {
        assert_eq!(retry_delay(1, Some(S(30)), None, 0.0), S(30));
        assert_eq!(retry_delay(1, Some(S(30)), Some(S(10)), 0.0), S(30));
        assert_eq!(retry_delay(8, Some(S(2)), None, 1.0), S(300));
    }

    #[test]
    fn never_shorter_than_the_minimum() {
        assert_eq!(
            retry_delay(1, None, Some(Duration::from_millis(10)), 0.0),
            MIN_RETRY
        );
        assert_eq!(
            retry_delay(1, Some(Duration::ZERO), None, 0.0),
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn a_failed_restart_is_retried_after_the_interval_and_5_s_at_least() {
        for (min_interval, want) in [(0, 5), (1, 5), (5, 5), (60, 60)] {
            assert_eq!(restart_retry(S(min_interval)), S(want), "{min_interval}");
        }
    }
}
