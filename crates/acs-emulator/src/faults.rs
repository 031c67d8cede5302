//! Fault injection for tests: the next N data-plane requests (optionally of one operation)
//! are delayed, answered with a chosen error status, or both. Rules are used up in the order
//! they were added; a request takes at most one rule.
//!
//! By default a fault strikes before the request is served, so it has no effect. With
//! `afterCommit` the request is served first and the fault replaces or delays its answer: the
//! change happened but the client sees a failure or a timeout. That is the uncertain outcome a
//! client of a non-idempotent create has to survive.

use super::operation::Operation;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// Longest delay a fault may ask for, so a typo cannot wedge a test run.
pub const MAX_DELAY: Duration = Duration::from_secs(600);

/// A fault as the admin API takes and shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// Operation name; `null`/absent matches every data-plane request.
    #[serde(default)]
    pub operation: Option<String>,
    /// How many requests the fault applies to.
    #[serde(default = "one")]
    pub count: u32,
    /// Status to answer instead of serving the request (400..=599).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` seconds sent with `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
    /// Delay before answering (with `status`) or serving the request (without).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Serve the request first, then delay and/or fail its answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_commit: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultSpecError {
    #[error(transparent)]
    UnknownOperation(#[from] super::operation::UnknownOperation),
    #[error("a fault needs `status`, `delayMs` or both")]
    NothingToDo,
    #[error("`status` must be within 400..=599")]
    BadStatus,
    #[error("`count` must be at least 1")]
    ZeroCount,
    #[error("`delayMs` must be at most 600000")]
    DelayTooLong,
    #[error("`retryAfterSeconds` needs a `status`")]
    RetryAfterWithoutStatus,
}

/// What a faulted request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub delay: Option<Duration>,
    pub status: Option<u16>,
    pub retry_after_seconds: Option<u64>,
    /// Strikes after the request was served (its change kept) instead of before.
    pub after_commit: bool,
}

#[derive(Debug, Clone)]
struct Rule {
    operation: Option<Operation>,
    remaining: u32,
    fault: Fault,
}

impl Rule {
    fn from_spec(spec: &FaultSpec) -> Result<Self, FaultSpecError> {
        let operation = spec
            .operation
            .as_deref()
            .map(super::operation::parse)
            .transpose()?;
        if spec.status.is_none() && spec.delay_ms.is_none() {
            return Err(FaultSpecError::NothingToDo);
        }
        if spec.status.is_some_and(|s| !(400..=599).contains(&s)) {
            return Err(FaultSpecError::BadStatus);
        }
        if spec.retry_after_seconds.is_some() && spec.status.is_none() {
            return Err(FaultSpecError::RetryAfterWithoutStatus);
        }
        if spec.count == 0 {
            return Err(FaultSpecError::ZeroCount);
        }
        let delay = spec.delay_ms.map(Duration::from_millis);
        if delay.is_some_and(|d| d > MAX_DELAY) {
            return Err(FaultSpecError::DelayTooLong);
        }
        Ok(Self {
            operation,
            remaining: spec.count,
            fault: Fault {
                delay,
                status: spec.status,
                retry_after_seconds: spec.retry_after_seconds,
                after_commit: spec.after_commit,
            },
        })
    }

    fn to_spec(&self) -> FaultSpec {
        FaultSpec {
            operation: self.operation.map(|op| op.as_str().to_string()),
            count: self.remaining,
            status: self.fault.status,
            retry_after_seconds: self.fault.retry_after_seconds,
            delay_ms: self
                .fault
                .delay
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            after_commit: self.fault.after_commit,
        }
    }

    /// A request without an operation of its own (`None`) matches only faults for any.
    fn applies_to(&self, op: Option<Operation>) -> bool {
        match (self.operation, op) {
            (None, _) => true,
            (Some(wanted), Some(op)) => super::operation::covers(wanted, op),
            (Some(_), None) => false,
        }
    }
}

/// The pending faults, in the order they were added.
#[derive(Debug, Default)]
pub struct FaultPlan {
    rules: VecDeque<Rule>,
}

impl FaultPlan {
    pub fn add(&mut self, spec: &FaultSpec) -> Result<(), FaultSpecError> {
        self.rules.push_back(Rule::from_spec(spec)?);
        Ok(())
    }

    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The pending faults with their remaining counts.
    pub fn pending(&self) -> Vec<FaultSpec> {
        self.rules.iter().map(Rule::to_spec).collect()
    }

    /// Uses up one application of the first rule that matches `op`.
    pub fn take(&mut self, op: Option<Operation>) -> Option<Fault> {
        let index = self.rules.iter().position(|rule| rule.applies_to(op))?;
        let rule = &mut self.rules[index];
        let fault = rule.fault;
        rule.remaining -= 1;
        if rule.remaining == 0 {
            self.rules.remove(index);
        }
        Some(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> FaultSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_fault_applies_count_times_then_is_gone() {
        let mut plan = FaultPlan::default();
        plan.add(&spec(r#"{"count":2,"status":503,"retryAfterSeconds":2}"#))
            .unwrap();
        let expected = Fault {
            delay: None,
            status: Some(503),
            retry_after_seconds: Some(2),
            after_commit: false,
        };
        assert_eq!(plan.take(Some(Operation::IssueToken)), Some(expected));
        assert_eq!(plan.take(Some(Operation::DeleteIdentity)), Some(expected));
        assert_eq!(plan.take(Some(Operation::IssueToken)), None);
        assert!(plan.pending().is_empty());
    }

    #[test]
    fn requests_without_an_operation_take_only_faults_for_any() {
        let mut plan = FaultPlan::default();
        plan.add(&spec(r#"{"operation":"issueToken","status":500}"#))
            .unwrap();
        assert_eq!(plan.take(None), None);
        plan.add(&spec(r#"{"operation":null,"status":503}"#))
            .unwrap();
        assert_eq!(plan.take(None).unwrap().status, Some(503));
        assert_eq!(
            plan.take(Some(Operation::IssueToken)).unwrap().status,
            Some(500)
        );
    }

    #[test]
    fn operation_filter_and_order() {
        let mut plan = FaultPlan::default();
        plan.add(&spec(r#"{"operation":"issueToken","status":500}"#))
            .unwrap();
        plan.add(&spec(r#"{"operation":null,"delayMs":1500}"#))
            .unwrap();
        let delayed = plan.take(Some(Operation::RevokeTokens)).unwrap();
        assert_eq!(delayed.delay, Some(Duration::from_millis(1500)));
        assert_eq!(delayed.status, None);
        assert_eq!(
            plan.take(Some(Operation::IssueToken)).unwrap().status,
            Some(500)
        );
        assert_eq!(plan.take(Some(Operation::IssueToken)), None);
    }

    #[test]
    fn create_identity_faults_cover_create_with_token() {
        let mut plan = FaultPlan::default();
        plan.add(&spec(r#"{"operation":"createIdentity","status":429}"#))
            .unwrap();
        assert!(
            plan.take(Some(Operation::CreateIdentityWithToken))
                .is_some()
        );
    }

    #[test]
    fn after_commit_is_kept_and_shown_only_when_set() {
        let mut plan = FaultPlan::default();
        plan.add(&spec(
            r#"{"operation":"createIdentity","status":503,"afterCommit":true}"#,
        ))
        .unwrap();
        plan.add(&spec(r#"{"status":500}"#)).unwrap();
        let shown = serde_json::to_value(plan.pending()).unwrap();
        assert_eq!(shown[0]["afterCommit"], true);
        assert!(shown[1].get("afterCommit").is_none());
        assert!(
            plan.take(Some(Operation::CreateIdentity))
                .unwrap()
                .after_commit
        );
        assert!(
            !plan
                .take(Some(Operation::CreateIdentity))
                .unwrap()
                .after_commit
        );
    }

    #[test]
    fn pending_shows_remaining_counts() {
        let mut plan = FaultPlan::default();
        plan.add(&spec(
            r#"{"operation":"deleteIdentity","count":3,"status":503}"#,
        ))
        .unwrap();
        plan.take(Some(Operation::DeleteIdentity));
        let pending = plan.pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].count, 2);
        assert_eq!(pending[0].operation.as_deref(), Some("deleteIdentity"));
    }

    #[test]
    fn invalid_specs_are_refused() {
        let mut plan = FaultPlan::default();
        for (json, error) in [
            (r#"{"count":1}"#, FaultSpecError::NothingToDo),
            (r#"{"afterCommit":true}"#, FaultSpecError::NothingToDo),
            (r#"{"status":200}"#, FaultSpecError::BadStatus),
            (r#"{"status":503,"count":0}"#, FaultSpecError::ZeroCount),
            (r#"{"delayMs":600001}"#, FaultSpecError::DelayTooLong),
            (
                r#"{"delayMs":1,"retryAfterSeconds":1}"#,
                FaultSpecError::RetryAfterWithoutStatus,
            ),
        ] {
            assert_eq!(plan.add(&spec(json)), Err(error), "{json}");
        }
        assert!(matches!(
            plan.add(&spec(r#"{"operation":"nope","status":500}"#)),
            Err(FaultSpecError::UnknownOperation(_))
        ));
        assert!(plan.pending().is_empty());
    }
}
