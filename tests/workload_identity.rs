//! Entra ID workload identity end to end, in process: the Rust ACS client with the official
//! `azure_identity` workload identity credential gets a bearer token from the emulator's Entra
//! endpoint (over TLS, trusting the test CA through our own transport) and uses it on the
//! emulator's ACS endpoints; the emulator refuses missing, foreign and expired bearer tokens.
//!
//! The assertion is a real ServiceAccount token of the test API server (TokenRequest), and the
//! emulator's Entra side checks it against the server's keys and its federated credentials.
//! Everything is configured explicitly (tenant, client, token file, authority): no test reads
//! or writes process environment, which is shared by tests running in parallel.

use acs_test_support as support;

use acs_emulator::testing::{Admin, start_emulator};
use acs_emulator::testing::{TestCa, test_ca};
use acs_emulator::{EmulatorHandle, FEDERATED_AUDIENCE, FederatedCredential};
use acs_identity_operator::acs::{
    AcsClient, AcsError, ClientOptions, Scope, TokenLifetime, WorkloadIdentity,
};
use acs_identity_operator::api::{AcsConnection, AcsIdentity, ClusterAcsConnection};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use support::operator::{World, cluster_issuer, secret_text, service_account_token};
use url::Url;

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

/// A TLS emulator, its CA, its https endpoint by address, and a federated token file.
struct Setup {
    emulator: EmulatorHandle,
    ca: TestCa,
    endpoint: Url,
    admin: Admin,
    token_file: PathBuf,
    /// The ServiceAccount token in the file (without kubelet's newline).
    sa_token: String,
    _dir: tempfile::TempDir,
    _namespace: support::TestNamespace,
}

impl Setup {
    async fn new(configure: impl FnOnce(&mut acs_emulator::EmulatorConfig)) -> Self {
        let ca = test_ca();
        let server = ca.server.clone();
        let namespace = support::TestNamespace::create("workload-identity").await;
        let (issuer, issuer_ca) = cluster_issuer().await;
        let emulator = start_emulator(|c| {
            c.tls = Some(server);
            c.entra.issuer_ca_pem = Some(issuer_ca.into_bytes());
            c.entra.federated_credentials = vec![FederatedCredential {
                client_id: CLIENT.into(),
                issuer,
                subject: format!("system:serviceaccount:{}:operator", namespace.name()),
                audiences: vec![FEDERATED_AUDIENCE.into()],
            }];
            configure(c);
        })
        .await;
        let admin = Admin::new(&emulator, Some(&ca.ca_pem));
        // The certificate names 127.0.0.1 too: stay on the loopback address.
        let mut endpoint = emulator.endpoint().clone();
        endpoint.set_host(Some("127.0.0.1")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("azure-identity-token");
        let sa_token =
            service_account_token(&namespace.client(), namespace.name(), "operator").await;
        // As kubelet writes it: a trailing newline.
        std::fs::write(&token_file, format!("{sa_token}\n")).unwrap();
        Self {
            emulator,
            ca,
            endpoint,
            admin,
            token_file,
            sa_token,
            _dir: dir,
            _namespace: namespace,
        }
    }

    fn workload_identity(&self, tenant: &str) -> WorkloadIdentity {
        WorkloadIdentity {
            tenant_id: tenant.into(),
            client_id: CLIENT.into(),
            token_file: Some(self.token_file.clone()),
            authority_host: self.endpoint.clone(),
            extra_ca_pem: Some(self.ca.ca_pem.clone().into_bytes()),
            timeout: Duration::from_secs(10),
        }
    }

    fn bearer_client(&self, tenant: &str) -> AcsClient {
        let credential = self.workload_identity(tenant).credential().unwrap();
        let options = ClientOptions {
            extra_ca_pem: Some(self.ca.ca_pem.clone().into_bytes()),
            ..ClientOptions::default()
        };
        AcsClient::with_bearer(self.endpoint.clone(), credential, options).unwrap()
    }

    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.ca.ca_pem.as_bytes()).unwrap(),
            )
            .build()
            .unwrap()
    }

    /// An Entra token straight from the token endpoint, as the SDKs request it.
    async fn raw_entra_token(&self) -> String {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_assertion", &self.sa_token)
            .append_pair(
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            )
            .append_pair("client_id", CLIENT)
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", "https://communication.azure.com//.default")
            .finish();
        let response = self
            .http()
            .post(
                self.endpoint
                    .join(&format!("{TENANT}/oauth2/v2.0/token"))
                    .unwrap(),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let json: serde_json::Value = response.json().await.unwrap();
        json["access_token"].as_str().unwrap().to_string()
    }

    /// `POST /identities` with the given Authorization header (none when `None`): status and
    /// error message.
    async fn create_with(&self, authorization: Option<&str>) -> (u16, String) {
        let mut request = self
            .http()
            .post(
                self.endpoint
                    .join("identities?api-version=2023-10-01")
                    .unwrap(),
            )
            .header("content-type", "application/json")
            .body("{}");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let json: serde_json::Value = response.json().await.unwrap_or_default();
        (
            status,
            json["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    }
}

#[tokio::test]
async fn bearer_client_creates_issues_revokes_and_deletes_with_one_entra_token() {
    let s = Setup::new(|_| {}).await;
    let client = s.bearer_client(TENANT);
    assert_eq!(client.auth_scheme(), "Bearer");

    let hour = TokenLifetime::from_minutes(60).unwrap();
    let (id, first) = client
        .create_identity_with_token(&[Scope::Chat], hour)
        .await
        .unwrap();
    assert_eq!(s.admin.verify(&first.token).await, (true, "ok".into()));
    let plain = client.create_identity().await.unwrap();
    let second = client
        .issue_token(&id, &[Scope::Voip], TokenLifetime::MAX)
        .await
        .unwrap();
    assert_eq!(s.admin.verify(&second.token).await, (true, "ok".into()));

    client.revoke_tokens(&id).await.unwrap();
    assert_eq!(
        s.admin.verify(&second.token).await,
        (false, "revoked".into())
    );
    client.delete_identity(&id).await.unwrap();
    client.delete_identity(&plain).await.unwrap();
    assert_eq!(s.admin.identity(&id).await.unwrap()["deleted"], true);

    // Six ACS calls, one token request: the credential caches the Entra token.
    assert_eq!(s.admin.count("entraToken", 200).await, 1);
    assert_eq!(s.admin.count("createIdentityWithToken", 201).await, 1);
    assert_eq!(s.admin.count("createIdentity", 201).await, 1);
    assert_eq!(s.admin.count("issueToken", 200).await, 1);
    assert_eq!(s.admin.count("revokeTokens", 204).await, 1);
    assert_eq!(s.admin.count("deleteIdentity", 204).await, 2);
    s.emulator.shutdown().await;
}

#[tokio::test]
async fn missing_malformed_and_foreign_bearer_tokens_get_401() {
    let s = Setup::new(|_| {}).await;
    let other = Setup::new(|_| {}).await;

    let own = s.raw_entra_token().await;
    assert_eq!(s.create_with(Some(&format!("Bearer {own}"))).await.0, 201);

    let (status, _) = s.create_with(None).await;
    assert_eq!(status, 401, "no Authorization header");
    let (status, message) = s.create_with(Some("Bearer not-a-token")).await;
    assert_eq!(
        (status, message.as_str()),
        (401, "The bearer token is malformed.")
    );

    // Another emulator's Entra token: well-formed, right audience, wrong signer.
    let foreign = other.raw_entra_token().await;
    let (status, message) = s.create_with(Some(&format!("Bearer {foreign}"))).await;
    assert_eq!(status, 401);
    assert!(message.contains("not issued by this emulator"), "{message}");

    // An ACS user token is no Entra token, even from the same emulator.
    let hmac = AcsClient::new(
        &{
            let mut c = s.emulator.connection_string();
            c.endpoint = s.endpoint.clone();
            c
        },
        ClientOptions {
            extra_ca_pem: Some(s.ca.ca_pem.clone().into_bytes()),
            ..ClientOptions::default()
        },
    )
    .unwrap();
    let (_, user_token) = hmac
        .create_identity_with_token(&[Scope::Chat], TokenLifetime::MAX)
        .await
        .unwrap();
    let (status, message) = s
        .create_with(Some(&format!("Bearer {}", user_token.token)))
        .await;
    assert_eq!(status, 401, "ACS user token accepted as bearer: {message}");

    // Denied requests are counted like any other: 4 refusals, 2 successful creates.
    assert_eq!(s.admin.count("createIdentity", 401).await, 4);
    s.emulator.shutdown().await;
    other.emulator.shutdown().await;
}

#[tokio::test]
async fn expired_bearer_tokens_get_401_and_the_client_reports_unauthorized() {
    // Lifetime 0: every token the Entra endpoint issues is expired when it is issued.
    let s = Setup::new(|c| c.entra.token_lifetime = Duration::ZERO).await;
    let expired = s.raw_entra_token().await;
    let (status, message) = s.create_with(Some(&format!("Bearer {expired}"))).await;
    assert_eq!(
        (status, message.as_str()),
        (401, "The bearer token is expired.")
    );

    let err = s.bearer_client(TENANT).create_identity().await.unwrap_err();
    assert!(
        matches!(err, AcsError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    s.emulator.shutdown().await;
}

#[tokio::test]
async fn refused_workload_identity_is_a_permanent_credential_error_without_an_acs_call() {
    let s =
        Setup::new(|c| c.entra.tenants = ["22222222-0000-0000-0000-000000000000".into()].into())
            .await;
    let err = s.bearer_client(TENANT).create_identity().await.unwrap_err();
    match &err {
        AcsError::Credential { retriable, message } => {
            assert!(!retriable, "{message}");
            assert!(message.contains("AADSTS90002"), "{message}");
            assert!(
                !message.contains(&s.sa_token),
                "assertion leaked: {message}"
            );
        }
        other => panic!("expected a credential error, got {other:?}"),
    }
    assert_eq!(s.admin.count("entraToken", 400).await, 1);
    assert_eq!(
        s.admin.get("admin/stats").await["operations"].get("createIdentity"),
        None
    );
    s.emulator.shutdown().await;
}

#[tokio::test]
async fn an_authority_with_an_untrusted_certificate_is_a_retriable_credential_error() {
    let s = Setup::new(|_| {}).await;
    let mut identity = s.workload_identity(TENANT);
    identity.extra_ca_pem = None;
    let credential = identity.credential().unwrap();
    let options = ClientOptions {
        extra_ca_pem: Some(s.ca.ca_pem.clone().into_bytes()),
        ..ClientOptions::default()
    };
    let client = AcsClient::with_bearer(s.endpoint.clone(), credential, options).unwrap();
    let err = client.create_identity().await.unwrap_err();
    assert!(
        matches!(
            err,
            AcsError::Credential {
                retriable: true,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(s.admin.get("admin/stats").await["total"], 0);
    s.emulator.shutdown().await;
}

#[tokio::test]
async fn bearer_tokens_are_refused_over_plain_http() {
    let emulator = start_emulator(|_| {}).await;
    let tls = Setup::new(|_| {}).await;
    let token = tls.raw_entra_token().await;
    let response = reqwest::Client::new()
        .post(
            emulator
                .endpoint()
                .join("identities?api-version=2023-10-01")
                .unwrap(),
        )
        .bearer_auth(&token)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        json["error"]["message"],
        "Bearer token authentication is not permitted over plain HTTP."
    );
    emulator.shutdown().await;
    tls.emulator.shutdown().await;
}

/// Everything logged, at every level, by the code running on this test's thread.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_assertion_or_token_is_logged_even_at_trace_level() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Process-wide (a thread's own subscriber misses call sites that tests on other threads
    // registered first): the other tests of this binary log into the buffer too, which only
    // widens what is checked. Nothing else in this binary sets a subscriber.
    tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");

    let s = Setup::new(|_| {}).await;
    let client = s.bearer_client(TENANT);
    let (id, token) = client
        .create_identity_with_token(&[Scope::Chat], TokenLifetime::MAX)
        .await
        .unwrap();
    client.delete_identity(&id).await.unwrap();
    let entra = s.raw_entra_token().await;
    assert_eq!(s.create_with(Some(&format!("Bearer {entra}"))).await.0, 201);
    s.emulator.shutdown().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("token cache miss"),
        "azure_identity's trace was not captured"
    );
    assert!(
        logs.contains("served"),
        "the emulator's log was not captured:\n{logs}"
    );
    for (what, secret) in [
        ("assertion", s.sa_token.as_str()),
        ("ACS token", token.token.as_str()),
        ("Entra token", entra.as_str()),
    ] {
        assert!(!logs.contains(secret), "{what} logged");
    }
    // No JWT-looking text at all: every token here starts with a base64url `{"`.
    assert!(!logs.contains("eyJ"), "something token-shaped was logged");
}

/// The platform's application: federated with the operator pod's ServiceAccount only.
const PLATFORM_APP: &str = "aaaaaaaa-0000-0000-0000-00000000000a";
/// team-b's own application, federated with team-b's ServiceAccount `acs` once the test says so.
const TEAM_B_APP: &str = "bbbbbbbb-0000-0000-0000-00000000000b";

/// Accepted bearer tokens on the emulator's ACS endpoints issued to `client`.
async fn bearer_uses(admin: &Admin, client: &str) -> u64 {
    admin.get("admin/stats").await["bearerUses"][client]
        .as_u64()
        .unwrap_or(0)
}

/// Identities created on the emulator (with or without a token).
async fn creates(admin: &Admin) -> u64 {
    admin.count("createIdentity", 201).await + admin.count("createIdentityWithToken", 201).await
}

fn ready_message(identity: &AcsIdentity) -> String {
    identity
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Issue 19, item 2, end to end with a cluster-wide operator whose pod identity is the
/// platform's: a ClusterAcsConnection uses it; team-b's namespaced connection never does
/// (refused without a ServiceAccount of its own before any Entra call; with its
/// ServiceAccount, Entra refuses the platform's application and no bearer token of it is ever
/// sent); team-b's own ServiceAccount federated with its own application works. The only test
/// of this binary that runs an operator (it watches every namespace).
#[tokio::test]
async fn ambient_credentials_serve_cluster_connections_and_a_tenant_exchanges_its_own_service_account()
 {
    let mut platform = World::with_workload_identity_unstarted(TENANT, PLATFORM_APP).await;
    let endpoint = platform.wi_endpoint().to_string();
    let ca = platform.emulator_ca.clone().unwrap();
    let shared = format!("{}-wi", platform.ns);
    let cluster_connection: ClusterAcsConnection = serde_json::from_value(json!({
        "apiVersion": "acsoperator.io/v1alpha1", "kind": "ClusterAcsConnection",
        "metadata": {"name": shared},
        "spec": {"endpoint": endpoint, "workloadIdentity": {}, "caBundle": ca},
    }))
    .unwrap();
    Api::<ClusterAcsConnection>::all(platform.client.clone())
        .patch(
            &shared,
            &PatchParams::apply("platform-team").force(),
            &Patch::Apply(&cluster_connection),
        )
        .await
        .unwrap();
    platform.start_operator_with(|s| s.namespace = None);
    let team_a = platform.neighbour("team-a").await;
    let team_b = platform.neighbour("team-b").await;
    let admin = platform.admin.clone();

    // The ClusterAcsConnection keeps using the pod's identity.
    team_a
        .identity(
            "alice",
            json!({"connectionRef": {"kind": "ClusterAcsConnection", "name": shared}, "scopes": ["chat"]}),
        )
        .await;
    team_a.wait_ready("alice").await;
    let token = secret_text(&team_a.get::<Secret>("alice").await.unwrap(), "token");
    assert_eq!(admin.verify(&token).await, (true, "ok".into()));
    let pod_uses = bearer_uses(&admin, PLATFORM_APP).await;
    assert!(
        pod_uses >= 1,
        "the cluster connection sent no bearer of the pod's identity"
    );
    let entra_ok = admin.count("entraToken", 200).await;
    assert_eq!(creates(&admin).await, 1);

    // team-b's connection with `workloadIdentity: {}` (the attack): refused, nothing sent.
    let wi = |identity: Value| json!({"spec": {"endpoint": endpoint, "workloadIdentity": identity, "caBundle": ca}});
    team_b
        .apply::<AcsConnection>("borrowed", wi(json!({})))
        .await;
    team_b
        .identity(
            "bob",
            json!({"connectionRef": {"name": "borrowed"}, "scopes": ["chat"]}),
        )
        .await;
    let bob = team_b.wait_reason("bob", "InvalidWorkloadIdentity").await;
    assert!(
        ready_message(&bob).contains("set spec.workloadIdentity.serviceAccountName"),
        "{}",
        ready_message(&bob)
    );
    // Its own ServiceAccount but no application named: never the pod's client id.
    team_b.service_account_token("acs").await;
    team_b
        .apply::<AcsConnection>("unnamed", wi(json!({"serviceAccountName": "acs"})))
        .await;
    team_b
        .identity(
            "carol",
            json!({"connectionRef": {"name": "unnamed"}, "scopes": ["chat"]}),
        )
        .await;
    let carol = team_b.wait_reason("carol", "InvalidWorkloadIdentity").await;
    assert!(
        ready_message(&carol).contains("azure.workload.identity/client-id"),
        "{}",
        ready_message(&carol)
    );
    assert_eq!(
        admin.count("entraToken", 200).await,
        entra_ok,
        "team-b got an Entra token"
    );
    assert_eq!(admin.count("entraToken", 400).await, 0, "Entra was asked");

    // team-b's ServiceAccount with the platform's application: Entra refuses the assertion
    // (the application is federated with the platform's ServiceAccount only).
    team_b
        .apply::<AcsConnection>(
            "platform-app",
            wi(json!({"serviceAccountName": "acs", "clientId": PLATFORM_APP})),
        )
        .await;
    team_b
        .identity(
            "dave",
            json!({"connectionRef": {"name": "platform-app"}, "scopes": ["chat"]}),
        )
        .await;
    let dave = team_b.wait_reason("dave", "EntraTokenFailed").await;
    assert!(
        ready_message(&dave).contains("AADSTS70021"),
        "{}",
        ready_message(&dave)
    );
    assert!(admin.count("entraToken", 400).await >= 1);
    assert_eq!(admin.count("entraToken", 200).await, entra_ok);
    assert_eq!(
        bearer_uses(&admin, PLATFORM_APP).await,
        pod_uses,
        "a bearer token of the platform's application was sent for team-b"
    );
    assert_eq!(creates(&admin).await, 1, "team-b created an identity");

    // team-b's own application, federated with its own ServiceAccount (named by the
    // annotation, as the workload identity webhook reads it): Ready, a valid token.
    team_b.federate(TEAM_B_APP, &team_b.ns, "acs").await;
    team_b
        .apply::<k8s_openapi::api::core::v1::ServiceAccount>(
            "acs",
            json!({"metadata": {"annotations": {"azure.workload.identity/client-id": TEAM_B_APP}}}),
        )
        .await;
    team_b
        .apply::<AcsConnection>("own", wi(json!({"serviceAccountName": "acs"})))
        .await;
    team_b
        .identity(
            "erin",
            json!({"connectionRef": {"name": "own"}, "scopes": ["chat"]}),
        )
        .await;
    team_b.wait_ready("erin").await;
    let token = secret_text(&team_b.get::<Secret>("erin").await.unwrap(), "token");
    assert_eq!(admin.verify(&token).await, (true, "ok".into()));
    assert!(bearer_uses(&admin, TEAM_B_APP).await >= 1);
    assert_eq!(bearer_uses(&admin, PLATFORM_APP).await, pod_uses);
    assert_eq!(creates(&admin).await, 2);
    platform.stop_operator().await;
}
