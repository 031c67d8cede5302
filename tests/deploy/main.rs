//! deploy/: every overlay builds with `kubectl kustomize`, passes a server-side dry run,
//! applies to the test cluster and creates what it lists (this file); the RBAC it grants is
//! exactly enough for the operator (`least_privilege`); the cluster's namespace users get the
//! rights on the operator's kinds that `view`, `edit` and `admin` should give, and no more
//! (`user_roles`); and the test server judges RBAC the way kube-apiserver does, or those
//! proofs would prove nothing (`authorizer`).

use acs_test_support as support;

mod authorizer;
mod helm;
mod install;
mod least_privilege;
mod user_roles;

use install::{Install, fetch, name_of};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use support::TestNamespace;

pub use support::tenant::{impersonating, status};

/// The user name and groups a ServiceAccount's token authenticates as.
pub fn service_account_identity(namespace: &str, name: &str) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{namespace}:{name}"),
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    )
}

/// Applies `install` as a user would (after a server-side dry run that must persist
/// nothing), then checks that every object it lists exists.
async fn dry_run_then_apply(install: &mut Install, ns: &TestNamespace) {
    install.apply_dry_run();
    assert!(
        fetch(&ns.client(), install.deployment()).await.is_none(),
        "a dry run created the Deployment"
    );
    install.apply();
    install.assert_all_exist(&ns.client()).await;
}

/// What the server stores for `obj`, as JSON.
async fn stored(ns: &TestNamespace, obj: &Value) -> Value {
    serde_json::to_value(fetch(&ns.client(), obj).await.expect("stored")).unwrap()
}

/// Asserts the operator's pod is hardened and wired as documented.
fn assert_hardened(deployment: &Value, service_account: &str) {
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], service_account);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--leader-election"), "{args:?}");
    let security = &c["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "no {kind}.{resource}"
            );
        }
    }
    assert_eq!(
        c["ports"],
        json!([{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert_eq!(c[probe]["httpGet"]["port"], "metrics");
    }
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let env = env_var(deployment, var).unwrap_or_else(|| panic!("no {var}"));
        assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
}

fn env_var<'a>(deployment: &'a Value, name: &str) -> Option<&'a Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// Every (apiGroup, resource, resourceName, verb) a set of rules grants.
fn grants(rules: &Value) -> BTreeSet<(String, String, String, String)> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in rules.as_array().unwrap() {
        let names = match list(&rule["resourceNames"]) {
            n if n.is_empty() => vec!["*".to_string()],
            n => n,
        };
        for group in list(&rule["apiGroups"]) {
            for resource in list(&rule["resources"]) {
                for name in &names {
                    for verb in list(&rule["verbs"]) {
                        out.insert((group.clone(), resource.clone(), name.clone(), verb));
                    }
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn cluster_wide_overlay_installs_a_hardened_operator_with_cluster_wide_rbac() {
    let ns = TestNamespace::create("deploy-cluster-wide").await;
    let mut install = Install::render("cluster-wide", ns.name());
    let kinds: BTreeSet<&str> = install
        .objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "Namespace",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ];
    assert_eq!(kinds, BTreeSet::from(expected));
    assert_eq!(install.all("CustomResourceDefinition").len(), 3);
    dry_run_then_apply(&mut install, &ns).await;

    let sa = install.service_account();
    let binding = stored(
        &ns,
        install.one("ClusterRoleBinding", "acs-identity-operator"),
    )
    .await;
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns.name()}])
    );
    let deployment = stored(&ns, install.deployment()).await;
    assert_hardened(&deployment, &sa);
    assert!(env_var(&deployment, "WATCH_NAMESPACE").is_none());
    let service = stored(&ns, install.one("Service", "acs-identity-operator-metrics")).await;
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

#[tokio::test]
async fn namespaced_overlay_grants_roles_only_and_watches_its_own_namespace() {
    let ns = TestNamespace::create("deploy-namespaced").await;
    let mut install = Install::render("namespaced", ns.name());
    // The only ClusterRoles are the namespace users' (aggregated into view/edit/admin, bound
    // to nobody by the install): the operator itself gets no cluster-scoped permission.
    let cluster_roles: BTreeSet<String> = install
        .all("ClusterRole")
        .into_iter()
        .map(|o| name_of(o).to_string())
        .collect();
    let suffix = ns.name().rsplit('-').next().unwrap();
    let user_roles = ["edit", "view"].map(|r| format!("acs-identity-operator-{r}-{suffix}"));
    assert_eq!(cluster_roles, BTreeSet::from(user_roles));
    assert!(install.all("ClusterRoleBinding").is_empty());
    let watch = env_var(install.deployment(), "WATCH_NAMESPACE").expect("WATCH_NAMESPACE");
    assert_eq!(
        watch["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    dry_run_then_apply(&mut install, &ns).await;

    let sa = install.service_account();
    for name in [
        "acs-identity-operator",
        "acs-identity-operator-leader-election",
    ] {
        let binding = stored(&ns, install.one("RoleBinding", name)).await;
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns.name()}])
        );
    }
    assert_hardened(&stored(&ns, install.deployment()).await, &sa);
}

#[tokio::test]
async fn aks_workload_identity_overlay_annotates_the_service_account_and_labels_the_pods() {
    let ns = TestNamespace::create("deploy-aks").await;
    let mut install = Install::render("aks-workload-identity", ns.name());
    dry_run_then_apply(&mut install, &ns).await;
    let sa = stored(&ns, install.one("ServiceAccount", "acs-identity-operator")).await;
    assert!(
        sa["metadata"]["annotations"]["azure.workload.identity/client-id"].is_string(),
        "{sa}"
    );
    let deployment = stored(&ns, install.deployment()).await;
    assert_eq!(
        deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"],
        "true"
    );
    // The selector does not use the label, so adding it to a running install is allowed.
    assert!(
        deployment["spec"]["selector"]["matchLabels"]
            .get("azure.workload.identity/use")
            .is_none()
    );
    assert_hardened(&deployment, name_of(&sa));
}

/// The namespaced Role is written out by hand beside the ClusterRole: it must stay the same
/// grants minus what only exists cluster-wide.
#[test]
fn the_namespaced_role_is_the_cluster_role_without_cluster_scoped_kinds() {
    let cluster = Install::render("cluster-wide", "t-render-00000000");
    let namespaced = Install::render("namespaced", "t-render-00000000");
    let cluster_only = [
        "clusteracsconnections",
        "clusteracsconnections/status",
        "namespaces",
    ];
    let expected: BTreeSet<_> =
        grants(&cluster.one("ClusterRole", "acs-identity-operator")["rules"])
            .into_iter()
            .filter(|(_, resource, _, _)| !cluster_only.contains(&resource.as_str()))
            .collect();
    let role = grants(&namespaced.one("Role", "acs-identity-operator")["rules"]);
    assert_eq!(role, expected);
}

/// The leader-election Role names the Lease the Deployment's arguments choose.
#[test]
fn the_lease_role_names_the_lease_the_operator_uses() {
    let install = Install::render("cluster-wide", "t-render-00000000");
    let args = install.deployment()["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .clone();
    let lease = args
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--leader-election-lease="))
        .expect("--leader-election-lease=NAME");
    let role = grants(&install.one("Role", "acs-identity-operator-leader-election")["rules"]);
    let expected: BTreeSet<_> = [("create", "*"), ("get", lease), ("patch", lease)]
        .into_iter()
        .map(|(verb, name)| {
            (
                "coordination.k8s.io".to_string(),
                "leases".to_string(),
                name.to_string(),
                verb.to_string(),
            )
        })
        .collect();
    assert_eq!(role, expected);
}
