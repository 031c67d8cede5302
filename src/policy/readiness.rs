//! What the Ready condition says. It is True only while the Secret holds a token for the
//! current spec that is not yet due for renewal, so `kubectl wait` and GitOps health checks
//! tell the truth when the operator falls behind.

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

/// The Ready condition from the token the Secret holds for the current spec (`None` if it
/// holds none, or one issued for something else) and the last reconcile's failure.
pub fn readiness(
    now: Timestamp,
    token: Option<&TokenRecord>,
    failure: Option<Failure<'_>>,
) -> Readiness {
    let verdict = |ready: bool, reason: Reason, message: String| Readiness {
        ready,
        reason,
        message,
    };
    match (token, failure) {
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
        (None, None) => verdict(false, Reason::Pending, "no token issued yet".into()),
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

    #[test]
    fn table() {
        let t = token();
        let cases = [
            (1000, Some(&t), None, true, Reason::TokenValid),
            (1000, Some(&t), Some(FAIL), true, Reason::TokenValid),
            (1499, Some(&t), None, true, Reason::TokenValid),
            (1500, Some(&t), None, false, Reason::Expired),
            (1500, Some(&t), Some(FAIL), false, Reason::AcsUnavailable),
            (1999, Some(&t), Some(FAIL), false, Reason::AcsUnavailable),
            (2000, Some(&t), Some(FAIL), false, Reason::Expired),
            (2000, Some(&t), None, false, Reason::Expired),
            (1000, None, Some(FAIL), false, Reason::AcsUnavailable),
            (1000, None, None, false, Reason::Pending),
        ];
        for (now, token, failure, ready, reason) in cases {
            let r = readiness(at(now), token, failure);
            assert_eq!(
                (r.ready, r.reason),
                (ready, reason),
                "now={now} {token:?} {failure:?}"
            );
        }
    }

    #[test]
    fn messages_name_the_times_and_the_cause() {
        let t = token();
        let r = readiness(at(2500), Some(&t), Some(FAIL));
        assert!(r.message.contains("1970-01-01T00:33:20Z"), "{}", r.message);
        assert!(r.message.contains("HTTP 503"), "{}", r.message);
    }
}
