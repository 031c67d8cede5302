//! `check`: is the operator usable here? The CRDs are served, an operator holds the leader
//! Lease (and, when it runs in a pod, that pod is Ready), and every connection in scope is
//! usable. Each finding is a line; the verdict is the exit code (for CI and Helm hooks).

use acs_identity_operator::api::{AcsConnection, ClusterAcsConnection};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams};
use kube::discovery::Discovery;
use kube::{Client, ResourceExt};

/// One thing `check` looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub what: String,
}

impl Finding {
    fn ok(what: impl Into<String>) -> Self {
        Self {
            ok: true,
            what: what.into(),
        }
    }
    fn bad(what: impl Into<String>) -> Self {
        Self {
            ok: false,
            what: what.into(),
        }
    }
}

/// Where the operator's leader Lease is.
pub struct LeaseRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
}

/// The kinds the operator serves.
const KINDS: [&str; 3] = ["AcsIdentity", "AcsConnection", "ClusterAcsConnection"];

/// Whether the Lease names a holder that renewed it within its duration.
pub fn lease_held(lease: &Lease, now: Timestamp) -> Result<String, String> {
    let spec = lease.spec.clone().unwrap_or_default();
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return Err("nobody holds it".into());
    };
    let Some(renewed) = spec.renew_time.map(|t| t.0) else {
        return Err(format!("{holder} holds it but never renewed it"));
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let age = now.as_second() - renewed.as_second();
    if age > duration {
        Err(format!(
            "{holder} last renewed it {age}s ago, longer than its {duration}s: the operator is not running"
        ))
    } else {
        Ok(holder)
    }
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn ready_line(kind: &str, name: &str, conditions: &[Condition]) -> Finding {
    match conditions.iter().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" => Finding::ok(format!("{kind} {name} is usable")),
        Some(c) => Finding::bad(format!(
            "{kind} {name} is not usable: {}: {}",
            c.reason, c.message
        )),
        None => Finding::bad(format!(
            "{kind} {name} has not been checked by the operator yet"
        )),
    }
}

/// Everything `check` looks at, once.
pub async fn run(client: &Client, namespace: Option<&str>, lease: &LeaseRef<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    match Discovery::new(client.clone())
        .filter(&["acsoperator.io"])
        .run()
        .await
    {
        Ok(discovery) => {
            let served: Vec<String> = discovery
                .groups()
                .flat_map(|g| g.recommended_resources())
                .map(|(r, _)| r.kind)
                .collect();
            for kind in KINDS {
                if served.iter().any(|k| k == kind) {
                    findings.push(Finding::ok(format!("CRD {kind} is served")));
                } else {
                    findings.push(Finding::bad(format!(
                        "CRD {kind} is not served: install the CRDs (helm install, or `acs-identity-operator crds | kubectl apply -f -`)"
                    )));
                }
            }
        }
        Err(e) => findings.push(Finding::bad(format!("API discovery failed: {e}"))),
    }
    findings.extend(operator(client, lease).await);
    findings.extend(connections(client, namespace).await);
    findings
}

async fn operator(client: &Client, lease: &LeaseRef<'_>) -> Vec<Finding> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), lease.namespace);
    let where_ = format!("Lease {}/{}", lease.namespace, lease.name);
    let found = match leases.get_opt(lease.name).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            return vec![Finding::bad(format!(
                "{where_} not found: is the operator installed with leader election? (--operator-namespace, --lease)"
            ))];
        }
        Err(e) => return vec![Finding::bad(format!("{where_} could not be read: {e}"))],
    };
    let holder = match lease_held(&found, Timestamp::now()) {
        Ok(holder) => holder,
        Err(why) => return vec![Finding::bad(format!("{where_}: {why}"))],
    };
    let mut findings = vec![Finding::ok(format!(
        "an operator ({holder}) holds {where_}"
    ))];
    let pods: Api<Pod> = Api::namespaced(client.clone(), lease.namespace);
    match pods.get_opt(&holder).await {
        Ok(Some(pod)) => {
            if pod_ready(&pod) {
                findings.push(Finding::ok(format!("pod {holder} is Ready")));
            } else {
                findings.push(Finding::bad(format!(
                    "pod {holder} is not Ready: `kubectl -n {} describe pod {holder}`",
                    lease.namespace
                )));
            }
        }
        Ok(None) => findings.push(Finding::ok(format!(
            "{holder} is not a pod in {} (an operator outside the cluster): its readiness is not checked",
            lease.namespace
        ))),
        Err(e) => findings.push(Finding::bad(format!("pod {holder} could not be read: {e}"))),
    }
    findings
}

async fn connections(client: &Client, namespace: Option<&str>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let namespaced: Api<AcsConnection> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match namespaced.list(&ListParams::default()).await {
        Ok(list) => {
            for c in list.items {
                let name = format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any());
                let conditions = c.status.map(|s| s.conditions).unwrap_or_default();
                findings.push(ready_line("AcsConnection", &name, &conditions));
            }
        }
        Err(e) => findings.push(Finding::bad(format!(
            "AcsConnections could not be listed: {e}"
        ))),
    }
    let cluster: Api<ClusterAcsConnection> = Api::all(client.clone());
    match cluster.list(&ListParams::default()).await {
        Ok(list) => {
            for c in list.items {
                let name = c.name_any();
                let conditions = c.status.map(|s| s.conditions).unwrap_or_default();
                findings.push(ready_line("ClusterAcsConnection", &name, &conditions));
            }
        }
        // A tenant may not list cluster-scoped connections; that is not the operator's fault.
        Err(kube::Error::Api(s)) if s.code == 403 => findings.push(Finding::ok(
            "ClusterAcsConnections not checked (you may not list them)",
        )),
        Err(e) => findings.push(Finding::bad(format!(
            "ClusterAcsConnections could not be listed: {e}"
        ))),
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: Option<i64>, duration: i32) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "l"},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": duration,
                "renewTime": renewed.map(|s| Timestamp::from_second(s).unwrap().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()),
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_lease_is_held_only_by_a_named_holder_that_renewed_it_in_time() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let cases = [
            (
                Some("pod-a"),
                Some(1_700_000_000 - 5),
                15,
                Ok("pod-a".to_string()),
            ),
            (
                Some("pod-a"),
                Some(1_700_000_000 - 15),
                15,
                Ok("pod-a".to_string()),
            ),
            (
                Some("pod-a"),
                Some(1_700_000_000 - 16),
                15,
                Err("not running"),
            ),
            (Some(""), Some(1_700_000_000), 15, Err("nobody")),
            (None, Some(1_700_000_000), 15, Err("nobody")),
            (Some("pod-a"), None, 15, Err("never renewed")),
        ];
        for (holder, renewed, duration, want) in cases {
            let got = lease_held(&lease(holder, renewed, duration), now);
            match (got, want) {
                (Ok(h), Ok(w)) => assert_eq!(h, w),
                (Err(e), Err(w)) => assert!(e.contains(w), "{e}"),
                (got, want) => panic!("{holder:?} {renewed:?}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn a_pod_is_ready_only_when_its_ready_condition_is_true() {
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "status": status}))
                .unwrap()
        };
        let cases = [
            (
                serde_json::json!({"conditions": [{"type": "Ready", "status": "True"}]}),
                true,
            ),
            (
                serde_json::json!({"conditions": [{"type": "Ready", "status": "False"}]}),
                false,
            ),
            (
                serde_json::json!({"conditions": [{"type": "PodScheduled", "status": "True"}]}),
                false,
            ),
            (serde_json::json!({}), false),
        ];
        for (status, want) in cases {
            assert_eq!(pod_ready(&pod(status.clone())), want, "{status}");
        }
    }

    #[test]
    fn a_connection_is_usable_only_when_ready_is_true() {
        let cond = |status: &str| -> Vec<Condition> {
            serde_json::from_value(serde_json::json!([{
                "type": "Ready", "status": status, "reason": "R", "message": "m",
                "lastTransitionTime": "2026-01-01T00:00:00Z"
            }]))
            .unwrap()
        };
        assert!(ready_line("AcsConnection", "n/c", &cond("True")).ok);
        let bad = ready_line("AcsConnection", "n/c", &cond("False"));
        assert!(!bad.ok && bad.what.contains("R: m"), "{}", bad.what);
        assert!(!ready_line("AcsConnection", "n/c", &[]).ok);
    }
}
