//! The test API server's RBAC authorizer (tests/kube-apiserver/server/rbac.go) decides as
//! kube-apiserver's does: bindings to users, groups and ServiceAccounts (a ServiceAccount
//! subject without a namespace meaning the binding's); Roles and ClusterRoles bound in one
//! namespace; ClusterRoleBindings everywhere; resource names; subresources, `*/status`
//! and `*` wildcards; non-resource URLs with a trailing `*`. Against a real cluster
//! (`KUBECONFIG`) the same test checks that cluster's authorizer.

use crate::support::{self, TestNamespace};
use crate::{impersonating, service_account_identity, status};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;

async fn create<K>(api: &Api<K>, body: Value)
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(body).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

async fn get_path(client: &Client, path: &str) -> u16 {
    let request = hyper::Request::get(path).body(vec![]).unwrap();
    status(client.request_text(request).await)
}

/// Polls until `check` answers anything but 403 (a 404 is allowed, then not found): a
/// binding takes effect once the authorizer's caches have seen it (on any server), and there
/// is nothing to watch for that. Bounded by [`support::within`].
pub async fn wait_until_allowed<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u16>,
{
    support::within(&format!("{what} to be allowed"), async {
        loop {
            if check().await != 403 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_test_server_judges_rbac_like_kube_apiserver() {
    let here = TestNamespace::create("rbac-judge").await;
    let there = TestNamespace::create("rbac-judge-there").await;
    let admin = here.client();
    let (a, b) = (here.name().to_string(), there.name().to_string());
    crate::support::operator::install_crds(&admin).await;
    for ns in [&a, &b] {
        let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
        for name in ["x", "y"] {
            create(&secrets, json!({"metadata": {"name": name}})).await;
        }
    }
    // Unique per run: ClusterRoles and their bindings are cluster-wide.
    let user = format!("judge-{a}");
    let group = format!("judges-{a}");
    let as_user = impersonating(&user, std::slice::from_ref(&group)).await;
    let (sa_user, sa_groups) = service_account_identity(&b, "robot");
    let as_sa = impersonating(&sa_user, &sa_groups).await;
    let secrets = |c: &Client, ns: &str| Api::<Secret>::namespaced(c.clone(), ns);

    assert_eq!(
        status(secrets(&as_user, &a).get("x").await),
        403,
        "nothing bound yet"
    );

    // A ClusterRole bound in one namespace, to a group: get on one name, there only.
    let cluster_roles: Api<ClusterRole> = Api::all(admin.clone());
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    let get_x = format!("{a}-get-x");
    create(
        &cluster_roles,
        json!({"metadata": {"name": get_x}, "rules": [
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["x"], "verbs": ["get"]}
        ]}),
    )
    .await;
    create(&Api::<RoleBinding>::namespaced(admin.clone(), &a), json!({
        "metadata": {"name": "get-x"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": get_x},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]
    }))
    .await;
    // A Role of wildcards, bound to a ServiceAccount named without a namespace.
    create(
        &Api::<Role>::namespaced(admin.clone(), &b),
        json!({
            "metadata": {"name": "everything"},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
        }),
    )
    .await;
    create(&Api::<RoleBinding>::namespaced(admin.clone(), &b), json!({
        "metadata": {"name": "everything"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "everything"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot"}]
    }))
    .await;
    // A ClusterRoleBinding to a user: any status subresource of one group, and URLs.
    let status_writer = format!("{a}-status-writer");
    create(
        &cluster_roles,
        json!({"metadata": {"name": status_writer}, "rules": [
            {"apiGroups": ["acsoperator.io"], "resources": ["*/status"], "verbs": ["patch"]},
            {"nonResourceURLs": ["/version", "/healthz/*"], "verbs": ["get"]}
        ]}),
    )
    .await;
    create(&cluster_bindings, json!({
        "metadata": {"name": status_writer},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": status_writer},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .await;

    let (c_user, c_sa, a_, b_) = (&as_user, &as_sa, a.as_str(), b.as_str());
    wait_until_allowed("get x", move || async move {
        status(secrets(c_user, a_).get("x").await)
    })
    .await;
    wait_until_allowed("anything in the robot's namespace", move || async move {
        status(secrets(c_sa, b_).list(&Default::default()).await)
    })
    .await;
    wait_until_allowed("GET /version", move || async move {
        get_path(c_user, "/version").await
    })
    .await;

    // Resource names: only the named object, and never a list.
    assert_eq!(status(secrets(&as_user, &a).get("y").await), 403);
    assert_eq!(
        status(secrets(&as_user, &a).list(&Default::default()).await),
        403
    );
    // A RoleBinding grants in its namespace only.
    assert_eq!(status(secrets(&as_user, &b).get("x").await), 403);
    // Wildcards cover every group, resource and verb, in the binding's namespace only.
    let configmaps: Api<ConfigMap> = Api::namespaced(as_sa.clone(), &b);
    create(&configmaps, json!({"metadata": {"name": "made-by-robot"}})).await;
    assert_eq!(
        status(
            secrets(&as_sa, &b)
                .delete("y", &DeleteParams::default())
                .await
        ),
        200
    );
    assert_eq!(status(secrets(&as_sa, &a).get("x").await), 403);
    // As in kube-apiserver, a request for a Namespace object is "in" that namespace: the
    // wildcard Role covers its own Namespace, and no other.
    let namespaces = Api::<Namespace>::all(as_sa.clone());
    assert_eq!(status(namespaces.get(&b).await), 200);
    assert_eq!(status(namespaces.get(&a).await), 403);
    assert_eq!(
        status(
            Api::<Secret>::all(as_sa.clone())
                .list(&Default::default())
                .await
        ),
        403,
        "a list across namespaces needs a ClusterRoleBinding"
    );
    // "*/status": any status subresource of the group (404: allowed, then not found), and
    // not the objects themselves.
    let identities =
        Api::<acs_identity_operator::api::AcsIdentity>::namespaced(as_user.clone(), &a);
    let patch = Patch::Merge(json!({"status": {}}));
    let params = PatchParams::default();
    assert_eq!(
        status(identities.patch_status("nobody", &params, &patch).await),
        404
    );
    assert_eq!(
        status(identities.patch("nobody", &params, &patch).await),
        403
    );
    // Non-resource URLs: exact, or a prefix before a trailing "*".
    assert_eq!(get_path(&as_user, "/healthz/ping").await, 200);
    assert_eq!(get_path(&as_user, "/healthz").await, 403);
    assert_eq!(get_path(&as_user, "/readyz").await, 403);

    for name in [&get_x, &status_writer] {
        let _ = cluster_roles.delete(name, &DeleteParams::default()).await;
    }
    let _ = cluster_bindings
        .delete(&status_writer, &DeleteParams::default())
        .await;
}
