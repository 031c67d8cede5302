//! What GitOps tools read from the operator's objects, proven on objects the operator really
//! wrote: kstatus (Flux, `kubectl wait`, cli-utils) must say Current / InProgress / Failed /
//! Terminating as a user expects, and the Argo CD health checks and refresh action under
//! `deploy/argocd/resource_customizations` must pass their own tests (Argo CD's test layout)
//! when run the way Argo CD runs them.
//!
//! The testdata of those Lua tests is captured here from the operator's status in each
//! scenario ([`capture`]): `UPDATE_TESTDATA=1 cargo test --test gitops` rewrites it; without
//! it, a committed file that differs from what the operator now writes in the fields the Lua
//! scripts read fails the test.

mod argocd;
mod capture;
use acs_test_support as support;
