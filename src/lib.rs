//! acs-identity-operator: Azure Communication Services identities and access tokens for
//! Kubernetes workloads.
//!
//! - [`acs`]: the ACS Identity data-plane client (connection strings, HMAC signing, operations),
//!   the `acs-client` crate of this workspace. It knows nothing about Kubernetes.
//! - [`api`]: the custom resource types (AcsIdentity, AcsConnection, ClusterAcsConnection).
//! - [`controller`]: the reconcilers: thin orchestration of watches, policy and I/O.
//! - [`health`], [`leader`]: the /metrics, /healthz, /readyz endpoint and leader election.
//! - [`metrics`]: Prometheus metrics of the operator.
//! - [`memory`]: handing what a burst of work freed back to the system.
//! - [`policy`]: pure decisions (renewal schedule, backoff, next action, readiness), no I/O.

/// The ACS Identity client, its own crate (`crates/acs-client`): re-exported so that the
/// operator's modules name it as one of their own layers.
pub use acs_client as acs;
pub mod api;
pub mod controller;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod leader;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod telemetry;
