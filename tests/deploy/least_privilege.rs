//! Least privilege, proven, for deploy/'s overlays and the Helm chart alike. The install's RBAC
//! is applied; the operator binary runs as the Deployment starts it (its arguments, its
//! environment from the downward API, leader election on) under its ServiceAccount's identity
//! (a kubeconfig that impersonates it), through a create / renew / delete cycle that uses every
//! verb granted. The API server refuses it nothing meanwhile (its log has no "forbidden", which
//! kube-runtime's watchers, the event recorder and the reconcilers would all log), and the same
//! identity is refused what it does not need.
//!
//! Every install runs with workload restarts on (deploy/'s workload-restarts component, the
//! chart's `workloadRestarts.kinds`), the most the operator is ever granted: a Deployment
//! consuming the identity is restarted by its renewal (list, watch, get and patch on the
//! workload kinds). Without them nothing of the kind is granted.

use crate::authorizer::wait_until_allowed;
use crate::install::Install;
use crate::support::TestNamespace;
use crate::support::operator::{World, status_of};
use crate::support::process::OperatorProcess;
use crate::{impersonating, service_account_identity, status};
use acs_identity_operator::api::{AcsConnection, AcsIdentity, ClusterAcsConnection};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::runtime::wait::await_condition;
use kube::{Client, CustomResourceExt, Resource};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A cluster-wide operator sees every namespace: one operator test at a time, so that it
/// never reconciles another test's identities.
static ONE_OPERATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The component that turns workload restarts on.
const RESTARTS: &str = "workload-restarts";
/// The chart's values that match the component.
const CHART_RESTARTS: &str = "workloadRestarts.kinds={Deployment,StatefulSet,DaemonSet}";

/// The operator binary, started as the install's Deployment would start it: the Deployment's
/// container arguments and environment (downward API values filled in for a pod named `pod`),
/// as the install's ServiceAccount; metrics on loopback.
fn start_deployed(install: &Install, pod: &str) -> OperatorProcess {
    let container = &install.deployment()["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .filter(|a| !a.starts_with("--metrics-bind"))
        .collect();
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            let value = match (
                &var["value"],
                var["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                (Value::String(v), _) => v.clone(),
                (_, Some("metadata.name")) => pod.to_string(),
                (_, Some("metadata.namespace")) => install.namespace.clone(),
                _ => panic!("an env var this test cannot fill in: {var}"),
            };
            (var["name"].as_str().unwrap().to_string(), value)
        })
        .collect();
    let (user, groups) = service_account_identity(&install.namespace, &install.service_account());
    OperatorProcess::spawn(crate::support::operator_binary!(), args, |command, dir| {
        for inherited in [
            "WATCH_NAMESPACE",
            "POD_NAME",
            "POD_NAMESPACE",
            "RUST_LOG",
            "KUBE_RS_DEBUG_IMPERSONATE_USER",
            "KUBE_RS_DEBUG_IMPERSONATE_GROUP",
        ] {
            command.env_remove(inherited);
        }
        let kubeconfig = impersonating_kubeconfig(dir, &user, &groups);
        command.envs(env).env("KUBECONFIG", kubeconfig);
    })
}

/// The test cluster's kubeconfig, acting as `user` in `groups` (`as`, `as-groups`).
fn impersonating_kubeconfig(dir: &Path, user: &str, groups: &[String]) -> PathBuf {
    let mut config = std::env::split_paths(&crate::support::kubeconfig_env())
        .map(|p| Kubeconfig::read_from(p).unwrap())
        .reduce(|a, b| a.merge(b).unwrap())
        .expect("a kubeconfig");
    let current = config.current_context.clone().expect("a current context");
    let user_entry = config
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref()?.user.clone())
        .expect("the current context's user");
    let auth = config
        .auth_infos
        .iter_mut()
        .find(|a| a.name == user_entry)
        .and_then(|a| a.auth_info.as_mut())
        .expect("the current user");
    auth.impersonate = Some(user.to_string());
    auth.impersonate_groups = Some(groups.to_vec());
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    path
}

/// Waits until `install`'s bindings are in effect for `client` (its ServiceAccount): the
/// operator's grants in `app_ns` and the Lease grant in the install's namespace.
async fn wait_for_bindings(client: &Client, install: &Install, app_ns: &str) {
    let identities: Api<AcsIdentity> = Api::namespaced(client.clone(), app_ns);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &install.namespace);
    let (identities, leases) = (&identities, &leases);
    wait_until_allowed("listing AcsIdentities", move || async move {
        status(identities.list(&Default::default()).await)
    })
    .await;
    wait_until_allowed("reading the leader Lease", move || async move {
        status(leases.get("acs-identity-operator").await)
    })
    .await;
}

/// Waits until a connection's status says Ready (written by the operator: status patch).
async fn wait_connection_ready<K>(api: Api<K>, name: &str)
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let ready = |o: Option<&K>| {
        o.and_then(|o| serde_json::to_value(o).ok())
            .and_then(|v| v["status"]["conditions"].as_array().cloned())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
    };
    crate::support::within(
        &format!("connection {name} to be Ready"),
        await_condition(api, name, ready),
    )
    .await
    .unwrap();
}

/// Create, renew, delete, with every verb granted doing its part (see each step).
async fn full_cycle(w: &World, name: &str, connection_ref: Value) {
    // AcsIdentities list/watch, patch (finalizer), status patch; Secrets get, patch (apply);
    // Events create.
    w.identity(
        name,
        json!({"connectionRef": connection_ref, "scopes": ["chat"]}),
    )
    .await;
    let created = w.wait_ready(name).await;
    let id = status_of(&created).identity_id.clone().unwrap();
    let first_expiry = status_of(&created).token_expires_on.clone().unwrap().0;
    // A Deployment that consumes the token: watched (list, watch), looked at once (get), and
    // restarted by a renewal (patch).
    let app = format!("{name}-app");
    w.apply::<Deployment>(
        &app,
        json!({
            "metadata": {"annotations": {"acsoperator.io/restart-on-renewal": name}},
            "spec": {
                "selector": {"matchLabels": {"app": app}},
                "template": {
                    "metadata": {"labels": {"app": app}},
                    "spec": {"containers": [{"name": "app", "image": "app:1"}]},
                },
            },
        }),
    )
    .await;
    // The renewal applies the Secret again (patch).
    w.wait_identity(name, "renewed", |o| {
        o.status
            .as_ref()
            .and_then(|s| s.token_expires_on.as_ref())
            .is_some_and(|t| t.0 > first_expiry)
    })
    .await;
    let restarted = await_condition(w.api::<Deployment>(), &app, |d: Option<&Deployment>| {
        d.and_then(|d| {
            d.spec
                .as_ref()?
                .template
                .metadata
                .as_ref()?
                .annotations
                .as_ref()
        })
        .is_some_and(|a| a.contains_key("acsoperator.io/restarted-for"))
    });
    crate::support::within("the consuming Deployment to be restarted", restarted)
        .await
        .unwrap();
    // Deletion meets two failed revocations first: the same Warning twice is one Event
    // whose series the recorder patches.
    w.admin
        .post(
            "admin/faults",
            json!({"operation": "revokeTokens", "count": 2, "status": 503}),
        )
        .await;
    w.delete::<AcsIdentity>(name).await;
    // Secrets delete; AcsIdentities patch (finalizer removed).
    w.wait_gone(name).await;
    assert!(w.get::<Secret>(name).await.is_none(), "the Secret is left");
    assert_eq!(w.admin.identity(&id).await.unwrap()["deleted"], true);
    let events: Api<Event> = w.api();
    let events = events.list(&Default::default()).await.unwrap().items;
    let about = |e: &&Event| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name);
    assert!(
        events
            .iter()
            .filter(about)
            .any(|e| e.type_.as_deref() == Some("Warning")
                && e.series.as_ref().is_some_and(|s| s.count >= 2)),
        "no repeated Warning Event: {events:?}"
    );
}

/// Stops the operator, asserts its log shows the leader did the work and nothing was
/// refused, and checks the Lease it held.
async fn stop_and_check(operator: OperatorProcess, install: &Install, pod: &str) {
    let leases: Api<Lease> = Api::namespaced(crate::support::client().await, &install.namespace);
    let lease = leases.get("acs-identity-operator").await.unwrap();
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some(pod)
    );
    let log = operator.stop().await;
    assert!(log.contains("became leader"), "not a leader's log:\n{log}");
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.to_lowercase().contains("forbidden"))
        .collect();
    assert!(
        refused.is_empty(),
        "the API server refused the operator:\n{}",
        refused.join("\n")
    );
}

fn assert_refused(what: &str, code: u16) {
    assert_eq!(code, 403, "the operator's identity may {what}");
}

/// Refusals every install shares: no namespace deletion, no CRD writes, nothing it does
/// not serve, no deletion of what it serves.
async fn assert_common_refusals(client: &Client, app_ns: &str, other_ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert_refused(
        "delete a namespace",
        status(namespaces.delete(other_ns, &DeleteParams::default()).await),
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = AcsIdentity::crd();
    let crd_name = crd.metadata.name.clone().unwrap();
    assert_refused(
        "write a CRD",
        status(
            crds.patch(
                &crd_name,
                &PatchParams::apply("intruder").force(),
                &Patch::Apply(&crd),
            )
            .await,
        ),
    );
    assert_refused(
        "delete a CRD",
        status(crds.delete(&crd_name, &DeleteParams::default()).await),
    );
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), app_ns);
    assert_refused(
        "read ConfigMaps",
        status(configmaps.list(&Default::default()).await),
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), app_ns);
    assert_refused(
        "delete a Deployment",
        status(deployments.delete("anyone", &DeleteParams::default()).await),
    );
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "intruder"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}}
    }))
    .unwrap();
    assert_refused(
        "create a Deployment",
        status(
            deployments
                .create(&PostParams::default(), &deployment)
                .await,
        ),
    );
    let identities: Api<AcsIdentity> = Api::namespaced(client.clone(), app_ns);
    assert_refused(
        "delete an AcsIdentity",
        status(identities.delete("anyone", &DeleteParams::default()).await),
    );
    assert_refused(
        "read one AcsIdentity (its cache serves it)",
        status(identities.get("anyone").await),
    );
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let escalation: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{app_ns}-escalation")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "system:serviceaccounts"}]
    }))
    .unwrap();
    assert_refused(
        "grant itself more",
        status(bindings.create(&PostParams::default(), &escalation).await),
    );
}

#[tokio::test]
async fn namespaced_install_runs_a_full_cycle_and_is_refused_everything_else() {
    namespaced_cycle(|ns| Install::render_with("namespaced", &[RESTARTS], ns)).await;
}

/// The Helm chart's namespaced install grants the same, no more.
#[tokio::test]
async fn namespaced_chart_install_runs_a_full_cycle_and_is_refused_everything_else() {
    namespaced_cycle(|ns| {
        Install::chart(&["--set", "scope=namespace", "--set", CHART_RESTARTS], ns)
    })
    .await;
}

/// The namespaced install made by `render` into a namespace, with the operator running under
/// its RBAC through a full cycle, then refused what it must not do.
async fn namespaced_cycle(render: impl FnOnce(&str) -> Install) {
    let _one = ONE_OPERATOR.lock().await;
    let w = World::without_operator(|c| c.token_lifetime = Some(Duration::from_secs(8))).await;
    let elsewhere = TestNamespace::create("elsewhere").await;
    let private: Api<Secret> = elsewhere.api();
    let secret: Secret =
        serde_json::from_value(json!({"metadata": {"name": "not-yours"}})).unwrap();
    private
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let mut install = render(&w.ns);
    install.apply();
    let (user, groups) = service_account_identity(&w.ns, &install.service_account());
    let as_operator = impersonating(&user, &groups).await;
    wait_for_bindings(&as_operator, &install, &w.ns).await;

    let pod = "acs-identity-operator-0";
    let operator = start_deployed(&install, pod);
    wait_connection_ready(w.api::<AcsConnection>(), "acs").await;
    full_cycle(&w, "namespaced-cycle", json!({"name": "acs"})).await;
    stop_and_check(operator, &install, pod).await;

    assert_common_refusals(&as_operator, &w.ns, elsewhere.name()).await;
    let theirs: Api<Secret> = Api::namespaced(as_operator.clone(), elsewhere.name());
    assert_refused(
        "read a Secret in another namespace",
        status(theirs.get("not-yours").await),
    );
    let all_secrets: Api<Secret> = Api::all(as_operator.clone());
    assert_refused(
        "list Secrets in every namespace",
        status(all_secrets.list(&Default::default()).await),
    );
    let cluster_connections: Api<ClusterAcsConnection> = Api::all(as_operator.clone());
    assert_refused(
        "list ClusterAcsConnections",
        status(cluster_connections.list(&Default::default()).await),
    );
    let namespaces: Api<Namespace> = Api::all(as_operator.clone());
    assert_refused("read a namespace", status(namespaces.get(&w.ns).await));
    let leases: Api<Lease> = Api::namespaced(as_operator.clone(), &w.ns);
    assert_refused(
        "read another Lease",
        status(leases.get("someone-elses-lease").await),
    );

    // Workload identity of an AcsConnection: the operator may read a ServiceAccount of its
    // namespace and request a token of it, and of no other namespace's.
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    crate::support::operator::service_account_token(&w.client, &w.ns, "acs").await;
    crate::support::operator::service_account_token(&w.client, elsewhere.name(), "theirs").await;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["api://AzureADTokenExchange".into()]),
            expiration_seconds: Some(600),
            bound_object_ref: None,
        }),
        ..TokenRequest::default()
    };
    let own: Api<ServiceAccount> = Api::namespaced(as_operator.clone(), &w.ns);
    own.get("acs").await.unwrap();
    let token = own
        .create_token_request("acs", &PostParams::default(), &request)
        .await
        .unwrap();
    assert!(token.status.and_then(|s| s.token).is_some());
    let theirs: Api<ServiceAccount> = Api::namespaced(as_operator.clone(), elsewhere.name());
    assert_refused(
        "request a token of another namespace's ServiceAccount",
        status(
            theirs
                .create_token_request("theirs", &PostParams::default(), &request)
                .await,
        ),
    );
    assert_refused(
        "create a ServiceAccount",
        status(
            own.create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "intruder"}})).unwrap(),
            )
            .await,
        ),
    );
}

#[tokio::test]
async fn cluster_wide_install_runs_a_full_cycle_on_a_cluster_connection_and_is_refused_everything_else()
 {
    cluster_wide_cycle(|ns| Install::render_with("cluster-wide", &[RESTARTS], ns)).await;
}

/// The Helm chart's cluster-wide install (its default values) grants the same, no more.
#[tokio::test]
async fn cluster_wide_chart_install_runs_a_full_cycle_on_a_cluster_connection_and_is_refused_everything_else()
 {
    cluster_wide_cycle(|ns| Install::chart(&["--set", CHART_RESTARTS], ns)).await;
}

/// The cluster-wide install made by `render` into the operator's namespace, with the operator
/// running under its RBAC through a full cycle on a ClusterAcsConnection, then refused what it
/// must not do.
async fn cluster_wide_cycle(render: impl FnOnce(&str) -> Install) {
    let _one = ONE_OPERATOR.lock().await;
    let w = World::without_operator(|c| c.token_lifetime = Some(Duration::from_secs(8))).await;
    let ops = TestNamespace::create("operator").await;
    let admin = ops.client();

    let mut install = render(ops.name());
    install.apply();
    let (user, groups) = service_account_identity(ops.name(), &install.service_account());
    let as_operator = impersonating(&user, &groups).await;
    wait_for_bindings(&as_operator, &install, &w.ns).await;

    // The platform team's connection: its Secret beside the operator, usable from the
    // namespaces carrying a label (so the operator reads the identity's namespace).
    let platform_secrets: Api<Secret> = ops.api();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "acs-platform"},
        "stringData": {"connectionString": w.connection_string()}
    }))
    .unwrap();
    platform_secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let tenant_label = "acs-identity-operator.test/tenant";
    Api::<Namespace>::all(admin.clone())
        .patch(
            &w.ns,
            &PatchParams::apply("test"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": w.ns, "labels": {tenant_label: ops.name()}}
            })),
        )
        .await
        .unwrap();
    let connection_name = format!("{}-acs", ops.name());
    let cluster_connections: Api<ClusterAcsConnection> = Api::all(admin.clone());
    cluster_connections
        .patch(
            &connection_name,
            &PatchParams::apply("test"),
            &Patch::Apply(json!({
                "apiVersion": "acsoperator.io/v1alpha1", "kind": "ClusterAcsConnection",
                "metadata": {"name": connection_name},
                "spec": {
                    "connectionStringSecretRef": {"namespace": ops.name(), "name": "acs-platform", "key": "connectionString"},
                    "allowedNamespaces": {"selector": {"matchLabels": {tenant_label: ops.name()}}}
                }
            })),
        )
        .await
        .unwrap();

    let pod = "acs-identity-operator-0";
    let operator = start_deployed(&install, pod);
    wait_connection_ready(cluster_connections.clone(), &connection_name).await;
    wait_connection_ready(w.api::<AcsConnection>(), "acs").await;
    full_cycle(
        &w,
        "cluster-cycle",
        json!({"kind": "ClusterAcsConnection", "name": connection_name}),
    )
    .await;
    stop_and_check(operator, &install, pod).await;

    assert_common_refusals(&as_operator, &w.ns, ops.name()).await;
    let namespaces: Api<Namespace> = Api::all(as_operator.clone());
    assert_refused(
        "label a namespace",
        status(
            namespaces
                .patch(
                    &w.ns,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {tenant_label: "x"}}})),
                )
                .await,
        ),
    );
    let leases: Api<Lease> = Api::namespaced(as_operator.clone(), &w.ns);
    assert_refused(
        "read a Lease outside its namespace",
        status(leases.get("acs-identity-operator").await),
    );
    let theirs: Api<ClusterAcsConnection> = Api::all(as_operator.clone());
    assert_refused(
        "change a ClusterAcsConnection's spec",
        status(
            theirs
                .patch(
                    &connection_name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"allowedNamespaces": null}})),
                )
                .await,
        ),
    );

    let _ = cluster_connections
        .delete(&connection_name, &DeleteParams::default())
        .await;
}

#[test]
fn workload_restarts_are_granted_only_with_their_component() {
    let apps = |install: &Install| -> Vec<(String, String, String, String)> {
        install
            .all("ClusterRole")
            .into_iter()
            .chain(install.all("Role"))
            .flat_map(|r| crate::grants(&r["rules"]))
            .filter(|g| g.0 == "apps")
            .collect()
    };
    let flag = |install: &Install| {
        install.deployment()["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap().starts_with("--restart-workloads"))
    };
    for overlay in ["cluster-wide", "namespaced"] {
        let off = Install::render(overlay, "restarts-off");
        assert_eq!(apps(&off), vec![], "{overlay} without the component");
        assert!(!flag(&off), "{overlay} restarts nothing by default");
        let on = Install::render_with(overlay, &[RESTARTS], "restarts-on");
        let mut expected = vec![];
        for resource in ["daemonsets", "deployments", "statefulsets"] {
            for verb in ["get", "list", "patch", "watch"] {
                expected.push(("apps".into(), resource.into(), "*".into(), verb.into()));
            }
        }
        let mut got = apps(&on);
        got.sort();
        assert_eq!(got, expected, "{overlay} with the component");
        assert!(flag(&on), "{overlay} with the component turns it on");
    }
}
