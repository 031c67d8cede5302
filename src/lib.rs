//! acs-identity-operator: Azure Communication Services identities and access tokens for
//! Kubernetes workloads.
//!
//! - [`acs`]: the ACS Identity data-plane client (connection strings, HMAC signing, operations).
//!   It knows nothing about Kubernetes.
//! - [`api`]: the custom resource types (AcsIdentity, AcsConnection, ClusterAcsConnection).
//! - [`emulator`]: a local ACS Identity emulator (HMAC auth, tokens, throttling, admin API),
//!   served by the `acs-emulator` binary.
//! - [`controller`]: the reconcilers: thin orchestration of watches, policy and I/O.
//! - [`health`], [`leader`]: the /metrics, /healthz, /readyz endpoint and leader election.
//! - [`metrics`]: Prometheus metrics of the operator.
//! - [`policy`]: pure decisions (renewal schedule, backoff, next action, readiness), no I/O.

pub mod acs;
pub mod api;
pub mod controller;
pub mod emulator;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod leader;
pub mod metrics;
pub mod policy;
pub mod telemetry;
