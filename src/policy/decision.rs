//! What to do next with one identity: a chain of small predicates over what is stored (status
//! and Secret) and what is wanted (spec), each naming its reason — the shape of cert-manager's
//! re-issuance policies. No I/O: the controller gathers the facts and carries out the answer.

use super::{Phase, Reason};
use crate::acs::Scope;
use jiff::Timestamp;
use std::fmt;

/// Everything that, if it changes, requires a new token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenParams {
    /// Sorted and free of duplicates, so order in the spec does not matter.
    pub scopes: Vec<Scope>,
    pub lifetime_minutes: u32,
    /// Fingerprint of the connection (endpoint and key) the token was issued through: a rotated
    /// key revokes the tokens issued with the old one.
    pub connection: String,
}

impl TokenParams {
    pub fn new(scopes: &[Scope], lifetime_minutes: u32, connection: String) -> Self {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        Self {
            scopes,
            lifetime_minutes,
            connection,
        }
    }
}

/// The token the operator last wrote to the Secret, as status records it: the one description
/// of "our token" that every decision reads, parsed from status once per reconcile. (ACS's
/// answer is [`crate::acs::IssuedToken`]; the stored form is the status fields.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub identity_id: String,
    /// What it was issued for.
    pub params: TokenParams,
    pub issued_at: Option<Timestamp>,
    pub expires_on: Timestamp,
    pub renewal_time: Timestamp,
    /// A short hash of the token, to notice edits of the Secret without keeping the token.
    pub token_hash: String,
    /// The Secret's resourceVersion right after the operator wrote it.
    pub secret_resource_version: Option<String>,
}

impl TokenRecord {
    /// How long the token still lives at `now` (`None` once expired).
    pub fn valid_for(&self, now: Timestamp) -> Option<std::time::Duration> {
        super::time_until(self.expires_on, now)
    }
}

/// How the target Secret compares with what the operator last wrote there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretState {
    Missing,
    /// Exists but is not controlled by this AcsIdentity: never overwritten.
    Foreign,
    /// Token data differs from the recorded token (edited, or written by an older attempt).
    TokenChanged,
    /// Token intact, but labels, annotations or other keys differ from what they should be.
    MetadataDrift,
    Current,
}

/// The facts one decision is made from.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// `spec.identityId` when adopting, else `status.identityId` once created.
    pub identity_id: Option<&'a str>,
    pub wanted: &'a TokenParams,
    pub issued: Option<&'a TokenRecord>,
    pub secret: SecretState,
    /// The refresh annotation holds a value not yet handled.
    pub refresh_requested: bool,
    /// The revoke annotation holds a value not yet handled.
    pub revoke_requested: bool,
    pub now: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueReason {
    /// Revoke every token of the identity first (incident response), then issue.
    RevokeRequested,
    FirstToken,
    IdentityChanged,
    RefreshRequested,
    SpecChanged,
    ConnectionChanged,
    SecretMissing,
    SecretEdited,
    Expired,
    Due,
}

impl IssueReason {
    /// Where the new token's renewal falls: only a renewal on schedule keeps its place in
    /// the cycle (see [`super::schedule`]).
    pub fn phase(self) -> Phase {
        match self {
            IssueReason::Due => Phase::Keep,
            _ => Phase::New,
        }
    }

    /// The Event that announces a token issued for this reason.
    pub fn event_reason(self) -> Reason {
        match self {
            IssueReason::Due | IssueReason::Expired => Reason::TokenRenewed,
            IssueReason::RevokeRequested => Reason::TokensRevoked,
            _ => Reason::TokenIssued,
        }
    }
}

impl fmt::Display for IssueReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IssueReason::FirstToken => "no token issued yet",
            IssueReason::IdentityChanged => "identity changed",
            IssueReason::RefreshRequested => "refresh requested by annotation",
            IssueReason::RevokeRequested => "revoke requested by annotation",
            IssueReason::SpecChanged => "scopes or lifetime changed",
            IssueReason::ConnectionChanged => "connection changed",
            IssueReason::SecretMissing => "Secret missing",
            IssueReason::SecretEdited => "Secret token edited",
            IssueReason::Expired => "token expired",
            IssueReason::Due => "renewal due",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The Secret name is taken by an object this identity does not own.
    SecretConflict,
    /// No identity yet: create one together with its first token (one ACS call).
    CreateIdentity,
    /// Issue a new token for the existing identity.
    Issue(IssueReason),
    /// The token is fine but the Secret's metadata drifted: rewrite it, no ACS call.
    RewriteSecret,
    /// Nothing to do until the recorded token's renewal time.
    UpToDate,
}

/// Decides the next action. The order matters: a conflict blocks everything, and the first
/// reason to re-issue wins so the Event names the most specific cause.
pub fn decide(o: &Observed<'_>) -> Decision {
    if o.secret == SecretState::Foreign {
        return Decision::SecretConflict;
    }
    let Some(identity_id) = o.identity_id else {
        return Decision::CreateIdentity;
    };
    // A leaked token must stop working now, whatever else is due.
    if o.revoke_requested {
        return Decision::Issue(IssueReason::RevokeRequested);
    }
    let Some(issued) = o.issued else {
        return Decision::Issue(IssueReason::FirstToken);
    };
    let reasons = [
        (
            issued.identity_id != identity_id,
            IssueReason::IdentityChanged,
        ),
        (o.refresh_requested, IssueReason::RefreshRequested),
        (
            issued.params.scopes != o.wanted.scopes
                || issued.params.lifetime_minutes != o.wanted.lifetime_minutes,
            IssueReason::SpecChanged,
        ),
        (
            issued.params.connection != o.wanted.connection,
            IssueReason::ConnectionChanged,
        ),
        (o.secret == SecretState::Missing, IssueReason::SecretMissing),
        (
            o.secret == SecretState::TokenChanged,
            IssueReason::SecretEdited,
        ),
        (o.now >= issued.expires_on, IssueReason::Expired),
        (o.now >= issued.renewal_time, IssueReason::Due),
    ];
    if let Some((_, reason)) = reasons.into_iter().find(|(applies, _)| *applies) {
        return Decision::Issue(reason);
    }
    if o.secret == SecretState::MetadataDrift {
        return Decision::RewriteSecret;
    }
    Decision::UpToDate
}

/// The token the Secret holds for the current spec: the recorded one, if the Secret still
/// holds it (current, or only its metadata drifted) and it was issued for what is `wanted`.
/// What the Ready condition speaks of.
pub fn current_token<'a>(
    issued: Option<&'a TokenRecord>,
    secret: SecretState,
    wanted: &TokenParams,
) -> Option<&'a TokenRecord> {
    let held = matches!(secret, SecretState::Current | SecretState::MetadataDrift);
    issued.filter(|t| held && t.params == *wanted)
}

/// By when a token issued for `reason` is due: its place in the rate limiter's line.
/// Renewals queue by the expiry of the token they replace (`expires_on`, the recorded
/// token's); a missing or expired token is due `now`, and so is a revoke, which answers an
/// incident.
pub fn issue_deadline(
    reason: IssueReason,
    expires_on: Option<Timestamp>,
    now: Timestamp,
) -> Timestamp {
    match reason {
        IssueReason::RevokeRequested => now,
        _ => expires_on.filter(|t| *t > now).unwrap_or(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn params() -> TokenParams {
        TokenParams::new(&[Scope::Voip, Scope::Chat], 1440, "conn-a".into())
    }

    fn record() -> TokenRecord {
        TokenRecord {
            identity_id: "8:acs:r_1".into(),
            params: params(),
            issued_at: Some(at(500)),
            expires_on: at(2000),
            renewal_time: at(1500),
            token_hash: "0123456789abcdef".into(),
            secret_resource_version: None,
        }
    }

    fn observed<'a>(wanted: &'a TokenParams, issued: Option<&'a TokenRecord>) -> Observed<'a> {
        Observed {
            identity_id: Some("8:acs:r_1"),
            wanted,
            issued,
            secret: SecretState::Current,
            refresh_requested: false,
            revoke_requested: false,
            now: at(1000),
        }
    }

    #[test]
    fn up_to_date_waits_for_the_renewal_time() {
        let (wanted, rec) = (params(), record());
        assert_eq!(decide(&observed(&wanted, Some(&rec))), Decision::UpToDate);
    }

    #[test]
    fn scope_order_and_duplicates_do_not_matter() {
        let rec = record();
        let wanted = TokenParams::new(
            &[Scope::Chat, Scope::Voip, Scope::Chat],
            1440,
            "conn-a".into(),
        );
        assert_eq!(wanted, params());
        assert!(matches!(
            decide(&observed(&wanted, Some(&rec))),
            Decision::UpToDate
        ));
    }

    #[test]
    fn table_of_reasons() {
        let rec = record();
        let base = params();
        let other_scopes = TokenParams::new(&[Scope::Chat], 1440, "conn-a".into());
        let other_lifetime = TokenParams::new(&[Scope::Chat, Scope::Voip], 60, "conn-a".into());
        let other_conn = TokenParams::new(&[Scope::Chat, Scope::Voip], 1440, "conn-b".into());
        type Tweak = fn(&mut Observed<'_>);
        let cases: Vec<(&str, &TokenParams, Option<&TokenRecord>, Tweak, Decision)> = vec![
            (
                "foreign secret blocks all",
                &base,
                None,
                |o| {
                    o.secret = SecretState::Foreign;
                    o.identity_id = None
                },
                Decision::SecretConflict,
            ),
            (
                "no identity",
                &base,
                None,
                |o| o.identity_id = None,
                Decision::CreateIdentity,
            ),
            (
                "no identity, secret missing",
                &base,
                None,
                |o| {
                    o.identity_id = None;
                    o.secret = SecretState::Missing
                },
                Decision::CreateIdentity,
            ),
            (
                "identity but never issued",
                &base,
                None,
                |_| {},
                Decision::Issue(IssueReason::FirstToken),
            ),
            (
                "adopted a different identity",
                &base,
                Some(&rec),
                |o| o.identity_id = Some("8:acs:r_2"),
                Decision::Issue(IssueReason::IdentityChanged),
            ),
            (
                "refresh annotation",
                &base,
                Some(&rec),
                |o| o.refresh_requested = true,
                Decision::Issue(IssueReason::RefreshRequested),
            ),
            (
                "revoke annotation beats everything due",
                &other_scopes,
                Some(&rec),
                |o| {
                    o.revoke_requested = true;
                    o.refresh_requested = true;
                    o.secret = SecretState::Missing;
                    o.now = at(3000);
                },
                Decision::Issue(IssueReason::RevokeRequested),
            ),
            (
                "revoke annotation for an adopted identity without a token yet",
                &base,
                None,
                |o| o.revoke_requested = true,
                Decision::Issue(IssueReason::RevokeRequested),
            ),
            (
                "revoke annotation before any identity: the create is fresh",
                &base,
                None,
                |o| {
                    o.revoke_requested = true;
                    o.identity_id = None;
                },
                Decision::CreateIdentity,
            ),
            (
                "a foreign Secret blocks a revoke too",
                &base,
                Some(&rec),
                |o| {
                    o.revoke_requested = true;
                    o.secret = SecretState::Foreign;
                },
                Decision::SecretConflict,
            ),
            (
                "scopes changed",
                &other_scopes,
                Some(&rec),
                |_| {},
                Decision::Issue(IssueReason::SpecChanged),
            ),
            (
                "lifetime changed",
                &other_lifetime,
                Some(&rec),
                |_| {},
                Decision::Issue(IssueReason::SpecChanged),
            ),
            (
                "connection rotated",
                &other_conn,
                Some(&rec),
                |_| {},
                Decision::Issue(IssueReason::ConnectionChanged),
            ),
            (
                "secret deleted",
                &base,
                Some(&rec),
                |o| o.secret = SecretState::Missing,
                Decision::Issue(IssueReason::SecretMissing),
            ),
            (
                "secret edited",
                &base,
                Some(&rec),
                |o| o.secret = SecretState::TokenChanged,
                Decision::Issue(IssueReason::SecretEdited),
            ),
            (
                "one second before renewal",
                &base,
                Some(&rec),
                |o| o.now = at(1499),
                Decision::UpToDate,
            ),
            (
                "exactly at renewal",
                &base,
                Some(&rec),
                |o| o.now = at(1500),
                Decision::Issue(IssueReason::Due),
            ),
            (
                "past renewal",
                &base,
                Some(&rec),
                |o| o.now = at(1999),
                Decision::Issue(IssueReason::Due),
            ),
            (
                "exactly at expiry",
                &base,
                Some(&rec),
                |o| o.now = at(2000),
                Decision::Issue(IssueReason::Expired),
            ),
            (
                "long after expiry",
                &base,
                Some(&rec),
                |o| o.now = at(99_999),
                Decision::Issue(IssueReason::Expired),
            ),
            (
                "metadata drift only",
                &base,
                Some(&rec),
                |o| o.secret = SecretState::MetadataDrift,
                Decision::RewriteSecret,
            ),
            (
                "drift and due: issue wins",
                &base,
                Some(&rec),
                |o| {
                    o.secret = SecretState::MetadataDrift;
                    o.now = at(1600)
                },
                Decision::Issue(IssueReason::Due),
            ),
            (
                "refresh beats spec change",
                &other_scopes,
                Some(&rec),
                |o| o.refresh_requested = true,
                Decision::Issue(IssueReason::RefreshRequested),
            ),
        ];
        for (name, wanted, issued, tweak, expected) in cases {
            let mut o = observed(wanted, issued);
            tweak(&mut o);
            assert_eq!(decide(&o), expected, "{name}");
        }
    }

    #[test]
    fn issue_deadlines() {
        use IssueReason::*;
        let now = at(1000);
        let cases = [
            (Due, Some(at(1600)), at(1600)),
            (Expired, Some(at(900)), now),
            (SpecChanged, Some(at(1600)), at(1600)),
            (FirstToken, None, now),
            (SecretMissing, Some(at(1000)), now),
            (RevokeRequested, Some(at(1600)), now),
            (RevokeRequested, None, now),
        ];
        for (reason, expires_on, deadline) in cases {
            assert_eq!(
                issue_deadline(reason, expires_on, now),
                deadline,
                "{reason:?} {expires_on:?}"
            );
        }
    }

    #[test]
    fn the_current_token_is_the_recorded_one_still_held_for_the_spec() {
        use SecretState::*;
        let (wanted, issued) = (params(), record());
        let other = TokenParams::new(&[], 30, "conn".into());
        let cases = [
            (Some(&issued), Current, &wanted, true),
            (Some(&issued), MetadataDrift, &wanted, true),
            (Some(&issued), TokenChanged, &wanted, false),
            (Some(&issued), Missing, &wanted, false),
            (Some(&issued), Foreign, &wanted, false),
            (Some(&issued), Current, &other, false),
            (None, Current, &wanted, false),
        ];
        for (i, (issued, secret, wanted, held)) in cases.into_iter().enumerate() {
            assert_eq!(
                current_token(issued, secret, wanted).is_some(),
                held,
                "case {i}"
            );
        }
    }
}
