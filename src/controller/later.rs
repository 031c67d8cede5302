//! Far wake-ups of identities, kept small.
//!
//! Nearly every identity waits hours for its renewal. kube-runtime's scheduler would hold each
//! of those waits as two copies of the object's reference (name, namespace, uid and
//! resourceVersion as strings, in a hash map and a delay queue: about 700 bytes an identity,
//! 70 MB at 100,000). A wait longer than [`crate::policy::requeue::SCHEDULER_HORIZON`] is
//! kept here instead, as one `namespace/name` string and two numbers; when it comes due the
//! identity is nudged, which queues its reconcile as a requeue would. A newer wait replaces
//! an older one: only the latest wait of each identity wakes it.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Waits of identities, each due at a moment counted in milliseconds from `start`.
pub struct Later {
    start: Instant,
    hasher: RandomState,
    state: Mutex<State>,
    /// Woken when a wait becomes the earliest.
    earlier: Notify,
}

#[derive(Default)]
struct State {
    /// Every wait not yet due, in order: (due, "namespace/name"); one per identity.
    queue: BTreeSet<(u64, Box<str>)>,
    /// The due time of each identity's wait, by a hash of its key. A collision of two
    /// identities' hashes (odds about 10⁻¹⁰ at 100,000) could drop one's wait: its token would
    /// then be renewed at the next change of it or of its Secret, after the expiry alert.
    latest: HashMap<u64, u64>,
}

impl Default for Later {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            hasher: RandomState::new(),
            state: Mutex::default(),
            earlier: Notify::new(),
        }
    }
}

impl Later {
    /// Wakes `namespace/name` after `delay`, in place of any wait it had here.
    pub fn wake_after(&self, namespace: &str, name: &str, delay: Duration) {
        let due = self.millis(Instant::now() + delay);
        let key = key(namespace, name);
        let hash = self.hasher.hash_one(&key);
        let mut state = self.state.lock().expect("later lock");
        match state.latest.insert(hash, due) {
            Some(old) if old == due => return,
            Some(old) => {
                state.queue.remove(&(old, key.clone()));
            }
            None => {}
        }
        let first = state.queue.first().is_none_or(|(d, _)| due < *d);
        state.queue.insert((due, key));
        drop(state);
        if first {
            self.earlier.notify_one();
        }
    }

    /// Forgets the wait of `namespace/name`: its next wake is the scheduler's.
    pub fn forget(&self, namespace: &str, name: &str) {
        let key = key(namespace, name);
        let hash = self.hasher.hash_one(&key);
        let mut state = self.state.lock().expect("later lock");
        if let Some(old) = state.latest.remove(&hash) {
            state.queue.remove(&(old, key));
        }
    }

    /// Waits held (for the tests and the figures).
    pub fn len(&self) -> usize {
        self.state.lock().expect("later lock").latest.len()
    }

    /// Whether no wait is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `wake(namespace, name)` for each wait as it comes due. Runs until dropped.
    pub async fn run(&self, mut wake: impl FnMut(&str, &str)) {
        loop {
            let notified = self.earlier.notified();
            let next = self.take_due(&mut wake);
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Wakes every wait due by now; returns when the next one is due.
    fn take_due(&self, wake: &mut impl FnMut(&str, &str)) -> Option<Instant> {
        let now = self.millis(Instant::now());
        let mut due = Vec::new();
        let next = {
            let mut state = self.state.lock().expect("later lock");
            while let Some((at, _)) = state.queue.first()
                && *at <= now
            {
                let (at, key) = state.queue.pop_first().expect("first");
                let hash = self.hasher.hash_one(&key);
                if state.latest.get(&hash) == Some(&at) {
                    state.latest.remove(&hash);
                    due.push(key);
                }
            }
            state.queue.first().map(|(at, _)| *at)
        };
        for key in due {
            if let Some((namespace, name)) = key.split_once('/') {
                wake(namespace, name);
            }
        }
        next.map(|at| self.start + Duration::from_millis(at))
    }

    /// `at` in whole milliseconds from the start, rounded up (never early).
    fn millis(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.start);
        u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
    }
}

fn key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Wakes as (seconds since the start, "ns/name").
    type Log = Arc<Mutex<Vec<(u64, String)>>>;

    fn woken() -> (Log, impl FnMut(&str, &str)) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let sink = log.clone();
        let wake = move |ns: &str, name: &str| {
            let at = start.elapsed().as_secs();
            sink.lock().unwrap().push((at, format!("{ns}/{name}")));
        };
        (log, wake)
    }

    #[tokio::test(start_paused = true)]
    async fn wakes_each_identity_once_at_its_latest_wait() {
        let later = Arc::new(Later::default());
        let (log, wake) = woken();
        let runner = tokio::spawn({
            let later = later.clone();
            async move { later.run(wake).await }
        });
        later.wake_after("a", "one", Duration::from_secs(3600));
        later.wake_after("a", "two", Duration::from_secs(1800));
        later.wake_after("b", "one", Duration::from_secs(7200));
        // A newer wait replaces the older, earlier or later.
        later.wake_after("a", "two", Duration::from_secs(5400));
        later.wake_after("b", "one", Duration::from_secs(600));
        // A wait handed back to the scheduler is not woken here.
        later.wake_after("c", "gone", Duration::from_secs(900));
        later.forget("c", "gone");
        assert_eq!(later.len(), 3);
        assert_eq!(
            later.state.lock().unwrap().queue.len(),
            3,
            "one wait per identity"
        );

        tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
        let got = log.lock().unwrap().clone();
        assert_eq!(
            got,
            [(600, "b/one"), (3600, "a/one"), (5400, "a/two")].map(|(t, k)| (t, k.to_string())),
        );
        assert!(later.is_empty(), "nothing held once all woke");
        runner.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_earlier_than_all_others_wakes_the_runner() {
        let later = Arc::new(Later::default());
        let (log, wake) = woken();
        later.wake_after("a", "late", Duration::from_secs(36_000));
        let runner = tokio::spawn({
            let later = later.clone();
            async move { later.run(wake).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        later.wake_after("a", "soon", Duration::from_secs(60));
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(log.lock().unwrap().clone(), [(120, "a/soon".to_string())]);
        runner.abort();
    }
}
