//! What the Ready condition says. It is True only while the Secret holds a token for the
//! current spec that is not yet due for renewal, so `kubectl wait` and GitOps health checks
//! tell the truth when the operator falls behind.

use jiff::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

/// The current token in the Secret, if it was issued for the current spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentToken {
    pub renewal_time: Timestamp,
    pub expires_on: Timestamp,
}

/// A failure of the last reconcile: its category (used as the reason) and a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    pub reason: &'a str,
    pub message: &'a str,
}

pub const REASON_TOKEN_VALID: &str = "TokenValid";
pub const REASON_EXPIRED: &str = "Expired";
pub const REASON_PENDING: &str = "Pending";

pub fn readiness(
    now: Timestamp,
    token: Option<CurrentToken>,
    failure: Option<Failure<'_>>,
) -> Readiness {
    let verdict = |ready: bool, reason: &str, message: String| Readiness {
        ready,
        reason: reason.to_string(),
        message,
    };
    match (token, failure) {
        (Some(t), failure) if now >= t.expires_on => {
            let cause = failure
                .map(|f| format!(": {}", f.message))
                .unwrap_or_default();
            verdict(
                false,
                REASON_EXPIRED,
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
            REASON_EXPIRED,
            format!(
                "renewal overdue since {}; token expires at {}",
                t.renewal_time, t.expires_on
            ),
        ),
        (Some(t), _) => verdict(
            true,
            REASON_TOKEN_VALID,
            format!(
                "token valid until {}, renewal at {}",
                t.expires_on, t.renewal_time
            ),
        ),
        (None, Some(f)) => verdict(false, f.reason, f.message.to_string()),
        (None, None) => verdict(false, REASON_PENDING, "no token issued yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    const TOKEN: CurrentToken = CurrentToken {
        renewal_time: Timestamp::constant(1500, 0),
        expires_on: Timestamp::constant(2000, 0),
    };
    const FAIL: Failure<'static> = Failure {
        reason: "AcsUnavailable",
        message: "ACS is unavailable (HTTP 503)",
    };

    #[test]
    fn table() {
        let cases = [
            (1000, Some(TOKEN), None, true, REASON_TOKEN_VALID),
            (1000, Some(TOKEN), Some(FAIL), true, REASON_TOKEN_VALID),
            (1499, Some(TOKEN), None, true, REASON_TOKEN_VALID),
            (1500, Some(TOKEN), None, false, REASON_EXPIRED),
            (1500, Some(TOKEN), Some(FAIL), false, "AcsUnavailable"),
            (1999, Some(TOKEN), Some(FAIL), false, "AcsUnavailable"),
            (2000, Some(TOKEN), Some(FAIL), false, REASON_EXPIRED),
            (2000, Some(TOKEN), None, false, REASON_EXPIRED),
            (1000, None, Some(FAIL), false, "AcsUnavailable"),
            (1000, None, None, false, REASON_PENDING),
        ];
        for (now, token, failure, ready, reason) in cases {
            let r = readiness(at(now), token, failure);
            assert_eq!(
                (r.ready, r.reason.as_str()),
                (ready, reason),
                "now={now} {token:?} {failure:?}"
            );
        }
    }

    #[test]
    fn messages_name_the_times_and_the_cause() {
        let r = readiness(at(2500), Some(TOKEN), Some(FAIL));
        assert!(r.message.contains("1970-01-01T00:33:20Z"), "{}", r.message);
        assert!(r.message.contains("HTTP 503"), "{}", r.message);
    }
}
