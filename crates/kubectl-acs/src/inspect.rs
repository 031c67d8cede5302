//! `inspect`: what the token in an identity's Secret says, held against what status records.
//! The token itself is printed only when asked (`--show-token`).

use crate::report::when;
use crate::token::{Claims, claims};
use acs_identity_operator::api::AcsIdentity;
use acs_identity_operator::controller::token_secret::token_hash;
use jiff::Timestamp;
use serde::Serialize;
use std::fmt::Write as _;

/// What `inspect` found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub namespace: String,
    pub name: String,
    pub secret: String,
    pub identity_id: Option<String>,
    pub scopes: Vec<String>,
    pub issued_at: Option<Timestamp>,
    pub expires_at: Option<Timestamp>,
    pub seconds_left: Option<i64>,
    /// Why the claims could not be read, if they could not.
    pub unreadable: Option<String>,
    /// Each comparison with status: what, and whether it matched.
    pub matches_status: Vec<(String, bool)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Holds the token against `obj`'s status.
pub fn inspect(obj: &AcsIdentity, secret: &str, token: &str, now: Timestamp) -> Inspection {
    let (read, unreadable) = match claims(token) {
        Ok(c) => (c, None),
        Err(e) => (Claims::default(), Some(e.to_string())),
    };
    let status = obj.status.clone().unwrap_or_default();
    let mut matches = Vec::new();
    let recorded = status.issued_for.as_ref().map(|i| i.token_hash.as_str());
    matches.push((
        "the token is the one status records".to_string(),
        recorded == Some(token_hash(token).as_str()),
    ));
    if let (Some(id), Some(claimed)) = (&status.identity_id, &read.identity_id) {
        matches.push((
            "the token's identity is status.identityId".into(),
            id == claimed,
        ));
    }
    if let (Some(recorded), Some(exp)) = (&status.token_expires_on, read.expires_at) {
        let apart = (recorded.0.as_second() - exp.as_second()).abs();
        matches.push(("its expiry is status.tokenExpiresOn".into(), apart <= 1));
    }
    Inspection {
        namespace: obj.metadata.namespace.clone().unwrap_or_default(),
        name: obj.metadata.name.clone().unwrap_or_default(),
        secret: secret.to_string(),
        identity_id: read.identity_id,
        scopes: read.scopes,
        issued_at: read.issued_at,
        expires_at: read.expires_at,
        seconds_left: read.expires_at.map(|e| e.as_second() - now.as_second()),
        unreadable,
        matches_status: matches,
        token: None,
    }
}

/// The inspection as a person reads it.
pub fn render(i: &Inspection, now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}/{} (Secret {})", i.namespace, i.name, i.secret);
    if let Some(why) = &i.unreadable {
        let _ = writeln!(out, "  claims       unknown: {why}");
    }
    let unknown = || "unknown".to_string();
    let _ = writeln!(
        out,
        "  identity     {}",
        i.identity_id.clone().unwrap_or_else(unknown)
    );
    let scopes = if i.scopes.is_empty() {
        unknown()
    } else {
        i.scopes.join(", ")
    };
    let _ = writeln!(out, "  scopes       {scopes}");
    let _ = writeln!(
        out,
        "  issued       {}",
        i.issued_at.map(|t| when(t, now)).unwrap_or_else(unknown)
    );
    let expiry = match i.expires_at {
        Some(t) if t <= now => format!("{} EXPIRED", when(t, now)),
        Some(t) => when(t, now),
        None => unknown(),
    };
    let _ = writeln!(out, "  expires      {expiry}");
    for (what, ok) in &i.matches_status {
        let mark = if *ok { "yes" } else { "NO " };
        let _ = writeln!(out, "  {mark}          {what}");
    }
    if let Some(token) = &i.token {
        let _ = writeln!(out, "  token        {token}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn identity(status: serde_json::Value) -> AcsIdentity {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "acsoperator.io/v1alpha1",
            "kind": "AcsIdentity",
            "metadata": {"name": "alice", "namespace": "team-a"},
            "spec": {"connectionRef": {"kind": "AcsConnection", "name": "c"}, "scopes": ["chat"]},
            "status": status,
        }))
        .unwrap()
    }

    fn token(exp: i64) -> String {
        let payload = format!(
            r#"{{"skypeid":"acs:r_u","iat":{},"exp":{exp},"acsScope":"chat"}}"#,
            exp - 3600
        );
        format!("h.{}.s", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn the_token_is_held_against_status_and_never_printed_unasked() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let t = token(1_700_000_600);
        let matching = identity(serde_json::json!({
            "identityId": "8:acs:r_u",
            "tokenExpiresOn": "2023-11-14T22:23:20Z",
            "issuedFor": {"scopes": ["chat"], "tokenLifetimeMinutes": 60, "connectionFingerprint": "f", "tokenHash": token_hash(&t)},
        }));
        let i = inspect(&matching, "alice", &t, now);
        assert_eq!(i.seconds_left, Some(600));
        assert!(i.matches_status.iter().all(|(_, ok)| *ok), "{i:?}");
        assert_eq!(i.matches_status.len(), 3);
        let text = render(&i, now);
        assert!(!text.contains(&t), "{text}");
        assert!(text.contains("identity     8:acs:r_u"), "{text}");

        let stale = identity(serde_json::json!({
            "identityId": "8:acs:r_other",
            "tokenExpiresOn": "2023-11-14T23:00:00Z",
            "issuedFor": {"scopes": ["chat"], "tokenLifetimeMinutes": 60, "connectionFingerprint": "f", "tokenHash": "0000000000000000"},
        }));
        let i = inspect(&stale, "alice", &token(1_699_999_000), now);
        assert!(i.matches_status.iter().all(|(_, ok)| !*ok), "{i:?}");
        let text = render(&i, now);
        assert!(text.contains("EXPIRED"), "{text}");
        assert!(
            text.contains("NO           the token is the one status records"),
            "{text}"
        );
    }

    #[test]
    fn an_opaque_token_is_inspected_as_unknown() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let i = inspect(&identity(serde_json::json!({})), "alice", "opaque", now);
        assert!(i.unreadable.is_some());
        assert_eq!(
            i.matches_status,
            [("the token is the one status records".to_string(), false)]
        );
        assert!(render(&i, now).contains("claims       unknown: the token is not a JWT"));
    }
}
