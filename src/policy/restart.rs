//! Restarting the workloads that consume a renewed token: which identities a workload
//! consumes, what its restart annotation must say, when a restart may start (debounce,
//! per-target minimum interval, cluster-wide rate, the old token's expiry as the budget),
//! when the rate holds several back, whose goes first ([`Turns`]), and a whole round of the
//! restart controller ([`plan`]: what to write, in which order, and what a write's failure
//! leads to).
//!
//! The annotation value is a function of the consumed identities' token hashes only, so an
//! operator restart, a re-sync, a status-only change or a Secret rewritten with the same
//! token computes the value already written, and nothing happens.

use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub mod plan;
mod turns;
pub use plan::{
    InNamespace, Pacer, Plan, WorkloadIndex, WriteFailure, after_baseline, after_restart, plan,
};
pub use turns::{Cause, Turns};

/// On a Deployment, StatefulSet or DaemonSet: the AcsIdentities (in its namespace) whose
/// renewed tokens restart it, comma-separated.
pub const CONSUMES_ANNOTATION: &str = "acsoperator.io/restart-on-renewal";

/// Written by the operator on the pod template (the restart, as `kubectl rollout restart`
/// does with its own annotation) and on the workload's metadata (so that a metadata-only
/// watch knows what was last written).
pub const RESTARTED_FOR_ANNOTATION: &str = "acsoperator.io/restarted-for";

/// Most identities one workload may name.
pub const MAX_CONSUMED: usize = 32;

/// Restarting is this much earlier than the old token's expiry at the latest, so the new pods
/// are up before it.
pub const BUDGET_GUARD: Duration = Duration::from_secs(2);

/// The identity names a [`CONSUMES_ANNOTATION`] lists: sorted, without repeats. Empty items
/// (a trailing comma, spaces) are ignored; a name that cannot be an object name, or more than
/// [`MAX_CONSUMED`] of them, is an error saying which.
pub fn consumed(annotation: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = annotation
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = names.iter().find(|n| !is_object_name(n)) {
        let shown: String = bad.chars().take(64).collect();
        return Err(format!(
            "{CONSUMES_ANNOTATION}: {shown:?} is not an AcsIdentity name (lowercase letters, digits, '-' and '.', at most 253)"
        ));
    }
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(format!(
            "{CONSUMES_ANNOTATION} names no AcsIdentity (expected e.g. \"alice,bob\")"
        ));
    }
    if names.len() > MAX_CONSUMED {
        return Err(format!(
            "{CONSUMES_ANNOTATION} names {} AcsIdentities, at most {MAX_CONSUMED} are allowed",
            names.len()
        ));
    }
    Ok(names)
}

/// A DNS subdomain name, as Kubernetes requires of object names.
fn is_object_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.len() <= 253
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || c == '-' || c == '.')
}

/// The restart annotation's value for a workload consuming `tokens` (identity name and the
/// token hash its status records, `None` while it has no token): a short hash of the sorted
/// pairs, the same whichever order they come in.
pub fn restart_value<'a>(tokens: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut pairs: Vec<_> = tokens.into_iter().collect();
    pairs.sort();
    pairs.dedup();
    let mut hasher = Sha256::new();
    for (name, hash) in pairs {
        hasher.update(name.as_bytes());
        hasher.update(b"=");
        hasher.update(hash.unwrap_or("-").as_bytes());
        hasher.update(b"\n");
    }
    let digest = hasher.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("v1-{hex}")
}

/// The limits a restart waits for (flags of the binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Changes to a workload's identities within this window after the first are one restart.
    pub debounce: Duration,
    /// A workload is restarted at most once in this interval (unless its old token would
    /// otherwise expire first).
    pub min_interval: Duration,
    /// At most `per_window` restarts start in any `window`, cluster-wide.
    pub per_window: u32,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            debounce: Duration::from_secs(10),
            min_interval: Duration::from_secs(60),
            per_window: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// Why a restart that is wanted waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// Within the debounce window: more of its identities may renew.
    Debounced,
    /// The workload's minimum interval or the cluster-wide rate.
    RateLimited,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Debounced => "debounced",
            Skip::RateLimited => "rate_limited",
        }
    }
}

/// What the restart controller knows of a workload's restarts, for [`verdict`] and [`plan()`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadState {
    /// The value on the workload's metadata (what the operator last wrote), `None` if never.
    pub applied: Option<String>,
    /// When the wanted value was first seen to differ from `applied`.
    pub pending_since: Option<Instant>,
    /// The earliest expiry of an old token among the renewals pending: the restart's budget.
    pub budget: Option<Instant>,
    /// When the operator last started a restart of it (or failed to).
    pub last_attempt: Option<Instant>,
    /// A value the operator gave up on (someone else manages the annotation): not retried,
    /// not fought over, until the identities' tokens change again.
    pub given_up: Option<String>,
    /// One of its identities' tokens were revoked since it was last restarted: the token it
    /// holds no longer works, so nothing is waited for and its restart goes first.
    pub revoked: bool,
    /// The wait already counted in the metrics (one count per wait, not per look).
    pub counted: Option<Skip>,
    /// When to look at it again.
    pub wake: Option<Instant>,
}

impl WorkloadState {
    /// Its annotation says what is wanted: nothing pending, nothing waited for.
    pub fn settle(&mut self) {
        self.pending_since = None;
        self.budget = None;
        self.revoked = false;
        self.counted = None;
    }

    /// The lane its restart waits in.
    pub fn cause(&self) -> Cause {
        if self.revoked {
            Cause::Revoke
        } else {
            Cause::Renewal
        }
    }
}

/// What one workload needs now, by itself (the cluster-wide rate is the [`plan()`]'s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its annotation says what is wanted (or it was given up on): nothing to write.
    Idle,
    /// Never written: record the wanted value on its metadata without restarting it (it was
    /// started with the tokens there are now), keeping the pod template as it is.
    Baseline,
    /// A restart is wanted; look again at `until`.
    Wait { until: Instant, why: Skip },
    /// Due: restart it as soon as the cluster-wide rate lets it (the plan puts it in line).
    Restart,
}

/// The verdict for a workload whose consumed tokens give `wanted`.
pub fn verdict(wanted: &str, workload: &WorkloadState, now: Instant, limits: &Limits) -> Verdict {
    let Some(applied) = &workload.applied else {
        return Verdict::Baseline;
    };
    if applied == wanted || workload.given_up.as_deref() == Some(wanted) {
        return Verdict::Idle;
    }
    let since = workload.pending_since.unwrap_or(now);
    // The latest start that leaves the new pods time before the old token expires; a revoked
    // token has expired already.
    let latest = if workload.revoked {
        Some(since)
    } else {
        workload
            .budget
            .map(|b| b.checked_sub(BUDGET_GUARD).unwrap_or(b).max(since))
    };
    let debounced = since + limits.debounce;
    let due = latest.map_or(debounced, |l| l.min(debounced));
    if now < due {
        return Verdict::Wait {
            until: due,
            why: Skip::Debounced,
        };
    }
    let urgent = latest.is_some_and(|l| now >= l);
    if let Some(last) = workload.last_attempt {
        let next = last + limits.min_interval;
        if now < next && !urgent {
            let until = latest.map_or(next, |l| l.min(next));
            return Verdict::Wait {
                until,
                why: Skip::RateLimited,
            };
        }
    }
    Verdict::Restart
}

/// The cluster-wide rate: at most `per_window` starts in any `window` (a sliding window).
#[derive(Debug)]
pub struct RateWindow {
    per_window: usize,
    window: Duration,
    starts: VecDeque<Instant>,
}

impl RateWindow {
    pub fn new(limits: &Limits) -> Self {
        Self {
            per_window: limits.per_window.max(1) as usize,
            window: limits.window,
            starts: VecDeque::new(),
        }
    }

    /// When the next start is allowed: `None` if now.
    pub fn free_at(&mut self, now: Instant) -> Option<Instant> {
        while self
            .starts
            .front()
            .is_some_and(|&s| now.saturating_duration_since(s) >= self.window)
        {
            self.starts.pop_front();
        }
        (self.starts.len() >= self.per_window).then(|| self.starts[0] + self.window)
    }

    /// How many starts the rate allows at `now`.
    pub fn room(&mut self, now: Instant) -> usize {
        self.free_at(now);
        self.per_window.saturating_sub(self.starts.len())
    }

    /// Records a start at `now`.
    pub fn started(&mut self, now: Instant) {
        self.starts.push_back(now);
        while self.starts.len() > self.per_window {
            self.starts.pop_front();
        }
    }

    /// The last start's patch came back at `at`: it counts from then. The restart took effect
    /// somewhere between start and answer, so counting each from its answer keeps any window
    /// of effects, not only of starts, within the rate.
    pub fn finished(&mut self, at: Instant) {
        if let Some(last) = self.starts.back_mut() {
            *last = (*last).max(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumed_names_are_parsed_sorted_and_checked() {
        let cases: [(&str, Result<Vec<&str>, &str>); 7] = [
            ("alice", Ok(vec!["alice"])),
            (" bob , alice,,alice ", Ok(vec!["alice", "bob"])),
            ("a.b-c,x1", Ok(vec!["a.b-c", "x1"])),
            ("", Err("names no AcsIdentity")),
            (" , ", Err("names no AcsIdentity")),
            ("alice,Bob", Err("\"Bob\" is not an AcsIdentity name")),
            ("ns/alice", Err("\"ns/alice\" is not an AcsIdentity name")),
        ];
        for (input, expected) in cases {
            match (consumed(input), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{input:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{input:?}: {got}"),
                (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
        let many: Vec<String> = (0..=MAX_CONSUMED).map(|i| format!("id{i}")).collect();
        assert!(
            consumed(&many.join(","))
                .unwrap_err()
                .contains("at most 32")
        );
        assert_eq!(consumed(&many[..MAX_CONSUMED].join(",")).unwrap().len(), 32);
    }

    #[test]
    fn the_value_depends_on_the_tokens_only_not_their_order() {
        let ab = restart_value([("alice", Some("h1")), ("bob", Some("h2"))]);
        let cases = [
            (
                restart_value([("bob", Some("h2")), ("alice", Some("h1"))]),
                true,
            ),
            (
                restart_value([("alice", Some("h1")), ("bob", Some("h3"))]),
                false,
            ),
            (restart_value([("alice", Some("h1")), ("bob", None)]), false),
            (restart_value([("alice", Some("h1"))]), false),
            // A name and hash cannot run into the next pair's.
            (
                restart_value([("alice", Some("h1b")), ("ob", Some("h2"))]),
                false,
            ),
        ];
        for (i, (value, same)) in cases.into_iter().enumerate() {
            assert_eq!(value == ab, same, "case {i}: {value} vs {ab}");
        }
        assert!(ab.starts_with("v1-") && ab.len() == 19, "{ab}");
    }

    fn limits() -> Limits {
        Limits {
            debounce: Duration::from_secs(10),
            min_interval: Duration::from_secs(60),
            per_window: 2,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn verdicts_follow_the_debounce_the_interval_the_rate_and_the_budget() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let state = |applied: Option<&str>| WorkloadState {
            applied: applied.map(String::from),
            pending_since: Some(s(0)),
            ..WorkloadState::default()
        };
        let wait = |until, why| Verdict::Wait { until, why };
        let mut cases: Vec<(&str, WorkloadState, u64, Option<Instant>, Verdict)> = vec![
            ("never written", state(None), 0, None, Verdict::Baseline),
            ("up to date", state(Some("new")), 50, None, Verdict::Idle),
            (
                "in the window",
                state(Some("old")),
                3,
                None,
                wait(s(10), Skip::Debounced),
            ),
            (
                "window over",
                state(Some("old")),
                10,
                None,
                Verdict::Restart,
            ),
            (
                "cluster rate",
                state(Some("old")),
                12,
                Some(s(15)),
                wait(s(15), Skip::RateLimited),
            ),
            (
                "cluster free again",
                state(Some("old")),
                15,
                Some(s(15)),
                Verdict::Restart,
            ),
        ];
        let mut given_up = state(Some("old"));
        given_up.given_up = Some("new".into());
        cases.push(("given up", given_up.clone(), 100, None, Verdict::Idle));
        given_up.given_up = Some("older".into());
        cases.push(("given up on another", given_up, 100, None, Verdict::Restart));
        let mut recent = state(Some("old"));
        recent.last_attempt = Some(s(0));
        cases.push((
            "interval",
            recent.clone(),
            20,
            None,
            wait(s(60), Skip::RateLimited),
        ));
        cases.push(("interval over", recent.clone(), 60, None, Verdict::Restart));
        // The old token expires at 30 s: the restart starts by 28 s, whatever the interval.
        recent.budget = Some(s(30));
        cases.push((
            "interval, budget",
            recent.clone(),
            20,
            None,
            wait(s(28), Skip::RateLimited),
        ));
        cases.push(("budget reached", recent.clone(), 28, None, Verdict::Restart));
        cases.push((
            "budget reached, cluster full",
            recent,
            28,
            Some(s(29)),
            wait(s(29), Skip::RateLimited),
        ));
        let mut short = state(Some("old"));
        short.budget = Some(s(5));
        cases.push((
            "budget within window",
            short.clone(),
            1,
            None,
            wait(s(3), Skip::Debounced),
        ));
        cases.push((
            "budget shortens window",
            short.clone(),
            3,
            None,
            Verdict::Restart,
        ));
        short.budget = Some(s(1));
        cases.push(("budget already short", short, 0, None, Verdict::Restart));
        // A revoke: the old token no longer works, so neither the debounce nor the interval
        // is waited for; the cluster's rate still is (the turns put it first).
        let mut revoked = state(Some("old"));
        revoked.revoked = true;
        revoked.last_attempt = Some(s(0));
        revoked.budget = Some(s(3600));
        cases.push(("revoked", revoked.clone(), 0, None, Verdict::Restart));
        cases.push((
            "revoked, cluster full",
            revoked.clone(),
            1,
            Some(s(4)),
            wait(s(4), Skip::RateLimited),
        ));
        revoked.applied = Some("new".into());
        cases.push(("revoked, restarted since", revoked, 1, None, Verdict::Idle));
        for (what, target, at, cluster, expected) in cases {
            if cluster.is_none() {
                let got = verdict("new", &target, s(at), &limits());
                assert_eq!(got, expected, "{what}");
            }
            assert_eq!(
                in_a_round("new", &target, s(at), &limits(), cluster),
                expected,
                "{what}, planned"
            );
        }
    }

    #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
    struct Only;

    impl InNamespace for Only {
        fn namespace(&self) -> &str {
            "ns"
        }
    }

    struct OneWorkload(String, WorkloadState);

    impl WorkloadIndex<Only> for OneWorkload {
        fn wanted(&self, _: &Only) -> Option<String> {
            Some(self.0.clone())
        }
        fn state_mut(&mut self, _: &Only) -> Option<&mut WorkloadState> {
            Some(&mut self.1)
        }
    }

    /// What a round's [`plan()`] does with one workload at `now` while the cluster-wide rate is
    /// full until `rate_full_until` (`None`: it has room), told as a verdict.
    fn in_a_round(
        wanted: &str,
        target: &WorkloadState,
        now: Instant,
        limits: &Limits,
        rate_full_until: Option<Instant>,
    ) -> Verdict {
        let mut pacer = Pacer::new(*limits);
        if let Some(free) = rate_full_until {
            let start = free.checked_sub(limits.window).expect("after boot");
            for _ in 0..limits.per_window {
                pacer.restart_started(start);
            }
        }
        let mut index = OneWorkload(wanted.to_string(), target.clone());
        let planned = plan(&mut pacer, &mut index, [Only].into(), now);
        pacer.round_done(now);
        if !planned.baselines.is_empty() {
            Verdict::Baseline
        } else if !planned.restarts.is_empty() {
            Verdict::Restart
        } else if let Some(until) = pacer.wake() {
            Verdict::Wait {
                until,
                why: Skip::RateLimited,
            }
        } else if let (Some(until), Some(why)) = (index.1.wake, index.1.counted) {
            Verdict::Wait { until, why }
        } else {
            Verdict::Idle
        }
    }

    #[test]
    fn the_rate_window_slides() {
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        let mut w = RateWindow::new(&limits());
        assert_eq!(w.free_at(s(0)), None);
        w.started(s(0));
        w.started(s(4));
        assert_eq!(w.free_at(s(5)), Some(s(10)));
        assert_eq!(w.free_at(s(10)), None, "the first start left the window");
        w.started(s(10));
        assert_eq!(w.free_at(s(11)), Some(s(14)));
        assert_eq!(w.free_at(s(14)), None);
        // A start whose patch came back late counts from its answer.
        let mut late = RateWindow::new(&limits());
        late.started(s(0));
        late.finished(s(3));
        late.started(s(4));
        assert_eq!(
            late.free_at(s(12)),
            Some(s(13)),
            "10 s after the answer, not the start"
        );
        let mut one = RateWindow::new(&Limits {
            per_window: 0,
            ..limits()
        });
        one.started(s(0));
        assert_eq!(
            one.free_at(s(1)),
            Some(s(10)),
            "a rate of 0 still lets one through"
        );
    }
}
