//! The operator's behaviour, proven against the real test API server and the ACS emulator.
//! Each test gets its own namespace, emulator and operator instance (see `support::operator`).

mod idempotent_create;
mod processes;
use acs_test_support as support;

use acs_identity_operator::acs::{AcsClient, ClientOptions};
use acs_identity_operator::api::AcsIdentity;
use acs_identity_operator::controller::identity::{
    REFRESH_ANNOTATION, REVOKE_ANNOTATION, SKIP_CLEANUP_ANNOTATION,
};
use base64::Engine;
// The tests here call the operator harness `harness::` (its name before it moved to support).
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde_json::json;
use std::time::Duration;
use support::operator::{self as harness, World, ready_reason, secret_text, status_of};

fn spec(scopes: &[&str]) -> serde_json::Value {
    json!({"connectionRef": {"name": "acs"}, "scopes": scopes})
}

/// The scopes a token was issued for, from its (emulator-made) JWT payload.
fn token_scopes(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["acsScope"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn create_makes_one_acs_call_and_a_ready_secret_with_a_valid_token() {
    let w = World::new(|_| {}).await;
    w.identity("alice", spec(&["chat", "voip"])).await;
    let alice = w.wait_ready("alice").await;
    let status = status_of(&alice);
    let id = status.identity_id.clone().unwrap();
    assert!(id.starts_with("8:acs:"));
    assert_eq!(alice.finalizers(), ["acsoperator.io/cleanup"]);

    let secret = w.get::<Secret>("alice").await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    assert_eq!(secret_text(&secret, "identityId"), id);
    let token = secret_text(&secret, "token");
    assert_eq!(w.admin.verify(&token).await, (true, "ok".into()));
    assert_eq!(token_scopes(&token), "chat,voip");
    let expires: jiff::Timestamp = secret_text(&secret, "expiresOn").parse().unwrap();
    assert_eq!(
        Some(expires),
        status
            .token_expires_on
            .as_ref()
            .map(|t| t.0.round(jiff::Unit::Second).unwrap())
    );
    assert_eq!(
        secret.labels()["app.kubernetes.io/managed-by"],
        "acs-identity-operator"
    );
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("AcsIdentity", Some(true))
    );
    assert_eq!(owner.uid, alice.uid().unwrap());

    assert_eq!(
        w.admin.count("createIdentityWithToken", 201).await,
        1,
        "one create-with-token call"
    );
    assert_eq!(w.admin.count("issueToken", 200).await, 0);
    let reasons: Vec<_> = w
        .wait_event("alice", |reason, _| reason == "IdentityCreated")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(
        reasons.contains(&"IdentityCreated".to_string()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn tokens_are_renewed_from_the_granted_lifetime_and_the_old_one_stays_valid() {
    let w = World::new(|c| c.token_lifetime = Some(Duration::from_secs(8))).await;
    w.identity("bob", spec(&["chat"])).await;
    let first = w.wait_ready("bob").await;
    let first_expiry = status_of(&first).token_expires_on.clone().unwrap().0;
    let first_token = secret_text(&w.get::<Secret>("bob").await.unwrap(), "token");
    let renewal = status_of(&first).renewal_time.clone().unwrap().0;
    // Asked for 24 h, granted 8 s: renewal follows what was granted. A first token renews at
    // a random point of its cycle (so identities created together spread out), at least a
    // third of the lifetime before expiry.
    let lead = first_expiry.duration_since(renewal).as_secs_f64();
    assert!(lead >= 2.0, "first renewal {lead}s before expiry");
    // Not before the issue (status times are whole seconds, so the lead itself may exceed
    // the 8 s by the rounding).
    let issued = status_of(&first).last_issued_at.clone().unwrap().0;
    assert!(
        renewal >= issued,
        "renewal {renewal} before the issue {issued}"
    );

    let renewed = w
        .wait_identity("bob", "renewed", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.token_expires_on.as_ref())
                .is_some_and(|t| t.0 > first_expiry)
        })
        .await;
    let new_token = secret_text(&w.get::<Secret>("bob").await.unwrap(), "token");
    assert_ne!(new_token, first_token);
    assert_eq!(w.admin.verify(&new_token).await, (true, "ok".into()));
    // Renewing never revokes: the previous token is still good until it expires.
    if jiff::Timestamp::now() < first_expiry {
        assert_eq!(w.admin.verify(&first_token).await, (true, "ok".into()));
    }
    assert_eq!(ready_reason(&renewed).0, "True");
    // A renewal on schedule keeps its place: a third of the lifetime before expiry, plus up
    // to a tenth of that as jitter, plus rounding to whole seconds.
    let (expiry, renewal) = (
        status_of(&renewed).token_expires_on.clone().unwrap().0,
        status_of(&renewed).renewal_time.clone().unwrap().0,
    );
    let lead = expiry.duration_since(renewal).as_secs_f64();
    assert!((2.0..=4.5).contains(&lead), "renewal {lead}s before expiry");
    assert_eq!(w.admin.count("revokeTokens", 204).await, 0);
    let reasons: Vec<_> = w
        .wait_event("bob", |reason, _| reason == "TokenRenewed")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(reasons.contains(&"TokenRenewed".to_string()), "{reasons:?}");
}

#[tokio::test]
async fn restart_with_valid_tokens_makes_no_acs_call_and_no_write() {
    let mut w = World::new(|_| {}).await;
    for name in ["r1", "r2", "r3"] {
        w.identity(name, spec(&["voip"])).await;
    }
    let mut before = Vec::new();
    for name in ["r1", "r2", "r3"] {
        let obj = w.wait_ready(name).await;
        let secret = w.get::<Secret>(name).await.unwrap();
        before.push((obj.resource_version(), secret.resource_version()));
    }
    w.stop_operator().await;
    let calls_before = w.admin.get("admin/stats").await["total"].as_u64().unwrap();
    let counts: Vec<u64> = ["r1", "r2", "r3"]
        .iter()
        .map(|n| w.reconcile_count(n))
        .collect();

    w.start_operator();
    for (name, count) in ["r1", "r2", "r3"].iter().zip(counts) {
        w.wait_reconciled(name, count).await;
    }
    let calls_after = w.admin.get("admin/stats").await["total"].as_u64().unwrap();
    assert_eq!(
        calls_after, calls_before,
        "a restart must not call ACS for up-to-date identities"
    );
    for (name, (obj_rv, secret_rv)) in ["r1", "r2", "r3"].iter().zip(before) {
        let obj = w.get::<AcsIdentity>(name).await.unwrap();
        let secret = w.get::<Secret>(name).await.unwrap();
        assert_eq!(
            obj.resource_version(),
            obj_rv,
            "{name}: AcsIdentity was written"
        );
        assert_eq!(
            secret.resource_version(),
            secret_rv,
            "{name}: Secret was written"
        );
    }
}

#[tokio::test]
async fn delete_revokes_and_deletes_the_identity_and_removes_the_secret() {
    let w = World::new(|_| {}).await;
    w.identity("carol", spec(&["chat"])).await;
    let carol = w.wait_ready("carol").await;
    let id = status_of(&carol).identity_id.clone().unwrap();
    let token = secret_text(&w.get::<Secret>("carol").await.unwrap(), "token");

    w.delete::<AcsIdentity>("carol").await;
    w.wait_gone("carol").await;
    assert!(w.get::<Secret>("carol").await.is_none(), "Secret deleted");
    let view = w.admin.identity(&id).await.unwrap();
    assert_eq!(view["deleted"], true);
    assert_eq!(view["revocations"], 1);
    assert!(
        !w.admin.verify(&token).await.0,
        "deleted identity token still valid"
    );
}

#[tokio::test]
async fn retain_keeps_the_identity_and_removes_only_the_secret() {
    let w = World::new(|_| {}).await;
    let mut s = spec(&["chat"]);
    s["deletionPolicy"] = json!("Retain");
    w.identity("dave", s).await;
    let dave = w.wait_ready("dave").await;
    let id = status_of(&dave).identity_id.clone().unwrap();
    let token = secret_text(&w.get::<Secret>("dave").await.unwrap(), "token");
    w.delete::<AcsIdentity>("dave").await;
    w.wait_gone("dave").await;
    assert!(w.get::<Secret>("dave").await.is_none());
    let view = w.admin.identity(&id).await.unwrap();
    assert_eq!(
        (view["deleted"].as_bool(), view["revocations"].as_u64()),
        (Some(false), Some(0))
    );
    assert_eq!(w.admin.verify(&token).await, (true, "ok".into()));
}

#[tokio::test]
async fn an_existing_identity_is_adopted_without_creating_one() {
    let w = World::new(|_| {}).await;
    let acs = AcsClient::new(
        &w.emulator.as_ref().unwrap().connection_string(),
        ClientOptions::default(),
    )
    .unwrap();
    let existing = acs.create_identity().await.unwrap();
    let mut s = spec(&["voip"]);
    s["identityId"] = json!(existing);
    w.identity("erin", s).await;
    let erin = w.wait_ready("erin").await;
    assert_eq!(
        status_of(&erin).identity_id.as_deref(),
        Some(existing.as_str())
    );
    assert_eq!(
        w.admin.count("createIdentity", 201).await,
        1,
        "only the test's own create"
    );
    assert_eq!(w.admin.count("createIdentityWithToken", 201).await, 0);
    assert_eq!(
        w.admin.identity(&existing).await.unwrap()["tokensIssued"],
        1
    );
}

/// Issue 19's victim: an identity deleted in ACS behind the operator's back (here by someone
/// holding the access key) reads Ready=False / IdentityNotFound after its next reconcile,
/// although the token in its Secret was issued to last another hour — never Ready=True
/// beside Stalled=True.
#[tokio::test]
async fn an_identity_deleted_in_acs_is_not_ready_after_its_next_reconcile() {
    let w = World::new(|_| {}).await;
    w.identity("vic", spec(&["chat"])).await;
    let ready = w.wait_ready("vic").await;
    let id = status_of(&ready).identity_id.clone().unwrap();
    let expires = status_of(&ready).token_expires_on.clone().unwrap().0;
    let acs = AcsClient::new(
        &w.emulator.as_ref().unwrap().connection_string(),
        ClientOptions::default(),
    )
    .unwrap();
    acs.delete_identity(&id).await.unwrap();

    // Its next reconcile that asks ACS for anything: a refresh.
    w.apply::<AcsIdentity>(
        "vic",
        json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "after-delete"}}, "spec": spec(&["chat"])}),
    )
    .await;
    let gone = w
        .wait_identity("vic", "stalled on IdentityNotFound", |o| {
            o.status.as_ref().is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Stalled" && c.status == "True" && c.reason == "IdentityNotFound"
                })
            })
        })
        .await;
    assert!(
        jiff::Timestamp::now() < expires,
        "the Secret's token is not expired yet"
    );
    assert_eq!(
        ready_reason(&gone),
        ("False".into(), "IdentityNotFound".into()),
        "{:?}",
        status_of(&gone).conditions
    );
    let token = secret_text(&w.get::<Secret>("vic").await.unwrap(), "token");
    assert_eq!(w.admin.verify(&token).await, (false, "deleted".into()));
    assert_eq!(
        w.admin.count("createIdentityWithToken", 201).await,
        1,
        "no identity silently created in its place"
    );
}

#[tokio::test]
async fn an_unknown_adopted_identity_is_reported_never_replaced() {
    let w = World::new(|_| {}).await;
    // A connection that turns Ready nudges its identities once; let that pass first, so the
    // attempts counted below are the identity's own.
    let ready = |c: Option<&acs_identity_operator::api::AcsConnection>| {
        c.and_then(|c| c.status.as_ref())
            .is_some_and(|s| s.conditions.iter().any(|c| c.status == "True"))
    };
    tokio::time::timeout(
        Duration::from_secs(30),
        kube::runtime::wait::await_condition(w.api(), "acs", ready),
    )
    .await
    .expect("connection Ready within 30 s")
    .unwrap();
    let mut s = spec(&["voip"]);
    s["identityId"] = json!("8:acs:00000000-0000-0000-0000-000000000000_nobody");
    w.identity("frank", s).await;
    let frank = w.wait_reason("frank", "IdentityNotFound").await;
    assert_eq!(ready_reason(&frank).0, "False");

    // A permanent failure waits for a change: recording it in status must not trigger the
    // next attempt (that would be a hot loop against ACS). One change, one more attempt.
    // Other annotations are no change to the operator; its own refresh request is.
    let before = w.reconcile_count("frank");
    let (attempts, calls) = (
        status_of(&frank).failed_attempts.unwrap(),
        w.admin.count("issueToken", 404).await,
    );
    let mut touched = json!({
        "metadata": {"annotations": {"example.com/touch": "1"}},
        "spec": frank.spec.clone(),
    });
    touched["spec"]["identityId"] = json!("8:acs:00000000-0000-0000-0000-000000000000_nobody");
    w.apply::<AcsIdentity>("frank", touched.clone()).await;
    touched["metadata"]["annotations"][REFRESH_ANNOTATION] = json!("retry-1");
    w.apply::<AcsIdentity>("frank", touched).await;
    w.wait_reconciled("frank", before).await;
    let frank = w
        .wait_identity("frank", "failed once more", |o| {
            o.status.as_ref().and_then(|s| s.failed_attempts) > Some(attempts)
        })
        .await;
    assert_eq!(
        status_of(&frank).failed_attempts,
        Some(attempts + 1),
        "attempts beyond the one change"
    );
    assert!(
        w.reconcile_count("frank") <= before + 2,
        "reconciled {} times after one change",
        w.reconcile_count("frank") - before
    );
    assert_eq!(w.admin.count("issueToken", 404).await, calls + 1);
    assert_eq!(
        w.admin.get("admin/identities").await["identities"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "no identity silently created"
    );
    assert!(w.get::<Secret>("frank").await.is_none());
}

#[tokio::test]
async fn missing_then_invalid_connection_secret_then_fixed() {
    let w = World::new(|_| {}).await;
    w.apply::<acs_identity_operator::api::AcsConnection>(
        "broken",
        json!({"spec": {"connectionStringSecretRef": {"name": "not-there"}}}),
    )
    .await;
    let mut s = spec(&["chat"]);
    s["connectionRef"] = json!({"name": "broken"});
    w.identity("gina", s).await;
    w.wait_reason("gina", "ConnectionNotFound").await;

    w.put_secret("not-there", "connectionString", "endpoint=https://x/")
        .await;
    w.wait_reason("gina", "InvalidConnectionString").await;
    let status = status_of(&w.get::<AcsIdentity>("gina").await.unwrap()).clone();
    let message = &status.conditions[0].message;
    assert!(!message.contains(harness::test_key()), "{message}");

    w.put_secret("not-there", "connectionString", &w.connection_string())
        .await;
    let gina = w.wait_ready("gina").await;
    assert_eq!(
        status_of(&gina).failed_attempts,
        None,
        "failures reset on success"
    );
    assert_eq!(w.admin.count("createIdentityWithToken", 201).await, 1);
}

#[tokio::test]
async fn a_rotated_connection_secret_reaches_its_identities() {
    let w = World::new(|_| {}).await;
    let endpoint = w.emulator.as_ref().unwrap().endpoint().clone();
    let wrong = format!("endpoint={endpoint};accesskey=d3Jvbmcta2V5LXRoYXQtaXMtbm90LWl0");
    w.put_secret("acs-conn", "connectionString", &wrong).await;
    w.identity("hank", spec(&["chat"])).await;
    let hank = w.wait_reason("hank", "AcsUnauthorized").await;
    assert_eq!(status_of(&hank).failed_attempts, Some(1));

    // A permanent failure waits for a change: the corrected Secret is that change.
    w.put_secret("acs-conn", "connectionString", &w.connection_string())
        .await;
    let hank = w.wait_ready("hank").await;
    let first = status_of(&hank).issued_for.clone().unwrap();
    assert_eq!(status_of(&hank).failed_attempts, None);

    // The same resource under another endpoint spelling is another connection: re-issue.
    let renamed = w.connection_string().replace("127.0.0.1", "localhost");
    w.put_secret("acs-conn", "connectionString", &renamed).await;
    let hank = w
        .wait_identity("hank", "re-issued", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.issued_for.as_ref())
                .is_some_and(|f| f.connection_fingerprint != first.connection_fingerprint)
        })
        .await;
    let id = status_of(&hank).identity_id.clone().unwrap();
    assert_eq!(w.admin.identity(&id).await.unwrap()["tokensIssued"], 2);
    let reasons: Vec<_> = w
        .wait_event("hank", |_, note| note.contains("connection changed"))
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(
        reasons.iter().any(|n| n.contains("connection changed")),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn acs_failures_back_off_and_recover_before_the_token_expires() {
    let w = World::new(|c| c.token_lifetime = Some(Duration::from_secs(30))).await;
    w.identity("ivan", spec(&["chat"])).await;
    let ivan = w.wait_ready("ivan").await;
    let expires = status_of(&ivan).token_expires_on.clone().unwrap().0;
    // The renewal (at ~20 s) meets a 503, a 500 and a 429 with Retry-After in turn.
    for (status, extra) in [
        (503, json!({})),
        (500, json!({})),
        (429, json!({"retryAfterSeconds": 1})),
    ] {
        let mut fault = json!({"operation": "issueToken", "count": 1, "status": status});
        fault
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        w.admin.post("admin/faults", fault).await;
    }
    let failing = w
        .wait_identity("ivan", "failing", |o| {
            o.status.as_ref().and_then(|s| s.failed_attempts).is_some()
        })
        .await;
    assert!(status_of(&failing).last_failure_time.is_some());
    let recovered = w
        .wait_identity("ivan", "renewed", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.token_expires_on.as_ref())
                .is_some_and(|t| t.0 > expires)
        })
        .await;
    assert!(
        jiff::Timestamp::now() < expires,
        "recovered only after the old token expired"
    );
    assert_eq!(status_of(&recovered).failed_attempts, None);
    assert_eq!(ready_reason(&recovered).0, "True");
    for status in [503, 500, 429] {
        assert_eq!(
            w.admin.count("issueToken", status).await,
            1,
            "one {status} answered"
        );
    }
    let reasons: Vec<_> = w
        .wait_event("ivan", |reason, _| reason == "AcsUnavailable")
        .await
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert!(
        reasons.contains(&"AcsUnavailable".to_string()),
        "{reasons:?}"
    );
}

#[tokio::test]
async fn a_foreign_secret_is_never_overwritten() {
    let w = World::new(|_| {}).await;
    w.put_secret("judy", "token", "someone else's").await;
    w.identity("judy", spec(&["chat"])).await;
    let judy = w.wait_reason("judy", "SecretConflict").await;
    assert_eq!(ready_reason(&judy).0, "False");
    let secret = w.get::<Secret>("judy").await.unwrap();
    assert_eq!(secret_text(&secret, "token"), "someone else's");
    assert_eq!(
        w.admin.get("admin/stats").await["total"],
        0,
        "no ACS call while blocked"
    );

    // Pointing it at a free name resolves it.
    let mut s = spec(&["chat"]);
    s["secretName"] = json!("judy-token");
    w.identity("judy", s).await;
    w.wait_ready("judy").await;
    assert!(w.get::<Secret>("judy-token").await.is_some());
    assert_eq!(
        secret_text(&w.get::<Secret>("judy").await.unwrap(), "token"),
        "someone else's"
    );
}

#[tokio::test]
async fn a_label_dropped_from_the_template_leaves_the_secret_and_others_labels_stay() {
    let w = World::new(|_| {}).await;
    let mut s = spec(&["chat"]);
    s["secretTemplate"] = json!({"labels": {"team": "a", "tier": "gold"},
                                 "annotations": {"note": "x"}});
    w.identity("lena", s.clone()).await;
    w.wait_ready("lena").await;
    let token = secret_text(&w.get::<Secret>("lena").await.unwrap(), "token");

    // Another tool labels the Secret, as a backup or policy controller would.
    let theirs = json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "lena", "labels": {"backup": "daily"}}});
    w.api::<Secret>()
        .patch(
            "lena",
            &kube::api::PatchParams::apply("backup-tool"),
            &kube::api::Patch::Apply(&theirs),
        )
        .await
        .unwrap();

    s["secretTemplate"] = json!({"labels": {"team": "a"}, "annotations": {"note": "x"}});
    w.identity("lena", s.clone()).await;
    let secret = w
        .wait_secret("lena", "without the dropped label", |s| {
            s.is_some_and(|s| !s.labels().contains_key("tier"))
        })
        .await
        .unwrap();
    assert_eq!(secret.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(
        secret.labels().get("backup").map(String::as_str),
        Some("daily"),
        "what another tool added stays"
    );

    s["secretTemplate"] = json!({"labels": {"team": "a"}});
    w.identity("lena", s).await;
    let secret = w
        .wait_secret("lena", "without the dropped annotation", |s| {
            s.is_some_and(|s| !s.annotations().contains_key("note"))
        })
        .await
        .unwrap();
    assert_eq!(
        secret.labels().get("backup").map(String::as_str),
        Some("daily")
    );
    assert_eq!(
        secret_text(&secret, "token"),
        token,
        "only metadata changed: the token is kept, no ACS call"
    );
}

#[tokio::test]
async fn a_deleted_or_edited_secret_is_restored_with_a_fresh_token() {
    let w = World::new(|_| {}).await;
    w.identity("kim", spec(&["chat"])).await;
    w.wait_ready("kim").await;
    let original = secret_text(&w.get::<Secret>("kim").await.unwrap(), "token");

    w.delete::<Secret>("kim").await;
    let restored = w
        .wait_secret("kim", "restored", |s| {
            s.is_some_and(|s| secret_text(s, "token") != original)
        })
        .await
        .unwrap();
    let second = secret_text(&restored, "token");
    assert_eq!(w.admin.verify(&second).await, (true, "ok".into()));

    let mut edited = restored.clone();
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("token".into(), ByteString(b"tampered".to_vec()));
    w.api::<Secret>()
        .replace("kim", &Default::default(), &edited)
        .await
        .unwrap();
    let repaired = w
        .wait_secret("kim", "repaired", |s| {
            s.is_some_and(|s| {
                !["tampered", second.as_str()].contains(&secret_text(s, "token").as_str())
            })
        })
        .await
        .unwrap();
    assert_eq!(
        w.admin.verify(&secret_text(&repaired, "token")).await,
        (true, "ok".into())
    );
    let kim = w.wait_ready("kim").await;
    let id = status_of(&kim).identity_id.clone().unwrap();
    assert_eq!(w.admin.identity(&id).await.unwrap()["tokensIssued"], 3);
}

#[tokio::test]
async fn changing_scopes_or_asking_for_a_refresh_issues_a_new_token() {
    let w = World::new(|_| {}).await;
    w.identity("lee", spec(&["chat"])).await;
    w.wait_ready("lee").await;
    w.identity("lee", spec(&["voip", "chat.join"])).await;
    let changed = w
        .wait_secret("lee", "re-scoped", |s| {
            s.is_some_and(|s| token_scopes(&secret_text(s, "token")) == "voip,chat.join")
        })
        .await
        .unwrap();
    let before = secret_text(&changed, "token");
    let lee = w.wait_ready("lee").await;
    assert_eq!(status_of(&lee).observed_generation, lee.metadata.generation);

    let mut body = json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "2026-11-22T10:00:00Z"}}, "spec": spec(&["voip", "chat.join"])});
    body["spec"]["scopes"] = json!(["voip", "chat.join"]);
    w.apply::<AcsIdentity>("lee", body).await;
    let refreshed = w
        .wait_identity("lee", "refreshed", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.handled_refresh_request.as_deref())
                == Some("2026-11-22T10:00:00Z")
        })
        .await;
    let after = secret_text(&w.get::<Secret>("lee").await.unwrap(), "token");
    assert_ne!(after, before);
    // Handled once: another reconcile of the same annotation does not issue again.
    let id = status_of(&refreshed).identity_id.clone().unwrap();
    let issued = w.admin.identity(&id).await.unwrap()["tokensIssued"]
        .as_u64()
        .unwrap();
    assert_eq!(issued, 3);
}

#[tokio::test]
async fn a_revoke_request_kills_every_old_token_at_once_and_leaves_a_fresh_one() {
    let w = World::new(|_| {}).await;
    w.identity("leaky", spec(&["chat"])).await;
    w.wait_ready("leaky").await;
    let leaked = secret_text(&w.get::<Secret>("leaky").await.unwrap(), "token");
    assert_eq!(w.admin.verify(&leaked).await, (true, "ok".into()));

    let body = json!({"metadata": {"annotations": {REVOKE_ANNOTATION: "incident-42"}}, "spec": spec(&["chat"])});
    w.apply::<AcsIdentity>("leaky", body).await;
    let revoked = w
        .wait_identity("leaky", "revoked", |o| {
            o.status
                .as_ref()
                .and_then(|s| s.handled_revoke_request.as_deref())
                == Some("incident-42")
        })
        .await;
    let fresh = secret_text(&w.get::<Secret>("leaky").await.unwrap(), "token");
    assert_ne!(fresh, leaked);
    let (valid, why) = w.admin.verify(&leaked).await;
    assert!(!valid, "the leaked token still works: {why}");
    assert_eq!(w.admin.verify(&fresh).await, (true, "ok".into()));
    assert_eq!(ready_reason(&revoked), ("True".into(), "TokenValid".into()));
    let id = status_of(&revoked).identity_id.clone().unwrap();
    let view = w.admin.identity(&id).await.unwrap();
    assert_eq!(
        (view["revocations"].as_u64(), view["tokensIssued"].as_u64()),
        (Some(1), Some(2)),
        "{view}"
    );
    w.wait_event("leaky", |reason, note| {
        reason == "TokensRevoked" && note.contains("revoke requested")
    })
    .await;
    // Handled once: a later reconcile of the same value revokes nothing more.
    let before = w.reconcile_count("leaky");
    let body = json!({"metadata": {"annotations": {REVOKE_ANNOTATION: "incident-42"}}, "spec": spec(&["chat", "voip"])});
    w.apply::<AcsIdentity>("leaky", body).await;
    w.wait_reconciled("leaky", before).await;
    w.wait_ready("leaky").await;
    assert_eq!(
        w.admin.identity(&id).await.unwrap()["revocations"].as_u64(),
        Some(1)
    );
}

#[tokio::test]
async fn skip_cleanup_releases_a_stuck_deletion_without_touching_acs() {
    let mut w = World::new(|_| {}).await;
    w.identity("mia", spec(&["chat"])).await;
    let mia = w.wait_ready("mia").await;
    let id = status_of(&mia).identity_id.clone().unwrap();
    // ACS goes away: cleanup cannot revoke, so the finalizer holds the object.
    w.emulator.take().unwrap().shutdown().await;
    w.delete::<AcsIdentity>("mia").await;
    w.wait_identity("mia", "cleanup failing", |o| {
        o.metadata.deletion_timestamp.is_some()
    })
    .await;
    w.wait_event("mia", |_, note| note.starts_with("cleanup failed"))
        .await;
    assert!(
        w.get::<AcsIdentity>("mia").await.is_some(),
        "finalizer keeps the object"
    );

    w.apply::<AcsIdentity>(
        "mia",
        json!({"metadata": {"annotations": {SKIP_CLEANUP_ANNOTATION: "true"}}, "spec": spec(&["chat"])}),
    )
    .await;
    w.wait_gone("mia").await;
    assert!(w.get::<Secret>("mia").await.is_none());
    let _ = id;
    w.stop_operator().await;
}

#[tokio::test]
async fn deletion_before_setup_completed_just_removes_the_finalizer() {
    let w = World::new(|_| {}).await;
    let mut s = spec(&["chat"]);
    s["connectionRef"] = json!({"name": "nowhere"});
    w.identity("noah", s).await;
    w.wait_reason("noah", "ConnectionNotFound").await;
    w.delete::<AcsIdentity>("noah").await;
    w.wait_gone("noah").await;
    assert_eq!(w.admin.get("admin/stats").await["total"], 0);
}

#[tokio::test]
async fn schema_rejects_bad_manifests() {
    let w = World::new(|_| {}).await;
    let api = w.api::<AcsIdentity>();
    let bad = [
        json!({"connectionRef": {"name": "acs"}, "scopes": []}),
        json!({"connectionRef": {"name": "acs"}, "scopes": ["admin"]}),
        json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"], "tokenLifetimeMinutes": 59}),
        json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"], "renewBefore": "20m", "renewBeforePercentage": 10}),
        json!({"connectionRef": {"name": "acs"}, "scopes": ["chat", "chat"]}),
        json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"], "renewBefore": "soon"}),
    ];
    for (i, spec) in bad.into_iter().enumerate() {
        let body = json!({"apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity", "metadata": {"name": format!("bad-{i}")}, "spec": spec});
        let err = api
            .patch(
                &format!("bad-{i}"),
                &kube::api::PatchParams::apply("test"),
                &kube::api::Patch::Apply(body),
            )
            .await
            .expect_err(&format!("case {i} accepted"));
        assert!(
            matches!(err, kube::Error::Api(ref s) if s.code == 422),
            "case {i}: {err}"
        );
    }
    // identityId is immutable once set.
    let mut s = spec(&["chat"]);
    s["identityId"] = json!("8:acs:r_1");
    s["connectionRef"] = json!({"name": "nowhere"});
    w.identity("pat", s.clone()).await;
    s["identityId"] = json!("8:acs:r_2");
    let err = api
        .patch("pat", &kube::api::PatchParams::apply("test").force(), &kube::api::Patch::Apply(json!({"apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity", "metadata": {"name": "pat"}, "spec": s})))
        .await
        .expect_err("identityId changed");
    assert!(err.to_string().contains("immutable"), "{err}");
}

#[tokio::test]
async fn metrics_follow_an_identity_and_are_removed_with_it() {
    let w = World::new(|_| {}).await;
    w.identity("omar", spec(&["chat"])).await;
    let omar = w.wait_ready("omar").await;
    let expires = status_of(&omar)
        .token_expires_on
        .clone()
        .unwrap()
        .0
        .as_second();
    let text = w
        .wait_metrics(r#"acs_identity_reconciles_total{result="success"}"#)
        .await;
    let labels = format!(r#"namespace="{}",name="omar""#, w.ns);
    assert!(
        text.contains(&format!(
            "acs_identity_token_expiration_timestamp_seconds{{{labels}}} {expires}.0"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            r#"acs_identity_ready_status{{{labels},condition="True"}} 1"#
        )),
        "{text}"
    );
    assert!(
        text.contains(
            r#"acs_api_requests_total{operation="createIdentityWithToken",code="201"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"acs_identity_reconciles_total{result="success"}"#),
        "{text}"
    );

    w.delete::<AcsIdentity>("omar").await;
    w.wait_gone("omar").await;
    let text = w.metrics.encode();
    assert!(
        !text.contains(r#"name="omar""#),
        "series of a deleted identity remain:\n{text}"
    );
    assert!(
        text.contains(r#"acs_api_requests_total{operation="revokeTokens",code="204"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_workload_identity_connection_gets_a_bearer_token_and_a_ready_identity() {
    use acs_identity_operator::api::AcsConnection;
    const TENANT: &str = "11111111-2222-3333-4444-555555555555";
    const CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
    let w = World::with_workload_identity(TENANT, CLIENT).await;

    // The API server keeps the two ways of authenticating apart (the CRD's CEL rule).
    let mixed = json!({"apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsConnection",
        "metadata": {"name": "mixed"},
        "spec": {"connectionStringSecretRef": {"name": "s"}, "endpoint": "https://x/", "workloadIdentity": {}}});
    let err = w
        .api::<AcsConnection>()
        .patch(
            "mixed",
            &kube::api::PatchParams::apply("test"),
            &kube::api::Patch::Apply(mixed),
        )
        .await
        .expect_err("a connection with both forms was accepted");
    assert!(
        err.to_string()
            .contains("set either connectionStringSecretRef, or endpoint and workloadIdentity"),
        "{err}"
    );

    w.identity("wanda", spec(&["chat"])).await;
    let wanda = w.wait_ready("wanda").await;
    let secret = w.get::<Secret>("wanda").await.unwrap();
    assert_eq!(
        Some(secret_text(&secret, "identityId")),
        status_of(&wanda).identity_id
    );
    let token = secret_text(&secret, "token");
    assert_eq!(w.admin.verify(&token).await, (true, "ok".into()));
    assert_eq!(token_scopes(&token), "chat");
    // The connection has no access key: the create went out with the Entra bearer token, and
    // one token request served every ACS call (the connection's own check makes none).
    assert_eq!(w.admin.count("entraToken", 200).await, 1);
    assert_eq!(w.admin.count("createIdentityWithToken", 201).await, 1);
    assert_eq!(w.admin.count("createIdentityWithToken", 401).await, 0);

    let ready = |c: Option<&AcsConnection>| {
        c.and_then(|c| c.status.as_ref())
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True")
    };
    let connection = tokio::time::timeout(
        harness::WAIT,
        kube::runtime::wait::await_condition(w.api::<AcsConnection>(), "acs", ready),
    )
    .await
    .expect("connection Ready in time")
    .unwrap()
    .unwrap();
    let status = connection.status.unwrap();
    let condition = &status.conditions[0];
    assert_eq!(condition.reason, "Valid");
    assert!(
        condition.message.contains(CLIENT) && condition.message.contains("as ServiceAccount"),
        "{}",
        condition.message
    );
    assert!(status.endpoint.unwrap().starts_with("https://127.0.0.1:"));
}
