//! How long to wait before retrying after a transient failure.

use std::time::Duration;

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

/// When an identity waiting in line for ACS capacity looks again by itself. It is normally
/// called back when its turn comes; this only bounds the wait if that call were lost, and
/// comes before half the current token's remaining life is gone.
pub fn admission_recheck(token_valid_for: Option<Duration>) -> Duration {
    const LONGEST: Duration = Duration::from_secs(300);
    const SHORTEST: Duration = Duration::from_secs(5);
    token_valid_for
        .map_or(LONGEST, |v| v / 2)
        .clamp(SHORTEST, LONGEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

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
}
