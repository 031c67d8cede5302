//! acs-identity-operator: Azure Communication Services identities and access tokens for
//! Kubernetes workloads.
//!
//! - [`acs`]: the ACS Identity data-plane client (connection strings, HMAC signing, operations).
//!   It knows nothing about Kubernetes.
//! - [`policy`]: pure decisions (renewal schedule, backoff, next action, readiness), no I/O.

pub mod acs;
pub mod policy;
