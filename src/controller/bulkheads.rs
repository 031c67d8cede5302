//! The bulkheads' state: calls in flight per ACS endpoint and per namespace, and each
//! endpoint's breaker, kept here and decided by [`crate::policy::bulkhead`]. Every ACS call
//! of a reconcile (creating, issuing, revoking, deleting in cleanup) goes through a [`Pass`]:
//! taken before the first call, it is the only way to make one, and it gives its place back
//! when dropped. A reconcile that found no room is woken when a place it waited for is given
//! back ([`Bulkheads::enter_or_wait`]), and looks again by itself in 1 to 4 s if no place is.

use crate::acs::{AcsError, Operation};
use crate::metrics::Metrics;
use crate::policy::bulkhead::{self, Answer, Breaker, Crowd, Limits, Load, Verdict};
use std::collections::{HashMap, VecDeque};
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
    /// Who waits for a place, by what was full: the identities' keys, oldest first.
    waiting: HashMap<Full, VecDeque<String>>,
}

/// What a waiter found full: an endpoint or a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Full {
    Endpoint(String),
    Namespace(String),
}

/// The most waiters kept for one endpoint or namespace; the others look again by themselves.
const MAX_WAITERS: usize = 1024;

/// Wakes the identity of a key (`namespace/name`).
pub type Wake = Box<dyn Fn(&str) + Send + Sync>;

pub struct Bulkheads {
    limits: Limits,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    wake: Option<Wake>,
}

impl Bulkheads {
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            state: Mutex::default(),
            metrics,
            wake: None,
        }
    }

    /// The same, waking the waiters of a place given back with `wake`.
    pub fn waking(limits: Limits, metrics: Arc<Metrics>, wake: Wake) -> Self {
        Self {
            wake: Some(wake),
            ..Self::new(limits, metrics)
        }
    }

    /// [`Bulkheads::enter`]; when the endpoint or the namespace is full, `key` waits for a
    /// place there and is woken when one is given back. Where the issue limit is busy, a
    /// namespace's renewals fall due together and most find its places taken for a moment:
    /// looking again only after 1 to 4 s made them that late.
    pub fn enter_or_wait(
        self: &Arc<Self>,
        endpoint: &str,
        namespace: &str,
        key: &str,
    ) -> Result<Pass, Refused> {
        let refused = match self.enter(endpoint, namespace) {
            Err(Refused::Crowded(crowd)) => crowd,
            other => return other,
        };
        let full = match refused {
            Crowd::Endpoint => Full::Endpoint(endpoint.to_string()),
            Crowd::Namespace => Full::Namespace(namespace.to_string()),
        };
        let mut state = self.state.lock().expect("bulkheads lock");
        let line = state.waiting.entry(full).or_default();
        if line.len() < MAX_WAITERS {
            line.push_back(key.to_string());
        }
        Err(Refused::Crowded(refused))
    }

    /// Wakes the oldest waiter for each of `places`, now that a place there was given back.
    fn wake_next(&self, places: [Full; 2]) {
        let Some(wake) = &self.wake else {
            return;
        };
        let woken: Vec<String> = {
            let mut state = self.state.lock().expect("bulkheads lock");
            places
                .into_iter()
                .filter_map(|full| {
                    let line = state.waiting.get_mut(&full)?;
                    let next = line.pop_front();
                    if line.is_empty() {
                        state.waiting.remove(&full);
                    }
                    next
                })
                .collect()
        };
        for key in woken {
            wake(&key);
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
        {
            let mut state = self.owner.state.lock().expect("bulkheads lock");
            if let Some(n) = state.namespaces.get_mut(&self.namespace) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.namespaces.remove(&self.namespace);
                }
            }
        }
        self.owner.wake_next([
            Full::Endpoint(std::mem::take(&mut self.endpoint)),
            Full::Namespace(std::mem::take(&mut self.namespace)),
        ]);
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
    fn who_found_no_room_is_woken_when_a_place_is_given_back() {
        let woken: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = woken.clone();
        let b = Arc::new(Bulkheads::waking(
            Limits {
                per_endpoint: 2,
                per_namespace: 1,
                ..Limits::default()
            },
            Arc::default(),
            Box::new(move |key| seen.lock().unwrap().push(key.to_string())),
        ));
        let taken = || woken.lock().unwrap().drain(..).collect::<Vec<_>>();
        let first = b
            .enter_or_wait("https://a/", "team-b", "team-b/one")
            .unwrap();
        // The namespace is full: two wait for it, in the order they came.
        for key in ["team-b/two", "team-b/three"] {
            assert_eq!(
                b.enter_or_wait("https://a/", "team-b", key).err(),
                Some(Refused::Crowded(Crowd::Namespace))
            );
        }
        let other = b
            .enter_or_wait("https://a/", "team-a", "team-a/one")
            .unwrap();
        // The endpoint is full too now.
        assert_eq!(
            b.enter_or_wait("https://a/", "team-c", "team-c/one").err(),
            Some(Refused::Crowded(Crowd::Endpoint))
        );
        assert!(taken().is_empty(), "nobody gave a place back yet");
        drop(first);
        assert_eq!(taken(), ["team-c/one", "team-b/two"]);
        drop(other);
        assert!(taken().is_empty(), "team-a had nobody waiting");
        let again = b
            .enter_or_wait("https://a/", "team-b", "team-b/two")
            .unwrap();
        drop(again);
        assert_eq!(taken(), ["team-b/three"]);
        drop(
            b.enter_or_wait("https://a/", "team-b", "team-b/three")
                .unwrap(),
        );
        assert!(taken().is_empty(), "the line is empty");
    }

    #[test]
    fn the_waiting_line_is_bounded() {
        let b = bulkheads(Limits {
            per_namespace: 1,
            ..Limits::default()
        });
        let _held = b.enter("https://a/", "team-b").unwrap();
        for i in 0..MAX_WAITERS + 10 {
            let _ = b.enter_or_wait("https://a/", "team-b", &format!("team-b/{i}"));
        }
        let state = b.state.lock().unwrap();
        let line = &state.waiting[&Full::Namespace("team-b".into())];
        assert_eq!(line.len(), MAX_WAITERS);
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
