//! One round of the restart controller, planned: of the workloads looked at (those that
//! changed, and those whose wait is over) which are up to date, which get a baseline, which
//! wait (until when, and why), and which restart now, in which order, within the cluster-wide
//! rate; then what each write's result does to the workload's state (retry after a delay, or
//! give up). The controller only gathers the facts, writes what the plan says and feeds each
//! result back.

use super::{Limits, RateWindow, Skip, Turns, Verdict, WorkloadState, verdict};
use crate::policy::reason::Reason;
use crate::policy::requeue::restart_retry;
use std::collections::BTreeSet;
use std::hash::Hash;
use std::time::Instant;

/// A workload key that knows its namespace (the line takes turns between namespaces).
pub trait InNamespace {
    fn namespace(&self) -> &str;
}

/// What the plan reads and updates of the controller's index of workloads.
pub trait WorkloadIndex<K> {
    /// The restart annotation value `key` should carry now (from its identities' current
    /// tokens); `None` when it is not indexed or its annotation is not understood.
    fn wanted(&self, key: &K) -> Option<String>;
    /// Its restart state, if indexed.
    fn state_mut(&mut self, key: &K) -> Option<&mut WorkloadState>;
}

/// The cluster-wide pace of restarts: the rate window, and the line of due restarts it holds
/// back ([`Turns`]: a revoke's first, then fairly between namespaces).
#[derive(Debug)]
pub struct Pacer<K> {
    limits: Limits,
    rate: RateWindow,
    line: Turns<K>,
    /// When the line needs a look again, while some wait in it.
    free_at: Option<Instant>,
}

impl<K: Clone + Eq + Hash + InNamespace> Pacer<K> {
    pub fn new(limits: Limits) -> Self {
        Self {
            rate: RateWindow::new(&limits),
            limits,
            line: Turns::default(),
            free_at: None,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes `key` out of line (its workload is gone or no longer opted in).
    pub fn forget(&mut self, key: &K) {
        self.line.remove(key);
    }

    /// Whether `key` waits in line for the rate.
    pub fn waits(&self, key: &K) -> bool {
        self.line.contains(key)
    }

    /// When the line needs a look again: when the rate allows the next start, while some wait.
    pub fn wake(&self) -> Option<Instant> {
        self.free_at.filter(|_| !self.line.is_empty())
    }

    /// A planned restart's write starts at `at`.
    pub fn restart_started(&mut self, at: Instant) {
        self.rate.started(at);
    }

    /// The write started last came back at `at` (see [`RateWindow::finished`]).
    pub fn restart_answered(&mut self, at: Instant) {
        self.rate.finished(at);
    }

    /// The round's writes are done at `at`: those still in line wait for the rate (or, if a
    /// start left the window meanwhile, go in the next round at once).
    pub fn round_done(&mut self, at: Instant) {
        self.free_at = if self.line.is_empty() {
            None
        } else {
            Some(self.rate.free_at(at).unwrap_or(at))
        };
    }
}

/// What to do in one round, in this order.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<K> {
    /// Waits that begin in this round, and why: each wait is counted once in the metrics, not
    /// once per look.
    pub new_waits: Vec<(K, Skip)>,
    /// Never written: record these values on their metadata, without restarting them.
    pub baselines: Vec<(K, String)>,
    /// Restart these now, in this order, each for its value; as many as the rate allows.
    pub restarts: Vec<(K, String)>,
}

impl<K> Default for Plan<K> {
    fn default() -> Self {
        Self {
            new_waits: Vec::new(),
            baselines: Vec::new(),
            restarts: Vec::new(),
        }
    }
}

/// The plan of a round at `now` that looks at `look`: each workload's [`verdict`], the due
/// ones put in line, and as many taken from the line as the cluster-wide rate allows now.
/// Updates the states looked at (their waits, when their pending change was first seen) and
/// the line.
pub fn plan<K, I>(pacer: &mut Pacer<K>, index: &mut I, look: BTreeSet<K>, now: Instant) -> Plan<K>
where
    K: Clone + Eq + Hash + InNamespace,
    I: WorkloadIndex<K>,
{
    let mut plan = Plan::default();
    for key in look {
        let Some(wanted) = index.wanted(&key) else {
            pacer.line.remove(&key);
            continue;
        };
        let state = index
            .state_mut(&key)
            .expect("indexed: it has a wanted value");
        state.wake = None;
        if state.applied.as_deref() == Some(wanted.as_str()) {
            state.settle();
            pacer.line.remove(&key);
            continue;
        }
        if state.applied.is_some() && state.pending_since.is_none() {
            state.pending_since = Some(now);
        }
        match verdict(&wanted, state, now, &pacer.limits) {
            Verdict::Idle => pacer.line.remove(&key),
            Verdict::Baseline => {
                pacer.line.remove(&key);
                plan.baselines.push((key, wanted));
            }
            Verdict::Wait { until, why } => {
                pacer.line.remove(&key);
                state.wake = Some(until);
                if state.counted != Some(why) {
                    state.counted = Some(why);
                    plan.new_waits.push((key, why));
                }
            }
            Verdict::Restart => {
                let cause = state.cause();
                pacer.line.push(key.namespace(), key.clone(), cause);
            }
        }
    }
    let mut room = pacer.rate.room(now);
    while room > 0 {
        let Some((key, _)) = pacer.line.pop() else {
            break;
        };
        // Its tokens may have changed while it waited: restart for the current ones.
        let Some(wanted) = index.wanted(&key) else {
            continue;
        };
        let state = index
            .state_mut(&key)
            .expect("indexed: it has a wanted value");
        if state.applied.as_deref() == Some(wanted.as_str()) {
            continue;
        }
        room -= 1;
        plan.restarts.push((key, wanted));
    }
    let held: Vec<K> = pacer.line.waiting().cloned().collect();
    for key in held {
        if let Some(state) = index.state_mut(&key)
            && state.counted != Some(Skip::RateLimited)
        {
            state.counted = Some(Skip::RateLimited);
            plan.new_waits.push((key, Skip::RateLimited));
        }
    }
    plan
}

/// Why a write to a workload (a baseline or a restart) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteFailure {
    /// Another field manager holds the annotation with another value.
    Conflict,
    /// The workload is gone (or was made again under its name).
    Missing,
    /// The operator may not patch it (RBAC).
    Forbidden,
    /// Anything else: the API server failed, timed out or could not be reached.
    Other,
}

impl WriteFailure {
    /// The failure an API server answer with `code` and `message` means.
    pub fn from_status(code: u16, message: &str) -> Self {
        match code {
            409 if message.contains("conflict") => WriteFailure::Conflict,
            // 409 for a uid that no longer matches; 422 for an apply that would create it (a
            // partial object is not a valid workload).
            404 | 409 | 422 => WriteFailure::Missing,
            403 => WriteFailure::Forbidden,
            _ => WriteFailure::Other,
        }
    }

    /// Not retried for the same tokens: retrying would fight the other manager.
    pub fn give_up(self) -> bool {
        matches!(self, WriteFailure::Conflict)
    }

    /// Worth an Event and a condition when a baseline fails: the operator cannot write it, not
    /// a passing race.
    pub fn worth_reporting(self) -> bool {
        matches!(self, WriteFailure::Forbidden | WriteFailure::Other)
    }

    /// The reason of its Events and of the identities' condition.
    pub fn reason(self) -> Reason {
        match self {
            WriteFailure::Conflict => Reason::RestartConflict,
            WriteFailure::Missing => Reason::RestartTargetMissing,
            WriteFailure::Forbidden => Reason::RestartForbidden,
            WriteFailure::Other => Reason::RestartFailed,
        }
    }
}

/// A baseline's write came back at `at` with the value recorded, or failed: a failed one is
/// looked at again after [`restart_retry`]. (A recorded one is looked at again at once by the
/// controller: the value written may be the template's, older than wanted.)
pub fn after_baseline(
    state: &mut WorkloadState,
    result: Result<String, WriteFailure>,
    at: Instant,
    limits: &Limits,
) {
    match result {
        Ok(value) => state.applied = Some(value),
        Err(_) => state.wake = Some(at + restart_retry(limits.min_interval)),
    }
}

/// A restart for `wanted`, started at `started`, came back with `result`. Done, given up or
/// retried after [`restart_retry`] in the renewals' lane: a failing write must not hold the
/// head of the line.
pub fn after_restart(
    state: &mut WorkloadState,
    wanted: String,
    started: Instant,
    result: Result<(), WriteFailure>,
    limits: &Limits,
) {
    state.last_attempt = Some(started);
    state.revoked = false;
    state.counted = None;
    match result {
        Ok(()) => {
            state.applied = Some(wanted);
            state.pending_since = None;
            state.budget = None;
        }
        // Someone else manages the annotation: not fought over.
        Err(failure) if failure.give_up() => state.given_up = Some(wanted),
        Err(_) => {
            state.wake = Some(started + restart_retry(limits.min_interval));
            state.budget = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// A workload key: (namespace, name).
    #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    struct Key(&'static str, &'static str);

    impl InNamespace for Key {
        fn namespace(&self) -> &str {
            self.0
        }
    }

    /// Workloads by key: the value each wants (`None`: annotation not understood) and state.
    #[derive(Default)]
    struct Index(BTreeMap<Key, (Option<String>, WorkloadState)>);

    impl WorkloadIndex<Key> for Index {
        fn wanted(&self, key: &Key) -> Option<String> {
            self.0.get(key).and_then(|(w, _)| w.clone())
        }
        fn state_mut(&mut self, key: &Key) -> Option<&mut WorkloadState> {
            self.0.get_mut(key).map(|(_, s)| s)
        }
    }

    fn limits() -> Limits {
        Limits {
            debounce: Duration::from_secs(10),
            min_interval: Duration::from_secs(60),
            per_window: 2,
            window: Duration::from_secs(10),
        }
    }

    /// Applied "old", wanting "new", first seen at `since`.
    fn pending(since: Instant) -> WorkloadState {
        WorkloadState {
            applied: Some("old".into()),
            pending_since: Some(since),
            ..WorkloadState::default()
        }
    }

    /// (what, workloads, starts already in the window, the plan: new waits, baselines,
    /// restarts in order)
    type Case = (
        &'static str,
        Vec<(Key, Option<&'static str>, WorkloadState)>,
        usize,
        Vec<(Key, Skip)>,
        Vec<Key>,
        Vec<Key>,
    );

    #[test]
    fn a_round_is_planned_from_the_states_and_the_rate() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let now = s(100);
        let due = pending(s(0));
        let revoked = WorkloadState {
            revoked: true,
            ..pending(s(99))
        };
        let up_to_date = WorkloadState {
            applied: Some("new".into()),
            ..pending(s(0))
        };
        let given_up = WorkloadState {
            given_up: Some("new".into()),
            ..pending(s(0))
        };
        let debounced = pending(s(95));
        let counted = WorkloadState {
            counted: Some(Skip::Debounced),
            ..pending(s(95))
        };
        let (a, b, c) = (Key("a", "1"), Key("b", "1"), Key("c", "1"));
        let (a2, b2) = (Key("a", "2"), Key("b", "2"));
        use Skip::*;
        let cases: Vec<Case> = vec![
            (
                "up to date, given up, not understood: nothing",
                vec![
                    (a.clone(), Some("new"), up_to_date),
                    (b.clone(), Some("new"), given_up),
                    (c.clone(), None, due.clone()),
                ],
                0,
                vec![],
                vec![],
                vec![],
            ),
            (
                "never written: a baseline, not a restart",
                vec![(a.clone(), Some("new"), WorkloadState::default())],
                0,
                vec![],
                vec![a.clone()],
                vec![],
            ),
            (
                "in the debounce window: a wait, counted once",
                vec![
                    (a.clone(), Some("new"), debounced),
                    (b.clone(), Some("new"), counted),
                ],
                0,
                vec![(a.clone(), Debounced)],
                vec![],
                vec![],
            ),
            (
                "due within the rate: all restart, namespaces taking turns",
                vec![
                    (a.clone(), Some("new"), due.clone()),
                    (a2.clone(), Some("new"), due.clone()),
                    (b.clone(), Some("new"), due.clone()),
                ],
                0,
                vec![(a2.clone(), RateLimited)],
                vec![],
                vec![a.clone(), b.clone()],
            ),
            (
                "the rate has room for one: a revoke goes first",
                vec![
                    (a.clone(), Some("new"), due.clone()),
                    (b2.clone(), Some("new"), revoked.clone()),
                ],
                1,
                vec![(a.clone(), RateLimited)],
                vec![],
                vec![b2.clone()],
            ),
            (
                "the rate is full: every due one waits, counted",
                vec![
                    (a.clone(), Some("new"), due.clone()),
                    (b.clone(), Some("new"), revoked),
                ],
                2,
                vec![(a.clone(), RateLimited), (b.clone(), RateLimited)],
                vec![],
                vec![],
            ),
        ];
        for (what, workloads, started, waits, baselines, restarts) in cases {
            let mut index = Index::default();
            for (key, wanted, state) in workloads {
                index.0.insert(key, (wanted.map(String::from), state));
            }
            let mut pacer = Pacer::new(limits());
            for _ in 0..started {
                pacer.restart_started(s(95));
            }
            let look = index.0.keys().cloned().collect();
            let mut got = plan(&mut pacer, &mut index, look, now);
            got.new_waits.sort_by(|x, y| x.0.cmp(&y.0));
            let want = Plan {
                new_waits: waits,
                baselines: baselines.into_iter().map(|k| (k, "new".into())).collect(),
                restarts: restarts.into_iter().map(|k| (k, "new".into())).collect(),
            };
            assert_eq!(got, want, "{what}");
            // Every one not restarted either waits in line or has a time to look again.
            for (key, (wanted, state)) in &index.0 {
                let planned = want.restarts.iter().any(|(k, _)| k == key);
                let settled = wanted.is_none()
                    || state.applied.as_deref() == wanted.as_deref()
                    || state.given_up.as_deref() == wanted.as_deref()
                    || want.baselines.iter().any(|(k, _)| k == key);
                assert!(
                    planned || settled || pacer.waits(key) || state.wake.is_some(),
                    "{what}: {key:?} is forgotten"
                );
            }
        }
    }

    #[test]
    fn the_line_is_looked_at_again_when_the_rate_frees() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut index = Index::default();
        for key in [Key("a", "1"), Key("a", "2"), Key("a", "3")] {
            index.0.insert(key, (Some("new".into()), pending(s(0))));
        }
        let mut pacer = Pacer::new(limits());
        let look = index.0.keys().cloned().collect();
        let first = plan(&mut pacer, &mut index, look, s(20));
        assert_eq!(first.restarts.len(), 2);
        for _ in &first.restarts {
            pacer.restart_started(s(20));
            pacer.restart_answered(s(21));
        }
        pacer.round_done(s(21));
        assert_eq!(pacer.wake(), Some(s(31)), "10 s after the answers");
        // Nothing changed: the next round takes the third from the line.
        let second = plan(&mut pacer, &mut index, BTreeSet::new(), s(31));
        assert_eq!(second.restarts, [(Key("a", "3"), "new".to_string())]);
        assert!(second.new_waits.is_empty(), "its wait was counted already");
        pacer.round_done(s(31));
        assert_eq!(pacer.wake(), None, "the line is empty");
        // A start left the window while the round wrote: the line goes on at once.
        let mut index = Index::default();
        for key in [Key("a", "1"), Key("a", "2"), Key("a", "3")] {
            index.0.insert(key, (Some("new".into()), pending(s(0))));
        }
        let mut pacer = Pacer::new(limits());
        pacer.restart_started(s(11));
        let look = index.0.keys().cloned().collect();
        let third = plan(&mut pacer, &mut index, look, s(20));
        assert_eq!(third.restarts.len(), 1);
        pacer.round_done(s(22));
        assert_eq!(pacer.wake(), Some(s(22)));
    }

    #[test]
    fn write_failures_are_classified_retried_or_given_up() {
        let cases = [
            (409, "Apply failed with 1 conflict", WriteFailure::Conflict),
            (409, "the object has been modified", WriteFailure::Missing),
            (404, "not found", WriteFailure::Missing),
            (422, "invalid", WriteFailure::Missing),
            (403, "forbidden", WriteFailure::Forbidden),
            (500, "conflict", WriteFailure::Other),
        ];
        for (code, message, want) in cases {
            assert_eq!(WriteFailure::from_status(code, message), want, "{code}");
        }
        let reasons: Vec<_> = [
            WriteFailure::Conflict,
            WriteFailure::Missing,
            WriteFailure::Forbidden,
            WriteFailure::Other,
        ]
        .iter()
        .map(|f| (f.reason().as_str(), f.give_up(), f.worth_reporting()))
        .collect();
        assert_eq!(
            reasons,
            [
                ("RestartConflict", true, false),
                ("RestartTargetMissing", false, false),
                ("RestartForbidden", false, true),
                ("RestartFailed", false, true),
            ]
        );
    }

    #[test]
    fn after_a_write_the_state_is_done_given_up_or_retried() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let short = Limits {
            min_interval: Duration::from_secs(1),
            ..limits()
        };
        let base = WorkloadState {
            budget: Some(s(50)),
            revoked: true,
            counted: Some(Skip::RateLimited),
            ..pending(s(0))
        };
        let cleared = WorkloadState {
            last_attempt: Some(s(10)),
            revoked: false,
            counted: None,
            ..base.clone()
        };
        let cases: Vec<(&str, Result<(), WriteFailure>, Limits, WorkloadState)> = vec![
            (
                "done",
                Ok(()),
                limits(),
                WorkloadState {
                    applied: Some("new".into()),
                    pending_since: None,
                    budget: None,
                    ..cleared.clone()
                },
            ),
            (
                "conflict: given up",
                Err(WriteFailure::Conflict),
                limits(),
                WorkloadState {
                    given_up: Some("new".into()),
                    ..cleared.clone()
                },
            ),
            (
                "forbidden: after the interval",
                Err(WriteFailure::Forbidden),
                limits(),
                WorkloadState {
                    wake: Some(s(70)),
                    budget: None,
                    ..cleared.clone()
                },
            ),
            (
                "gone: after 5 s at least",
                Err(WriteFailure::Missing),
                short,
                WorkloadState {
                    wake: Some(s(15)),
                    budget: None,
                    ..cleared.clone()
                },
            ),
        ];
        for (what, result, limits, want) in cases {
            let mut state = base.clone();
            after_restart(&mut state, "new".into(), s(10), result, &limits);
            assert_eq!(state, want, "{what}");
        }
        let mut state = WorkloadState::default();
        after_baseline(&mut state, Err(WriteFailure::Other), s(3), &limits());
        assert_eq!(state.wake, Some(s(63)));
        after_baseline(&mut state, Ok("tmpl".into()), s(4), &limits());
        assert_eq!(state.applied.as_deref(), Some("tmpl"));
    }
}
