//! Pure decisions, no I/O: when a token is renewed, how long to back off, what to do next
//! with an identity, and what its Ready condition says. Each is a small function with a
//! table test beside it; the controller gathers facts, asks here, and acts.

pub mod backoff;
pub mod decision;
pub mod readiness;
pub mod schedule;

pub use backoff::{admission_recheck, retry_delay};
pub use decision::{
    Decision, IssueReason, IssuedRecord, Observed, SecretState, TokenParams, decide,
};
pub use readiness::{Readiness, readiness};
pub use schedule::time_until;
pub use schedule::{RenewBefore, renewal_time};
