//! What the Ready condition says, and the `Reconciling` and `Stalled` conditions beside it.
//! Ready is True only while the Secret holds a token for the current spec that is not yet due
//! for renewal and nothing waits for the user, so `kubectl wait` and GitOps health checks tell
//! the truth when the operator falls behind or stops: never Ready=True beside Stalled=True. Reconciling and Stalled follow kstatus (the rules Flux, `kubectl wait` and
//! cli-utils read): Reconciling=True while the operator works towards Ready by itself,
//! Stalled=True while it cannot get there until the user changes something.

use super::{Reason, TokenRecord};
use jiff::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: Reason,
    pub message: String,
}

/// A failure of the last reconcile: its reason and a message (never a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    pub reason: Reason,
    pub message: &'a str,
}

/// Where a reason leaves an object, for the tools that read status: the one classification
/// of every [`Reason`]. A new reason does not compile until it is given one here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Done: what the object asks for is in place (or the reason announces such a step).
    Done,
    /// On the way: the operator gets there by itself (nothing issued yet, renewal due).
    Reconciling,
    /// A failure that retrying can mend: the operator retries with backoff.
    Retrying,
    /// A failure that waits for a change by the user (spec, connection, Secret, ACS access):
    /// the operator does not retry until something it watches changes.
    Stalled,
}

impl Reason {
    pub fn standing(self) -> Standing {
        use Standing::*;
        match self {
            Reason::TokenValid | Reason::Valid => Done,
            Reason::IdentityCreated
            | Reason::TokenIssued
            | Reason::TokenRenewed
            | Reason::TokensRevoked
            | Reason::IdentityDeleted
            | Reason::RetainNotAllowed => Done,
            Reason::Pending | Reason::Expired | Reason::InLine => Reconciling,
            Reason::AcsThrottled | Reason::AcsUnavailable => Retrying,
            // The breaker lets a probe through after its cooldown, by itself.
            Reason::AcsCircuitOpen => Retrying,
            // Mostly passing faults; the failures of these kinds that are not (an API request
            // the server refuses, a credential Entra ID rejects) are told apart by the error,
            // see `controller::Error::class`.
            Reason::EntraTokenFailed | Reason::KubernetesError => Retrying,
            Reason::ConnectionNotFound
            | Reason::ConnectionNotAllowed
            | Reason::InvalidConnectionString
            | Reason::InvalidCaBundle
            | Reason::InvalidConnection
            | Reason::EndpointNotAllowed
            | Reason::AcsCertificateUntrusted
            | Reason::InvalidWorkloadIdentity
            | Reason::AcsUnauthorized
            | Reason::AcsRejected
            | Reason::AcsInvalidResponse
            | Reason::IdentityNotFound
            | Reason::SecretConflict
            | Reason::InvalidSpec => Stalled,
            // Tenancy refusals: a change of the connection's rules, or another object's
            // deletion (which nudges the waiting ones), lets them go on.
            Reason::AdoptionNotAllowed | Reason::IdentityClaimed | Reason::IdentityLimitReached => {
                Stalled
            }
            // Provenance refusals: the identity stays where it lives until the user points the
            // connection back or deletes the object; a foreign answer is never taken.
            Reason::IdentityOnOtherResource
            | Reason::ProvenanceUnknown
            | Reason::ForeignIdentity => Stalled,
            // Another connection's deletion frees the namespace's share; looked at again
            // every 5 minutes.
            Reason::ConnectionLimitReached => Stalled,
            // Restarts of consuming workloads (never the Ready condition's): a restart done; a
            // conflict or an annotation not understood waits for a change; a failed write is
            // tried again after the minimum interval.
            Reason::Restarted => Done,
            Reason::RestartConflict | Reason::RestartAnnotationInvalid => Stalled,
            Reason::RestartTargetMissing | Reason::RestartForbidden | Reason::RestartFailed => {
                Retrying
            }
            // A notice: the create goes on with the GA api-version at once.
            Reason::IdempotentCreateUnavailable => Retrying,
        }
    }
}

/// The last reconcile's failure as the progress conditions see it: `waits_for_change` is
/// whether the operator stopped retrying (a [`Standing::Stalled`] reason, or a failure of a
/// retrying kind that is not passing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setback<'a> {
    pub failure: Failure<'a>,
    pub waits_for_change: bool,
}

/// A condition that is True: its reason and message. Absent means False.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    pub reason: Reason,
    pub message: String,
}

/// The kstatus conditions beside Ready.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Progress {
    pub reconciling: Option<Raised>,
    pub stalled: Option<Raised>,
}

/// Reconciling and Stalled from the Ready verdict, the last failure and whether the object
/// waits in line for ACS capacity. Stalled wins over everything: the operator does not get
/// out of it by itself, even while an older token is still valid. Otherwise Reconciling is
/// True while Ready is False and the operator works on it: in line, retrying, nothing
/// issued yet, renewal due.
pub fn progress(ready: &Readiness, setback: Option<Setback<'_>>, in_line: bool) -> Progress {
    let raised = |reason: Reason, message: &str| {
        Some(Raised {
            reason,
            message: message.to_string(),
        })
    };
    match setback {
        Some(s) if s.waits_for_change => Progress {
            reconciling: None,
            stalled: raised(s.failure.reason, s.failure.message),
        },
        _ if ready.ready => Progress::default(),
        _ if in_line => Progress {
            reconciling: raised(
                Reason::InLine,
                &format!("waiting in line for ACS capacity; {}", ready.message),
            ),
            stalled: None,
        },
        Some(s) => Progress {
            reconciling: raised(
                s.failure.reason,
                &format!("retrying: {}", s.failure.message),
            ),
            stalled: None,
        },
        None => Progress {
            reconciling: raised(ready.reason, &ready.message),
            stalled: None,
        },
    }
}

/// What the tools that read status (kstatus, the Argo CD health check) see of an object's
/// status as it stands, before the operator writes it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shown {
    /// The status holds conditions (the operator has written it since it was created).
    pub has_conditions: bool,
    /// `status.observedGeneration` (the CRD defaults it to 0 on a new object).
    pub observed_generation: Option<i64>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
}

/// Whether the status of an object waiting in line for ACS capacity must be written to say
/// so. Not while the operator has written no condition to it and its observedGeneration
/// trails its generation: kstatus reads it as in progress by the generation, Argo CD as
/// Progressing by the missing conditions, and no token or failure recorded there goes stale.
/// So a new identity waiting for its create costs no write while it waits (at 10,000 new
/// identities, 9,000 waited and each cost one); one that holds a token or a failure shows
/// `Reconciling=True` `InLine`, written once (an unchanged status is not written again).
///
/// Nor for a renewal's moment in line ([`routine_renewal_wait`]): `token` is the token the
/// Secret holds for the current spec, `now` the reconcile's time.
pub fn in_line_needs_writing(shown: Shown, token: Option<&TokenRecord>, now: Timestamp) -> bool {
    let in_progress_unwritten = !shown.has_conditions
        && shown
            .observed_generation
            .zip(shown.generation)
            .is_some_and(|(observed, generation)| observed != generation);
    !in_progress_unwritten && !routine_renewal_wait(token, now)
}

/// The longest a due renewal waits in line without its status saying so.
pub const ROUTINE_WAIT_CAP: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether a wait in line is a due renewal's routine moment: the token is still valid and
/// came due for renewal less than a quarter of its margin (renewal to expiry) ago, at most
/// [`ROUTINE_WAIT_CAP`]. Where the issue limit is busy every renewal waits a moment; writing
/// it would cost a status write each, and turn Ready False (renewal overdue) until the
/// renewal's own write a moment later. A wait that lasts longer is written: then the operator
/// is behind. A refresh or revoke request waits visibly, as does a token not yet due.
pub fn routine_renewal_wait(token: Option<&TokenRecord>, now: Timestamp) -> bool {
    let Some(t) = token else {
        return false;
    };
    let Some(margin) = super::time_until(t.expires_on, t.renewal_time) else {
        return false;
    };
    let grace = (margin / 4).min(ROUTINE_WAIT_CAP);
    now < t.expires_on && super::time_until(now, t.renewal_time).is_some_and(|late| late < grace)
}

/// The Ready condition from the token the Secret holds for the current spec (`None` if it
/// holds none, or one issued for something else) and the last reconcile's setback.
///
/// A setback that waits for the user (what raises Stalled, see [`progress`]) makes Ready
/// False with its reason at once, whatever the token's times: the operator will not renew
/// until the user acts, and some such failures mean the token no longer works (the identity
/// was deleted in ACS: `IdentityNotFound`).
pub fn readiness(
    now: Timestamp,
    token: Option<&TokenRecord>,
    setback: Option<Setback<'_>>,
) -> Readiness {
    let verdict = |ready: bool, reason: Reason, message: String| Readiness {
        ready,
        reason,
        message,
    };
    if let Some(s) = setback.filter(|s| s.waits_for_change) {
        let kept = token
            .filter(|t| now < t.expires_on)
            .map(|t| {
                format!(
                    "; the Secret keeps its last token, issued to expire at {}",
                    t.expires_on
                )
            })
            .unwrap_or_default();
        return verdict(
            false,
            s.failure.reason,
            format!("{}{kept}", s.failure.message),
        );
    }
    match (token, setback.map(|s| s.failure)) {
        (Some(t), failure) if now >= t.expires_on => {
            let cause = failure
                .map(|f| format!(": {}", f.message))
                .unwrap_or_default();
            verdict(
                false,
                Reason::Expired,
                format!("token expired at {}{cause}", t.expires_on),
            )
        }
        (Some(t), Some(f)) if now >= t.renewal_time => verdict(
            false,
            f.reason,
            format!(
                "renewal overdue since {} (token expires at {}): {}",
                t.renewal_time, t.expires_on, f.message
            ),
        ),
        (Some(t), None) if now >= t.renewal_time => verdict(
            false,
            Reason::Expired,
            format!(
                "renewal overdue since {}; token expires at {}",
                t.renewal_time, t.expires_on
            ),
        ),
        (Some(t), _) => verdict(
            true,
            Reason::TokenValid,
            format!(
                "token valid until {}, renewal at {}",
                t.expires_on, t.renewal_time
            ),
        ),
        (None, Some(f)) => verdict(false, f.reason, f.message.to_string()),
        (None, None) => verdict(
            false,
            Reason::Pending,
            "no token issued for the current spec yet".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn token() -> TokenRecord {
        TokenRecord {
            identity_id: "8:acs:r_1".into(),
            params: crate::policy::TokenParams::new(&[], 60, String::new()),
            issued_at: None,
            renewal_time: at(1500),
            expires_on: at(2000),
            token_hash: String::new(),
            secret_resource_version: None,
        }
    }
    const FAIL: Failure<'static> = Failure {
        reason: Reason::AcsUnavailable,
        message: "ACS is unavailable (HTTP 503)",
    };
    /// A passing failure: retried with backoff.
    const RETRYING: Setback<'static> = Setback {
        failure: FAIL,
        waits_for_change: false,
    };
    /// The identity was deleted in ACS behind the operator's back.
    const GONE: Setback<'static> = Setback {
        failure: Failure {
            reason: Reason::IdentityNotFound,
            message: "ACS identity 8:acs:r_1 does not exist",
        },
        waits_for_change: true,
    };

    #[test]
    fn table() {
        let t = token();
        let cases = [
            (1000, Some(&t), None, true, Reason::TokenValid),
            (1000, Some(&t), Some(RETRYING), true, Reason::TokenValid),
            (1499, Some(&t), None, true, Reason::TokenValid),
            (1500, Some(&t), None, false, Reason::Expired),
            (
                1500,
                Some(&t),
                Some(RETRYING),
                false,
                Reason::AcsUnavailable,
            ),
            (
                1999,
                Some(&t),
                Some(RETRYING),
                false,
                Reason::AcsUnavailable,
            ),
            (2000, Some(&t), Some(RETRYING), false, Reason::Expired),
            (2000, Some(&t), None, false, Reason::Expired),
            (1000, None, Some(RETRYING), false, Reason::AcsUnavailable),
            (1000, None, None, false, Reason::Pending),
            // A failure that waits for the user: not Ready at once, with its reason, however
            // long the token in the Secret would last.
            (1000, Some(&t), Some(GONE), false, Reason::IdentityNotFound),
            (1600, Some(&t), Some(GONE), false, Reason::IdentityNotFound),
            (2500, Some(&t), Some(GONE), false, Reason::IdentityNotFound),
            (1000, None, Some(GONE), false, Reason::IdentityNotFound),
        ];
        for (now, token, setback, ready, reason) in cases {
            let r = readiness(at(now), token, setback);
            assert_eq!(
                (r.ready, r.reason),
                (ready, reason),
                "now={now} {token:?} {setback:?}"
            );
        }
        let r = readiness(at(1000), Some(&t), Some(GONE));
        assert!(
            r.message.starts_with(GONE.failure.message) && r.message.contains("00:33:20Z"),
            "the failure first, then what the Secret still holds: {}",
            r.message
        );
    }

    /// Every reason, and the standing a user would expect of it: a failure only the user can
    /// mend stalls (Flux fails fast on it), a passing one retries, the rest are progress.
    #[test]
    fn every_reason_has_its_standing() {
        use Standing::*;
        let table = [
            (Reason::TokenValid, Done),
            (Reason::Expired, Reconciling),
            (Reason::Pending, Reconciling),
            (Reason::InLine, Reconciling),
            (Reason::Valid, Done),
            (Reason::IdentityCreated, Done),
            (Reason::TokenIssued, Done),
            (Reason::TokenRenewed, Done),
            (Reason::TokensRevoked, Done),
            (Reason::IdentityDeleted, Done),
            (Reason::ConnectionNotFound, Stalled),
            (Reason::ConnectionNotAllowed, Stalled),
            (Reason::InvalidConnectionString, Stalled),
            (Reason::InvalidCaBundle, Stalled),
            (Reason::InvalidConnection, Stalled),
            (Reason::EndpointNotAllowed, Stalled),
            (Reason::AcsCertificateUntrusted, Stalled),
            (Reason::InvalidWorkloadIdentity, Stalled),
            (Reason::EntraTokenFailed, Retrying),
            (Reason::AcsUnauthorized, Stalled),
            (Reason::AcsThrottled, Retrying),
            (Reason::AcsUnavailable, Retrying),
            (Reason::AcsCircuitOpen, Retrying),
            (Reason::AcsRejected, Stalled),
            (Reason::AcsInvalidResponse, Stalled),
            (Reason::IdentityNotFound, Stalled),
            (Reason::SecretConflict, Stalled),
            (Reason::InvalidSpec, Stalled),
            (Reason::KubernetesError, Retrying),
            (Reason::AdoptionNotAllowed, Stalled),
            (Reason::IdentityClaimed, Stalled),
            (Reason::IdentityLimitReached, Stalled),
            (Reason::IdentityOnOtherResource, Stalled),
            (Reason::ProvenanceUnknown, Stalled),
            (Reason::ForeignIdentity, Stalled),
            (Reason::RetainNotAllowed, Done),
            (Reason::ConnectionLimitReached, Stalled),
            (Reason::Restarted, Done),
            (Reason::RestartConflict, Stalled),
            (Reason::RestartTargetMissing, Retrying),
            (Reason::RestartForbidden, Retrying),
            (Reason::RestartFailed, Retrying),
            (Reason::RestartAnnotationInvalid, Stalled),
            (Reason::IdempotentCreateUnavailable, Retrying),
        ];
        for (reason, standing) in table {
            assert_eq!(reason.standing(), standing, "{reason}");
        }
        let listed: Vec<_> = table.iter().map(|(r, _)| *r).collect();
        let unlisted: Vec<_> = Reason::ALL.iter().filter(|r| !listed.contains(r)).collect();
        assert!(unlisted.is_empty(), "no expected standing for {unlisted:?}");
    }

    #[test]
    fn progress_table() {
        let t = token();
        let stalled = Setback {
            failure: Failure {
                reason: Reason::AcsUnauthorized,
                message: "ACS refused the key (HTTP 401)",
            },
            waits_for_change: true,
        };
        let retrying = Setback {
            failure: FAIL,
            waits_for_change: false,
        };
        let r = |c: Option<Raised>| c.map(|c| c.reason);
        // (now, token, setback, in line) -> (Reconciling, Stalled)
        let cases = [
            (1000, Some(&t), None, false, None, None),
            (1000, Some(&t), Some(retrying), false, None, None),
            (
                1000,
                Some(&t),
                Some(stalled),
                false,
                None,
                Some(Reason::AcsUnauthorized),
            ),
            (
                1600,
                Some(&t),
                Some(stalled),
                false,
                None,
                Some(Reason::AcsUnauthorized),
            ),
            (
                1000,
                None,
                Some(stalled),
                true,
                None,
                Some(Reason::AcsUnauthorized),
            ),
            (1600, Some(&t), None, false, Some(Reason::Expired), None),
            (1600, Some(&t), None, true, Some(Reason::InLine), None),
            (1000, Some(&t), None, true, None, None),
            (
                1600,
                Some(&t),
                Some(retrying),
                false,
                Some(Reason::AcsUnavailable),
                None,
            ),
            (
                2500,
                Some(&t),
                Some(retrying),
                false,
                Some(Reason::AcsUnavailable),
                None,
            ),
            (
                1000,
                None,
                Some(retrying),
                false,
                Some(Reason::AcsUnavailable),
                None,
            ),
            (1000, None, None, false, Some(Reason::Pending), None),
            (1000, None, None, true, Some(Reason::InLine), None),
        ];
        for (i, (now, token, setback, in_line, reconciling, stall)) in cases.into_iter().enumerate()
        {
            let ready = readiness(at(now), token, setback);
            let p = progress(&ready, setback, in_line);
            assert_eq!(
                (r(p.reconciling), r(p.stalled)),
                (reconciling, stall),
                "case {i}"
            );
        }
        let ready = readiness(at(1000), None, Some(stalled));
        let p = progress(&ready, Some(stalled), false);
        assert_eq!(p.stalled.unwrap().message, "ACS refused the key (HTTP 401)");
    }

    /// A waiting identity's status is written only where the tools would otherwise not read
    /// it as in progress, or would show something stale.
    #[test]
    fn in_line_writes_only_what_the_tools_cannot_read_already() {
        let shown = |has_conditions, observed_generation, generation| Shown {
            has_conditions,
            observed_generation,
            generation,
        };
        let cases = [
            // New: the CRD's observedGeneration 0 against generation 1, nothing written yet.
            ("new", shown(false, Some(0), Some(1)), false),
            (
                "new, spec edited while in line",
                shown(false, Some(0), Some(3)),
                false,
            ),
            // kstatus reads an object without conditions whose generation was observed as
            // Current: it must be told.
            (
                "no conditions, generation observed",
                shown(false, Some(1), Some(1)),
                true,
            ),
            ("no observedGeneration", shown(false, None, Some(1)), true),
            ("no generation", shown(false, Some(0), None), true),
            // Conditions written before (a token, a failure, Ready): they would go stale.
            ("written before", shown(true, Some(1), Some(1)), true),
            (
                "written before, spec changed",
                shown(true, Some(1), Some(2)),
                true,
            ),
        ];
        for (case, shown, write) in cases {
            assert_eq!(in_line_needs_writing(shown, None, at(0)), write, "{case}");
        }
        // A renewal's moment in line is not written, whatever was shown.
        let t = token();
        let written = shown(true, Some(1), Some(1));
        assert!(!in_line_needs_writing(written, Some(&t), at(1500)));
        assert!(in_line_needs_writing(written, Some(&t), at(1499)));
    }

    /// token(): renewal at 1,500 s, expiry at 2,000 s: a margin of 500 s, a grace of 125 s.
    #[test]
    fn a_renewal_waits_unseen_for_a_quarter_of_its_margin_at_most_five_minutes() {
        let t = token();
        let long = TokenRecord {
            renewal_time: at(10_000),
            expires_on: at(10_000 + 8 * 3600),
            ..token()
        };
        let cases = [
            ("no token", None, at(1500), false),
            (
                "not due yet: a refresh or revoke request",
                Some(&t),
                at(1499),
                false,
            ),
            ("just due", Some(&t), at(1500), true),
            ("due 124 s ago", Some(&t), at(1624), true),
            ("due 125 s ago: behind", Some(&t), at(1625), false),
            ("expired", Some(&t), at(2000), false),
            ("8 h margin, due 299 s ago", Some(&long), at(10_299), true),
            (
                "8 h margin, due 300 s ago: the cap",
                Some(&long),
                at(10_300),
                false,
            ),
        ];
        for (case, token, now, routine) in cases {
            assert_eq!(routine_renewal_wait(token, now), routine, "{case}");
        }
    }

    #[test]
    fn messages_name_the_times_and_the_cause() {
        let t = token();
        let r = readiness(at(2500), Some(&t), Some(RETRYING));
        assert!(r.message.contains("1970-01-01T00:33:20Z"), "{}", r.message);
        assert!(r.message.contains("HTTP 503"), "{}", r.message);
    }
}
