//! A create that ACS applied but whose answer the operator never got (a 5xx or a timeout after
//! the commit) must not leave a second identity behind: the operator creates with the
//! AcsIdentity's uid as `customId`, so its retry gets the identity the lost attempt made. The
//! emulator's `afterCommit` fault makes that lost answer happen on demand; the second test shows
//! the same fault leaks an identity when the create is not idempotent.

use crate::support::operator::{World, secret_text, status_of};
use acs_identity_operator::api::AcsIdentity;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde_json::{Value, json};

/// Runs one AcsIdentity to Ready through a first create whose answer is lost, and returns it
/// with the live identities the emulator then holds.
async fn ready_after_a_lost_create_answer(
    idempotent_create: bool,
) -> (World, AcsIdentity, Vec<Value>) {
    let mut w = World::without_operator(|_| {}).await;
    w.admin
        .post(
            "admin/faults",
            json!({"operation": "createIdentity", "status": 503, "afterCommit": true}),
        )
        .await;
    w.start_operator_with(|settings| settings.idempotent_create = idempotent_create);
    w.identity(
        "lost",
        json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"]}),
    )
    .await;
    let ready = w.wait_ready("lost").await;
    // The lost answer was a 503 the operator saw, then a retry that succeeded.
    assert_eq!(w.admin.count("createIdentityWithToken", 503).await, 1);
    assert_eq!(w.admin.count("createIdentityWithToken", 201).await, 1);
    let live = w.admin.live_identities().await;
    (w, ready, live)
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_leaves_exactly_one_identity() {
    let (w, ready, live) = ready_after_a_lost_create_answer(true).await;
    let id = status_of(&ready).identity_id.clone().unwrap();
    assert_eq!(live.len(), 1, "one live identity: {live:?}");
    assert_eq!(live[0]["id"], id.as_str());
    assert_eq!(live[0]["customId"], ready.uid().unwrap().as_str());
    // One token from the lost attempt, one from the retry; the Secret holds the valid second.
    assert_eq!(live[0]["tokensIssued"], 2);
    let secret = w.get::<Secret>("lost").await.unwrap();
    assert_eq!(secret_text(&secret, "identityId"), id);
    let token = secret_text(&secret, "token");
    assert_eq!(w.admin.verify(&token).await, (true, "ok".into()));
}

#[tokio::test]
async fn without_idempotent_create_a_lost_answer_leaks_an_identity() {
    let (_w, ready, live) = ready_after_a_lost_create_answer(false).await;
    let id = status_of(&ready).identity_id.clone().unwrap();
    assert_eq!(
        live.len(),
        2,
        "the lost attempt's identity leaked: {live:?}"
    );
    let leaked: Vec<&Value> = live.iter().filter(|i| i["id"] != id.as_str()).collect();
    assert_eq!(leaked.len(), 1, "{live:?}");
    assert!(live.iter().all(|i| i.get("customId").is_none()), "{live:?}");
}

/// The day Azure retires the preview api-version of the create with `customId`: the first
/// create is refused as an unsupported version, the operator says so once and creates with
/// the GA api-version from then on, recording each id before storing its token, and no
/// identity is left behind (each one in ACS is an AcsIdentity's, and deleting it deletes it).
#[tokio::test]
async fn a_retired_preview_falls_back_to_the_ga_create_once_and_leaks_nothing() {
    use acs_identity_operator::acs::model::CUSTOM_ID_API_VERSION;
    let mut w = World::without_operator(|c| {
        c.refused_api_versions = vec![CUSTOM_ID_API_VERSION.to_string()];
    })
    .await;
    w.start_operator();
    let spec = json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"]});
    w.identity("first", spec.clone()).await;
    let first = w.wait_ready("first").await;
    for name in ["second", "third"] {
        w.identity(name, spec.clone()).await;
    }
    let mut ready = vec![first];
    for name in ["second", "third"] {
        ready.push(w.wait_ready(name).await);
    }
    // One refused preview create in all: the client remembers.
    assert_eq!(w.admin.count("createIdentityWithToken", 400).await, 1);
    assert_eq!(w.admin.count("createIdentityWithToken", 201).await, 3);
    let live = w.admin.live_identities().await;
    assert_eq!(live.len(), 3, "{live:?}");
    assert!(live.iter().all(|i| i.get("customId").is_none()), "{live:?}");
    for obj in &ready {
        let id = status_of(obj).identity_id.clone().unwrap();
        assert!(
            live.iter().any(|i| i["id"] == id.as_str()),
            "{id} not in {live:?}"
        );
        let secret = w.get::<Secret>(&obj.name_any()).await.unwrap();
        assert_eq!(secret_text(&secret, "identityId"), id);
    }
    // Said once: one Warning Event, on the identity that found out, and the metric.
    let mut notices = 0;
    for name in ["first", "second", "third"] {
        notices += w
            .events_for(name)
            .await
            .iter()
            .filter(|(reason, _)| reason == "IdempotentCreateUnavailable")
            .count();
    }
    assert_eq!(notices, 1);
    w.wait_metrics("acs_idempotent_create_fallbacks_total 1")
        .await;
    // An identity created the GA way is cleaned up like any other.
    w.delete::<AcsIdentity>("second").await;
    w.wait_gone("second").await;
    assert_eq!(w.admin.live_identities().await.len(), 2);
}
