//! Resolving an AcsIdentity's `connectionRef` to a ready ACS client: finds the connection
//! object in the watch caches ([`source`]), checks that the identity's namespace may use it
//! ([`access`]), and takes its client from the cache ([`clients`]) or builds one ([`build`]),
//! signing with the access key of a connection string or sending bearer tokens of an Entra ID
//! workload identity ([`workload_identity`]).

mod access;
mod build;
mod clients;
mod service_account;
mod source;
mod workload_identity;

#[cfg(test)]
pub(crate) use build::fingerprint;
pub use clients::Resolved;

/// [`crate::controller::Settings::max_clients_per_namespace`] by default.
pub const DEFAULT_MAX_CLIENTS_PER_NAMESPACE: usize = ClientCache::DEFAULT_MAX_PER_NAMESPACE;
pub use source::{Adoption, ConnectionObject, ConnectionSource};
pub use workload_identity::WorkloadIdentityDefaults;

use super::error::Error;
use crate::acs::AcsRateLimiter;
use crate::api::{AcsConnection, ClusterAcsConnection, ConnectionKind, ConnectionRef};
use crate::policy::endpoint::AllowedEndpoints;
use access::{ByName, Labels, NamespaceAccess, NamespaceLabels};
use clients::ClientCache;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::core::SelectorExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use source::kind_name;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The connections in the watch caches, their built clients and the namespace labels seen.
pub struct Connections {
    client: Client,
    namespaced: Store<AcsConnection>,
    cluster: Store<ClusterAcsConnection>,
    acs_timeout: Duration,
    /// Connect and first-byte bounds of ACS calls (see [`crate::acs::ClientOptions`]).
    acs_connect_timeout: Duration,
    acs_first_byte_timeout: Duration,
    workload_identity: WorkloadIdentityDefaults,
    clients: ClientCache,
    namespace_labels: NamespaceLabels,
    allowed_endpoints: AllowedEndpoints,
}

impl Connections {
    pub fn new(
        client: Client,
        namespaced: Store<AcsConnection>,
        cluster: Store<ClusterAcsConnection>,
        acs_timeout: Duration,
        workload_identity: WorkloadIdentityDefaults,
        new_limiter: Box<dyn Fn() -> Arc<AcsRateLimiter> + Send + Sync>,
    ) -> Self {
        Self {
            client,
            namespaced,
            cluster,
            acs_timeout,
            acs_connect_timeout: crate::acs::ClientOptions::DEFAULT_CONNECT_TIMEOUT,
            acs_first_byte_timeout: crate::acs::ClientOptions::DEFAULT_FIRST_BYTE_TIMEOUT,
            workload_identity,
            clients: ClientCache::new(new_limiter),
            namespace_labels: NamespaceLabels::new(access::NAMESPACE_LABELS_TTL),
            allowed_endpoints: AllowedEndpoints::default(),
        }
    }

    /// At most this many distinct clients held by one namespace's AcsConnections.
    pub fn with_max_clients_per_namespace(mut self, max: usize) -> Self {
        self.clients.set_max_per_namespace(max);
        self
    }

    /// Bounds of connecting to ACS and of the first byte of its answers.
    pub fn with_timeouts(mut self, connect: Duration, first_byte: Duration) -> Self {
        self.acs_connect_timeout = connect;
        self.acs_first_byte_timeout = first_byte;
        self
    }

    /// Where requests may go (ACS's domains unless widened): checked before a client is built.
    pub fn with_allowed_endpoints(mut self, allowed: AllowedEndpoints) -> Self {
        self.allowed_endpoints = allowed;
        self
    }

    /// The connection object an identity in `namespace` refers to, from the watch cache.
    pub fn source(&self, namespace: &str, r: &ConnectionRef) -> Result<ConnectionSource, Error> {
        match r.kind {
            ConnectionKind::AcsConnection => self
                .namespaced
                .get(&ObjectRef::new(&r.name).within(namespace))
                .map(|c| c.source()),
            ConnectionKind::ClusterAcsConnection => self
                .cluster
                .get(&ObjectRef::new(&r.name))
                .map(|c| c.source()),
        }
        .ok_or_else(|| Error::ConnectionNotFound {
            kind: kind_name(r.kind),
            name: r.name.clone(),
        })
    }

    /// A client for the connection an identity in `namespace` refers to. The namespace is
    /// checked on every call, since a cluster connection's client serves all namespaces.
    pub async fn resolve(
        &self,
        namespace: &str,
        r: &ConnectionRef,
    ) -> Result<Arc<Resolved>, Error> {
        let source = self.source(namespace, r)?;
        if let Some(allowed) = &source.allowed {
            self.check_allowed(allowed, &r.name, namespace).await?;
        }
        self.client_for(&source).await
    }

    /// The client a connection object holds, or the one it now needs (see [`clients`]).
    async fn client_for(&self, source: &ConnectionSource) -> Result<Arc<Resolved>, Error> {
        if let Some(hit) = self.clients.get(&source.origin, &source.built_from) {
            return Ok(hit);
        }
        // Before a namespace's clients are counted: deleted connections hold none.
        self.clients.release_gone(|(kind, namespace, name), uid| {
            let uid_of = |meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
                meta.uid.as_deref() == Some(uid)
            };
            match kind {
                ConnectionKind::AcsConnection => self
                    .namespaced
                    .get(&ObjectRef::new(name).within(namespace))
                    .is_some_and(|c| uid_of(&c.metadata)),
                ConnectionKind::ClusterAcsConnection => self
                    .cluster
                    .get(&ObjectRef::new(name))
                    .is_some_and(|c| uid_of(&c.metadata)),
            }
        });
        self.build(source).await
    }

    /// What the connection lets `namespace` do besides using it. `adopting`: whether the
    /// identity asks to adopt (only then may namespace labels be read for it).
    pub async fn grants(
        &self,
        namespace: &str,
        r: &ConnectionRef,
        adopting: bool,
    ) -> Result<Grants, Error> {
        let source = self.source(namespace, r)?;
        let may_adopt = match (&source.tenancy.adoption, adopting) {
            (_, false) | (Adoption::Anyone, _) => true,
            (Adoption::Nobody, true) => false,
            (Adoption::Namespaces(access), true) => {
                self.admits(access, namespace, &r.name, "adoptionAllowedNamespaces")
                    .await?
            }
        };
        Ok(Grants {
            may_adopt,
            max_identities: source.tenancy.max_identities_per_namespace,
        })
    }

    /// Checks that a connection is usable: its Secrets hold a connection string (and CA
    /// bundle), or its workload identity is complete and the token file readable. Returns the
    /// endpoint and a summary. Reads Secrets and the token file; never calls ACS or Entra.
    pub async fn check(&self, source: &ConnectionSource) -> Result<(String, String), Error> {
        let resolved = self.client_for(source).await?;
        Ok((
            resolved.client.endpoint().to_string(),
            resolved.summary.clone(),
        ))
    }

    /// The next use of a connection that reads this Secret reads it again (its client serves
    /// on if the Secret still says the same).
    pub fn forget_secret(&self, namespace: &str, name: &str) {
        self.clients.forget_secret(namespace, name);
    }

    /// The Secrets the cached clients were built from and the failed builds tried, each with
    /// the version read.
    pub fn secrets_read(&self) -> Vec<crate::policy::secret_versions::Read> {
        self.clients.secrets_read()
    }

    /// The connections (kind, namespace for namespaced ones, name) that read this Secret.
    pub fn connections_using_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Vec<(ConnectionKind, Option<String>, String)> {
        let mut users = readers_of(&self.namespaced, namespace, name);
        users.extend(readers_of(&self.cluster, namespace, name));
        users
    }

    /// See [`access`] for why labels are remembered and for how long.
    async fn check_allowed(
        &self,
        allowed: &NamespaceAccess,
        name: &str,
        namespace: &str,
    ) -> Result<(), Error> {
        if self
            .admits(allowed, namespace, name, "allowedNamespaces")
            .await?
        {
            return Ok(());
        }
        Err(Error::ConnectionNotAllowed {
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// Whether `access` (the field `field` of ClusterAcsConnection `name`) admits `namespace`.
    async fn admits(
        &self,
        access: &NamespaceAccess,
        namespace: &str,
        name: &str,
        field: &str,
    ) -> Result<bool, Error> {
        Ok(match access.by_name(namespace) {
            ByName::Allowed => true,
            ByName::Denied => false,
            ByName::ByLabels(selector) => selector.matches(&self.labels_of(namespace).await?),
            ByName::InvalidSelector(why) => {
                return Err(Error::InvalidConnection(format!(
                    "ClusterAcsConnection {name}: {field}.selector: {why}"
                )));
            }
        })
    }

    async fn labels_of(&self, namespace: &str) -> Result<Labels, Error> {
        if let Some(labels) = self.namespace_labels.fresh(namespace, Instant::now()) {
            return Ok(labels);
        }
        // Stamped before sending: the labels are at least this recent.
        let asked = Instant::now();
        let ns = Api::<Namespace>::all(self.client.clone())
            .get(namespace)
            .await?;
        let labels = ns.metadata.labels.unwrap_or_default();
        self.namespace_labels
            .remember(namespace, labels.clone(), asked);
        Ok(labels)
    }
}

/// What a connection lets one namespace do besides using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grants {
    /// May adopt existing ACS identities (`spec.identityId`).
    pub may_adopt: bool,
    /// At most this many AcsIdentities of the namespace may use the connection.
    pub max_identities: Option<u32>,
}

/// The objects in `store` that read the Secret `namespace`/`name`, as (kind, namespace, name).
fn readers_of<K: ConnectionObject>(
    store: &Store<K>,
    namespace: &str,
    name: &str,
) -> Vec<(ConnectionKind, Option<String>, String)> {
    store
        .state()
        .iter()
        .filter(|c| c.source().reads_secret(namespace, name))
        .map(|c| (K::KIND, c.namespace(), c.name_any()))
        .collect()
}

#[cfg(test)]
mod tests {
    //! `resolve` against a fake API server that counts the requests it serves.

    use super::*;
    use http_body_util::Full;
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use kube::runtime::watcher;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Served objects by path; every request is counted by path.
    #[derive(Default)]
    struct FakeApi {
        objects: Mutex<HashMap<String, serde_json::Value>>,
        requests: Mutex<HashMap<String, usize>>,
    }

    impl FakeApi {
        fn serve(&self, path: &str, object: serde_json::Value) {
            self.objects.lock().unwrap().insert(path.into(), object);
        }

        fn requests(&self, path: &str) -> usize {
            self.requests
                .lock()
                .unwrap()
                .get(path)
                .copied()
                .unwrap_or(0)
        }

        fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
            let path = request.uri().path().to_string();
            *self
                .requests
                .lock()
                .unwrap()
                .entry(path.clone())
                .or_default() += 1;
            let body = self.objects.lock().unwrap().get(&path).cloned();
            let (status, body) = match body {
                Some(body) => (200, body),
                None => (
                    404,
                    serde_json::json!({"kind": "Status", "code": 404, "reason": "NotFound"}),
                ),
            };
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            response
        }

        async fn client(self: &Arc<Self>) -> Client {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let api = self.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let api = api.clone();
                    let service = hyper::service::service_fn(move |r| {
                        let response = api.answer(r);
                        async move { Ok::<_, std::convert::Infallible>(response) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::spawn(connection);
                }
            });
            Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap()
        }
    }

    const TEAM: &str = "/api/v1/namespaces/team";

    /// Connections with one ClusterAcsConnection `shared`, usable from namespace `listed` and
    /// from those labelled `tenant=a` (or another selector), and a fake API server serving its
    /// Secret.
    async fn connections(labels_ttl: Duration) -> (Connections, Arc<FakeApi>) {
        let tenant_a = serde_json::json!({"matchLabels": {"tenant": "a"}});
        connections_selecting(labels_ttl, tenant_a).await
    }

    async fn connections_selecting(
        labels_ttl: Duration,
        selector: serde_json::Value,
    ) -> (Connections, Arc<FakeApi>) {
        let api = Arc::new(FakeApi::default());
        api.serve(
            "/api/v1/namespaces/platform/secrets/acs",
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "acs"},
                "data": {"connectionString": "ZW5kcG9pbnQ9aHR0cHM6Ly9hLztBY2Nlc3NLZXk9YzJWamNtVjA="},
            }),
        );
        let connection: ClusterAcsConnection = serde_json::from_value(serde_json::json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "ClusterAcsConnection",
            "metadata": {"name": "shared", "uid": "u-1", "generation": 1},
            "spec": {
                "connectionStringSecretRef": {"namespace": "platform", "name": "acs"},
                "allowedNamespaces": {"names": ["listed"], "selector": selector},
            },
        }))
        .unwrap();
        let (cluster, mut writer) = kube::runtime::reflector::store();
        writer.apply_watcher_event(&watcher::Event::Apply(connection));
        let (namespaced, _) = kube::runtime::reflector::store();
        let limiter = || Arc::new(AcsRateLimiter::at_acs_limits());
        let mut connections = Connections::new(
            api.client().await,
            namespaced,
            cluster,
            Duration::from_secs(1),
            WorkloadIdentityDefaults::default(),
            Box::new(limiter),
        )
        .with_allowed_endpoints(AllowedEndpoints::acs_and_parsed(["a"]).unwrap());
        connections.namespace_labels = NamespaceLabels::new(labels_ttl);
        (connections, api)
    }

    fn labelled(tenant: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "team", "labels": {"tenant": tenant}},
        })
    }

    fn shared() -> ConnectionRef {
        ConnectionRef {
            kind: ConnectionKind::ClusterAcsConnection,
            name: "shared".into(),
        }
    }

    #[tokio::test]
    async fn a_listed_namespace_is_admitted_without_reading_it() {
        let (connections, api) = connections(Duration::from_secs(30)).await;
        connections.resolve("listed", &shared()).await.unwrap();
        connections.resolve("listed", &shared()).await.unwrap();
        assert_eq!(api.requests("/api/v1/namespaces/listed"), 0);
        assert_eq!(
            api.requests("/api/v1/namespaces/platform/secrets/acs"),
            1,
            "the client is built once"
        );
    }

    #[tokio::test]
    async fn a_selected_namespace_is_read_once_per_ttl() {
        let (connections, api) = connections(Duration::from_secs(30)).await;
        api.serve(TEAM, labelled("a"));
        for _ in 0..3 {
            connections.resolve("team", &shared()).await.unwrap();
        }
        assert_eq!(api.requests(TEAM), 1);
    }

    #[tokio::test]
    async fn a_namespace_whose_label_is_removed_loses_access_once_the_ttl_is_over() {
        let ttl = Duration::from_millis(200);
        let (connections, api) = connections(ttl).await;
        api.serve(TEAM, labelled("a"));
        connections.resolve("team", &shared()).await.unwrap();
        api.serve(TEAM, labelled("b"));
        tokio::time::sleep(ttl).await;
        let refused = connections.resolve("team", &shared()).await.unwrap_err();
        assert_eq!(
            refused.reason(),
            crate::policy::Reason::ConnectionNotAllowed,
            "{refused}"
        );
        assert_eq!(api.requests(TEAM), 2);
    }

    #[tokio::test]
    async fn a_namespace_never_labelled_is_refused() {
        let (connections, api) = connections(Duration::from_secs(30)).await;
        api.serve(TEAM, labelled("b"));
        let refused = connections.resolve("team", &shared()).await.unwrap_err();
        assert_eq!(
            refused.reason(),
            crate::policy::Reason::ConnectionNotAllowed,
            "{refused}"
        );
        assert_eq!(
            api.requests("/api/v1/namespaces/platform/secrets/acs"),
            0,
            "refused before any Secret is read"
        );
    }

    #[tokio::test]
    async fn an_invalid_selector_admits_no_namespace_and_says_why() {
        let bogus =
            serde_json::json!({"matchExpressions": [{"key": "tenant", "operator": "NotIn"}]});
        let (connections, api) = connections_selecting(Duration::from_secs(30), bogus).await;
        api.serve(TEAM, labelled("a"));
        let refused = connections.resolve("team", &shared()).await.unwrap_err();
        assert_eq!(refused.reason(), crate::policy::Reason::InvalidConnection);
        assert_eq!(
            refused.to_string(),
            "invalid connection: ClusterAcsConnection shared: allowedNamespaces.selector: tenant NotIn needs values"
        );
        assert_eq!(api.requests(TEAM), 0);
        connections.resolve("listed", &shared()).await.unwrap();
    }

    /// Connections in namespace `team` (and one in `other`), each reading its own Secret of
    /// the same name; `keys[i]` is the access key in connection `c{i}`'s Secret.
    async fn namespaced(
        keys: &[&str],
        max: usize,
    ) -> (
        Connections,
        Arc<FakeApi>,
        kube::runtime::reflector::store::Writer<AcsConnection>,
    ) {
        let api = Arc::new(FakeApi::default());
        let (store, mut writer) = kube::runtime::reflector::store();
        for (i, key) in keys.iter().enumerate() {
            serve_key(&api, "team", &format!("s{i}"), key);
            writer.apply_watcher_event(&watcher::Event::Apply(conn("team", i)));
        }
        serve_key(&api, "other", "s0", keys[0]);
        writer.apply_watcher_event(&watcher::Event::Apply(conn("other", 0)));
        let limiter = || Arc::new(AcsRateLimiter::at_acs_limits());
        let connections = Connections::new(
            api.client().await,
            store,
            kube::runtime::reflector::store().0,
            Duration::from_secs(1),
            WorkloadIdentityDefaults::default(),
            Box::new(limiter),
        )
        .with_allowed_endpoints(AllowedEndpoints::acs_and_parsed(["a"]).unwrap())
        .with_max_clients_per_namespace(max);
        (connections, api, writer)
    }

    fn serve_key(api: &FakeApi, namespace: &str, name: &str, key: &str) {
        use base64::Engine;
        let text = format!("endpoint=https://a/;accesskey={key}");
        let data = base64::engine::general_purpose::STANDARD.encode(text);
        api.serve(
            &format!("/api/v1/namespaces/{namespace}/secrets/{name}"),
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                "data": {"connectionString": data},
            }),
        );
    }

    fn conn(namespace: &str, i: usize) -> AcsConnection {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsConnection",
            "metadata": {"name": format!("c{i}"), "namespace": namespace,
                         "uid": format!("{namespace}-{i}"), "generation": 1},
            "spec": {"connectionStringSecretRef": {"name": format!("s{i}")}},
        }))
        .unwrap()
    }

    fn own(i: usize) -> ConnectionRef {
        ConnectionRef {
            kind: ConnectionKind::AcsConnection,
            name: format!("c{i}"),
        }
    }

    const KEY_A: &str = "c2VjcmV0";
    const KEY_B: &str = "b3RoZXI=";
    const KEY_C: &str = "dGhpcmQ=";

    #[tokio::test]
    async fn connections_that_say_the_same_share_one_client() {
        let (connections, _, _) = namespaced(&[KEY_A, KEY_A, KEY_A], 1).await;
        let first = connections.resolve("team", &own(0)).await.unwrap();
        for i in 1..3 {
            let same = connections.resolve("team", &own(i)).await.unwrap();
            assert!(Arc::ptr_eq(&first, &same), "c{i} built its own client");
        }
        // Another namespace with the same key shares it too (an access key is its holder's).
        let other = connections.resolve("other", &own(0)).await.unwrap();
        assert!(Arc::ptr_eq(&first, &other));
        assert_eq!(connections.clients.clients_alive(), 1);
    }

    #[tokio::test]
    async fn a_secret_touch_that_changes_nothing_keeps_the_client() {
        let (connections, api, _) = namespaced(&[KEY_A], 10).await;
        let before = connections.resolve("team", &own(0)).await.unwrap();
        connections.forget_secret("team", "s0");
        let after = connections.resolve("team", &own(0)).await.unwrap();
        assert!(
            Arc::ptr_eq(&before, &after),
            "rebuilt for an unchanged Secret"
        );
        assert_eq!(api.requests("/api/v1/namespaces/team/secrets/s0"), 2);
        // A changed key is a new client; the old one goes with its last holder.
        serve_key(&api, "team", "s0", KEY_B);
        connections.forget_secret("team", "s0");
        let changed = connections.resolve("team", &own(0)).await.unwrap();
        assert!(!Arc::ptr_eq(&before, &changed));
        assert_ne!(before.fingerprint, changed.fingerprint);
        drop(before);
        drop(after);
        assert_eq!(connections.clients.clients_alive(), 1);
    }

    #[tokio::test]
    async fn a_namespace_holds_a_bounded_number_of_distinct_clients() {
        let keys = [KEY_A, KEY_B, KEY_C, KEY_A];
        let (connections, _, mut writer) = namespaced(&keys, 2).await;
        connections.resolve("team", &own(0)).await.unwrap();
        connections.resolve("team", &own(1)).await.unwrap();
        let refused = connections.resolve("team", &own(2)).await.unwrap_err();
        assert_eq!(
            refused.reason(),
            crate::policy::Reason::ConnectionLimitReached,
            "{refused}"
        );
        assert!(refused.to_string().contains("namespace team"), "{refused}");
        // One that says what another already does costs nothing more.
        connections.resolve("team", &own(3)).await.unwrap();
        // Another namespace has its own share.
        connections.resolve("other", &own(0)).await.unwrap();
        // A deleted connection frees its share.
        writer.apply_watcher_event(&watcher::Event::Delete(conn("team", 1)));
        connections.resolve("team", &own(2)).await.unwrap();
    }

    /// What a lost watch of Secrets compares: the version each client read, with the
    /// Secret's version now.
    #[tokio::test]
    async fn the_versions_read_tell_which_secret_changed_since() {
        use crate::controller::connection_secrets::versions_now;
        use crate::policy::secret_versions::{changed, to_ask};
        const PATH: &str = "/api/v1/namespaces/platform/secrets/acs";
        let (connections, api) = connections(Duration::from_secs(30)).await;
        let at = |version: &str| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "acs", "namespace": "platform", "resourceVersion": version},
                "data": {"connectionString": "ZW5kcG9pbnQ9aHR0cHM6Ly9hLztBY2Nlc3NLZXk9YzJWamNtVjA="},
            })
        };
        let client = api.client().await;
        let acs = ("platform".to_string(), "acs".to_string());
        // A build that found no Secret waits for one: its appearing is a change.
        api.objects.lock().unwrap().remove(PATH);
        connections.resolve("listed", &shared()).await.unwrap_err();
        let read = connections.secrets_read();
        assert_eq!(read, [(acs.0.clone(), acs.1.clone(), None)]);
        let now = versions_now(&client, &to_ask(&read)).await.unwrap();
        assert!(changed(&read, &now).is_empty(), "still missing");
        api.serve(PATH, at("1"));
        let now = versions_now(&client, &to_ask(&read)).await.unwrap();
        assert_eq!(changed(&read, &now), vec![acs.clone()], "there now");

        connections.resolve("listed", &shared()).await.unwrap();
        let read = connections.secrets_read();
        assert_eq!(
            read,
            [(acs.0.clone(), acs.1.clone(), Some("1".to_string()))]
        );
        let now = versions_now(&client, &to_ask(&read)).await.unwrap();
        assert!(changed(&read, &now).is_empty(), "unchanged");

        api.serve(PATH, at("2"));
        let now = versions_now(&client, &to_ask(&read)).await.unwrap();
        assert_eq!(changed(&read, &now), vec![acs.clone()], "rotated");
        api.objects.lock().unwrap().remove(PATH);
        let now = versions_now(&client, &to_ask(&read)).await.unwrap();
        assert_eq!(now[&acs], None);
        assert_eq!(changed(&read, &now), vec![acs], "deleted");

        // A client already told to read its Secret again needs no re-check.
        connections.forget_secret("platform", "acs");
        assert!(connections.secrets_read().is_empty());
    }
}
