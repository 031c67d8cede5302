//! Helpers for tests that run the emulator (this crate's and its users'), behind the
//! `testing` feature: an in-process emulator with a fixed key and a client of its admin API,
//! a throw-away CA, and the official SDKs installed for a test run ([`sdks`]), with a `localhost`/`127.0.0.1` server certificate. They panic on
//! failure, as test code does.

mod admin;
mod sdk;
mod tls;

pub use admin::{Admin, TEST_KEY, start_emulator};
pub use sdk::{SETUP_TIMEOUT, Sdks, repo_root, sdks};
pub use tls::{TestCa, test_ca};
