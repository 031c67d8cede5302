//! What the driver learns from watches (never from sleeps): when identities turn Ready, how
//! many writes objects receive, when tokens are refreshed, and what a consumer reading the
//! Secrets would have seen.

use acs_identity_operator::api::AcsIdentity;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::processes::Error;

/// Ready for the current spec: condition Ready=True that has seen this generation.
pub fn is_ready(o: &AcsIdentity) -> bool {
    o.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| {
            c.status == "True"
                && c.observed_generation.is_some()
                && c.observed_generation == o.metadata.generation
        })
}

#[derive(Debug, Clone, Default)]
pub struct ReadyProgress {
    pub ready: usize,
    pub first_ready_at: Option<Instant>,
    /// When `ready` last reached the expected count; `None` while some are not Ready.
    pub all_ready_at: Option<Instant>,
}

/// Counts Ready identities in a namespace from a watch.
pub struct ReadyTracker {
    rx: watch::Receiver<ReadyProgress>,
    task: JoinHandle<()>,
}

impl Drop for ReadyTracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReadyTracker {
    /// Starts watching; returns once the initial list is in.
    pub async fn start(api: Api<AcsIdentity>, expected: usize) -> Result<ReadyTracker, Error> {
        let (tx, rx) = watch::channel(ReadyProgress::default());
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut synced = Some(synced_tx);
            let mut ready: HashMap<String, bool> = HashMap::new();
            let mut count = 0usize;
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let (name, now_ready) = match event {
                    watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                        (o.name_any(), is_ready(&o))
                    }
                    watcher::Event::Delete(o) => (o.name_any(), false),
                    watcher::Event::InitDone => {
                        if let Some(s) = synced.take() {
                            let _ = s.send(());
                        }
                        continue;
                    }
                    watcher::Event::Init => continue,
                };
                let was = ready.insert(name, now_ready).unwrap_or(false);
                if was == now_ready {
                    continue;
                }
                if now_ready {
                    count += 1;
                } else {
                    count -= 1;
                }
                tx.send_modify(|p| {
                    p.ready = count;
                    if now_ready && p.first_ready_at.is_none() {
                        p.first_ready_at = Some(Instant::now());
                    }
                    if count < expected {
                        p.all_ready_at = None;
                    } else if p.all_ready_at.is_none() {
                        p.all_ready_at = Some(Instant::now());
                    }
                });
            }
        });
        tokio::time::timeout(Duration::from_secs(60), synced_rx)
            .await
            .map_err(|_| "the AcsIdentity watch did not sync within 60 s")??;
        Ok(ReadyTracker { rx, task })
    }

    pub fn progress(&self) -> ReadyProgress {
        self.rx.borrow().clone()
    }

    /// Waits until every expected identity is Ready (now), or until `limit`; returns when
    /// they last all became Ready.
    pub async fn wait_all(&mut self, limit: Duration) -> Option<Instant> {
        let wait = self.rx.wait_for(|p| p.all_ready_at.is_some());
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(p)) => p.all_ready_at,
            _ => None,
        }
    }
}

/// Counts the writes (created, modified or deleted objects: each is a new resourceVersion) of
/// one kind in a namespace, from a watch started now (give it an `Api<PartialObjectMeta<K>>`
/// for a metadata-only watch).
pub struct WriteCounter {
    pub writes: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for WriteCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl WriteCounter {
    pub async fn start<K>(api: Api<K>) -> Result<WriteCounter, Error>
    where
        K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
        K: serde::de::DeserializeOwned,
    {
        let writes = Arc::new(AtomicU64::new(0));
        let counted = writes.clone();
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut synced = Some(synced_tx);
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(s) = synced.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), synced_rx)
            .await
            .map_err(|_| "the metadata watch did not sync within 60 s")??;
        Ok(WriteCounter { writes, task })
    }

    pub fn count(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

/// resourceVersion of each object, to compare before and after.
pub async fn resource_versions<K>(api: &Api<K>) -> Result<HashMap<String, String>, Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let list = api.list_metadata(&Default::default()).await?;
    Ok(list
        .items
        .into_iter()
        .map(|o| (o.name_any(), o.resource_version().unwrap_or_default()))
        .collect())
}

/// Objects whose resourceVersion differs (or that appeared or vanished).
pub fn changed(before: &HashMap<String, String>, after: &HashMap<String, String>) -> usize {
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .count()
}

/// One new token of one identity, as its status announced it.
#[derive(Debug, Clone)]
pub struct Refresh {
    /// `status.lastIssuedAt` of the new token (whole seconds).
    pub issued_at: i64,
    /// `status.renewalTime` of the token it replaced (whole seconds).
    pub due_at: i64,
    /// When the driver saw the new status (Unix seconds, fractional).
    pub observed_at: f64,
}

#[derive(Debug, Default)]
pub struct RefreshLog {
    pub refreshes: Vec<Refresh>,
    /// The renewalTime of each identity's current token.
    pub current_renewal: HashMap<String, i64>,
}

/// Records every new token (a change of `status.issuedFor.tokenHash`: unlike `lastIssuedAt`,
/// which has whole seconds, it tells two tokens of the same second apart) with the
/// renewalTime of the token it replaced.
pub struct RefreshRecorder {
    pub log: Arc<Mutex<RefreshLog>>,
    task: JoinHandle<()>,
}

impl Drop for RefreshRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn seconds(t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_second())
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl RefreshRecorder {
    pub async fn start(api: Api<AcsIdentity>) -> Result<RefreshRecorder, Error> {
        let log = Arc::new(Mutex::new(RefreshLog::default()));
        let shared = log.clone();
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut synced = Some(synced_tx);
            // name → (token hash, renewalTime) last seen
            let mut last: HashMap<String, (String, i64)> = HashMap::new();
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let o = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(s) = synced.take() {
                            let _ = s.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let Some(status) = &o.status else { continue };
                let (Some(issued), Some(renewal), Some(hash)) = (
                    seconds(&status.last_issued_at),
                    seconds(&status.renewal_time),
                    status.issued_for.as_ref().map(|f| f.token_hash.clone()),
                ) else {
                    continue;
                };
                let name = o.name_any();
                let mut log = shared.lock().expect("lock");
                log.current_renewal.insert(name.clone(), renewal);
                if let Some((prev_hash, prev_renewal)) = last.get(&name)
                    && hash != *prev_hash
                {
                    log.refreshes.push(Refresh {
                        issued_at: issued,
                        due_at: *prev_renewal,
                        observed_at: unix_now(),
                    });
                }
                last.insert(name, (hash, renewal));
            }
        });
        tokio::time::timeout(Duration::from_secs(60), synced_rx)
            .await
            .map_err(|_| "the AcsIdentity watch did not sync within 60 s")??;
        Ok(RefreshRecorder { log, task })
    }
}

/// What a consumer of the token Secrets sees. A watch keeps each Secret's `expiresOn`; every
/// `period` the tokens that look expired are read again with a GET, as a pod reading its
/// Secret would, and a token counts as seen expired only when that read confirms it. (The
/// watch alone can lag, for instance while it reconnects after an API server restart, and
/// would count tokens that were in fact already replaced.) A read that fails is retried on
/// the next check.
pub struct ConsumerView {
    pub expired: Arc<Mutex<BTreeMap<(String, i64), ExpiredToken>>>,
    pub checks: Arc<AtomicU64>,
    /// Tokens the watch showed expired but a read found replaced.
    pub stale_view: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

/// One token a consumer read after its expiry.
#[derive(Debug, Clone, Copy)]
pub struct ExpiredToken {
    /// Unix seconds of the first read that found it expired.
    pub confirmed_at: f64,
}

impl Drop for ConsumerView {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn expires_on(s: &Secret) -> Option<i64> {
    s.data
        .as_ref()
        .and_then(|d| d.get("expiresOn"))
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
}

impl ConsumerView {
    pub async fn start(api: Api<Secret>, period: Duration) -> Result<ConsumerView, Error> {
        let tokens: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        let expired: Arc<Mutex<BTreeMap<(String, i64), ExpiredToken>>> = Arc::default();
        let checks = Arc::new(AtomicU64::new(0));
        let stale_view = Arc::new(AtomicU64::new(0));
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let seen = tokens.clone();
        let watch_api = api.clone();
        let watch_task = tokio::spawn(async move {
            let mut synced = Some(synced_tx);
            let config = watcher::Config::default()
                .labels("app.kubernetes.io/managed-by=acs-identity-operator");
            let stream = watcher(watch_api, config).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                        if let Some(t) = expires_on(&s) {
                            seen.lock().expect("lock").insert(s.name_any(), t);
                        }
                    }
                    Ok(watcher::Event::Delete(s)) => {
                        seen.lock().expect("lock").remove(&s.name_any());
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(s) = synced.take() {
                            let _ = s.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        let (found, counted, stale) = (expired.clone(), checks.clone(), stale_view.clone());
        let check_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = unix_now();
                let candidates: Vec<(String, i64)> = {
                    let tokens = tokens.lock().expect("lock");
                    let found = found.lock().expect("lock");
                    tokens
                        .iter()
                        .filter(|(name, expires)| {
                            (**expires as f64) <= now
                                && !found.contains_key(&((*name).clone(), **expires))
                        })
                        .map(|(n, e)| (n.clone(), *e))
                        .collect()
                };
                for (name, watched) in candidates {
                    // What a pod reading its Secret now would get.
                    let Ok(Some(secret)) = api.get_opt(&name).await else {
                        continue;
                    };
                    let read_at = unix_now();
                    match expires_on(&secret) {
                        Some(current) if (current as f64) <= read_at => {
                            found.lock().expect("lock").insert(
                                (name.clone(), current),
                                ExpiredToken {
                                    confirmed_at: read_at,
                                },
                            );
                            eprintln!(
                                "[consumer] {name}: read a token expired at {current} ({:.1} s ago)",
                                read_at - current as f64
                            );
                        }
                        Some(current) => {
                            stale.fetch_add(1, Ordering::Relaxed);
                            let mut tokens = tokens.lock().expect("lock");
                            if tokens.get(&name) == Some(&watched) {
                                tokens.insert(name, current);
                            }
                        }
                        None => {}
                    }
                }
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::time::timeout(Duration::from_secs(60), synced_rx)
            .await
            .map_err(|_| "the Secret watch did not sync within 60 s")??;
        Ok(ConsumerView {
            expired,
            checks,
            stale_view,
            tasks: vec![watch_task, check_task],
        })
    }

    /// The longest time a token was read after its expiry, in seconds.
    pub fn max_overdue_s(&self) -> f64 {
        self.expired
            .lock()
            .expect("lock")
            .iter()
            .map(|((_, expires), e)| e.confirmed_at - *expires as f64)
            .fold(0.0, f64::max)
    }

    pub fn expired_count(&self) -> usize {
        self.expired.lock().expect("lock").len()
    }
}
