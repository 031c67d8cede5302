//! One namespace per test, so tests running at once do not see each other's
//! objects, removed when the test ends (pass or fail).

use super::cluster::{client, cluster_config, is_local};
use super::within;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::core::discovery::{Scope, verbs};
use kube::discovery::{ApiResource, Discovery};
use kube::{Client, Resource};
use std::collections::BTreeMap;
use std::time::Duration;

/// Label on every test namespace, to find leftovers with `kubectl get ns -l`.
pub const TEST_NAMESPACE_LABEL: &str = "acs-identity-operator.test/namespace";

/// How long dropping a [`TestNamespace`] may spend cleaning up.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A namespace created for one test, deleted when dropped.
pub struct TestNamespace {
    name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates a namespace named after `hint` (the test's name) plus a random
    /// suffix, unique even when several test processes share a cluster.
    pub async fn create(hint: &str) -> TestNamespace {
        let client = client().await;
        let name = unique_name(hint);
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    TEST_NAMESPACE_LABEL.to_string(),
                    "true".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        let namespaces: Api<Namespace> = Api::all(client.clone());
        within(
            "creating the test namespace",
            namespaces.create(&PostParams::default(), &namespace),
        )
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        TestNamespace { name, client }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client the namespace was created with (admin of the cluster).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The API of a namespaced type, in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// The API of a namespaced type known only at run time (custom resources).
    pub fn dynamic_api(&self, resource: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.name, resource)
    }
}

impl Drop for TestNamespace {
    /// Best effort: a failed cleanup is reported, never turned into a panic
    /// (which would abort the process if the test is already panicking).
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // The test's runtime is busy dropping us and its client is bound to it:
        // clean up on a thread of our own with its own runtime and client.
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                match tokio::time::timeout(CLEANUP_TIMEOUT, delete_namespace(&name)).await {
                    Ok(result) => result.map_err(|e| format!("deleting namespace {name}: {e}")),
                    Err(_) => Err(format!(
                        "deleting namespace {name} took over {CLEANUP_TIMEOUT:?}"
                    )),
                }
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(message)) => eprintln!("warning: {message}"),
            Err(_) => eprintln!("warning: the namespace cleanup thread panicked"),
        }
    }
}

async fn delete_namespace(name: &str) -> Result<(), kube::Error> {
    let client = Client::try_from(cluster_config().await)?;
    if is_local() {
        empty_namespace(&client, name).await?;
    }
    match Api::<Namespace>::all(client)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The local test server has no namespace controller: deleting a namespace
/// leaves its objects behind. Delete them first, every namespaced type that
/// discovery lists (objects with finalizers stay, marked for deletion).
async fn empty_namespace(client: &Client, namespace: &str) -> Result<(), kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            if capabilities.scope != Scope::Namespaced
                || !capabilities.supports_operation(verbs::DELETE_COLLECTION)
            {
                continue;
            }
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &resource);
            match api
                .delete_collection(&DeleteParams::background(), &ListParams::default())
                .await
            {
                // A CRD deleted meanwhile takes its resources with it.
                Ok(_) | Err(kube::Error::Api(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// `hint` as a DNS label (lowercase alphanumerics and '-'), shortened so that
/// a random suffix fits in 63 characters.
fn unique_name(hint: &str) -> String {
    let mut base: String = hint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(50);
    let base = base.trim_matches('-');
    let suffix: u32 = rand::random();
    format!("t-{base}-{suffix:08x}")
}
