//! A tenant of the cluster as a cluster admin would set one up: a user bound in one namespace
//! to one of the default user-facing roles (`view`, `edit`, `admin`), with the rights that
//! role gives on AcsIdentities and AcsConnections through the ClusterRoles the operator ships
//! (`deploy/base/user-roles.yaml`, aggregated into those roles by the API server) and nothing
//! else. Requests go through impersonation by the admin, which the test server and real
//! clusters authorize like any request of that user.
//!
//! ```ignore
//! let tenant = Tenant::bound(&b.ns, "edit").await;
//! tenant.identity("mallory", spec).await; // created as team-b's user, not as the admin
//! ```

use super::{client, cluster_config, within};
use acs_identity_operator::api::AcsIdentity;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::time::Duration;

/// The shipped namespace-user roles, as a cluster's installer applies them.
const USER_ROLES: &str = include_str!("../../../deploy/base/user-roles.yaml");

/// A client that acts as `user` in `groups` (impersonation by the admin).
pub async fn impersonating(user: &str, groups: &[String]) -> Client {
    let mut config = cluster_config().await;
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.to_vec());
    Client::try_from(config).expect("an impersonating client of the test cluster")
}

/// Server-side applies the shipped user roles (idempotent: every test applies the same
/// ones, and they stay, like the CRDs).
pub async fn install_user_roles(admin: &Client) {
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    for doc in serde_yaml::Deserializer::from_str(USER_ROLES) {
        let role = Value::deserialize(doc).expect("deploy/base/user-roles.yaml is YAML");
        let name = role["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_string();
        roles
            .patch(
                &name,
                &PatchParams::apply("operator-tests").force(),
                &Patch::Apply(&role),
            )
            .await
            .unwrap_or_else(|e| panic!("applying ClusterRole {name}: {e}"));
    }
}

/// The HTTP status a request ended with: 200 for success, the API error's code otherwise.
pub fn status<T>(result: Result<T, kube::Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("request failed without an answer: {e}"),
    }
}

/// One tenant user in one namespace.
pub struct Tenant {
    /// Acts as the tenant (impersonation).
    pub client: Client,
    pub namespace: String,
    pub user: String,
}

impl Tenant {
    /// A user of its own, bound in `namespace` to the default ClusterRole `role` (`view`,
    /// `edit` or `admin`) and to nothing else, once that binding gives it what the role
    /// should give on AcsIdentities (read for `view`, create for the others). Bindings take
    /// effect when the server's authorizer has seen them and, on the test server, once its
    /// aggregation has filled the role in; nothing can be watched for that, so this polls,
    /// bounded by [`within`].
    pub async fn bound(namespace: &str, role: &str) -> Tenant {
        let admin = client().await;
        install_user_roles(&admin).await;
        let user = format!("{role}-user-of-{namespace}");
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{role}-user")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        });
        let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
            Api::namespaced(admin, namespace);
        bindings
            .patch(
                &format!("{role}-user"),
                &PatchParams::apply("operator-tests").force(),
                &Patch::Apply(&binding),
            )
            .await
            .unwrap_or_else(|e| panic!("binding {user} to {role} in {namespace}: {e}"));
        let tenant = Tenant {
            client: impersonating(&user, &["system:authenticated".to_string()]).await,
            namespace: namespace.to_string(),
            user,
        };
        let writes = role != "view";
        within(
            &format!("{role} to take effect for {}", tenant.user),
            async {
                while !tenant.may_use_identities(writes).await {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await;
        tenant
    }

    /// Whether the tenant may list AcsIdentities and, with `writes`, create them (a dry run
    /// of an empty one: refused by the schema, not by RBAC, once allowed).
    async fn may_use_identities(&self, writes: bool) -> bool {
        let api = self.api::<AcsIdentity>();
        if status(api.list(&ListParams::default().limit(1)).await) == 403 {
            return false;
        }
        if !writes {
            return true;
        }
        let probe: AcsIdentity = serde_json::from_value(json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
            "metadata": {"name": "rbac-probe"},
            "spec": {"connectionRef": {"name": "none"}, "scopes": []},
        }))
        .unwrap();
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        status(api.create(&dry_run, &probe).await) != 403
    }

    /// The API of a namespaced type in the tenant's namespace, as the tenant.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Server-side applies `body` (completed with apiVersion, kind and name) as the tenant.
    pub async fn apply<K>(&self, name: &str, body: Value) -> Result<K, kube::Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        super::apply_as(&self.api::<K>(), "tenant", name, body).await
    }

    /// Applies an AcsIdentity with `spec` as the tenant; panics if the tenant may not.
    pub async fn identity(&self, name: &str, spec: Value) -> AcsIdentity {
        self.apply::<AcsIdentity>(name, json!({ "spec": spec }))
            .await
            .unwrap_or_else(|e| panic!("{} applying AcsIdentity {name}: {e}", self.user))
    }

    /// Deletes an object as the tenant (gone already is fine); panics if the tenant may not.
    pub async fn delete<K>(&self, name: &str)
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        match self.api::<K>().delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("{} deleting {name}: {e}", self.user),
        }
    }
}
