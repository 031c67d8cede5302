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
