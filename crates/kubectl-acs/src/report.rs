//! What `status` shows about one AcsIdentity, and how it is written for a person. Pure: the
//! facts are gathered in [`crate::gather`].

use jiff::Timestamp;
use k8s_openapi::api::core::v1::PodSpec;
use serde::Serialize;
use std::fmt::Write as _;

/// One condition as status carries it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    pub status: String,
    pub reason: String,
    pub message: String,
    pub since: Option<Timestamp>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretView {
    pub name: String,
    pub exists: bool,
    /// The Secret's keys (never their values).
    pub keys: Vec<String>,
    /// Whether the token in the Secret is the one status records (`None`: nothing to compare).
    pub holds_recorded_token: Option<bool>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    pub kind: String,
    pub name: String,
    pub found: bool,
    pub ready: Option<ConditionView>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FailureView {
    pub attempts: u32,
    pub at: Option<Timestamp>,
}

/// A workload that uses the identity's token.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConsumerView {
    pub kind: String,
    pub name: String,
    /// How: `volume`, `env`, `envFrom`, `restart-on-renewal`.
    pub uses: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub last_seen: Option<Timestamp>,
    #[serde(rename = "type")]
    pub type_: String,
    pub reason: String,
    pub message: String,
    pub count: i32,
}

/// Everything `status` says about one AcsIdentity.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct IdentityReport {
    pub namespace: String,
    pub name: String,
    pub ready: Option<ConditionView>,
    pub reconciling: Option<ConditionView>,
    pub stalled: Option<ConditionView>,
    pub identity_id: Option<String>,
    pub token_expires_on: Option<Timestamp>,
    pub renewal_time: Option<Timestamp>,
    pub last_issued_at: Option<Timestamp>,
    pub secret: SecretView,
    pub connection: ConnectionView,
    pub last_failure: Option<FailureView>,
    pub consumers: Vec<ConsumerView>,
    pub events: Vec<EventView>,
}

/// How a pod spec uses the Secret `secret`: as a volume (also projected), through `env`
/// or through `envFrom`, in any container or init container.
pub fn secret_uses(pod: &PodSpec, secret: &str) -> Vec<String> {
    let mut uses = Vec::new();
    let volume = pod.volumes.iter().flatten().any(|v| {
        v.secret
            .as_ref()
            .is_some_and(|s| s.secret_name.as_deref() == Some(secret))
            || v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.secret.as_ref().is_some_and(|s| s.name.as_str() == secret))
            })
    });
    if volume {
        uses.push("volume".to_string());
    }
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    let (mut env, mut env_from) = (false, false);
    for c in containers {
        env |= c.env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_some_and(|r| r.name.as_str() == secret)
        });
        env_from |= c.env_from.iter().flatten().any(|e| {
            e.secret_ref
                .as_ref()
                .is_some_and(|r| r.name.as_str() == secret)
        });
    }
    if env {
        uses.push("env".to_string());
    }
    if env_from {
        uses.push("envFrom".to_string());
    }
    uses
}

/// `5m`, `2h3m`, `1d4h`: a span as `kubectl get` writes ages.
pub fn short_span(seconds: i64) -> String {
    let s = seconds.unsigned_abs();
    match s {
        0..=119 => format!("{s}s"),
        120..=3599 => format!("{}m", s / 60),
        3600..=86_399 if s % 3600 >= 60 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `2026-12-05T10:00:00Z (in 5m)` or `(5m ago)`.
pub fn when(t: Timestamp, now: Timestamp) -> String {
    let delta = t.as_second() - now.as_second();
    if delta >= 0 {
        format!("{t} (in {})", short_span(delta))
    } else {
        format!("{t} ({} ago)", short_span(delta))
    }
}

fn condition_line(out: &mut String, label: &str, c: &Option<ConditionView>) {
    match c {
        Some(c) if c.reason.is_empty() => {
            let _ = writeln!(out, "  {label:<12} {}", c.status);
        }
        Some(c) => {
            let _ = writeln!(
                out,
                "  {label:<12} {}  {}: {}",
                c.status, c.reason, c.message
            );
        }
        None => {}
    }
}

/// The report as a person reads it.
pub fn render(report: &IdentityReport, now: Timestamp) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}/{}", report.namespace, report.name);
    if report.ready.is_none() {
        let _ = writeln!(
            out,
            "  {:<12} not yet reported (has the operator seen this identity?)",
            "Ready"
        );
    }
    condition_line(&mut out, "Ready", &report.ready);
    condition_line(&mut out, "Reconciling", &report.reconciling);
    condition_line(&mut out, "Stalled", &report.stalled);
    let id = report.identity_id.as_deref().unwrap_or("none yet");
    let _ = writeln!(out, "  {:<12} {id}", "Identity");
    match report.token_expires_on {
        Some(t) => {
            let _ = writeln!(out, "  {:<12} expires {}", "Token", when(t, now));
        }
        None => {
            let _ = writeln!(out, "  {:<12} none issued yet", "Token");
        }
    }
    if let Some(t) = report.renewal_time {
        let _ = writeln!(out, "  {:<12} {}", "Renews at", when(t, now));
    }
    if let Some(t) = report.last_issued_at {
        let _ = writeln!(out, "  {:<12} {}", "Issued at", when(t, now));
    }
    let secret = &report.secret;
    let held = match (secret.exists, secret.holds_recorded_token) {
        (false, _) => "missing".to_string(),
        (true, Some(true)) => "holds the token status records".to_string(),
        (true, Some(false)) => "does NOT hold the token status records".to_string(),
        (true, None) => "no token recorded to compare".to_string(),
    };
    let keys = if secret.keys.is_empty() {
        String::new()
    } else {
        format!(" (keys: {})", secret.keys.join(", "))
    };
    let _ = writeln!(out, "  {:<12} {}{keys}: {held}", "Secret", secret.name);
    let conn = &report.connection;
    let usable = match (&conn.found, &conn.ready) {
        (false, _) => "not found".to_string(),
        (true, Some(c)) if c.status == "True" => "usable".to_string(),
        (true, Some(c)) => format!("not usable: {}: {}", c.reason, c.message),
        (true, None) => "not checked yet".to_string(),
    };
    let _ = writeln!(
        out,
        "  {:<12} {}/{}: {usable}",
        "Connection", conn.kind, conn.name
    );
    if let Some(f) = &report.last_failure {
        let at = f.at.map(|t| format!(", last {}", when(t, now)));
        let _ = writeln!(
            out,
            "  {:<12} {} attempt(s){}",
            "Failing",
            f.attempts,
            at.unwrap_or_default()
        );
    }
    if report.consumers.is_empty() {
        let _ = writeln!(out, "  {:<12} none found", "Consumers");
    } else {
        let _ = writeln!(out, "  Consumers");
        for c in &report.consumers {
            let _ = writeln!(out, "    {}/{} ({})", c.kind, c.name, c.uses.join(", "));
        }
    }
    if report.events.is_empty() {
        let _ = writeln!(out, "  {:<12} none", "Events");
    } else {
        let _ = writeln!(out, "  Events");
        for e in &report.events {
            let age = e
                .last_seen
                .map(|t| short_span(now.as_second() - t.as_second()))
                .unwrap_or_else(|| "?".into());
            let count = if e.count > 1 {
                format!(" (x{})", e.count)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "    {age:>6} ago  {:<7} {}{count}: {}",
                e.type_, e.reason, e.message
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod(json: serde_json::Value) -> PodSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn every_way_a_pod_uses_a_secret_is_found() {
        let cases = [
            (
                serde_json::json!({"containers": [{"name": "a"}], "volumes": [{"name": "t", "secret": {"secretName": "s"}}]}),
                vec!["volume"],
            ),
            (
                serde_json::json!({"containers": [{"name": "a"}], "volumes": [{"name": "t", "projected": {"sources": [{"secret": {"name": "s"}}]}}]}),
                vec!["volume"],
            ),
            (
                serde_json::json!({"containers": [{"name": "a", "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}]}]}),
                vec!["env"],
            ),
            (
                serde_json::json!({"containers": [{"name": "a"}], "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s"}}]}]}),
                vec!["envFrom"],
            ),
            (
                serde_json::json!({"containers": [{"name": "a", "envFrom": [{"secretRef": {"name": "other"}}]}], "volumes": [{"name": "t", "secret": {"secretName": "other"}}]}),
                vec![],
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(secret_uses(&pod(spec.clone()), "s"), want, "{spec}");
        }
    }

    #[test]
    fn spans_read_like_kubectl_ages() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (3599, "59m"),
            (3600, "1h"),
            (3660, "1h1m"),
            (86_399, "23h59m"),
            (90_000, "1d1h"),
            (-300, "5m"),
        ];
        for (seconds, want) in cases {
            assert_eq!(short_span(seconds), want, "{seconds}");
        }
    }

    #[test]
    fn the_text_says_what_is_wrong_and_never_more_than_status_has() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let report = IdentityReport {
            namespace: "team-a".into(),
            name: "alice".into(),
            ready: Some(ConditionView {
                status: "False".into(),
                reason: "ConnectionNotReady".into(),
                message: "connection main: Secret acs missing".into(),
                since: None,
            }),
            secret: SecretView {
                name: "alice-acs-token".into(),
                exists: true,
                keys: vec!["expiresOn".into(), "token".into()],
                holds_recorded_token: Some(false),
            },
            connection: ConnectionView {
                kind: "AcsConnection".into(),
                name: "main".into(),
                found: false,
                ready: None,
            },
            last_failure: Some(FailureView {
                attempts: 3,
                at: Some(Timestamp::from_second(1_700_000_000 - 120).unwrap()),
            }),
            token_expires_on: Some(Timestamp::from_second(1_700_000_000 + 600).unwrap()),
            ..Default::default()
        };
        let text = render(&report, now);
        for want in [
            "team-a/alice",
            "Ready        False  ConnectionNotReady: connection main: Secret acs missing",
            "Identity     none yet",
            "expires 2023-11-14T22:23:20Z (in 10m)",
            "alice-acs-token (keys: expiresOn, token): does NOT hold the token status records",
            "AcsConnection/main: not found",
            "3 attempt(s), last 2023-11-14T22:11:20Z (2m ago)",
            "Consumers    none found",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }
}
