//! One test's world: its own namespace on the test cluster, its own ACS emulator, and an
//! operator instance watching only that namespace (so tests run in parallel without seeing
//! each other). The operator can be stopped and started again to test restarts.

use super::{TestNamespace, within};
use acs_emulator::testing::{Admin, TEST_KEY, start_emulator, test_ca};
use acs_emulator::{EmulatorConfig, EmulatorHandle};
use acs_identity_operator::api::{AcsConnection, AcsIdentity};
use acs_identity_operator::controller::connections::WorkloadIdentityDefaults;
use acs_identity_operator::controller::{self, Settings};
use acs_identity_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::CustomResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Where emulators listen (`localhost` with TLS, `127.0.0.1` without). The operator sends
/// requests only to ACS's domains unless told otherwise: every test that runs it against an
/// emulator allows these ([`emulator_endpoints`], [`allowed_endpoints_arg`]).
pub const EMULATOR_ENDPOINTS: [&str; 2] = ["localhost:*", "127.0.0.1:*"];

/// ACS's domains and the emulators', for the operator's Settings.
pub fn emulator_endpoints() -> acs_identity_operator::policy::endpoint::AllowedEndpoints {
    acs_identity_operator::policy::endpoint::AllowedEndpoints::acs_and_parsed(EMULATOR_ENDPOINTS)
        .unwrap()
}

/// The operator's flag that allows the emulators' endpoints.
pub fn allowed_endpoints_arg() -> String {
    format!("--allowed-endpoints={}", EMULATOR_ENDPOINTS.join(","))
}

/// How long any awaited condition may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(45);

pub struct World {
    pub client: Client,
    pub ns: String,
    pub emulator: Option<EmulatorHandle>,
    pub admin: Admin,
    operator: Option<JoinHandle<()>>,
    /// The metrics of the in-process operator (replaced at each start).
    pub metrics: Arc<Metrics>,
    /// Reconcile counts per identity name, from the operator's hook.
    reconciled: Arc<(Mutex<HashMap<String, u64>>, Notify)>,
    /// The operator pod's workload identity environment, given to every operator started.
    workload_identity: WorkloadIdentityDefaults,
    /// Holds the federated token file of a workload identity world.
    _scratch: Option<tempfile::TempDir>,
    /// The CA of a TLS emulator (PEM), in a workload identity world.
    pub emulator_ca: Option<String>,
    _namespace: TestNamespace,
}

/// Applies the operator's CRDs (server-side apply: idempotent across tests) and waits until
/// the API server serves them.
pub async fn install_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [
        acs_identity_operator::api::AcsIdentity::crd(),
        AcsConnection::crd(),
        acs_identity_operator::api::ClusterAcsConnection::crd(),
    ] {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("operator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        within("CRD established", established).await.unwrap();
    }
}

impl World {
    /// A namespace with an emulator, a connection Secret `acs-conn` and AcsConnection `acs`,
    /// and a running operator.
    pub async fn new(configure: impl FnOnce(&mut EmulatorConfig)) -> Self {
        // RUST_LOG=acs_identity_operator=debug shows the operator's logs with a failing test.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut world = Self::without_operator(configure).await;
        world.start_operator();
        world
    }

    /// Like [`World::new`], for tests that run the operator binary themselves.
    pub async fn without_operator(configure: impl FnOnce(&mut EmulatorConfig)) -> Self {
        let world = Self::bare(configure, None).await;
        let connection_string = world.connection_string();
        world
            .put_secret("acs-conn", "connectionString", &connection_string)
            .await;
        world
            .apply::<AcsConnection>(
                "acs",
                json!({"spec": {"connectionStringSecretRef": {"name": "acs-conn", "key": "connectionString"}}}),
            )
            .await;
        world
    }

    /// A namespace with an emulator serving TLS (ACS and its Entra endpoint, which checks
    /// assertions against the test API server's keys), and a running namespaced operator whose
    /// pod environment (token file, authority, authority CA, `client_id`/`tenant_id`) is given
    /// through its settings, as the AKS webhook would inject it. The token file holds a real
    /// token of ServiceAccount `operator` of the namespace, and `client_id` is federated with
    /// that ServiceAccount and with ServiceAccount `acs`, which AcsConnection `acs` (the
    /// emulator's endpoint) names.
    pub async fn with_workload_identity(tenant_id: &str, client_id: &str) -> Self {
        let mut world = Self::with_workload_identity_unstarted(tenant_id, client_id).await;
        world
            .apply::<AcsConnection>(
                "acs",
                json!({"spec": {
                    "endpoint": world.wi_endpoint().as_str(),
                    "workloadIdentity": {"clientId": client_id, "tenantId": tenant_id, "serviceAccountName": "acs"},
                    "caBundle": world.emulator_ca.clone().unwrap(),
                }}),
            )
            .await;
        world.service_account_token("acs").await;
        world.federate(client_id, &world.ns.clone(), "acs").await;
        world.start_operator();
        world
    }

    /// Like [`World::with_workload_identity`] without AcsConnection `acs` (and its
    /// ServiceAccount) and without an operator: the pod's identity is `client_id`, federated
    /// with ServiceAccount `operator` of this namespace only.
    pub async fn with_workload_identity_unstarted(tenant_id: &str, client_id: &str) -> Self {
        let ca = test_ca();
        let server = ca.server.clone();
        let (_, issuer_ca) = cluster_issuer().await;
        let mut world = Self::bare(
            |c| {
                c.tls = Some(server);
                c.entra.issuer_ca_pem = Some(issuer_ca.into_bytes());
            },
            Some(&ca.ca_pem),
        )
        .await;
        world.emulator_ca = Some(ca.ca_pem.clone());
        let endpoint = world.wi_endpoint();
        let scratch = tempfile::tempdir().unwrap();
        let token_file = scratch.path().join("azure-identity-token");
        let pod_token = world.service_account_token("operator").await;
        // As kubelet writes it: the token and a newline.
        std::fs::write(&token_file, format!("{pod_token}\n")).unwrap();
        world
            .federate(client_id, &world.ns.clone(), "operator")
            .await;
        world.workload_identity = WorkloadIdentityDefaults {
            client_id: Some(client_id.to_string()),
            tenant_id: Some(tenant_id.to_string()),
            token_file: Some(token_file),
            authority_host: Some(endpoint.to_string()),
            extra_ca_pem: Some(ca.ca_pem.clone().into_bytes()),
        };
        world._scratch = Some(scratch);
        world
    }

    /// The emulator's https endpoint by address (its certificate names 127.0.0.1 too).
    pub fn wi_endpoint(&self) -> url::Url {
        let mut endpoint = self.emulator.as_ref().unwrap().endpoint().clone();
        endpoint.set_host(Some("127.0.0.1")).unwrap();
        endpoint
    }

    /// Creates ServiceAccount `name` in this namespace (if missing) and returns a token of it
    /// for Entra (TokenRequest, audience `api://AzureADTokenExchange`, an hour).
    pub async fn service_account_token(&self, name: &str) -> String {
        service_account_token(&self.client, &self.ns, name).await
    }

    /// Federates application `client_id` with ServiceAccount `namespace`/`name` on the
    /// emulator's Entra side.
    pub async fn federate(&self, client_id: &str, namespace: &str, name: &str) {
        let (issuer, _) = cluster_issuer().await;
        self.admin
            .post(
                "admin/federatedCredentials",
                json!({
                    "clientId": client_id,
                    "issuer": issuer,
                    "subject": format!("system:serviceaccount:{namespace}:{name}"),
                }),
            )
            .await;
    }

    /// A namespace with the CRDs and an emulator (trusted through `ca_pem` when it serves
    /// TLS), no connection and no operator.
    async fn bare(configure: impl FnOnce(&mut EmulatorConfig), ca_pem: Option<&str>) -> Self {
        let namespace = TestNamespace::create(&test_name()).await;
        let client = namespace.client();
        let ns = namespace.name().to_string();
        install_crds(&client).await;
        let emulator = start_emulator(configure).await;
        let admin = Admin::new(&emulator, ca_pem);
        World {
            client,
            ns,
            admin,
            emulator: Some(emulator),
            operator: None,
            metrics: Arc::default(),
            reconciled: Arc::default(),
            workload_identity: WorkloadIdentityDefaults::default(),
            _scratch: None,
            emulator_ca: None,
            _namespace: namespace,
        }
    }

    /// Another namespace (a second tenant) served by this world's emulator and by its
    /// operator once that is started cluster-wide: the same helpers, bound to the new
    /// namespace. It starts no operator of its own.
    pub async fn neighbour(&self, hint: &str) -> World {
        let namespace = TestNamespace::create(hint).await;
        World {
            client: namespace.client(),
            ns: namespace.name().to_string(),
            admin: self.admin.clone(),
            emulator: None,
            operator: None,
            metrics: self.metrics.clone(),
            reconciled: self.reconciled.clone(),
            workload_identity: WorkloadIdentityDefaults::default(),
            _scratch: None,
            emulator_ca: None,
            _namespace: namespace,
        }
    }

    pub fn connection_string(&self) -> String {
        self.emulator.as_ref().unwrap().connection_string().expose()
    }

    pub fn start_operator(&mut self) {
        self.start_operator_with(|_| {});
    }

    /// Like [`World::start_operator`], with the test's settings changed by `configure`.
    pub fn start_operator_with(&mut self, configure: impl FnOnce(&mut Settings)) {
        assert!(self.operator.is_none(), "operator already running");
        let reconciled = self.reconciled.clone();
        self.metrics = Arc::default();
        let mut settings = Settings {
            metrics: self.metrics.clone(),
            namespace: Some(self.ns.clone()),
            concurrency: 8,
            on_reconciled: Some(Arc::new(move |_ns: &str, name: &str| {
                *reconciled
                    .0
                    .lock()
                    .unwrap()
                    .entry(name.to_string())
                    .or_default() += 1;
                reconciled.1.notify_waiters();
            })),
            workload_identity: self.workload_identity.clone(),
            allowed_endpoints: emulator_endpoints(),
            ..Settings::default()
        };
        configure(&mut settings);
        let client = self.client.clone();
        self.operator = Some(tokio::spawn(async move {
            controller::run(client, settings).await;
        }));
    }

    pub async fn stop_operator(&mut self) {
        if let Some(task) = self.operator.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn reconcile_count(&self, name: &str) -> u64 {
        self.reconciled
            .0
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until the operator has reconciled `name` more than `after` times.
    pub async fn wait_reconciled(&self, name: &str, after: u64) {
        let wait = async {
            loop {
                let notified = self.reconciled.1.notified();
                if self.reconcile_count(name) > after {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("{name} was not reconciled within {WAIT:?}"));
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Server-side applies `body` (merged with apiVersion/kind/name) as the test's manager.
    pub async fn apply<K>(&self, name: &str, body: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        super::apply_as(&self.api::<K>(), "test", name, body)
            .await
            .unwrap()
    }

    pub async fn identity(&self, name: &str, spec: Value) -> AcsIdentity {
        self.apply::<AcsIdentity>(name, json!({ "spec": spec }))
            .await
    }

    /// Sets annotation `key` of the AcsIdentity `name` to `value` (a merge patch: the spec
    /// stays as applied).
    pub async fn annotate(&self, name: &str, key: &str, value: &str) {
        let patch = json!({"metadata": {"annotations": {key: value}}});
        self.api::<AcsIdentity>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    pub async fn put_secret(&self, name: &str, key: &str, value: &str) {
        self.apply::<Secret>(
            name,
            json!({"type": "Opaque", "stringData": { key: value }}),
        )
        .await;
    }

    pub async fn get<K>(&self, name: &str) -> Option<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.api::<K>().get_opt(name).await.unwrap()
    }

    pub async fn delete<K>(&self, name: &str)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        match self.api::<K>().delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("delete {name}: {e}"),
        }
    }

    /// Waits until the identity satisfies `check`, and returns it.
    pub async fn wait_identity(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&AcsIdentity) -> bool,
    ) -> AcsIdentity {
        let cond = move |obj: Option<&AcsIdentity>| obj.is_some_and(&check);
        match tokio::time::timeout(WAIT, await_condition(self.api::<AcsIdentity>(), name, cond))
            .await
        {
            Ok(Ok(Some(obj))) => obj,
            Ok(other) => panic!("waiting for {name} ({what}): {other:?}"),
            Err(_) => {
                let now = self.get::<AcsIdentity>(name).await;
                panic!(
                    "{name} not {what} within {WAIT:?}; last seen status: {:?}",
                    now.and_then(|o| o.status)
                )
            }
        }
    }

    pub async fn wait_ready(&self, name: &str) -> AcsIdentity {
        // Ready for the current spec: the condition must have seen this generation.
        self.wait_identity(name, "Ready", |o| {
            ready_reason(o).0 == "True"
                && o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
        })
        .await
    }

    pub async fn wait_reason(&self, name: &str, reason: &str) -> AcsIdentity {
        self.wait_identity(name, reason, |o| ready_reason(o).1 == reason)
            .await
    }

    pub async fn wait_gone(&self, name: &str) {
        let gone = await_condition(
            self.api::<AcsIdentity>(),
            name,
            |o: Option<&AcsIdentity>| o.is_none(),
        );
        tokio::time::timeout(WAIT, gone)
            .await
            .unwrap_or_else(|_| panic!("{name} still exists after {WAIT:?}"))
            .unwrap();
    }

    /// Waits until the Secret satisfies `check`.
    pub async fn wait_secret(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(Option<&Secret>) -> bool,
    ) -> Option<Secret> {
        let wait = await_condition(self.api::<Secret>(), name, move |s: Option<&Secret>| {
            check(s)
        });
        match tokio::time::timeout(WAIT, wait).await {
            Ok(Ok(s)) => s,
            other => panic!("Secret {name} not {what}: {other:?}"),
        }
    }

    /// The Events about an object once one of them matches `wanted(reason, note)`, polled
    /// for up to [`WAIT`]. Events are published after the status write a test waits for, so
    /// they may lag it by a moment. Panics with the Events seen when none matches.
    pub async fn wait_event(
        &self,
        name: &str,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> Vec<(String, String)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let events = self.events_for(name).await;
            if events.iter().any(|(reason, note)| wanted(reason, note)) {
                return events;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such Event about {name} within {WAIT:?}: {events:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The operator's metrics text once it contains `wanted`, polled for up to [`WAIT`]: a
    /// reconcile is counted after the status write a test waits for.
    pub async fn wait_metrics(&self, wanted: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = self.metrics.encode();
            if text.contains(wanted) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {wanted} within {WAIT:?}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The Events about an object, as (reason, note).
    pub async fn events_for(&self, name: &str) -> Vec<(String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> = self.api();
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }
}

/// `(status, reason)` of the Ready condition, empty strings when absent.
pub fn ready_reason(obj: &AcsIdentity) -> (String, String) {
    obj.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

pub fn secret_text(secret: &Secret, key: &str) -> String {
    String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

pub fn status_of(obj: &AcsIdentity) -> &acs_identity_operator::api::AcsIdentityStatus {
    obj.status.as_ref().expect("status")
}

/// The running test's name (the test thread is named after it), as a namespace hint.
fn test_name() -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("operator");
    name.rsplit("::").next().unwrap_or(name).replace('_', "-")
}

pub fn test_key() -> &'static str {
    TEST_KEY
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(task) = self.operator.take() {
            task.abort();
        }
    }
}

/// The test cluster's ServiceAccount token issuer (its API server's URL) and the CA its
/// discovery document is served with (PEM).
pub async fn cluster_issuer() -> (String, String) {
    use base64::Engine;
    let config = super::cluster_config().await;
    let issuer = config
        .cluster_url
        .to_string()
        .trim_end_matches('/')
        .to_string();
    let mut pem = String::new();
    for der in config.root_cert.unwrap_or_default() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    (issuer, pem)
}

/// Creates ServiceAccount `namespace`/`name` (if missing) and returns a token of it for Entra
/// (TokenRequest, audience `api://AzureADTokenExchange`, an hour).
pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::apply("operator-tests"),
        &Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}}),
        ),
    )
    .await
    .unwrap();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec!["api://AzureADTokenExchange".into()]),
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        }),
        ..TokenRequest::default()
    };
    api.create_token_request(name, &Default::default(), &request)
        .await
        .unwrap()
        .status
        .and_then(|s| s.token)
        .unwrap()
}
