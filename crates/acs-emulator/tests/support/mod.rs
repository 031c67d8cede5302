//! The parts of the repository's test support (`tests/support/`) that need no Kubernetes and
//! no operator: an in-process emulator with its admin client, and a throw-away TLS CA.

// Each test binary uses a different part of it.
#![allow(dead_code)]

#[path = "../../../../tests/support/emulator.rs"]
pub mod emulator;
#[path = "../../../../tests/support/tls.rs"]
pub mod tls;
