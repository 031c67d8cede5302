//! Tenants sharing one ACS resource through a ClusterAcsConnection, with a cluster-wide
//! operator on the real test API server and the emulator: what one tenant may do to another's
//! identity (nothing), and how many identities a namespace may have on the shared bill.
//! Tenants create and delete their objects as users bound to `edit` in their own namespace
//! ([`support::tenant::Tenant`]), with only the rights a cluster's roles give them.
//!
//! A cluster-wide operator reconciles every namespace of this binary's cluster, so these
//! tests take turns ([`ONE_OPERATOR`]).

use acs_test_support as support;

use acs_identity_operator::acs::{AcsClient, ClientOptions};
use acs_identity_operator::api::{AcsConnection, AcsIdentity, ClusterAcsConnection};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::fake_acs::FakeAcs;
use support::operator::{World, ready_reason, secret_text, status_of};
use support::tenant::Tenant;

static ONE_OPERATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The platform team's namespace (emulator and connection Secret) with a cluster-wide
/// operator, and a ClusterAcsConnection named after it whose spec is `extra` plus the
/// connection string.
struct Platform {
    world: World,
    connection: String,
}

impl Platform {
    async fn new(extra: Value) -> Platform {
        let world = World::without_operator(|_| {}).await;
        let connection = format!("{}-shared", world.ns);
        let mut platform = Platform { world, connection };
        platform.set_connection(extra).await;
        platform.world.start_operator_with(|s| s.namespace = None);
        platform
    }

    fn api(&self) -> Api<ClusterAcsConnection> {
        Api::all(self.world.client.clone())
    }

    /// Applies the connection's spec: the platform Secret plus `extra`.
    async fn set_connection(&self, extra: Value) {
        let mut spec = json!({"connectionStringSecretRef": {
            "namespace": self.world.ns, "name": "acs-conn", "key": "connectionString"
        }});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let body = json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "ClusterAcsConnection",
            "metadata": {"name": self.connection}, "spec": spec,
        });
        self.api()
            .patch(
                &self.connection,
                &PatchParams::apply("platform-team").force(),
                &Patch::Apply(body),
            )
            .await
            .unwrap();
    }

    fn spec(&self, scopes: &[&str]) -> Value {
        json!({
            "connectionRef": {"kind": "ClusterAcsConnection", "name": self.connection},
            "scopes": scopes,
        })
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let (api, name) = (self.api(), self.connection.clone());
        // Cluster-scoped: not removed with the test's namespaces.
        tokio::spawn(async move { api.delete(&name, &DeleteParams::default()).await });
    }
}

/// The Ready condition's message.
fn ready_message(obj: &AcsIdentity) -> String {
    status_of(obj)
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_tenant_cannot_adopt_use_or_delete_another_tenants_identity() {
    let _one = ONE_OPERATOR.lock().await;
    let p = Platform::new(json!({})).await;
    let a = p.world.neighbour("team-a").await;
    let b = p.world.neighbour("team-b").await;
    p.set_connection(json!({"allowedNamespaces": {"names": [a.ns, b.ns]}}))
        .await;
    // Each team acts as its own user, bound to `edit` in its namespace only.
    let (team_a, team_b) = (
        Tenant::bound(&a.ns, "edit").await,
        Tenant::bound(&b.ns, "edit").await,
    );

    team_a.identity("alice", p.spec(&["chat"])).await;
    let alice = a.wait_ready("alice").await;
    let id = status_of(&alice).identity_id.clone().unwrap();
    let alice_token = secret_text(&a.get::<Secret>("alice").await.unwrap(), "token");

    // Ids are not secret: team-b names alice's through the shared connection.
    let mut stolen = p.spec(&["chat", "voip"]);
    stolen["identityId"] = json!(id);
    team_b.identity("mallory", stolen.clone()).await;
    let refused = b.wait_reason("mallory", "AdoptionNotAllowed").await;
    assert!(status_of(&refused).identity_id.is_none());
    assert!(
        b.get::<Secret>("mallory").await.is_none(),
        "no token Secret"
    );
    b.wait_event("mallory", |reason, _| reason == "AdoptionNotAllowed")
        .await;

    // Even allowed to adopt, team-b cannot take an identity another AcsIdentity holds, and
    // is not told which one does.
    p.set_connection(json!({
        "allowedNamespaces": {"names": [a.ns, b.ns]},
        "adoptionAllowedNamespaces": {"names": [b.ns]},
    }))
    .await;
    let claimed = b.wait_reason("mallory", "IdentityClaimed").await;
    let message = ready_message(&claimed);
    assert!(
        message.contains(&id) && !message.contains(&a.ns) && !message.contains("alice"),
        "{message}"
    );
    assert!(
        b.get::<Secret>("mallory").await.is_none(),
        "no token Secret"
    );

    // Deleting the refused object touches nothing in ACS.
    team_b.delete::<AcsIdentity>("mallory").await;
    b.wait_gone("mallory").await;
    let view = p.world.admin.identity(&id).await.unwrap();
    assert_eq!(
        (
            view["deleted"].as_bool(),
            view["revocations"].as_u64(),
            view["tokensIssued"].as_u64()
        ),
        (Some(false), Some(0), Some(1)),
        "only alice's own token was ever issued: {view}"
    );
    assert_eq!(
        p.world.admin.verify(&alice_token).await,
        (true, "ok".into())
    );
    let after = a.get::<AcsIdentity>("alice").await.unwrap();
    assert_eq!(ready_reason(&after), ("True".into(), "TokenValid".into()));
    assert_eq!(status_of(&after).issued_for, status_of(&alice).issued_for);

    // An identity nobody holds can be adopted where allowed, and is kept in ACS when its
    // AcsIdentity is deleted (the operator did not create it).
    let acs = AcsClient::new(
        &p.world.emulator.as_ref().unwrap().connection_string(),
        ClientOptions::default(),
    )
    .unwrap();
    let free = acs.create_identity().await.unwrap();
    let mut adopt = p.spec(&["voip"]);
    adopt["identityId"] = json!(free);
    team_b.identity("bob", adopt).await;
    b.wait_ready("bob").await;
    team_b.delete::<AcsIdentity>("bob").await;
    b.wait_gone("bob").await;
    let view = p.world.admin.identity(&free).await.unwrap();
    assert_eq!(
        (view["deleted"].as_bool(), view["revocations"].as_u64()),
        (Some(false), Some(0)),
        "an adopted identity is retained by default: {view}"
    );
}

/// What team-b learns from a refused adoption about an id: through a shared connection that
/// does not let it adopt, nothing: an id team-a holds, one nobody holds and one that does not
/// exist get the same reason, message and Event, and nothing is asked of ACS. Where it may
/// adopt, the one-holder rule must refuse the held id (`IdentityClaimed`, naming no holder),
/// and ACS itself tells an unknown id (`IdentityNotFound`) from a free one (adopted): what any
/// tenant allowed to adopt there learns anyway.
#[tokio::test]
async fn a_refused_adoption_does_not_tell_whether_an_id_is_held() {
    let _one = ONE_OPERATOR.lock().await;
    let p = Platform::new(json!({})).await;
    let a = p.world.neighbour("team-a").await;
    let b = p.world.neighbour("team-b").await;
    p.set_connection(json!({"allowedNamespaces": {"names": [a.ns, b.ns]}}))
        .await;
    let (team_a, team_b) = (
        Tenant::bound(&a.ns, "edit").await,
        Tenant::bound(&b.ns, "edit").await,
    );
    team_a.identity("alice", p.spec(&["chat"])).await;
    let held = status_of(&a.wait_ready("alice").await)
        .identity_id
        .clone()
        .unwrap();
    let acs = AcsClient::new(
        &p.world.emulator.as_ref().unwrap().connection_string(),
        ClientOptions::default(),
    )
    .unwrap();
    let free = acs.create_identity().await.unwrap();
    // Same resource, an identity it never made.
    let missing = format!(
        "{}_00000000-0000-4000-8000-000000000000",
        free.split_once('_').unwrap().0
    );
    let cases = [("held", &held), ("free", &free), ("missing", &missing)];
    let issued_before = p.world.admin.count("issueToken", 200).await;

    for (name, id) in cases {
        let mut spec = p.spec(&["chat"]);
        spec["identityId"] = json!(id);
        team_b.identity(name, spec).await;
    }
    let mut seen = Vec::new();
    for (name, _) in cases {
        let refused = b.wait_reason(name, "AdoptionNotAllowed").await;
        let events = b
            .wait_event(name, |reason, _| reason == "AdoptionNotAllowed")
            .await;
        let events: std::collections::BTreeSet<_> = events.into_iter().collect();
        seen.push((ready_message(&refused), events));
    }
    assert!(
        seen.iter().all(|s| *s == seen[0]),
        "the refusals differ: {seen:#?}"
    );
    assert_eq!(
        p.world.admin.count("issueToken", 200).await + p.world.admin.count("issueToken", 404).await,
        issued_before,
        "nothing was asked of ACS"
    );

    // Allowed to adopt: the rule refuses the held id without naming its holder.
    p.set_connection(json!({
        "allowedNamespaces": {"names": [a.ns, b.ns]},
        "adoptionAllowedNamespaces": {"names": [b.ns]},
    }))
    .await;
    let claimed = ready_message(&b.wait_reason("held", "IdentityClaimed").await);
    assert!(
        !claimed.contains(&a.ns) && !claimed.contains("alice"),
        "{claimed}"
    );
    b.wait_reason("missing", "IdentityNotFound").await;
    b.wait_ready("free").await;
    let alice = a.get::<AcsIdentity>("alice").await.unwrap();
    assert_eq!(ready_reason(&alice), ("True".into(), "TokenValid".into()));
    let view = p.world.admin.identity(&held).await.unwrap();
    assert_eq!(view["tokensIssued"].as_u64(), Some(1), "{view}");
}

#[tokio::test]
async fn a_namespace_cap_holds_back_the_newest_identities_until_one_goes() {
    let _one = ONE_OPERATOR.lock().await;
    let p = Platform::new(json!({})).await;
    let a = p.world.neighbour("capped").await;
    let b = p.world.neighbour("other").await;
    p.set_connection(json!({"maxIdentitiesPerNamespace": 2}))
        .await;
    let (capped, other) = (
        Tenant::bound(&a.ns, "edit").await,
        Tenant::bound(&b.ns, "edit").await,
    );

    // Those holding an identity come first, whatever their age.
    for name in ["first", "second"] {
        capped.identity(name, p.spec(&["chat"])).await;
        a.wait_ready(name).await;
    }
    capped.identity("third", p.spec(&["chat"])).await;
    let held = a.wait_reason("third", "IdentityLimitReached").await;
    assert!(ready_message(&held).contains("maxIdentitiesPerNamespace"));
    a.wait_event("third", |reason, _| reason == "IdentityLimitReached")
        .await;
    // Another namespace's share is its own.
    other.identity("elsewhere", p.spec(&["chat"])).await;
    b.wait_ready("elsewhere").await;
    assert_eq!(p.world.admin.count("createIdentityWithToken", 201).await, 3);

    // A freed place goes to the waiting one at once (nudged, not after the periodic look).
    capped.delete::<AcsIdentity>("first").await;
    a.wait_gone("first").await;
    a.wait_ready("third").await;
    assert_eq!(p.world.admin.count("createIdentityWithToken", 201).await, 4);
}

/// team-b's own AcsConnection to `fake`, named `own`.
async fn own_connection(b: &World, fake: &FakeAcs) {
    b.put_secret("own-conn", "connectionString", &fake.connection_string())
        .await;
    b.apply::<AcsConnection>(
        "own",
        json!({"spec": {"connectionStringSecretRef": {"name": "own-conn", "key": "connectionString"}}}),
    )
    .await;
}

/// Applies `spec` with the annotations `annotations` (the test's manager owns both).
async fn identity_with(b: &World, name: &str, spec: Value, annotations: Value) {
    b.apply::<AcsIdentity>(
        name,
        json!({"metadata": {"annotations": annotations}, "spec": spec}),
    )
    .await;
}

/// What team-a's identity went through in ACS: (deleted, revocations, tokens issued).
async fn acs_view(p: &Platform, id: &str) -> (Option<bool>, Option<u64>, Option<u64>) {
    let view = p.world.admin.identity(id).await.unwrap();
    (
        view["deleted"].as_bool(),
        view["revocations"].as_u64(),
        view["tokensIssued"].as_u64(),
    )
}

#[tokio::test]
async fn a_fake_acs_cannot_plant_another_tenants_id_and_a_switch_to_the_platform_is_refused() {
    let _one = ONE_OPERATOR.lock().await;
    let p = Platform::new(json!({})).await;
    let a = p.world.neighbour("team-a").await;
    let b = p.world.neighbour("team-b").await;
    p.set_connection(json!({"allowedNamespaces": {"names": [a.ns, b.ns]}}))
        .await;
    a.identity("alice", p.spec(&["chat"])).await;
    let alice = a.wait_ready("alice").await;
    let id = status_of(&alice).identity_id.clone().unwrap();
    let alice_token = secret_text(&a.get::<Secret>("alice").await.unwrap(), "token");

    // team-b's own "ACS" answers the create with alice's id (ids are not secret).
    let fake = FakeAcs::start(&id).await;
    own_connection(&b, &fake).await;
    let own = |scopes: &[&str]| json!({"connectionRef": {"name": "own"}, "scopes": scopes});
    b.identity("mallory", own(&["chat", "voip"])).await;
    let refused = b.wait_reason("mallory", "ForeignIdentity").await;
    assert!(
        status_of(&refused).identity_id.is_none(),
        "nothing recorded"
    );
    assert!(fake.requests("create") >= 1);

    // An id of team-b's own resource is taken, and recorded as living there.
    fake.answer_with("8:acs:0000beef-0000-0000-0000-00000000000b_1");
    b.identity("mallory", own(&["chat"])).await;
    let held = b.wait_ready("mallory").await;
    let provenance = status_of(&held).provenance.clone().unwrap();
    assert_eq!(
        provenance.endpoint,
        format!("http://127.0.0.1:{}", fake.port)
    );

    // Switched to the platform's connection, with refresh and revoke asked for: refused,
    // nothing sent to the platform for it.
    let stolen = p.spec(&["chat", "voip"]);
    let asks = json!({
        "acsoperator.io/refresh-requested": "1",
        "acsoperator.io/revoke-requested": "1",
    });
    identity_with(&b, "mallory", stolen.clone(), asks).await;
    let moved = b.wait_reason("mallory", "IdentityOnOtherResource").await;
    assert!(ready_message(&moved).contains("another ACS resource"));
    assert_eq!(
        status_of(&moved).provenance,
        Some(provenance),
        "where it lives does not move"
    );
    b.wait_event("mallory", |reason, _| reason == "IdentityOnOtherResource")
        .await;
    let before = b.reconcile_count("mallory");
    identity_with(
        &b,
        "mallory",
        stolen,
        json!({"acsoperator.io/revoke-requested": "2"}),
    )
    .await;
    b.wait_reconciled("mallory", before).await;

    // Deleted: the cleanup goes to team-b's own server, where the identity lives.
    let deletes = fake.requests("delete");
    b.delete::<AcsIdentity>("mallory").await;
    b.wait_gone("mallory").await;
    assert_eq!(fake.requests("delete"), deletes + 1);

    assert_eq!(
        acs_view(&p, &id).await,
        (Some(false), Some(0), Some(1)),
        "only alice's own token was ever issued for her identity"
    );
    assert_eq!(p.world.admin.count("createIdentityWithToken", 201).await, 1);
    assert_eq!(p.world.admin.count("revokeAccessTokens", 204).await, 0);
    assert_eq!(
        p.world.admin.verify(&alice_token).await,
        (true, "ok".into())
    );
    let after = a.get::<AcsIdentity>("alice").await.unwrap();
    assert_eq!(ready_reason(&after), ("True".into(), "TokenValid".into()));
    assert!(
        !after
            .status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True"),
        "team-a is not stalled"
    );
}

#[tokio::test]
async fn the_cap_counts_identities_left_behind_by_skip_cleanup_retain_or_moving_away() {
    let _one = ONE_OPERATOR.lock().await;
    let p = Platform::new(json!({})).await;
    let b = p.world.neighbour("team-b").await;
    p.set_connection(json!({"maxIdentitiesPerNamespace": 2}))
        .await;
    let live = || async { p.world.admin.live_identities().await.len() };

    // skip-cleanup and Retain are not honoured for what team-b created on the shared bill.
    let mut spec = p.spec(&["chat"]);
    b.identity("one", spec.clone()).await;
    spec["deletionPolicy"] = json!("Retain");
    b.identity("two", spec).await;
    let one = b.wait_ready("one").await;
    let two = b.wait_ready("two").await;
    identity_with(
        &b,
        "one",
        p.spec(&["chat"]),
        json!({"acsoperator.io/skip-cleanup": "true"}),
    )
    .await;
    for name in ["one", "two"] {
        b.delete::<AcsIdentity>(name).await;
        b.wait_gone(name).await;
    }
    b.wait_event("one", |reason, note| {
        reason == "RetainNotAllowed" && note.contains("skip-cleanup")
    })
    .await;
    for obj in [one, two] {
        let id = status_of(&obj).identity_id.clone().unwrap();
        assert_eq!(acs_view(&p, &id).await.0, Some(true), "{id} deleted");
    }
    assert_eq!(live().await, 0);

    // A holder moved to team-b's own connection still counts, and is refused there.
    let fake = FakeAcs::start("8:acs:0000beef-0000-0000-0000-00000000000b_1").await;
    own_connection(&b, &fake).await;
    for name in ["three", "four"] {
        b.identity(name, p.spec(&["chat"])).await;
        b.wait_ready(name).await;
    }
    b.identity(
        "three",
        json!({"connectionRef": {"name": "own"}, "scopes": ["chat"]}),
    )
    .await;
    b.wait_reason("three", "IdentityOnOtherResource").await;
    assert_eq!(fake.requests("create") + fake.requests("issue"), 0);
    b.identity("five", p.spec(&["chat"])).await;
    b.wait_reason("five", "IdentityLimitReached").await;
    assert_eq!(live().await, 2);

    // Its deletion goes to the platform, where it lives, and frees the place.
    b.delete::<AcsIdentity>("three").await;
    b.wait_gone("three").await;
    assert_eq!(fake.requests("delete"), 0);
    b.wait_ready("five").await;
    assert_eq!(live().await, 2, "never more than the cap");
    assert_eq!(p.world.admin.count("createIdentityWithToken", 201).await, 5);
}

/// Sets (or, with `null`, removes) status fields as an older operator version left them.
async fn patch_status(w: &World, name: &str, status: Value) {
    w.api::<AcsIdentity>()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn identities_of_the_previous_version_get_their_home_once_where_it_is_unambiguous() {
    let _one = ONE_OPERATOR.lock().await;
    let mut p = Platform::new(json!({})).await;
    let a = p.world.neighbour("team-a").await;
    let b = p.world.neighbour("team-b").await;
    p.set_connection(json!({"allowedNamespaces": {"names": [a.ns, b.ns]}}))
        .await;
    a.identity("alice", p.spec(&["chat"])).await;
    let alice = a.wait_ready("alice").await;
    let id = status_of(&alice).identity_id.clone().unwrap();
    let home = status_of(&alice).provenance.clone().unwrap();
    // Creation times are whole seconds; two objects of one second rank by uid. mallory is
    // newer: the previous version's records rank the older holder first.
    let born = alice.metadata.creation_timestamp.clone().unwrap().0;
    while jiff::Timestamp::now().as_second() <= born.as_second() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    b.identity(
        "mallory",
        json!({"connectionRef": {"name": "none"}, "scopes": ["chat"]}),
    )
    .await;
    b.wait_reason("mallory", "ConnectionNotFound").await;

    // As the previous version left them: alice without provenance, and team-b's object
    // recording alice's id (the old hijack), now on the platform's connection.
    p.world.stop_operator().await;
    patch_status(&a, "alice", json!({"provenance": null})).await;
    patch_status(&b, "mallory", json!({"identityId": id})).await;
    b.identity("mallory", p.spec(&["chat"])).await;
    p.world.start_operator_with(|s| s.namespace = None);

    // alice's token came through her connection: her home is filled in from it, once.
    let filled = a
        .wait_identity("alice", "given its home", |o| {
            o.status.as_ref().and_then(|s| s.provenance.as_ref()) == Some(&home)
        })
        .await;
    assert_eq!(ready_reason(&filled), ("True".into(), "TokenValid".into()));

    // mallory's cannot be vouched for: used for nothing, and its deletion keeps the identity.
    let unknown = b.wait_reason("mallory", "ProvenanceUnknown").await;
    assert!(status_of(&unknown).provenance.is_none());
    b.delete::<AcsIdentity>("mallory").await;
    b.wait_gone("mallory").await;
    b.wait_event("mallory", |reason, _| reason == "ProvenanceUnknown")
        .await;
    assert_eq!(
        acs_view(&p, &id).await,
        (Some(false), Some(0), Some(1)),
        "alice's identity untouched"
    );
    let after = a.get::<AcsIdentity>("alice").await.unwrap();
    assert_eq!(ready_reason(&after), ("True".into(), "TokenValid".into()));
}
