//! Two operator instances splitting one cluster (issue 21), as the chart's `sharding` values
//! run them: each reconciles the AcsIdentities its label selector matches, and each keeps to
//! its share of the ACS resource's limits. Proven here: over creates, refreshes, revokes and
//! deletes no identity is reconciled by both, none outside both selectors is touched, ACS
//! holds exactly one identity per live AcsIdentity, and two instances at half the budget each
//! never draw a 429 from a resource whose limit either alone would reach.

use acs_test_support as support;

use acs_identity_operator::acs::AcsRateLimiter;
use acs_identity_operator::acs::limits::Operation;
use acs_identity_operator::api::AcsIdentity;
use acs_identity_operator::controller::identity::{REFRESH_ANNOTATION, REVOKE_ANNOTATION};
use acs_identity_operator::controller::{self, Settings};
use acs_identity_operator::policy::shard::budget;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use support::operator::{World, emulator_endpoints};
use tokio::task::JoinHandle;

/// Which instances reconciled each identity, by name.
type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<&'static str>>>>;

/// Creates per 30 s window at the emulator in these tests: small, so that two instances at
/// full budget would exceed it within one window.
const CREATE_LIMIT: u32 = 20;

fn create_op(op: Operation) -> bool {
    matches!(
        op,
        Operation::CreateIdentity | Operation::CreateIdentityWithToken
    )
}

/// Starts an instance named `name` that reconciles what `selector` matches, at `percent` of
/// the emulator's limits.
fn instance(
    w: &World,
    name: &'static str,
    selector: &str,
    percent: u8,
    seen: &Seen,
) -> JoinHandle<()> {
    let seen = seen.clone();
    let settings = Settings {
        namespace: Some(w.ns.clone()),
        identity_selector: Some(selector.to_string()),
        concurrency: 8,
        allowed_endpoints: emulator_endpoints(),
        rate_limiter: Arc::new(move || {
            AcsRateLimiter::with_limits(move |op| {
                let limit = if create_op(op) {
                    CREATE_LIMIT
                } else {
                    op.acs_limit()
                };
                budget(limit, percent)
            })
        }),
        on_reconciled: Some(Arc::new(move |_ns: &str, identity: &str| {
            seen.lock()
                .unwrap()
                .entry(identity.to_string())
                .or_default()
                .insert(name);
        })),
        ..Settings::default()
    };
    tokio::spawn(controller::run(w.client.clone(), settings))
}

async fn world() -> World {
    World::without_operator(|c| {
        for op in Operation::ALL.into_iter().filter(|op| create_op(*op)) {
            c.throttle
                .limits
                .insert(op.as_str().to_string(), CREATE_LIMIT);
        }
    })
    .await
}

async fn labelled(w: &World, name: &str, shard: Option<&str>) {
    let labels = match shard {
        Some(s) => json!({"shard": s}),
        None => json!({}),
    };
    w.apply::<AcsIdentity>(
        name,
        json!({
            "metadata": {"labels": labels},
            "spec": {"connectionRef": {"name": "acs"}, "scopes": ["chat"]},
        }),
    )
    .await;
}

#[tokio::test]
async fn two_instances_split_the_identities_and_never_reconcile_the_same_one() {
    let w = world().await;
    let seen = Seen::default();
    let a = instance(&w, "a", "shard=a", 50, &seen);
    let b = instance(&w, "b", "shard=b", 50, &seen);
    let names: Vec<String> = (0..12).map(|i| format!("id-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        labelled(&w, name, Some(if i % 2 == 0 { "a" } else { "b" })).await;
    }
    labelled(&w, "unsharded", None).await;
    for name in &names {
        w.wait_ready(name).await;
    }
    // A sequence of what users do: refresh some, revoke some, delete some.
    for name in &names[..4] {
        let before = support::operator::status_of(&w.wait_ready(name).await).clone();
        w.annotate(name, REFRESH_ANNOTATION, "r1").await;
        w.wait_identity(name, "refreshed", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.handled_refresh_request.as_deref())
                == Some("r1")
                && o.status.as_ref().map(|s| &s.issued_for) != Some(&before.issued_for)
        })
        .await;
    }
    for name in &names[4..6] {
        w.annotate(name, REVOKE_ANNOTATION, "v1").await;
        w.wait_identity(name, "revoked", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.handled_revoke_request.as_deref())
                == Some("v1")
        })
        .await;
    }
    for name in &names[6..9] {
        w.delete::<AcsIdentity>(name).await;
        w.wait_gone(name).await;
    }
    a.abort();
    b.abort();

    let seen = seen.lock().unwrap().clone();
    for (i, name) in names.iter().enumerate() {
        let want: BTreeSet<&str> = [if i % 2 == 0 { "a" } else { "b" }].into();
        assert_eq!(
            seen.get(name.as_str()),
            Some(&want),
            "{name} was reconciled by {:?}",
            seen.get(name.as_str())
        );
    }
    assert!(
        !seen.contains_key("unsharded"),
        "an identity outside both selectors was reconciled"
    );
    let unsharded = w.get::<AcsIdentity>("unsharded").await.unwrap();
    let untouched = unsharded.status.clone().unwrap_or_default();
    assert!(
        untouched.identity_id.is_none()
            && untouched.conditions.is_empty()
            && unsharded.metadata.finalizers.is_none(),
        "{untouched:?}"
    );
    // One ACS identity for each AcsIdentity still there, none for the deleted ones.
    assert_eq!(w.admin.live_identities().await.len(), names.len() - 3);
}

#[tokio::test]
async fn two_instances_at_half_the_budget_stay_within_the_resource_limit() {
    let w = world().await;
    let seen = Seen::default();
    let a = instance(&w, "a", "shard=a", 50, &seen);
    let b = instance(&w, "b", "shard=b", 50, &seen);
    // One and a half windows' worth of creates: each instance alone may send 10 per window,
    // together 20, the resource's limit; 30 need a second window.
    let names: Vec<String> = (0..30).map(|i| format!("burst-{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        labelled(&w, name, Some(if i % 2 == 0 { "a" } else { "b" })).await;
    }
    for name in &names {
        w.wait_ready(name).await;
    }
    a.abort();
    b.abort();
    let throttled = w.admin.count(Operation::CreateIdentity.as_str(), 429).await
        + w.admin
            .count(Operation::CreateIdentityWithToken.as_str(), 429)
            .await;
    let created = w
        .admin
        .count(Operation::CreateIdentityWithToken.as_str(), 201)
        .await;
    assert_eq!(created, names.len() as u64, "one create per identity");
    assert_eq!(
        throttled, 0,
        "the two instances together exceeded the create limit"
    );
    assert_eq!(w.admin.live_identities().await.len(), names.len());
}
