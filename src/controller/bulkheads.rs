//! The bulkheads' state: calls in flight per ACS endpoint and per namespace, and each
//! endpoint's breaker, kept here and decided by [`crate::policy::bulkhead`]. Every ACS call
//! of a reconcile (creating, issuing, revoking, deleting in cleanup) goes through a [`Pass`]:
//! taken before the first call, it is the only way to make one, and it gives its place back
//! when dropped.

use crate::acs::{AcsError, Operation};
use crate::metrics::Metrics;
use crate::policy::bulkhead::{self, Answer, Breaker, Crowd, Limits, Load, Verdict};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a reconcile may not call ACS now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The endpoint or the namespace has its most calls in flight: look again shortly.
    Crowded(Crowd),
    /// The endpoint's breaker is open: its calls are refused for `retry_in`.
    CircuitOpen { retry_in: Duration },
}

#[derive(Debug)]
struct Endpoint {
    in_flight: usize,
    breaker: Breaker,
}

#[derive(Default)]
struct State {
    /// Endpoints with calls in flight or a breaker not at rest.
    endpoints: HashMap<String, Endpoint>,
    /// Namespaces with calls in flight.
    namespaces: HashMap<String, usize>,
}

pub struct Bulkheads {
    limits: Limits,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
}

impl Bulkheads {
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            state: Mutex::default(),
            metrics,
        }
    }

    /// A pass for one reconcile's ACS calls to `endpoint` for an identity of `namespace`, or
    /// why not now. Never waits.
    pub fn enter(self: &Arc<Self>, endpoint: &str, namespace: &str) -> Result<Pass, Refused> {
        let now = Instant::now();
        let mut state = self.state.lock().expect("bulkheads lock");
        let load = Load {
            endpoint: state.endpoints.get(endpoint).map_or(0, |e| e.in_flight),
            namespace: state.namespaces.get(namespace).copied().unwrap_or(0),
        };
        let breaker = state
            .endpoints
            .get(endpoint)
            .map_or(Breaker::CLOSED, |e| e.breaker);
        let (verdict, after) = bulkhead::admit(breaker, load, &self.limits, now);
        let refused = match verdict {
            Verdict::Go | Verdict::Probe => None,
            Verdict::Crowded(crowd) => Some(Refused::Crowded(crowd)),
            Verdict::Open { retry_in } => Some(Refused::CircuitOpen { retry_in }),
        };
        if let Some(refused) = refused {
            drop(state);
            self.metrics.acs_call_refused(match refused {
                Refused::Crowded(Crowd::Endpoint) => "endpoint_busy",
                Refused::Crowded(Crowd::Namespace) => "namespace_busy",
                Refused::CircuitOpen { .. } => "circuit_open",
            });
            return Err(refused);
        }
        let entry = state
            .endpoints
            .entry(endpoint.to_string())
            .or_insert(Endpoint {
                in_flight: 0,
                breaker: Breaker::CLOSED,
            });
        entry.in_flight += 1;
        entry.breaker = after;
        *state.namespaces.entry(namespace.to_string()).or_default() += 1;
        Ok(Pass {
            owner: self.clone(),
            endpoint: endpoint.to_string(),
            namespace: namespace.to_string(),
            probe: verdict == Verdict::Probe,
            answered: false,
        })
    }

    /// Applies `change` to the endpoint's breaker, keeps the open-breakers gauge, and forgets
    /// an endpoint at rest.
    fn update(&self, endpoint: &str, change: impl FnOnce(&mut Endpoint)) {
        let mut state = self.state.lock().expect("bulkheads lock");
        let Some(entry) = state.endpoints.get_mut(endpoint) else {
            return;
        };
        let was_open = entry.breaker.is_open();
        change(entry);
        let is_open = entry.breaker.is_open();
        if entry.in_flight == 0 && entry.breaker == Breaker::CLOSED {
            state.endpoints.remove(endpoint);
        }
        if was_open != is_open {
            let open = state
                .endpoints
                .values()
                .filter(|e| e.breaker.is_open())
                .count();
            drop(state);
            self.metrics.set_acs_circuits_open(open);
        }
    }
}

/// Leave to make one reconcile's ACS calls; its place is given back when it is dropped.
pub struct Pass {
    owner: Arc<Bulkheads>,
    endpoint: String,
    namespace: String,
    /// The half-open breaker's one probe: its first answer decides the breaker.
    probe: bool,
    answered: bool,
}

impl Pass {
    /// Makes one ACS call (recorded in the metrics) and tells the breaker how it went.
    pub async fn call<T>(
        &mut self,
        operation: Operation,
        call: impl Future<Output = Result<T, AcsError>>,
    ) -> Result<T, AcsError> {
        let result = self.owner.metrics.acs_call(operation, call).await;
        let answer = match &result {
            Err(e) if e.is_unreachable() => Answer::Unreachable,
            _ => Answer::Answered,
        };
        let (limits, probe) = (self.owner.limits, self.probe && !self.answered);
        self.owner.update(&self.endpoint, |e| {
            e.breaker = bulkhead::after_call(e.breaker, probe, answer, &limits, Instant::now());
        });
        self.answered = true;
        result
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let abandoned = self.probe && !self.answered;
        self.owner.update(&self.endpoint, |e| {
            e.in_flight = e.in_flight.saturating_sub(1);
            if abandoned {
                e.breaker = bulkhead::probe_abandoned(e.breaker, Instant::now());
            }
        });
        let mut state = self.owner.state.lock().expect("bulkheads lock");
        if let Some(n) = state.namespaces.get_mut(&self.namespace) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.namespaces.remove(&self.namespace);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acs::TimeoutPhase;

    fn bulkheads(limits: Limits) -> Arc<Bulkheads> {
        Arc::new(Bulkheads::new(limits, Arc::default()))
    }

    fn unreachable() -> Result<(), AcsError> {
        Err(AcsError::Timeout {
            phase: TimeoutPhase::FirstByte,
            after: Duration::from_secs(1),
        })
    }

    #[test]
    fn passes_count_while_held_and_give_their_place_back() {
        let b = bulkheads(Limits {
            per_endpoint: 2,
            per_namespace: 1,
            ..Limits::default()
        });
        let first = b.enter("https://a/", "team-b").unwrap();
        assert_eq!(
            b.enter("https://b/", "team-b").err(),
            Some(Refused::Crowded(Crowd::Namespace))
        );
        let _other = b.enter("https://a/", "team-a").unwrap();
        assert_eq!(
            b.enter("https://a/", "team-c").err(),
            Some(Refused::Crowded(Crowd::Endpoint))
        );
        drop(first);
        b.enter("https://b/", "team-b").unwrap();
        let refused = b.metrics.encode();
        assert!(
            refused.contains(r#"acs_api_calls_refused_total{reason="namespace_busy"} 1"#),
            "{refused}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_refused_at_once_and_others_are_not() {
        let b = bulkheads(Limits::default());
        for _ in 0..Limits::DEFAULT_FAILURES_TO_OPEN {
            let mut pass = b.enter("https://tarpit/", "team-b").unwrap();
            let _ = pass
                .call(Operation::IssueToken, async { unreachable() })
                .await;
        }
        assert!(matches!(
            b.enter("https://tarpit/", "team-b").err(),
            Some(Refused::CircuitOpen { retry_in }) if retry_in <= Limits::DEFAULT_COOLDOWN
        ));
        let mut other = b.enter("https://acs/", "team-b").unwrap();
        other
            .call(Operation::IssueToken, async { Ok(()) })
            .await
            .unwrap();
        assert!(b.metrics.encode().contains("acs_api_circuits_open 1"));
        // Nothing is held once the passes are gone, but the open breaker is remembered.
        drop(other);
        let state = b.state.lock().unwrap();
        assert!(state.namespaces.is_empty());
        assert_eq!(state.endpoints.len(), 1);
    }

    #[tokio::test]
    async fn a_probe_that_never_went_lets_another_call_probe() {
        let b = bulkheads(Limits {
            failures_to_open: 1,
            cooldown: Duration::ZERO,
            ..Limits::default()
        });
        let mut pass = b.enter("https://tarpit/", "team-b").unwrap();
        let _ = pass
            .call(Operation::IssueToken, async { unreachable() })
            .await;
        drop(pass);
        let probe = b.enter("https://tarpit/", "team-b").unwrap();
        assert!(probe.probe);
        assert!(matches!(
            b.enter("https://tarpit/", "team-a").err(),
            Some(Refused::CircuitOpen { .. })
        ));
        drop(probe);
        let mut next = b.enter("https://tarpit/", "team-a").unwrap();
        assert!(next.probe);
        next.call(Operation::IssueToken, async { Ok(()) })
            .await
            .unwrap();
        drop(next);
        assert!(b.state.lock().unwrap().endpoints.is_empty(), "at rest");
        assert!(b.metrics.encode().contains("acs_api_circuits_open 0"));
    }
}
