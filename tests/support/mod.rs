//! What the integration tests share, one module per concern:
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
//! - [`tools`]: the pinned helm, kubectl and promtool (`tests/tools/install`).
//!
//! A test file at `tests/NAME.rs` takes it with `mod support;`; a test binary in a folder
//! (`tests/NAME/main.rs`) needs `#[path = "../support/mod.rs"] mod support;`, as Cargo
//! resolves its modules inside that folder.
//!
//! ```ignore
//! mod support;
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

// Each test binary compiles the whole tree and uses a different part of it.
#![allow(dead_code)]

mod cluster;
pub mod kstatus;
mod namespace;
pub mod operator;
#[cfg(test)] // examples include this tree too, and Cargo gives binaries to tests only
pub mod process;
pub mod tenant;
pub mod tools;

#[allow(unused_imports)] // each test binary uses a different part of the harness
pub use cluster::{client, cluster_config, kubeconfig_env};
pub use namespace::TestNamespace;

use std::future::Future;
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
