//! Tests that run the real `acs-identity-operator` binary: leader election between two
//! replicas, and what it writes to its log at trace level.

use crate::support::operator::{WAIT, World, secret_text, status_of};
use crate::support::process::OperatorProcess;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;
use std::time::{Duration, Instant};

/// One replica of the operator in the test's namespace, as `POD_NAME` `name`.
fn spawn(w: &World, name: &str, rust_log: &str, extra: &[&str]) -> OperatorProcess {
    OperatorProcess::spawn(
        crate::support::operator_binary!(),
        ["run", "--namespace", &w.ns].iter().chain(extra),
        |c, _| {
            c.env("RUST_LOG", rust_log).env("POD_NAME", name);
        },
    )
}

fn spec() -> serde_json::Value {
    json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"]})
}

async fn lease_holder(w: &World) -> Option<String> {
    let lease = w.get::<Lease>("acs-identity-operator").await?;
    lease.spec?.holder_identity
}

#[tokio::test]
async fn two_replicas_hand_over_within_the_lease_duration_without_double_issuance() {
    let w = World::without_operator(|_| {}).await;
    let election = [
        "--leader-election",
        "--leader-election-namespace",
        &w.ns,
        "--leader-election-duration-seconds",
        "6",
    ];
    let mut replicas = vec![
        spawn(&w, "replica-a", "info", &election),
        spawn(&w, "replica-b", "info", &election),
    ];
    for r in &replicas {
        r.wait_ready(WAIT).await; // the standby is ready too
    }
    w.identity("ha-1", spec()).await;
    w.wait_ready("ha-1").await;
    let leader = lease_holder(&w).await.expect("a leader holds the lease");
    let (leader_index, standby_name) = if leader == "replica-a" {
        (0, "replica-b")
    } else {
        (1, "replica-a")
    };
    let standby = &replicas[1 - leader_index];
    let standby_metrics = standby.get("/metrics").await.unwrap().1;
    assert!(
        !standby_metrics.contains("acs_identity_reconciles_total{"),
        "the standby reconciled:\n{standby_metrics}"
    );
    assert!(standby.get("/readyz").await.unwrap().1.contains("standby"));

    // Kill the leader without a chance to release the lease.
    let killed_at = Instant::now();
    replicas[leader_index].child.start_kill().unwrap();
    let _ = replicas[leader_index].child.wait().await;
    let deadline = killed_at + WAIT;
    while lease_holder(&w).await.as_deref() != Some(standby_name) {
        assert!(Instant::now() < deadline, "no hand-over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handover = killed_at.elapsed();
    eprintln!("leader hand-over took {handover:?} (lease duration 6 s)");
    assert!(
        handover <= Duration::from_secs(6) + Duration::from_millis(1500),
        "hand-over took {handover:?}"
    );

    w.identity("ha-2", spec()).await;
    w.wait_ready("ha-2").await;
    assert_eq!(
        w.admin.count("createIdentityWithToken", 201).await,
        2,
        "one identity each"
    );
    assert_eq!(
        w.admin.count("issueToken", 200).await,
        0,
        "the new leader re-issued nothing"
    );
    replicas.clear();
}

#[tokio::test]
async fn nothing_secret_is_logged_at_trace_level() {
    let w = World::without_operator(|c| c.token_lifetime = Some(Duration::from_secs(6))).await;
    let operator = spawn(&w, "tracer", "trace", &[]);
    operator.wait_ready(WAIT).await;
    w.identity("quiet", spec()).await;
    let first = w.wait_ready("quiet").await;
    let first_expiry = status_of(&first).token_expires_on.clone().unwrap().0;
    let mut tokens = vec![secret_text(
        &w.get::<Secret>("quiet").await.unwrap(),
        "token",
    )];
    w.wait_identity("quiet", "renewed", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.token_expires_on.as_ref())
            .is_some_and(|t| t.0 > first_expiry)
    })
    .await;
    tokens.push(secret_text(
        &w.get::<Secret>("quiet").await.unwrap(),
        "token",
    ));
    w.delete::<acs_identity_operator::api::AcsIdentity>("quiet")
        .await;
    w.wait_gone("quiet").await;
    drop(operator.child);

    let log = std::fs::read_to_string(&operator.log).unwrap();
    assert!(
        log.contains("TRACE") && log.contains("issued token"),
        "not a trace-level log of a full run"
    );
    let connection = w.connection_string();
    let key = connection.split("accesskey=").nth(1).unwrap().to_string();
    let mut secrets: Vec<(&str, String)> =
        vec![("access key", key), ("connection string", connection)];
    for token in &tokens {
        secrets.push(("token", token.clone()));
        // Any of its three parts alone would be a leak too.
        for part in token.split('.') {
            secrets.push(("token part", part.to_string()));
        }
    }
    for (what, secret) in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the {what} appears in the trace log"
        );
    }
}
