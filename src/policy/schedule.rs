//! When a token is renewed: from the lifetime ACS actually granted (`expiresOn` minus the
//! issue time), never from the lifetime that was asked for.
//!
//! A renewal that came on schedule keeps its place in the renewal cycle (moved a little
//! earlier by jitter). A token issued for any other reason (an identity's first token, a
//! changed spec or connection, an expired token after an outage, a refresh) starts at a
//! random place in the cycle: identities created or changed together (a burst of creates,
//! a GitOps edit of many objects, a key rotation) would otherwise renew together forever, as
//! a train that the ACS rate limit turns into lateness. The cost is that such a token is
//! renewed once earlier than needed.

use jiff::{SignedDuration, Timestamp};
use std::time::Duration;

/// How far ahead of expiry a token is renewed, as the user wrote it in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewBefore {
    /// Renew at two thirds of the lifetime (the default, as cert-manager does).
    Default,
    /// Renew this long before expiry.
    Fixed(Duration),
    /// Renew when this percentage (1..=99) of the lifetime remains.
    Percentage(u8),
}

/// The margin before expiry at which to renew a token of `lifetime`.
///
/// A fixed margin that would renew at or before issuance (margin ≥ lifetime) would re-issue in a
/// loop; like cert-manager, it falls back to the default then.
pub fn renewal_margin(lifetime: Duration, renew_before: RenewBefore) -> Duration {
    let default = lifetime / 3;
    match renew_before {
        RenewBefore::Default => default,
        RenewBefore::Fixed(margin) if margin < lifetime => margin,
        RenewBefore::Fixed(_) => default,
        RenewBefore::Percentage(p) => lifetime.mul_f64(f64::from(p.clamp(1, 99)) / 100.0),
    }
}

/// The widest random shift earlier that spreads renewals of tokens issued together: a tenth
/// of the margin, at most ten minutes.
pub fn jitter_window(margin: Duration) -> Duration {
    (margin / 10).min(Duration::from_secs(600))
}

/// Where in the renewal cycle a new token's renewal falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A renewal on schedule: the same place as the token it replaces, jittered.
    Keep,
    /// Off schedule: anywhere from a tenth of the cycle to its end.
    New,
}

/// How far an `expiresOn` may lie beyond the lifetime asked for: the service's clock may be
/// ahead of ours.
pub const CLOCK_SKEW: Duration = Duration::from_secs(600);

/// Whether an `expiresOn` ACS answered for a token issued at `issued_at` with `requested`
/// lifetime can be scheduled from; `Err` says why not. One already past would be renewed at
/// once, again and again; one beyond the lifetime asked for (plus [`CLOCK_SKEW`]) would be
/// renewed after the token really expired, if the service's claim were wrong.
pub fn check_expiry(
    issued_at: Timestamp,
    expires_on: Timestamp,
    requested: Duration,
) -> Result<(), String> {
    if expires_on <= issued_at {
        return Err(format!(
            "ACS answered expiresOn {expires_on}, not after the time of issue {issued_at}"
        ));
    }
    let latest = SignedDuration::try_from(requested + CLOCK_SKEW)
        .ok()
        .and_then(|d| issued_at.checked_add(d).ok());
    match latest {
        Some(latest) if expires_on > latest => Err(format!(
            "ACS answered expiresOn {expires_on}, later than the {} minutes asked for allow",
            requested.as_secs() / 60
        )),
        _ => Ok(()),
    }
}

/// `t` without its fraction of a second (rounded down): what Kubernetes keeps of a time, and
/// what the Secret's `expiresOn` says.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

/// Time from `from` until `at`; `None` if `at` is already past.
pub fn time_until(at: Timestamp, from: Timestamp) -> Option<Duration> {
    Duration::try_from(at.duration_since(from)).ok()
}

/// When to renew a token issued at `issued_at` that expires at `expires_on`.
///
/// `jitter` in `[0, 1)` moves the time earlier, never later: within [`jitter_window`] for
/// [`Phase::Keep`], over the last nine tenths of the cycle (issue to renewal) for
/// [`Phase::New`]. A token that was already expired when issued (clock skew) is due
/// immediately.
pub fn renewal_time(
    issued_at: Timestamp,
    expires_on: Timestamp,
    renew_before: RenewBefore,
    phase: Phase,
    jitter: f64,
) -> Timestamp {
    let Some(lifetime) = time_until(expires_on, issued_at) else {
        return issued_at;
    };
    let margin = renewal_margin(lifetime, renew_before);
    let window = match phase {
        Phase::Keep => jitter_window(margin),
        Phase::New => lifetime.saturating_sub(margin).mul_f64(0.9),
    };
    let shift = window.mul_f64(jitter.clamp(0.0, 1.0));
    let before_expiry = SignedDuration::try_from(margin + shift).unwrap_or(SignedDuration::MAX);
    expires_on
        .checked_sub(before_expiry)
        .unwrap_or(issued_at)
        .max(issued_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn margin_table() {
        let day = 24 * HOUR;
        let cases = [
            (day, RenewBefore::Default, 8 * HOUR),
            (
                day,
                RenewBefore::Fixed(Duration::from_secs(20 * 60)),
                Duration::from_secs(1200),
            ),
            (day, RenewBefore::Fixed(day), 8 * HOUR),
            (day, RenewBefore::Fixed(2 * day), 8 * HOUR),
            (day, RenewBefore::Percentage(1), Duration::from_secs(864)),
            (
                day,
                RenewBefore::Percentage(99),
                Duration::from_secs(85_536),
            ),
            (day, RenewBefore::Percentage(0), Duration::from_secs(864)),
            (
                day,
                RenewBefore::Percentage(100),
                Duration::from_secs(85_536),
            ),
            (
                Duration::from_secs(60),
                RenewBefore::Default,
                Duration::from_secs(20),
            ),
            (
                Duration::from_secs(3),
                RenewBefore::Default,
                Duration::from_secs(1),
            ),
            (Duration::ZERO, RenewBefore::Default, Duration::ZERO),
        ];
        for (lifetime, renew_before, expected) in cases {
            assert_eq!(
                renewal_margin(lifetime, renew_before),
                expected,
                "{lifetime:?} {renew_before:?}"
            );
        }
    }

    #[test]
    fn schedule_uses_the_granted_lifetime_not_the_requested_one() {
        // Asked for 24 h, ACS granted 60 s (e.g. the emulator's --token-lifetime-seconds).
        let renew = renewal_time(at(1000), at(1060), RenewBefore::Default, Phase::Keep, 0.0);
        assert_eq!(renew, at(1040));
    }

    #[test]
    fn jitter_only_moves_earlier_and_stays_in_its_window() {
        let issued = at(0);
        let expires = at(86_400);
        let latest = renewal_time(issued, expires, RenewBefore::Default, Phase::Keep, 0.0);
        assert_eq!(latest, at(57_600));
        for jitter in [0.0, 0.25, 0.5, 0.999, 1.0, 7.0, -3.0] {
            let t = renewal_time(issued, expires, RenewBefore::Default, Phase::Keep, jitter);
            assert!(t <= latest, "jitter {jitter} made it later");
            assert!(
                t >= at(57_600 - 600),
                "jitter {jitter} beyond the 10 min window"
            );
        }
    }

    #[test]
    fn a_new_phase_falls_anywhere_in_the_last_nine_tenths_of_the_cycle() {
        // 60 s token, default margin 20 s: the cycle is the 40 s from issue to renewal.
        let t = |jitter| renewal_time(at(0), at(60), RenewBefore::Default, Phase::New, jitter);
        assert_eq!(t(0.0), at(40), "no jitter: on schedule");
        assert_eq!(t(0.5), at(22));
        assert_eq!(t(1.0), at(4), "earliest: a tenth of the cycle after issue");
        // A cohort issued together spreads over the cycle, not over the jitter window.
        let spread: std::collections::BTreeSet<_> =
            (0..100).map(|i| t(f64::from(i) / 100.0)).collect();
        assert!(spread.len() >= 30, "{} distinct seconds", spread.len());
        let keep = renewal_time(at(0), at(60), RenewBefore::Default, Phase::Keep, 1.0);
        assert_eq!(
            keep,
            at(38),
            "a renewal on schedule moves at most a tenth of the margin"
        );
    }

    #[test]
    fn an_expiry_in_the_past_or_beyond_the_lifetime_is_refused() {
        let hour = Duration::from_secs(3600);
        let cases = [
            (3600, true, "exactly the lifetime"),
            (60, true, "less than asked: ACS may grant less"),
            (
                3600 + 600,
                true,
                "the service's clock ahead by the allowed skew",
            ),
            (3600 + 601, false, "beyond lifetime and skew"),
            (86_400 * 365, false, "a year ahead"),
            (0, false, "expires when issued"),
            (-30, false, "already expired"),
        ];
        for (offset, ok, case) in cases {
            let result = check_expiry(at(1000), at(1000 + offset), hour);
            assert_eq!(result.is_ok(), ok, "{case}: {result:?}");
        }
    }

    #[test]
    fn tiny_and_degenerate_lifetimes_never_schedule_before_issue() {
        for (issued, expires) in [(100, 101), (100, 100), (100, 50)] {
            for rb in [
                RenewBefore::Default,
                RenewBefore::Percentage(99),
                RenewBefore::Fixed(HOUR),
            ] {
                let t = renewal_time(at(issued), at(expires), rb, Phase::New, 0.9);
                assert!(t >= at(issued), "{issued}->{expires} {rb:?}: {t}");
                assert!(
                    t <= at(expires.max(issued)),
                    "{issued}->{expires} {rb:?}: {t}"
                );
            }
        }
    }

    #[test]
    fn percentages_at_the_edges() {
        let one = renewal_time(
            at(0),
            at(10_000),
            RenewBefore::Percentage(1),
            Phase::Keep,
            0.0,
        );
        assert_eq!(one, at(9_900));
        let ninety_nine = renewal_time(
            at(0),
            at(10_000),
            RenewBefore::Percentage(99),
            Phase::Keep,
            0.0,
        );
        assert_eq!(ninety_nine, at(100));
    }
}
