//! acs-identity-operator: Azure Communication Services identities and access tokens for
//! Kubernetes workloads.
//!
//! - [`acs`]: the ACS Identity data-plane client (connection strings, HMAC signing, operations).
//!   It knows nothing about Kubernetes.
//! - [`emulator`]: a local ACS Identity emulator (HMAC auth, tokens, throttling, admin API),
//!   served by the `acs-emulator` binary.
//! - [`policy`]: pure decisions (renewal schedule, backoff, next action, readiness), no I/O.

pub mod acs;
pub mod emulator;
pub mod policy;
