//! What a failed reconcile means. The controller classifies each error once
//! (`controller::Error::class`, an exhaustive match that returns a [`Class`]); what follows
//! from that class is decided here: whether an API answer is worth retrying, what the progress
//! conditions say ([`setback`]), when the operator looks again ([`outcome`]) and whether the
//! failure metrics count it ([`counted`]).

use super::{Failure, Outcome, Reason, Setback};
use std::time::Duration;

/// What ends a failure, as far as the operator is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureStanding {
    /// Retrying later without any change can help: retried with backoff.
    Transient,
    /// Only a change of what the operator watches (spec, connection, its Secret) can help: no
    /// retry until then, reported as Stalled.
    Permanent,
    /// Other objects hold it back (another AcsIdentity holds the ACS identity asked for, the
    /// namespace's share is used up): their deletion nudges it, a periodic look covers a lost
    /// nudge. Reported as Stalled.
    HeldBackByOthers,
    /// The Secret's name is taken by a Secret this identity does not own. That Secret is not
    /// watched, so its removal is looked for periodically. Reported as Stalled.
    ForeignSecret,
    /// No failure: the ACS calls in flight left no room, nothing was tried; looked at again
    /// shortly, not counted, not recorded.
    Crowded,
}

/// The one classification of a controller error: its reason (condition, Event), its standing
/// and its failure metric label, and how long ACS (or the endpoint's breaker) asks to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    pub reason: Reason,
    pub standing: FailureStanding,
    /// The `category` label of `acs_identity_reconcile_failures`: the reason's name, the
    /// one vocabulary of conditions, Events and metrics.
    pub label: &'static str,
    pub retry_after: Option<Duration>,
}

impl Class {
    pub fn new(reason: Reason, standing: FailureStanding) -> Self {
        Self {
            reason,
            standing,
            label: reason.as_str(),
            retry_after: None,
        }
    }

    /// The same class, with the wait ACS or the breaker asked for.
    pub fn retry_after(self, retry_after: Option<Duration>) -> Self {
        Self {
            retry_after,
            ..self
        }
    }

    /// Whether retrying later without any change can help.
    pub fn is_transient(&self) -> bool {
        self.standing == FailureStanding::Transient
    }
}

/// The standing of a request the Kubernetes API server answered with `code`: unavailable or
/// conflicting (409, 5xx) passes; any other refusal waits for a change.
pub fn api_status_standing(code: u16) -> FailureStanding {
    if code == 409 || code >= 500 {
        FailureStanding::Transient
    } else {
        FailureStanding::Permanent
    }
}

/// The failure as the progress conditions see it: anything not transient stops retrying,
/// which is what Stalled says.
pub fn setback<'a>(class: &Class, message: &'a str) -> Setback<'a> {
    Setback {
        failure: Failure {
            reason: class.reason,
            message,
        },
        waits_for_change: !class.is_transient(),
    }
}

/// What a recorded failure means for the next look. `attempts`: consecutive failures,
/// including this one; `token_valid_for`: how long the Secret's token still lives.
pub fn outcome(class: &Class, attempts: u32, token_valid_for: Option<Duration>) -> Outcome {
    match class.standing {
        FailureStanding::Transient => Outcome::Transient {
            attempts,
            retry_after: class.retry_after,
            token_valid_for,
        },
        FailureStanding::Permanent => Outcome::WaitsForChange,
        FailureStanding::HeldBackByOthers => Outcome::HeldBackByOthers,
        FailureStanding::ForeignSecret => Outcome::ForeignSecret,
        FailureStanding::Crowded => Outcome::Crowded,
    }
}

/// Whether the failure metrics count it (a crowded call did not fail).
pub fn counted(class: &Class) -> bool {
    class.standing != FailureStanding::Crowded
}

#[cfg(test)]
mod tests {
    use super::FailureStanding::*;
    use super::*;

    #[test]
    fn api_answers_worth_retrying() {
        let cases = [
            (400, Permanent),
            (403, Permanent),
            (404, Permanent),
            (409, Transient),
            (422, Permanent),
            (429, Permanent),
            (500, Transient),
            (503, Transient),
        ];
        for (code, standing) in cases {
            assert_eq!(api_status_standing(code), standing, "{code}");
        }
    }

    /// Each standing, what the conditions say of it, when the operator looks again and
    /// whether it is counted.
    #[test]
    fn what_each_standing_leads_to() {
        let wait = Some(Duration::from_secs(7));
        let valid = Some(Duration::from_secs(60));
        let cases = [
            (
                Transient,
                false,
                Outcome::Transient {
                    attempts: 3,
                    retry_after: wait,
                    token_valid_for: valid,
                },
                true,
            ),
            (Permanent, true, Outcome::WaitsForChange, true),
            (HeldBackByOthers, true, Outcome::HeldBackByOthers, true),
            (ForeignSecret, true, Outcome::ForeignSecret, true),
            (Crowded, true, Outcome::Crowded, false),
        ];
        for (standing, waits, next, count) in cases {
            let class = Class::new(Reason::AcsThrottled, standing).retry_after(wait);
            let s = setback(&class, "m");
            assert_eq!(s.waits_for_change, waits, "{standing:?}");
            assert_eq!((s.failure.reason, s.failure.message), (class.reason, "m"));
            assert_eq!(outcome(&class, 3, valid), next, "{standing:?}");
            assert_eq!(counted(&class), count, "{standing:?}");
        }
    }

    #[test]
    fn the_metric_label_is_the_reason() {
        for reason in Reason::ALL.iter().copied() {
            assert_eq!(Class::new(reason, Permanent).label, reason.as_str());
        }
    }
}
