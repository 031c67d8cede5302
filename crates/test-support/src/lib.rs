//! What the operator's integration tests (`tests/`) and benchmarks (`examples/`) share, one
//! module per concern; they take this crate as a dev-dependency (`use acs_test_support as
//! support;`):
//!
//! - [`cluster`]: the Kubernetes API server of the test binary, either the one `KUBECONFIG`
//!   names (kind, AKS, ...) or, when that variable is unset, a local one started once by
//!   `tests/kube-apiserver/cluster up` (see its README for what that server does not do: no
//!   controllers, so no garbage collection and no namespace cascading; RBAC without the
//!   default roles);
//! - [`namespace`]: a namespace of its own for every test, deleted when the test ends;
//! - [`operator`]: one operator test's world (namespace, emulator, operator instance);
//! - [`kstatus`]: the readiness rules Flux and `kubectl wait` apply to an object.
//! - [`tenant`]: a user bound to `view`, `edit` or `admin` in one namespace, acting through
//!   impersonation with only the rights that role gives.
//! - [`process`]: the one launcher of the operator binary (a process of the test's own).
//! - [`seed`]: the state a previous operator left (identities, tokens, statuses, Secrets),
//!   written fast for the 100,000-identity benchmarks and the memory guard.
//! - [`fake_acs`]: a tenant's own "ACS" that answers creates with whatever id it is told.
//! - [`tools`]: the pinned helm, kubectl and promtool (`tests/tools/install`).
//!
//! The scripts behind them (`tests/kube-apiserver/`, `tests/tools/`) and the chart stay where
//! they are; [`workspace_root`] finds them.
//!
//! ```ignore
//! use acs_test_support as support;
//!
//! #[tokio::test]
//! async fn secret_round_trips() {
//!     let ns = support::TestNamespace::create("secret-round-trips").await;
//!     let secrets: Api<Secret> = ns.api();
//!     secrets.create(&PostParams::default(), &secret).await.unwrap();
//!     // ... the namespace is deleted when `ns` is dropped, even on panic.
//! }
//! ```
//!
//! Every wait in a test is bounded: use [`within`].

pub mod cluster;
pub mod fake_acs;
pub mod kstatus;
mod namespace;
pub mod operator;
pub mod process;
pub mod seed;
pub mod tenant;
pub mod tools;

pub use cluster::{client, cluster_config, kubeconfig_env};
pub use namespace::TestNamespace;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// Server-side applies `body` to `api`, completed with apiVersion, kind and name, as field
/// manager `manager` (forcing conflicts).
pub async fn apply_as<K>(
    api: &kube::Api<K>,
    manager: &str,
    name: &str,
    mut body: serde_json::Value,
) -> Result<K, kube::Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    body["apiVersion"] = serde_json::json!(K::api_version(&()));
    body["kind"] = serde_json::json!(K::kind(&()));
    body["metadata"]["name"] = serde_json::json!(name);
    let params = kube::api::PatchParams::apply(manager).force();
    api.patch(name, &params, &kube::api::Patch::Apply(body))
        .await
}

/// How long a test waits for the server to do something it does at once.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Awaits `future` for at most [`TIMEOUT`], panicking with `what` if it takes
/// longer, so a server that never answers fails the test instead of hanging it.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {TIMEOUT:?} waiting for {what}"),
    }
}

/// The workspace's root directory (the operator's package), where the test scripts, the chart
/// and the deploy manifests are.
pub fn workspace_root() -> &'static Path {
    // This crate is crates/test-support.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("crates/test-support lies two levels below the workspace root")
}

/// Retries what the API server may refuse for a moment (429 right after a CRD is established,
/// 5xx, a dropped connection), at most 20 times, waiting a little longer each time.
pub async fn retry_api<T, F, Fut>(call: F) -> Result<T, kube::Error>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        match call().await {
            Err(kube::Error::Api(s)) if (s.code == 429 || s.code >= 500) && attempt < 20 => {}
            Err(kube::Error::HyperError(_) | kube::Error::Service(_)) if attempt < 20 => {}
            other => return other,
        }
        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
    }
}
