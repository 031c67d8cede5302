//! Prometheus metrics of the operator: per-identity token schedule and readiness, ACS calls,
//! and reconciles. Per-identity series are removed when the identity is deleted.

use crate::acs::{AcsError, Operation};
use crate::api::AcsIdentityStatus;
use crate::policy::failure::Class;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

mod identity_gauges;
mod waiting;
use identity_gauges::{IdentityGauges, IdentityRecord, ReadyValue};
use waiting::WaitingGauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RestartLabels {
    kind: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: String,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    identities: Arc<IdentityGauges>,
    waiting: Arc<WaitingGauge>,
    acs_requests: Family<RequestLabels, Counter>,
    acs_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    reconciles: Family<ResultLabels, Counter>,
    reconcile_failures: Family<CategoryLabels, Counter>,
    reconcile_duration: Histogram,
    leader: Gauge,
    restarts: Family<RestartLabels, Counter>,
    restarts_skipped: Family<SkipLabels, Counter>,
    acs_refused: Family<RefusalLabels, Counter>,
    acs_circuits_open: Gauge,
    idempotent_create_fallbacks: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            identities: Arc::default(),
            waiting: Arc::default(),
            acs_requests: Family::default(),
            acs_duration: Family::new_with_constructor(seconds_histogram),
            reconciles: Family::default(),
            reconcile_failures: Family::default(),
            reconcile_duration: seconds_histogram(),
            leader: Gauge::default(),
            restarts: Family::default(),
            restarts_skipped: Family::default(),
            acs_refused: Family::default(),
            acs_circuits_open: Gauge::default(),
            idempotent_create_fallbacks: Counter::default(),
            registry: Registry::default(),
        };
        registry.register_collector(Box::new(m.waiting.clone()));
        registry.register(
            "acs_api_requests",
            "ACS Identity requests by operation and HTTP status (or error kind)",
            m.acs_requests.clone(),
        );
        registry.register(
            "acs_api_request_duration_seconds",
            "ACS Identity request latency by operation",
            m.acs_duration.clone(),
        );
        registry.register(
            "acs_identity_reconciles",
            "AcsIdentity reconciles by result",
            m.reconciles.clone(),
        );
        registry.register(
            "acs_identity_reconcile_failures",
            "Failed AcsIdentity reconciles by error category",
            m.reconcile_failures.clone(),
        );
        registry.register(
            "acs_identity_reconcile_duration_seconds",
            "Duration of AcsIdentity reconciles",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "acs_identity_operator_leader",
            "1 while this replica reconciles (it holds the leader Lease, or runs without leader election), 0 while it starts or stands by",
            m.leader.clone(),
        );
        registry.register(
            "acs_identity_workload_restarts",
            "Restarts of workloads that consume a renewed token, by kind and result (done, failed)",
            m.restarts.clone(),
        );
        registry.register(
            "acs_identity_workload_restarts_skipped",
            "Restarts held back, by kind and reason (debounced, rate_limited), once per wait",
            m.restarts_skipped.clone(),
        );
        // No endpoint label: tenants choose endpoints, so their number has no bound.
        registry.register(
            "acs_api_calls_refused",
            "ACS calls not made by the bulkheads, by reason (endpoint_busy, namespace_busy: the most calls in flight, looked at again shortly; circuit_open: the endpoint's breaker is open)",
            m.acs_refused.clone(),
        );
        registry.register(
            "acs_api_circuits_open",
            "ACS endpoints whose circuit breaker is open or half-open (calls refused at once)",
            m.acs_circuits_open.clone(),
        );
        registry.register(
            "acs_idempotent_create_fallbacks",
            "Connection clients whose ACS resource refused the idempotent create's preview api-version (customId), which create with the GA api-version since",
            m.idempotent_create_fallbacks.clone(),
        );
        Self { registry, ..m }
    }
}

impl Metrics {
    /// Sets an identity's series from its status.
    pub fn observe_identity(&self, namespace: &str, name: &str, status: &AcsIdentityStatus) {
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.as_str());
        let record = IdentityRecord {
            expires: status.token_expires_on.as_ref().map(|t| t.0.as_second()),
            renewal: status.renewal_time.as_ref().map(|t| t.0.as_second()),
            ready: ReadyValue::parse(ready),
        };
        self.identities.set(namespace, name, record);
    }

    /// Removes every series of a deleted identity.
    pub fn forget_identity(&self, namespace: &str, name: &str) {
        self.identities.remove(namespace, name);
    }

    /// Counts the requests waiting in `limiter` in `acs_api_requests_waiting`.
    pub fn watch_limiter(&self, limiter: &Arc<crate::acs::AcsRateLimiter>) {
        self.waiting.watch(limiter);
    }

    /// Runs one ACS call and records its outcome and latency.
    pub async fn acs_call<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T, AcsError>>,
    ) -> Result<T, AcsError> {
        let started = Instant::now();
        let result = call.await;
        let code = match &result {
            Ok(_) => operation.success_status().to_string(),
            Err(e) => e.class().code.to_string(),
        };
        let op = operation.as_str().to_string();
        self.acs_requests
            .get_or_create(&RequestLabels {
                operation: op.clone(),
                code,
            })
            .inc();
        self.acs_duration
            .get_or_create(&OperationLabels { operation: op })
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// Counts an ACS call the bulkheads refused, by `reason`.
    pub fn acs_call_refused(&self, reason: &'static str) {
        self.acs_refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// Counts a connection client that fell back to the GA create.
    pub fn idempotent_create_fell_back(&self) {
        self.idempotent_create_fallbacks.inc();
    }

    /// Sets how many endpoints' breakers are open.
    pub fn set_acs_circuits_open(&self, open: usize) {
        self.acs_circuits_open.set(open as i64);
    }

    /// Records one reconcile: `Err(class)` for a failure, counted under its label.
    pub fn observe_reconcile(&self, outcome: Result<(), &Class>, started: Instant) {
        let result = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        if let Err(class) = outcome {
            self.reconcile_failures
                .get_or_create(&CategoryLabels {
                    category: class.label.into(),
                })
                .inc();
        }
        self.reconcile_duration
            .observe(started.elapsed().as_secs_f64());
    }

    /// Whether this replica is the one reconciling: what the "no leader" alert sums over
    /// replicas.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Records a restart of a workload of `kind`: `done` or not.
    pub fn observe_restart(&self, kind: &str, done: bool) {
        let result = if done { "done" } else { "failed" };
        self.restarts
            .get_or_create(&RestartLabels {
                kind: kind.into(),
                result: result.into(),
            })
            .inc();
    }

    /// Records that a wanted restart of a workload of `kind` waits, for `reason`.
    pub fn observe_restart_skipped(&self, kind: &str, reason: &str) {
        self.restarts_skipped
            .get_or_create(&SkipLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition, in pieces: the registered families, the per-identity
    /// ones a thousand identities at a time (at 100,000 identities they are 75 MB of text,
    /// which no scrape should hold at once), then the end marker.
    pub fn pieces(&self) -> impl Iterator<Item = String> + Send + 'static {
        let mut head = String::new();
        encode_registry(&mut head, &self.registry).expect("writing to a String cannot fail");
        let mut eof = String::new();
        encode_eof(&mut eof).expect("writing to a String cannot fail");
        std::iter::once(head)
            .chain(self.identities.pieces())
            .chain(std::iter::once(eof))
    }

    /// The whole exposition as one text (tests, and small registries).
    pub fn encode(&self) -> String {
        self.pieces().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(ready: &str) -> AcsIdentityStatus {
        AcsIdentityStatus {
            token_expires_on: Some(Time(jiff::Timestamp::from_second(2000).unwrap())),
            renewal_time: Some(Time(jiff::Timestamp::from_second(1500).unwrap())),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: "TokenValid".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            }],
            ..AcsIdentityStatus::default()
        }
    }

    #[test]
    fn identity_series_appear_and_are_removed() {
        let m = Metrics::default();
        m.observe_identity("ns", "alice", &status("True"));
        let text = m.encode();
        assert!(text.contains(r#"acs_identity_token_expiration_timestamp_seconds{namespace="ns",name="alice"} 2000.0"#), "{text}");
        assert!(text.contains(r#"acs_identity_token_renewal_timestamp_seconds{namespace="ns",name="alice"} 1500.0"#), "{text}");
        assert!(
            text.contains(
                r#"acs_identity_ready_status{namespace="ns",name="alice",condition="True"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"acs_identity_ready_status{namespace="ns",name="alice",condition="False"} 0"#
            ),
            "{text}"
        );
        m.observe_identity("ns", "alice", &AcsIdentityStatus::default());
        let text = m.encode();
        assert!(
            text.contains(
                r#"acs_identity_ready_status{namespace="ns",name="alice",condition="Unknown"} 1"#
            ),
            "{text}"
        );
        assert!(
            !text.contains("acs_identity_token_expiration_timestamp_seconds{"),
            "no expiry without a token: {text}"
        );
        m.forget_identity("ns", "alice");
        assert!(!m.encode().contains("alice"));
    }

    #[tokio::test]
    async fn acs_calls_are_counted_by_operation_and_code() {
        let m = Metrics::default();
        let ok: Result<(), AcsError> = m.acs_call(Operation::IssueToken, async { Ok(()) }).await;
        assert!(ok.is_ok());
        let _ = m
            .acs_call::<()>(Operation::IssueToken, async {
                Err(AcsError::from_response(503, None, b""))
            })
            .await;
        let _ = m
            .acs_call::<()>(Operation::DeleteIdentity, async {
                Err(AcsError::Timeout {
                    phase: crate::acs::TimeoutPhase::Whole,
                    after: std::time::Duration::from_secs(1),
                })
            })
            .await;
        let text = m.encode();
        assert!(
            text.contains(r#"acs_api_requests_total{operation="issueToken",code="200"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"acs_api_requests_total{operation="issueToken",code="503"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"acs_api_requests_total{operation="deleteIdentity",code="timeout"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"acs_api_request_duration_seconds_count{operation="issueToken"} 2"#),
            "{text}"
        );
    }

    #[test]
    fn restarts_by_kind_and_result_and_skips_by_reason() {
        let m = Metrics::default();
        m.observe_restart("Deployment", true);
        m.observe_restart("Deployment", true);
        m.observe_restart("StatefulSet", false);
        m.observe_restart_skipped("Deployment", "debounced");
        let text = m.encode();
        for line in [
            r#"acs_identity_workload_restarts_total{kind="Deployment",result="done"} 2"#,
            r#"acs_identity_workload_restarts_total{kind="StatefulSet",result="failed"} 1"#,
            r#"acs_identity_workload_restarts_skipped_total{kind="Deployment",reason="debounced"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn reconciles_by_result_and_category() {
        let m = Metrics::default();
        m.observe_reconcile(Ok(()), Instant::now());
        let throttled = Class::new(
            crate::policy::Reason::AcsThrottled,
            crate::policy::failure::FailureStanding::Transient,
        );
        m.observe_reconcile(Err(&throttled), Instant::now());
        let text = m.encode();
        assert!(
            text.contains(r#"acs_identity_reconciles_total{result="success"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"acs_identity_reconcile_failures_total{category="AcsThrottled"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("acs_identity_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }

    #[test]
    fn the_leader_gauge_says_whether_this_replica_reconciles() {
        let m = Metrics::default();
        assert!(m.encode().contains("\nacs_identity_operator_leader 0\n"));
        m.set_leader(true);
        assert!(m.encode().contains("\nacs_identity_operator_leader 1\n"));
    }

    #[test]
    fn requests_in_line_are_counted_by_operation_across_limiters() {
        use crate::acs::{AcsRateLimiter, Admission};
        let m = Metrics::default();
        let (a, b) = (
            Arc::new(AcsRateLimiter::with_limits(|_| 1)),
            Arc::new(AcsRateLimiter::with_limits(|_| 1)),
        );
        m.watch_limiter(&a);
        m.watch_limiter(&b);
        let now = jiff::Timestamp::now();
        // Limit 1: the first caller goes, the others queue.
        let admitted: Vec<_> = ["ns/x", "ns/y", "ns/z"]
            .iter()
            .map(|k| a.admit(Operation::IssueToken, k, now))
            .collect();
        assert_eq!(
            admitted,
            [Admission::Now, Admission::Queued, Admission::Queued]
        );
        assert_eq!(b.admit(Operation::IssueToken, "ns/w", now), Admission::Now);
        assert_eq!(
            b.admit(Operation::IssueToken, "ns/v", now),
            Admission::Queued
        );
        let text = m.encode();
        assert!(
            text.contains(r#"acs_api_requests_waiting{operation="issueToken"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"acs_api_requests_waiting{operation="createIdentityWithToken"} 0"#),
            "{text}"
        );
        drop(a);
        let text = m.encode();
        assert!(
            text.contains(r#"acs_api_requests_waiting{operation="issueToken"} 1"#),
            "a dropped limiter no longer counts: {text}"
        );
    }
}
