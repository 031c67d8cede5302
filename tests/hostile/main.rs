//! The hostile-input corpus (`cases.rs`, listed in CORPUS.md), run against the real test API
//! server, in-process ACS emulators or a hostile server (`server.rs`), and one operator
//! watching the whole cluster. Every case gets a namespace of its own holding a working
//! connection and a Ready bystander AcsIdentity; the cases run at once. Each case asserts:
//!
//! - the outcome of its row: the API server's refusal naming the field, or the Ready
//!   condition's reason with a useful message and a Warning Event of that reason, or Ready
//!   with a valid token;
//! - no hot loop: a bounded number of ACS calls over the case, and of ACS calls and
//!   reconciles of the victim over a quiet window after its outcome;
//! - the bystander untouched: same ACS identity, Ready, its token unchanged and valid;
//! - no secret (access key, connection string, token) in any condition or Event;
//! - and, over the whole run, no panic anywhere in the process and the operator still running.

mod cases;
mod server;
use acs_test_support as support;

use acs_emulator::testing::test_ca;
use acs_emulator::testing::{Admin, TEST_KEY, start_emulator};
use acs_emulator::{EmulatorHandle, TlsPem};
use acs_identity_operator::api::{AcsConnection, AcsIdentity};
use acs_identity_operator::controller::identity::REFRESH_ANNOTATION;
use acs_identity_operator::controller::{self, Settings};
use cases::{Ca, Case, Edit, Expect, Extra, Setup};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::{Value, json};
use server::{Answer, HostileServer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::TestNamespace;
use support::operator::install_crds;

/// Panics anywhere in this process (operator tasks included) since the suite started.
static PANICS: AtomicU64 = AtomicU64::new(0);

/// How long a case may take to reach its outcome.
const WAIT: Duration = Duration::from_secs(45);
/// The quiet window after the outcome, and what may happen in it.
const WINDOW: Duration = Duration::from_secs(6);
const MAX_RECONCILES_IN_WINDOW: u64 = 6;
const MAX_ACS_CALLS_IN_WINDOW: u64 = 3;
/// ACS calls a case may cause in all (first attempt plus a few backed-off retries).
const MAX_ACS_CALLS: u64 = 8;
/// Cases running at once.
const PARALLEL: usize = 24;

type Reconciles = Arc<Mutex<HashMap<String, u64>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_case_of_the_corpus() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The operator's tasks and this test; not the other test of the binary.
        let thread = std::thread::current();
        let name = thread.name().unwrap_or_default();
        if name.starts_with("tokio") || name.starts_with("every_case") || name.is_empty() {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let client = support::client().await;
    install_crds(&client).await;
    let reconciles = Reconciles::default();
    let hook = reconciles.clone();
    let settings = Settings {
        namespace: None,
        concurrency: 16,
        acs_timeout: Duration::from_secs(3),
        on_reconciled: Some(Arc::new(move |ns: &str, name: &str| {
            *hook
                .lock()
                .unwrap()
                .entry(format!("{ns}/{name}"))
                .or_default() += 1;
        })),
        // The emulators', and [::1] for the case of an address where nothing listens.
        allowed_endpoints:
            acs_identity_operator::policy::endpoint::AllowedEndpoints::acs_and_parsed(
                support::operator::EMULATOR_ENDPOINTS
                    .into_iter()
                    .chain(["[::1]:*"]),
            )
            .unwrap(),
        ..Settings::default()
    };
    let operator = tokio::spawn(controller::run(client.clone(), settings));

    let started = std::time::Instant::now();
    let cases = cases::cases();
    let count = cases.len();
    let outcomes: Vec<(String, Result<(), String>)> = futures::stream::iter(cases)
        .map(|case| {
            let reconciles = reconciles.clone();
            async move {
                let name = case.name.to_string();
                let outcome = tokio::time::timeout(WAIT * 3, run(case, reconciles))
                    .await
                    .unwrap_or_else(|_| Err(format!("took over {:?}", WAIT * 3)));
                (name, outcome)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut failures: Vec<String> = outcomes
        .iter()
        .filter_map(|(name, outcome)| outcome.as_ref().err().map(|e| format!("{name}: {e}")))
        .collect();
    eprintln!("{count} hostile cases in {:?}", started.elapsed());
    if operator.is_finished() {
        failures.push("the operator stopped".into());
    }
    operator.abort();
    let panics = PANICS.load(Ordering::SeqCst);
    if panics > 0 {
        failures.push(format!("{panics} panics in the process (see above)"));
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// CORPUS.md shows the table of `cases.rs`, with its count.
#[test]
fn corpus_md_is_the_table_of_cases() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile/CORPUS.md");
    let text = std::fs::read_to_string(path).unwrap();
    let table = cases::table();
    let count = format!("{} cases", cases::cases().len());
    assert!(
        text.contains(&table) && text.contains(&count),
        "CORPUS.md is out of date; its table should read ({count}):\n\n{table}"
    );
}

/// One case's namespace and servers.
struct Env {
    ns: TestNamespace,
    client: Client,
    emulator: EmulatorHandle,
    admin: Admin,
    /// A second emulator (the TLS one of a CA case) and its admin client.
    tls: Option<(EmulatorHandle, reqwest::Client)>,
    hostile: Option<HostileServer>,
    reconciles: Reconciles,
    /// Strings that must appear in no condition and no Event.
    secrets: Vec<String>,
}

async fn run(case: Case, reconciles: Reconciles) -> Result<(), String> {
    let renewing = matches!(case.setup, Setup::Edit(Edit::ConnectionSecretDeleted));
    let emulator = start_emulator(|c| {
        if renewing {
            c.token_lifetime = Some(Duration::from_secs(8));
        }
    })
    .await;
    let ns = TestNamespace::create(&format!("hostile-{}", case.name)).await;
    let client = ns.client();
    let admin = Admin::new(&emulator, None);
    let mut env = Env {
        ns,
        client,
        secrets: vec![TEST_KEY.into(), emulator.connection_string().expose()],
        emulator,
        admin,
        tls: None,
        hostile: None,
        reconciles,
    };
    let connection = env.emulator.connection_string().expose();
    env.put_secret("acs-conn", "connectionString", &connection)
        .await?;
    env.connection("acs", "acs-conn", None).await?;
    env.identity(
        "bystander",
        json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"]}),
    )
    .await?;
    let bystander = env.wait_ready("bystander").await?;
    let bystander_id = bystander.status.unwrap().identity_id.unwrap();
    let bystander_token = env.token("bystander").await?;
    env.secrets.push(bystander_token.clone());

    let calls_before = env.acs_calls().await;
    let victim = match &case.setup {
        Setup::Named { name } => name.clone(),
        _ => "victim".to_string(),
    };
    let applied = setup(&mut env, &case, &victim).await;

    match (&case.expect, applied) {
        (Expect::Rejected(what), Err(message)) => {
            if !message.contains(what) {
                return Err(format!("refusal does not name {what}: {message}"));
            }
            if env
                .api::<AcsIdentity>()
                .get_opt(&victim)
                .await
                .map_err(s)?
                .is_some()
            {
                return Err("refused, yet the object exists".into());
            }
        }
        (Expect::Rejected(_), Ok(())) => return Err("the API server accepted it".into()),
        (_, Err(message)) => return Err(format!("setting up: {message}")),
        (Expect::Reason(reason), Ok(())) => {
            let found = env.wait_reason(&victim, reason).await?;
            let message = ready(&found).map(|c| c.message).unwrap_or_default();
            if message.len() < 10 || message.len() > 2048 {
                return Err(format!(
                    "unhelpful message ({} bytes): {message:.300}",
                    message.len()
                ));
            }
            env.wait_warning(&victim, reason).await?;
            if let Setup::Unlisted { .. } = case.setup {
                env.check_refused_endpoint(reason).await?;
            }
        }
        (Expect::ReadyWith(expected), Ok(())) => {
            env.wait_ready(&victim).await?;
            let token = env.token(&victim).await?;
            if token != *expected {
                return Err(format!("the Secret holds {token:?}"));
            }
        }
        (Expect::Ready, Ok(())) => {
            env.wait_ready(&victim).await?;
            env.wait_valid_token(&victim).await?;
        }
    }

    // No hot loop: quiet once the outcome is there.
    let key = format!("{}/{victim}", env.ns.name());
    let reconciled = || {
        env.reconciles
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or(0)
    };
    let (reconciles_at, calls_at) = (reconciled(), env.acs_calls().await);
    tokio::time::sleep(WINDOW).await;
    let (reconciles_in, calls_in) = (
        reconciled() - reconciles_at,
        env.acs_calls().await - calls_at,
    );
    if reconciles_in > MAX_RECONCILES_IN_WINDOW || calls_in > MAX_ACS_CALLS_IN_WINDOW {
        return Err(format!(
            "{reconciles_in} reconciles and {calls_in} ACS calls within {WINDOW:?} after the outcome"
        ));
    }
    let calls = env.acs_calls().await - calls_before;
    if calls > MAX_ACS_CALLS {
        return Err(format!("{calls} ACS calls"));
    }

    // The bystander is untouched.
    let now = env.get_identity("bystander").await?;
    let same_id =
        now.status.as_ref().and_then(|s| s.identity_id.clone()) == Some(bystander_id.clone());
    if !same_id || ready(&now).is_none_or(|c| c.status != "True") {
        return Err(format!("bystander changed: {:?}", now.status));
    }
    let token = env.token("bystander").await?;
    if (token != bystander_token && !renewing) || !env.admin.verify(&token).await.0 {
        return Err("bystander's token changed or is no longer valid".into());
    }
    if env
        .admin
        .identity(&bystander_id)
        .await
        .is_none_or(|i| i["deleted"] != false)
    {
        return Err("bystander's ACS identity is gone".into());
    }

    // No secret in any message.
    if let Ok(token) = env.token(&victim).await {
        env.secrets.push(token);
    }
    env.check_no_secret_shown().await
}

/// Applies the case; `Err` with the API server's message when it refuses.
async fn setup(env: &mut Env, case: &Case, victim: &str) -> Result<(), String> {
    let bad = json!({"connectionRef": {"name": "bad"}, "scopes": ["chat"]});
    match &case.setup {
        Setup::Manifest { spec, extra } => {
            if let Extra::TlsSecret = extra {
                let tls = json!({"type": "kubernetes.io/tls", "stringData": {"tls.crt": "", "tls.key": ""}});
                env.apply::<Secret>("tls", tls).await?;
            }
            env.identity(victim, spec.clone()).await
        }
        Setup::Named { name } => {
            env.identity(
                name,
                json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"]}),
            )
            .await
        }
        Setup::ConnectionString(text) => {
            let endpoint = env
                .emulator
                .endpoint()
                .as_str()
                .trim_end_matches('/')
                .to_string();
            let text = text
                .replace("{emulator-https}", &endpoint.replace("http://", "https://"))
                .replace("{emulator}", &endpoint);
            if let Some(key) = text.split("accesskey=").nth(1).filter(|k| k.len() >= 16) {
                env.secrets.push(key.chars().take(64).collect());
            }
            env.secrets.push(text.chars().take(200).collect());
            env.put_secret("bad-conn", "connectionString", &text)
                .await?;
            env.connection("bad", "bad-conn", None).await?;
            env.identity(victim, bad).await
        }
        Setup::CaBundle(ca) => {
            let (server, bundle) = ca_case(*ca);
            let tls_emulator = start_emulator(|c| c.tls = Some(server)).await;
            let mut endpoint = tls_emulator.endpoint().clone();
            endpoint.set_host(Some("127.0.0.1")).unwrap();
            let text = format!("endpoint={endpoint};accesskey={TEST_KEY}");
            env.put_secret("bad-conn", "connectionString", &text)
                .await?;
            if let Ca::OversizedSecret = ca {
                env.put_secret("bad-ca", "ca.crt", &bundle).await?;
                let spec = json!({"connectionStringSecretRef": {"name": "bad-conn"},
                                  "caSecretRef": {"name": "bad-ca"}});
                env.apply::<AcsConnection>("bad", json!({ "spec": spec }))
                    .await?;
            } else {
                env.connection("bad", "bad-conn", Some(bundle)).await?;
            }
            // The counters are read past the certificate the case is about.
            let admin = reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            env.tls = Some((tls_emulator, admin));
            env.identity(victim, bad).await
        }
        Setup::Answer(answer) => {
            let answer = match answer {
                Answer::Whole {
                    status,
                    content_type,
                    body,
                } => Answer::Whole {
                    status: *status,
                    content_type,
                    body: body.replace(
                        "{in-1-hour}",
                        &(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string(),
                    ),
                },
                other => other.clone(),
            };
            let hostile = HostileServer::start(answer).await;
            let text = format!(
                "endpoint=http://127.0.0.1:{}/;accesskey={TEST_KEY}",
                hostile.port
            );
            env.hostile = Some(hostile);
            env.secrets.push(cases::INTERNAL.into());
            env.put_secret("bad-conn", "connectionString", &text)
                .await?;
            env.connection("bad", "bad-conn", None).await?;
            env.identity(victim, bad).await
        }
        Setup::WorkloadIdentity(identity) => {
            let endpoint = env
                .emulator
                .endpoint()
                .as_str()
                .replace("http://", "https://");
            env.apply::<AcsConnection>(
                "bad",
                json!({"spec": {"endpoint": endpoint, "workloadIdentity": identity}}),
            )
            .await?;
            env.identity(victim, bad).await
        }
        Setup::Unlisted { workload_identity } => {
            let ok = Answer::Whole {
                status: 201,
                content_type: "application/json",
                body: "{}".into(),
            };
            let hostile = HostileServer::start_on("127.0.0.2", ok).await;
            let port = hostile.port;
            env.hostile = Some(hostile);
            let spec = if *workload_identity {
                json!({"endpoint": format!("https://127.0.0.2:{port}/"),
                       "workloadIdentity": {"clientId": "c", "tenantId": "t"}})
            } else {
                let text = format!("endpoint=http://127.0.0.2:{port}/;accesskey={TEST_KEY}");
                env.put_secret("bad-conn", "connectionString", &text)
                    .await?;
                json!({"connectionStringSecretRef": {"name": "bad-conn"}})
            };
            env.apply::<AcsConnection>("bad", json!({ "spec": spec }))
                .await?;
            env.identity(victim, bad).await
        }
        Setup::Edit(edit) => edit_case(env, *edit, victim).await,
    }
}

async fn edit_case(env: &mut Env, edit: Edit, victim: &str) -> Result<(), String> {
    let connection = if let Edit::ConnectionSecretDeleted = edit {
        let text = env.emulator.connection_string().expose();
        env.put_secret("own-conn", "connectionString", &text)
            .await?;
        env.connection("own", "own-conn", None).await?;
        "own"
    } else {
        "acs"
    };
    env.identity(
        victim,
        json!({"connectionRef": {"name": connection}, "scopes": ["voip"]}),
    )
    .await?;
    env.wait_ready(victim).await?;
    let old_token = env.token(victim).await?;
    env.secrets.push(old_token.clone());
    let secrets = env.api::<Secret>();
    let merge = |body: Value| async move {
        secrets
            .patch(victim, &PatchParams::default(), &Patch::Merge(body))
            .await
            .map(drop)
            .map_err(s)
    };
    match edit {
        Edit::SecretEmptied => {
            merge(json!({"data": {"token": null, "identityId": null, "expiresOn": null}})).await?
        }
        Edit::SecretForeignData => {
            merge(json!({"stringData": {"token": "stolen", "identityId": "8:acs:someone_else", "extra": "x"}}))
                .await?
        }
        Edit::SecretOtherOwner => {
            let owner = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "other",
                "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]);
            merge(json!({"metadata": {"ownerReferences": owner}})).await?;
            // Whether a reconcile already under way sees the edit is a race; a refresh
            // request makes the operator look at the Secret now.
            let note = json!({"metadata": {"annotations": {REFRESH_ANNOTATION: "after-edit"}}});
            env.api::<AcsIdentity>()
                .patch(victim, &PatchParams::default(), &Patch::Merge(note))
                .await
                .map_err(s)?;
        }
        Edit::ConnectionSecretDeleted => {
            env.api::<Secret>()
                .delete("own-conn", &DeleteParams::default())
                .await
                .map_err(s)?;
        }
    }
    Ok(())
}

/// The server certificate a CA case's emulator serves, and the bundle the connection trusts.
fn ca_case(ca: Ca) -> (TlsPem, String) {
    let good = test_ca();
    match ca {
        Ca::Garbage => (
            good.server,
            "this is not a certificate, nor is it PEM".into(),
        ),
        Ca::PemWithoutCertificate => (
            good.server,
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
                .into(),
        ),
        Ca::SomeoneElses => (good.server, test_ca().ca_pem),
        Ca::ServerCertificate => {
            let leaf = String::from_utf8(good.server.cert_chain.clone()).unwrap();
            (good.server, leaf)
        }
        Ca::Expired => expired_ca(),
        Ca::Oversized => (good.server, padded(&good.ca_pem, 64 * 1024 + 1)),
        Ca::OversizedSecret => (good.server, padded(&good.ca_pem, 100 * 1024)),
    }
}

/// `pem` followed by other CAs until the bundle is at least `size` bytes.
fn padded(pem: &str, size: usize) -> String {
    let (mut bundle, other) = (pem.to_string(), test_ca().ca_pem);
    while bundle.len() < size {
        bundle.push_str(&other);
    }
    bundle
}

/// A CA whose validity ended in 2020, and a server certificate it signed.
fn expired_ca() -> (TlsPem, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap();
    let issuer = Issuer::new(params, key);
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf_params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    leaf_params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    (
        TlsPem {
            cert_chain: leaf.pem().into_bytes(),
            private_key: leaf_key.serialize_pem().into_bytes(),
        },
        ca.pem(),
    )
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn ready(obj: &AcsIdentity) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .cloned()
}

impl Env {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), self.ns.name())
    }

    async fn apply<K>(&self, name: &str, body: Value) -> Result<(), String>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        support::apply_as(&self.api::<K>(), "hostile", name, body)
            .await
            .map(drop)
            .map_err(|e| match e {
                kube::Error::Api(status) => status.message,
                other => other.to_string(),
            })
    }

    async fn identity(&self, name: &str, spec: Value) -> Result<(), String> {
        self.apply::<AcsIdentity>(name, json!({ "spec": spec }))
            .await
    }

    async fn put_secret(&self, name: &str, key: &str, value: &str) -> Result<(), String> {
        self.apply::<Secret>(
            name,
            json!({"type": "Opaque", "stringData": { key: value }}),
        )
        .await
    }

    async fn connection(&self, name: &str, secret: &str, ca: Option<String>) -> Result<(), String> {
        let mut spec =
            json!({"connectionStringSecretRef": {"name": secret, "key": "connectionString"}});
        if let Some(ca) = ca {
            spec["caBundle"] = json!(ca);
        }
        self.apply::<AcsConnection>(name, json!({ "spec": spec }))
            .await
    }

    async fn get_identity(&self, name: &str) -> Result<AcsIdentity, String> {
        self.api::<AcsIdentity>().get(name).await.map_err(s)
    }

    async fn token(&self, name: &str) -> Result<String, String> {
        let secret = self.api::<Secret>().get(name).await.map_err(s)?;
        let token = secret
            .data
            .unwrap_or_default()
            .remove("token")
            .ok_or("no token")?;
        String::from_utf8(token.0).map_err(s)
    }

    /// Polls (bounded) until `check` holds for the identity.
    async fn wait_identity(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&AcsIdentity) -> bool,
    ) -> Result<AcsIdentity, String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.api::<AcsIdentity>().get_opt(name).await.map_err(s)?;
            if let Some(obj) = now.as_ref().filter(|o| check(o)) {
                return Ok(obj.clone());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "not {what} within {WAIT:?}; last Ready condition: {:?}",
                    now.as_ref().and_then(ready)
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn wait_ready(&self, name: &str) -> Result<AcsIdentity, String> {
        self.wait_identity(name, "Ready", |o| {
            ready(o).is_some_and(|c| c.status == "True")
                && o.status.as_ref().and_then(|s| s.observed_generation) == o.metadata.generation
        })
        .await
    }

    async fn wait_reason(&self, name: &str, reason: &str) -> Result<AcsIdentity, String> {
        self.wait_identity(name, reason, |o| {
            ready(o).is_some_and(|c| c.status == "False" && c.reason == reason)
        })
        .await
    }

    async fn wait_valid_token(&self, name: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(token) = self.token(name).await
                && self.admin.verify(&token).await.0
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("no valid token in Secret {name} within {WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn events(&self) -> Result<Vec<Event>, String> {
        let api: Api<Event> = self.api();
        Ok(api.list(&Default::default()).await.map_err(s)?.items)
    }

    async fn wait_warning(&self, name: &str, reason: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let events = self.events().await?;
            let found = events.iter().any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            });
            if found {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<_> = events.iter().map(|e| (&e.type_, &e.reason)).collect();
                return Err(format!(
                    "no Warning Event {reason} within {WAIT:?}: {seen:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Data-plane requests the case's ACS servers answered.
    async fn acs_calls(&self) -> u64 {
        let mut total = total_of(&self.admin).await;
        if let Some((emulator, http)) = &self.tls {
            let url = format!("https://{}/admin/stats", emulator.local_addr());
            let stats: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            total += sum_of(&stats);
        }
        if let Some(hostile) = &self.hostile {
            total += hostile.requests();
        }
        total
    }

    /// The connection `bad` itself says why (Ready False and Stalled with `reason`), and its
    /// server saw no connection at all.
    async fn check_refused_endpoint(&self, reason: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let bad = self.api::<AcsConnection>().get("bad").await.map_err(s)?;
            let conditions = bad.status.map(|s| s.conditions).unwrap_or_default();
            let has = |type_: &str, status: &str| {
                conditions
                    .iter()
                    .any(|c| c.type_ == type_ && c.status == status && c.reason == reason)
            };
            if has("Ready", "False") && has("Stalled", "True") {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("connection bad not {reason}: {conditions:?}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        match self.hostile.as_ref().map(HostileServer::connections) {
            Some(0) => Ok(()),
            n => Err(format!("the refused endpoint saw {n:?} connections")),
        }
    }

    async fn check_no_secret_shown(&self) -> Result<(), String> {
        let mut shown: Vec<String> = Vec::new();
        for event in self.events().await? {
            shown.extend(event.note);
        }
        let identities = self
            .api::<AcsIdentity>()
            .list(&Default::default())
            .await
            .map_err(s)?;
        for identity in identities {
            for condition in identity.status.map(|s| s.conditions).unwrap_or_default() {
                shown.push(condition.message);
            }
        }
        for text in &shown {
            for secret in self.secrets.iter().filter(|s| s.len() >= 16) {
                if text.contains(secret.as_str()) {
                    return Err(format!("a secret is shown in: {text:.200}"));
                }
            }
        }
        Ok(())
    }
}

async fn total_of(admin: &Admin) -> u64 {
    sum_of(&admin.get("admin/stats").await)
}

fn sum_of(stats: &Value) -> u64 {
    stats["operations"]
        .as_object()
        .map(|ops| {
            ops.values()
                .flat_map(|by_status| by_status.as_object().into_iter().flat_map(|m| m.values()))
                .filter_map(Value::as_u64)
                .sum()
        })
        .unwrap_or(0)
}
