//! Pure decisions, no I/O. Each is a small function with a table test beside it; the
//! controllers gather facts, ask here, and act.
//!
//! - when does a token renew? [`schedule`]
//! - what to do next with an identity? [`decision`]
//! - which state is the token Secret in? [`secret_state`]
//! - when does the operator look again? [`requeue`]
//! - what does the Ready condition say, and must a wait in line be written? [`readiness`]
//! - what does a reason mean? [`reason`]
//! - what does a failure mean: retried, waiting for a change, held back? [`failure`]
//! - may a request go to this endpoint? [`endpoint`]
//! - who may hold which ACS identity, and delete it? [`tenancy`]; who waited for one that left? [`waiting`]
//! - where does an ACS identity live, and is a create's answer one of that resource? [`provenance`]
//! - when is a consuming workload restarted, and with what annotation? [`restart`]
//! - may an ACS call go now (caps in flight, the endpoint's breaker)? [`bulkhead`]
//! - how much of an ACS resource's limits may one of several instances use? [`shard`]
//! - does a create's refusal retire the idempotent create's preview? [`create`]
//! - is a burst of work over, so that freed memory goes back to the system? [`memory`]

pub mod bulkhead;
pub mod create;
pub mod decision;
pub mod endpoint;
pub mod failure;
pub mod memory;
pub mod provenance;
pub mod readiness;
pub mod reason;
pub mod requeue;
pub mod restart;
pub mod schedule;
pub mod secret_state;
pub mod secret_versions;
pub mod shard;
pub mod tenancy;
#[cfg(test)]
mod tenancy_walk;
pub mod waiting;

pub use decision::{
    Decision, IssueReason, Observed, SecretState, TokenParams, TokenRecord, current_token, decide,
    issue_deadline,
};
pub use readiness::{
    Failure, Progress, Raised, Readiness, Setback, Shown, Standing, in_line_needs_writing,
    progress, readiness,
};
pub use reason::Reason;
pub use requeue::{Outcome, next_look, retry_delay};
pub use schedule::{Phase, RenewBefore, check_expiry, renewal_time};
pub use schedule::{time_until, whole_seconds};
