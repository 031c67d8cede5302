//! Bulkheads around ACS calls, so that one tenant's trouble stays its own: may a call go now?
//!
//! - **Caps.** At most `per_endpoint` calls in flight to one ACS endpoint and `per_namespace`
//!   calls in flight for one namespace's identities. A call over a cap does not wait (a
//!   waiting reconcile would hold one of the shared workers): it is refused as
//!   [`Verdict::Crowded`] and its identity looks again shortly ([`super::requeue`]).
//! - **A breaker per endpoint.** After `failures_to_open` calls in a row that found the
//!   endpoint unreachable (connect or first-byte timeout, connection failure) it opens: calls
//!   to that endpoint are refused at once ([`Verdict::Open`]) for a cooldown, which doubles at
//!   each reopening up to `max_cooldown`. After the cooldown one call goes through as a probe
//!   (half-open); an answer of any kind closes the breaker, another unreachable call opens it
//!   again.
//!
//! Pure: the state, the load and the time are given; [`crate::controller::bulkheads`] keeps
//! them.

use std::time::{Duration, Instant};

/// How much a namespace and an endpoint may hold, and how the breaker behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// ACS calls in flight to one endpoint.
    pub per_endpoint: usize,
    /// ACS calls in flight for one namespace's identities (whatever their endpoints).
    pub per_namespace: usize,
    /// Unreachable calls in a row that open an endpoint's breaker; 0: it never opens.
    pub failures_to_open: u32,
    /// How long a breaker stays open the first time.
    pub cooldown: Duration,
    /// The longest it stays open, however often it reopened.
    pub max_cooldown: Duration,
}

impl Limits {
    pub const DEFAULT_PER_ENDPOINT: usize = 8;
    pub const DEFAULT_PER_NAMESPACE: usize = 4;
    pub const DEFAULT_FAILURES_TO_OPEN: u32 = 3;
    pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(10);
    pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(120);

    /// The cooldown after the `opened`-th opening in a row (1 for the first).
    pub fn cooldown(&self, opened: u32) -> Duration {
        let doublings = opened.saturating_sub(1).min(16);
        self.cooldown
            .saturating_mul(1 << doublings)
            .min(self.max_cooldown.max(self.cooldown))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_endpoint: Self::DEFAULT_PER_ENDPOINT,
            per_namespace: Self::DEFAULT_PER_NAMESPACE,
            failures_to_open: Self::DEFAULT_FAILURES_TO_OPEN,
            cooldown: Self::DEFAULT_COOLDOWN,
            max_cooldown: Self::DEFAULT_MAX_COOLDOWN,
        }
    }
}

/// An endpoint's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Calls go; `failures` unreachable calls in a row so far.
    Closed { failures: u32 },
    /// Calls are refused until `until`; `opened`: openings in a row (for the cooldown).
    Open { until: Instant, opened: u32 },
    /// One probe is in flight; the others are refused until it is answered.
    HalfOpen { opened: u32 },
}

impl Breaker {
    pub const CLOSED: Breaker = Breaker::Closed { failures: 0 };

    /// Whether calls are being refused (open, or half-open with its probe out).
    pub fn is_open(&self) -> bool {
        !matches!(self, Breaker::Closed { .. })
    }
}

/// Calls in flight that a new one would join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub endpoint: usize,
    pub namespace: usize,
}

/// May a call go now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Yes.
    Go,
    /// Yes, as the half-open breaker's one probe: its answer decides the breaker.
    Probe,
    /// Not now: the endpoint or the namespace has its most calls in flight.
    Crowded(Crowd),
    /// No: the endpoint's breaker is open; ask again in `retry_in`.
    Open { retry_in: Duration },
}

/// Which cap a crowded call met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowd {
    Endpoint,
    Namespace,
}

/// What became of a call, as the breaker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The endpoint answered (whatever it said).
    Answered,
    /// No answer: connecting or the first byte timed out, or the connection failed.
    Unreachable,
}

/// Whether a call may go, and the breaker afterwards. The breaker is asked first: an open
/// endpoint's calls are refused at once, crowded or not.
pub fn admit(breaker: Breaker, load: Load, limits: &Limits, now: Instant) -> (Verdict, Breaker) {
    let probe = match breaker {
        Breaker::Open { until, .. } if now < until => {
            return (
                Verdict::Open {
                    retry_in: until - now,
                },
                breaker,
            );
        }
        Breaker::Open { .. } => true,
        Breaker::HalfOpen { opened } => {
            return (
                Verdict::Open {
                    retry_in: limits.cooldown(opened),
                },
                breaker,
            );
        }
        Breaker::Closed { .. } => false,
    };
    if load.endpoint >= limits.per_endpoint {
        return (Verdict::Crowded(Crowd::Endpoint), breaker);
    }
    if load.namespace >= limits.per_namespace {
        return (Verdict::Crowded(Crowd::Namespace), breaker);
    }
    match breaker {
        Breaker::Open { opened, .. } if probe => (Verdict::Probe, Breaker::HalfOpen { opened }),
        _ => (Verdict::Go, breaker),
    }
}

/// The breaker after a call admitted as `verdict` ended with `answer`.
pub fn after_call(
    breaker: Breaker,
    probe: bool,
    answer: Answer,
    limits: &Limits,
    now: Instant,
) -> Breaker {
    let open = |opened: u32| Breaker::Open {
        until: now + limits.cooldown(opened),
        opened,
    };
    match (answer, breaker) {
        (Answer::Answered, _) => Breaker::CLOSED,
        (Answer::Unreachable, _) if limits.failures_to_open == 0 => Breaker::CLOSED,
        (Answer::Unreachable, Breaker::Closed { failures }) => {
            let failures = failures.saturating_add(1);
            if failures >= limits.failures_to_open {
                open(1)
            } else {
                Breaker::Closed { failures }
            }
        }
        (Answer::Unreachable, Breaker::HalfOpen { opened }) if probe => {
            open(opened.saturating_add(1))
        }
        // A call that began before the breaker opened tells nothing new.
        (Answer::Unreachable, other) => other,
    }
}

/// The breaker after a probe ended without an answer either way (it never went: the rate
/// limiter put it in line, or the reconcile was dropped): the next call probes instead.
pub fn probe_abandoned(breaker: Breaker, now: Instant) -> Breaker {
    match breaker {
        Breaker::HalfOpen { opened } => Breaker::Open { until: now, opened },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn limits() -> Limits {
        Limits {
            per_endpoint: 8,
            per_namespace: 4,
            failures_to_open: 3,
            cooldown: S(10),
            max_cooldown: S(40),
        }
    }

    fn load(endpoint: usize, namespace: usize) -> Load {
        Load {
            endpoint,
            namespace,
        }
    }

    /// The one table of "may this call go now?".
    #[test]
    fn admit_table() {
        let now = Instant::now();
        let closed = Breaker::Closed { failures: 2 };
        let open = Breaker::Open {
            until: now + S(7),
            opened: 1,
        };
        let cooled = Breaker::Open {
            until: now - S(1),
            opened: 2,
        };
        let probing = Breaker::HalfOpen { opened: 2 };
        let cases = [
            ("closed, room", closed, load(7, 3), Verdict::Go, closed),
            (
                "closed, endpoint full",
                closed,
                load(8, 0),
                Verdict::Crowded(Crowd::Endpoint),
                closed,
            ),
            (
                "closed, namespace full",
                closed,
                load(1, 4),
                Verdict::Crowded(Crowd::Namespace),
                closed,
            ),
            (
                "open: refused at once, even with room",
                open,
                load(0, 0),
                Verdict::Open { retry_in: S(7) },
                open,
            ),
            (
                "open and crowded: the breaker speaks first",
                open,
                load(8, 4),
                Verdict::Open { retry_in: S(7) },
                open,
            ),
            (
                "cooled down: one probe",
                cooled,
                load(0, 0),
                Verdict::Probe,
                probing,
            ),
            (
                "cooled down but crowded: no probe yet",
                cooled,
                load(0, 4),
                Verdict::Crowded(Crowd::Namespace),
                cooled,
            ),
            (
                "probe out: the others are refused",
                probing,
                load(1, 0),
                Verdict::Open { retry_in: S(20) },
                probing,
            ),
        ];
        for (case, breaker, load, verdict, after) in cases {
            assert_eq!(
                admit(breaker, load, &limits(), now),
                (verdict, after),
                "{case}"
            );
        }
    }

    /// The one table of "what does a call's end do to the breaker?".
    #[test]
    fn after_call_table() {
        use Answer::*;
        let now = Instant::now();
        let open_for = |secs: u64, opened: u32| Breaker::Open {
            until: now + S(secs),
            opened,
        };
        let cases = [
            (
                "an answer resets the count",
                Breaker::Closed { failures: 2 },
                false,
                Answered,
                Breaker::CLOSED,
            ),
            (
                "one more unreachable",
                Breaker::Closed { failures: 1 },
                false,
                Unreachable,
                Breaker::Closed { failures: 2 },
            ),
            (
                "the third in a row opens",
                Breaker::Closed { failures: 2 },
                false,
                Unreachable,
                open_for(10, 1),
            ),
            (
                "the probe answered: closed",
                Breaker::HalfOpen { opened: 3 },
                true,
                Answered,
                Breaker::CLOSED,
            ),
            (
                "the probe unreachable: open twice as long",
                Breaker::HalfOpen { opened: 1 },
                true,
                Unreachable,
                open_for(20, 2),
            ),
            (
                "the cooldown is bounded",
                Breaker::HalfOpen { opened: 5 },
                true,
                Unreachable,
                open_for(40, 6),
            ),
            (
                "a call from before the opening changes nothing",
                open_for(5, 1),
                false,
                Unreachable,
                open_for(5, 1),
            ),
            (
                "nor while the probe is out",
                Breaker::HalfOpen { opened: 1 },
                false,
                Unreachable,
                Breaker::HalfOpen { opened: 1 },
            ),
            (
                "any answer closes, even a late one",
                open_for(5, 1),
                false,
                Answered,
                Breaker::CLOSED,
            ),
        ];
        for (case, breaker, probe, answer, after) in cases {
            assert_eq!(
                after_call(breaker, probe, answer, &limits(), now),
                after,
                "{case}"
            );
        }
    }

    #[test]
    fn a_breaker_turned_off_never_opens() {
        let now = Instant::now();
        let off = Limits {
            failures_to_open: 0,
            ..limits()
        };
        let mut breaker = Breaker::CLOSED;
        for _ in 0..100 {
            breaker = after_call(breaker, false, Answer::Unreachable, &off, now);
        }
        assert_eq!(breaker, Breaker::CLOSED);
    }

    #[test]
    fn an_abandoned_probe_lets_the_next_call_probe() {
        let now = Instant::now();
        let after = probe_abandoned(Breaker::HalfOpen { opened: 2 }, now);
        assert_eq!(admit(after, load(0, 0), &limits(), now).0, Verdict::Probe);
        assert_eq!(probe_abandoned(Breaker::CLOSED, now), Breaker::CLOSED);
    }

    /// Over a long outage, an endpoint sees one probe per cooldown, however many calls ask.
    #[test]
    fn an_unreachable_endpoint_sees_few_calls() {
        let limits = limits();
        let start = Instant::now();
        let mut breaker = Breaker::CLOSED;
        let mut sent = 0;
        // 100 calls asked every second for ten minutes; each one sent is unreachable.
        for second in 0..600 {
            let now = start + S(second);
            for _ in 0..100 {
                let (verdict, next) = admit(breaker, load(0, 0), &limits, now);
                breaker = next;
                if matches!(verdict, Verdict::Go | Verdict::Probe) {
                    sent += 1;
                    let probe = verdict == Verdict::Probe;
                    breaker = after_call(breaker, probe, Answer::Unreachable, &limits, now);
                }
            }
        }
        // 3 to open, then one probe per cooldown (10, 20, 40, 40, ... s).
        assert!(sent <= 3 + 600 / 40 + 3, "{sent} calls sent");
    }
}
