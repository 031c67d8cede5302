//! What the cluster's namespace users may do with the operator's kinds: the ClusterRoles of
//! `deploy/base/user-roles.yaml` (the chart's are compared with them in `helm`) aggregated
//! into the default `view`, `edit` and `admin` roles. A user bound to `edit` in team-b
//! creates, changes and deletes AcsIdentities and AcsConnections there, and cannot write
//! their status, reach ClusterAcsConnections or touch team-a; `view` only reads. Also: the
//! test server aggregates ClusterRoles as kube-controller-manager does, or none of this would
//! prove anything there. Against a real cluster (`KUBECONFIG`) both run unchanged.

use crate::status;
use crate::support::tenant::{Tenant, impersonating};
use crate::support::{TestNamespace, operator::install_crds, within};
use acs_identity_operator::api::{AcsConnection, AcsIdentity, ClusterAcsConnection};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::Duration;

/// Polls the ClusterRole `name` until its rules satisfy `check`; bounded by [`within`].
async fn wait_rules(roles: &Api<ClusterRole>, name: &str, check: impl Fn(&[PolicyRule]) -> bool) {
    within(&format!("the rules of ClusterRole {name}"), async {
        loop {
            let role = roles.get(name).await.unwrap();
            if check(role.rules.as_deref().unwrap_or_default()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

fn rule(verb: &str, resource: &str) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec!["".into()]),
        resources: Some(vec![resource.into()]),
        verbs: vec![verb.into()],
        ..PolicyRule::default()
    }
}

async fn apply_role(roles: &Api<ClusterRole>, body: Value) {
    let name = body["metadata"]["name"].as_str().unwrap().to_string();
    let mut body = body;
    body["apiVersion"] = json!("rbac.authorization.k8s.io/v1");
    body["kind"] = json!("ClusterRole");
    roles
        .patch(
            &name,
            &PatchParams::apply("operator-tests").force(),
            &Patch::Apply(body),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_test_server_aggregates_cluster_roles_like_kube_controller_manager() {
    let ns = TestNamespace::create("aggregation").await;
    let admin = ns.client();
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    // Unique per run: ClusterRoles are cluster-wide.
    let (n, label) = (ns.name(), format!("aggregate-to-{}", ns.name()));
    let (aggregated, first, second) = (
        format!("{n}-aggregated"),
        format!("{n}-a"),
        format!("{n}-b"),
    );
    apply_role(
        &roles,
        json!({"metadata": {"name": aggregated},
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {&label: "true"}}]}}),
    )
    .await;
    // Two matching roles, sharing one rule; a third that does not match.
    apply_role(
        &roles,
        json!({"metadata": {"name": first, "labels": {&label: "true"}},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}),
    )
    .await;
    apply_role(
        &roles,
        json!({"metadata": {"name": second, "labels": {&label: "true"}},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
                  {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]}),
    )
    .await;
    apply_role(
        &roles,
        json!({"metadata": {"name": format!("{n}-c"), "labels": {&label: "false"}},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete"]}]}),
    )
    .await;

    // The union, in name order, each rule once.
    let union = [rule("get", "configmaps"), rule("list", "secrets")];
    wait_rules(&roles, &aggregated, |r| r == union).await;

    // It grants like any role: a user bound to it in the namespace may do what it says.
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "aggregated"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": aggregated},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": format!("{n}-user")}],
    }))
    .unwrap();
    ns.api()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let user = impersonating(&format!("{n}-user"), &[]).await;
    let secrets: Api<Secret> = Api::namespaced(user.clone(), n);
    let configmaps: Api<ConfigMap> = Api::namespaced(user, n);
    within("the aggregated role to grant list secrets", async {
        while status(secrets.list(&ListParams::default()).await) == 403 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        status(configmaps.get("none").await),
        404,
        "allowed, not found"
    );
    assert_eq!(
        status(configmaps.delete("none", &DeleteParams::default()).await),
        403,
        "a role whose label does not match is not aggregated"
    );

    // Kept up to date: a role losing its label takes its rules away, a deleted one too.
    apply_role(
        &roles,
        json!({"metadata": {"name": second, "labels": {&label: "no"}},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]}),
    )
    .await;
    wait_rules(&roles, &aggregated, |r| r == [rule("get", "configmaps")]).await;
    within("list secrets to be refused again", async {
        while status(secrets.list(&ListParams::default()).await) != 403 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    roles
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    wait_rules(&roles, &aggregated, |r| r.is_empty()).await;

    for name in [aggregated, first, second, format!("{n}-c")] {
        let _ = roles.delete(&name, &DeleteParams::default()).await;
    }
}

fn identity(name: &str) -> AcsIdentity {
    serde_json::from_value(json!({
        "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
        "metadata": {"name": name},
        "spec": {"connectionRef": {"name": "acs"}, "scopes": ["chat"]},
    }))
    .unwrap()
}

fn connection(name: &str) -> AcsConnection {
    serde_json::from_value(json!({
        "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsConnection",
        "metadata": {"name": name},
        "spec": {"connectionStringSecretRef": {"name": "acs-conn", "key": "connectionString"}},
    }))
    .unwrap()
}

/// Each of `requests` answers `expected`; on failure, names the request.
fn expect(results: Vec<(&str, u16)>, expected: u16) {
    let wrong: Vec<_> = results
        .into_iter()
        .filter(|(_, s)| *s != expected)
        .collect();
    assert!(wrong.is_empty(), "expected {expected} for: {wrong:?}");
}

#[tokio::test]
async fn namespace_users_get_what_view_and_edit_give_on_the_operators_kinds_and_no_more() {
    let team_a = TestNamespace::create("roles-team-a").await;
    let team_b = TestNamespace::create("roles-team-b").await;
    install_crds(&team_b.client()).await;
    let b = team_b.name();
    let editor = Tenant::bound(b, "edit").await;
    let admin_user = Tenant::bound(b, "admin").await;
    let viewer = Tenant::bound(b, "view").await;
    let (create, dry) = (
        PostParams::default(),
        PostParams {
            dry_run: true,
            ..PostParams::default()
        },
    );
    let patch = Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}}));
    let status_patch = Patch::Merge(json!({"status": {"identityId": "8:acs:forged"}}));
    let params = PatchParams::default();

    // edit (and admin, which aggregates edit): create, get, list, update, patch, delete,
    // deletecollection of both namespaced kinds, and the Secrets the token lands in.
    let identities: Api<AcsIdentity> = editor.api();
    let connections: Api<AcsConnection> = editor.api();
    let mut results = vec![
        (
            "create AcsConnection",
            status(connections.create(&create, &connection("acs")).await),
        ),
        (
            "create AcsIdentity",
            status(identities.create(&create, &identity("alice")).await),
        ),
        ("get AcsIdentity", status(identities.get("alice").await)),
        (
            "list AcsConnections",
            status(connections.list(&ListParams::default()).await),
        ),
        (
            "patch AcsIdentity",
            status(identities.patch("alice", &params, &patch).await),
        ),
        (
            "patch AcsConnection",
            status(connections.patch("acs", &params, &patch).await),
        ),
        (
            "get token Secret (absent: 404 means allowed)",
            match status(editor.api::<Secret>().get("alice").await) {
                404 => 200,
                s => s,
            },
        ),
        (
            "create AcsIdentity as admin",
            status(
                admin_user
                    .api::<AcsIdentity>()
                    .create(&dry, &identity("carol"))
                    .await,
            ),
        ),
    ];
    let mut alice = identities.get("alice").await.unwrap();
    alice.spec.scopes = vec![acs_identity_operator::acs::Scope::Voip];
    results.push((
        "update AcsIdentity",
        status(
            identities
                .replace("alice", &PostParams::default(), &alice)
                .await,
        ),
    ));
    expect(results, 200);

    // Never the status subresource (the operator's record of what it created and issued),
    // never ClusterAcsConnections, never another namespace: for edit and admin alike.
    let mut refused = Vec::new();
    for tenant in [&editor, &admin_user] {
        let identities: Api<AcsIdentity> = tenant.api();
        let connections: Api<AcsConnection> = tenant.api();
        let shared: Api<ClusterAcsConnection> = Api::all(tenant.client.clone());
        let elsewhere: Api<AcsIdentity> = Api::namespaced(tenant.client.clone(), team_a.name());
        let shared_body: ClusterAcsConnection = serde_json::from_value(json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "ClusterAcsConnection",
            "metadata": {"name": format!("{b}-shared")},
            "spec": {"connectionStringSecretRef": {"namespace": b, "name": "acs-conn", "key": "connectionString"}},
        }))
        .unwrap();
        refused.extend([
            (
                "patch AcsIdentity status",
                status(
                    identities
                        .patch_status("alice", &params, &status_patch)
                        .await,
                ),
            ),
            (
                "get AcsIdentity status",
                status(identities.get_status("alice").await),
            ),
            (
                "patch AcsConnection status",
                status(
                    connections
                        .patch_status("acs", &params, &status_patch)
                        .await,
                ),
            ),
            (
                "list ClusterAcsConnections",
                status(shared.list(&ListParams::default()).await),
            ),
            ("get ClusterAcsConnection", status(shared.get("any").await)),
            (
                "create ClusterAcsConnection",
                status(shared.create(&dry, &shared_body).await),
            ),
            (
                "list AcsIdentities of team-a",
                status(elsewhere.list(&ListParams::default()).await),
            ),
            (
                "create AcsIdentity in team-a",
                status(elsewhere.create(&dry, &identity("mallory")).await),
            ),
        ]);
    }
    expect(refused, 403);

    // view: reads both kinds, writes nothing, reads no Secret.
    let seen: Api<AcsIdentity> = viewer.api();
    expect(
        vec![
            ("get AcsIdentity", status(seen.get("alice").await)),
            (
                "list AcsConnections",
                status(
                    viewer
                        .api::<AcsConnection>()
                        .list(&ListParams::default())
                        .await,
                ),
            ),
        ],
        200,
    );
    expect(
        vec![
            (
                "create AcsIdentity",
                status(seen.create(&dry, &identity("dave")).await),
            ),
            (
                "patch AcsIdentity",
                status(seen.patch("alice", &params, &patch).await),
            ),
            (
                "delete AcsIdentity",
                status(
                    seen.delete(
                        "alice",
                        &DeleteParams {
                            dry_run: true,
                            ..DeleteParams::default()
                        },
                    )
                    .await,
                ),
            ),
            (
                "get AcsIdentity status",
                status(seen.get_status("alice").await),
            ),
            (
                "list Secrets",
                status(viewer.api::<Secret>().list(&ListParams::default()).await),
            ),
            (
                "list ClusterAcsConnections",
                status(
                    Api::<ClusterAcsConnection>::all(viewer.client.clone())
                        .list(&ListParams::default())
                        .await,
                ),
            ),
        ],
        403,
    );

    // And edit deletes.
    expect(
        vec![
            (
                "delete AcsIdentity",
                status(identities.delete("alice", &DeleteParams::default()).await),
            ),
            (
                "deletecollection AcsConnections",
                status(
                    connections
                        .delete_collection(&DeleteParams::default(), &ListParams::default())
                        .await,
                ),
            ),
        ],
        200,
    );
}
