//! The five scenarios of issue 6. Each adds its figures to the report; the definitions are in
//! BENCHMARKS.md ("Operator scenarios").

use crate::observe::{
    ConsumerView, ReadyTracker, RefreshRecorder, WriteCounter, changed, resource_versions, unix_now,
};
use crate::processes::{Error, Metrics, ProcStats};
use crate::report::{Report, num, percentile};
use crate::{Bins, Cli, Scenario, Side, World, create_identities, create_namespace, retry_api};
use acs_identity_operator::api::AcsIdentity;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::PartialObjectMeta;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// ACS allows 1000 create-with-token calls per 30-second window.
const ACS_LIMIT: f64 = 1000.0;
const ACS_WINDOW_S: f64 = 30.0;

const MIB: f64 = 1024.0;

pub async fn run(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    if cli.seeded {
        return crate::seeded::run(cli, bins, r).await;
    }
    match cli.scenario {
        Scenario::Burst => burst(cli, bins, r).await,
        Scenario::Restart => restart(cli, bins, r).await,
        Scenario::Memory => memory(cli, bins, r).await,
        Scenario::Steady => steady(cli, bins, r).await,
        Scenario::Chaos => chaos(cli, bins, r).await,
        Scenario::Fairness => crate::fairness::fairness(cli, bins, r).await,
        Scenario::Restarts => crate::restarts::run(cli, bins, r).await,
        Scenario::Connections => crate::connections::run(cli, bins, r).await,
        Scenario::Bulkheads => crate::bulkheads::run(cli, bins, r).await,
    }
}

/// The time ACS needs for `n` creates at its sustained rate (1000 per 30 s): the minimum of
/// any client that may not exceed the limit in any 30-second span and cannot know where the
/// service's windows start.
pub fn acs_min_seconds(n: usize) -> f64 {
    n as f64 * ACS_WINDOW_S / ACS_LIMIT
}

/// The hard floor: a client that spends a whole window's quota at once and then waits a full
/// window per further thousand. 0 for n ≤ 1000, where the limit does not bind at all.
pub fn acs_floor_seconds(n: usize) -> f64 {
    (n.saturating_sub(1) / ACS_LIMIT as usize) as f64 * ACS_WINDOW_S
}

pub(crate) fn reconciles(m: &Metrics) -> f64 {
    m.sum("acs_identity_reconciles_total", &[])
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / MIB
}

/// CPU seconds spent by each side process between two readings, added to the report.
pub(crate) fn add_side_cpu(r: &mut Report, prefix: &str, before: &Side, after: &Side) {
    let d = |a: &ProcStats, b: &ProcStats| b.cpu_seconds - a.cpu_seconds;
    r.add(
        &format!("{prefix}_apiserver_cpu_s"),
        d(&before.apiserver, &after.apiserver),
        "",
    );
    r.add(
        &format!("{prefix}_etcd_cpu_s"),
        d(&before.etcd, &after.etcd),
        "",
    );
    r.add(
        &format!("{prefix}_emulator_cpu_s"),
        d(&before.emulator, &after.emulator),
        "",
    );
    r.add(
        &format!("{prefix}_driver_cpu_s"),
        d(&before.driver, &after.driver),
        "",
    );
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("id-{i:05}")).collect()
}

async fn burst(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    let mut w = World::setup(cli, bins, &[]).await?;
    let ready = w.start_operator().await?;
    r.add("operator_start_to_ready_s", ready.as_secs_f64(), "");
    burst_phase(&mut w, r).await
}

/// Creates `--count` identities at once and waits (by watch) until all are Ready.
async fn burst_phase(w: &mut World, r: &mut Report) -> Result<(), Error> {
    let n = w.cli.count;
    let api = w.api::<AcsIdentity>();
    let mut tracker = ReadyTracker::start(api.clone(), n).await?;
    let identity_writes = WriteCounter::start(w.api::<PartialObjectMeta<AcsIdentity>>()).await?;
    let secret_writes = WriteCounter::start(w.api::<PartialObjectMeta<Secret>>()).await?;
    let stats0 = w.emulator.stats().await?;
    let reconciles0 = reconciles(&w.operator()?.metrics().await);
    let (cpu0, side0) = (w.operator_stats(), w.side());
    let limit = Duration::from_secs_f64(acs_min_seconds(n) * 3.0 + 300.0);

    let t0 = Instant::now();
    let create = create_identities(api.clone(), names(n), w.cli.create_concurrency);
    tokio::pin!(create);
    let mut create_time = None;
    let all_ready = loop {
        tokio::select! {
            created = &mut create, if create_time.is_none() => create_time = Some(created?),
            done = tracker.wait_all(Duration::from_secs(10)) => {
                if let Some(t) = done {
                    break t;
                }
                if t0.elapsed() > limit {
                    return Err(format!("not all Ready within {limit:?}: {:?}", tracker.progress()).into());
                }
                let s = w.emulator.stats().await.unwrap_or_default().since(&stats0);
                eprintln!(
                    "[burst] {:6.1} s: ready {}/{n}, ACS calls {} (429: {})",
                    t0.elapsed().as_secs_f64(),
                    tracker.progress().ready,
                    s.calls(),
                    s.status("429"),
                );
            }
        }
    };
    let create_time = match create_time {
        Some(t) => t,
        None => create.await?,
    };
    let elapsed = (all_ready - t0).as_secs_f64();
    let (cpu1, side1) = (w.operator_stats(), w.side());
    let stats = w.emulator.stats().await?.since(&stats0);
    let metrics = w.operator()?.metrics().await;
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(w.client.clone(), &w.ns)
        .list_metadata(&Default::default())
        .await
        .map(|l| l.items.len())
        .unwrap_or(0);
    let unreferenced = unreferenced_identities(w).await?;
    let first = tracker
        .progress()
        .first_ready_at
        .map_or(f64::NAN, |t| (t - t0).as_secs_f64());
    let per = |x: f64| x / n as f64;

    r.add("burst_create_s", create_time.as_secs_f64(), "");
    r.add("burst_first_ready_s", num(first), "");
    r.add(
        "burst_all_ready_s",
        elapsed,
        if n <= 1000 { "<= 11 (1,000)" } else { "" },
    );
    r.add("acs_min_s", acs_min_seconds(n), "");
    r.add("acs_floor_s", acs_floor_seconds(n), "");
    r.add("burst_ratio_to_acs_min", elapsed / acs_min_seconds(n), "");
    let floor = acs_floor_seconds(n);
    r.add(
        "burst_ratio_to_acs_floor",
        num(if floor > 0.0 {
            elapsed / floor
        } else {
            f64::NAN
        }),
        "<= 1.05",
    );
    r.add("burst_acs_calls", stats.calls(), "");
    r.add(
        "burst_acs_calls_per_identity",
        per(stats.calls() as f64),
        "1.00",
    );
    r.add("burst_acs_429", stats.status("429"), "0");
    r.add("burst_acs_by_operation", stats.to_json(), "");
    r.add("burst_unreferenced_acs_identities", unreferenced, "0");
    r.add(
        "burst_reconciles_per_identity",
        per(reconciles(&metrics) - reconciles0),
        "",
    );
    r.add(
        "burst_identity_writes_per_identity",
        per(identity_writes.count() as f64),
        "",
    );
    // The count includes the driver's own create of each object.
    r.add(
        "burst_identity_writes_by_operator_per_identity",
        per(identity_writes.count() as f64) - 1.0,
        "<= 2",
    );
    r.add(
        "burst_secret_writes_per_identity",
        per(secret_writes.count() as f64),
        "<= 1",
    );
    r.add("burst_events_per_identity", per(events as f64), "");
    let cpu = cpu1.cpu_seconds - cpu0.cpu_seconds;
    r.add("burst_operator_cpu_s", cpu, "");
    r.add(
        "burst_operator_cpu_s_per_1000",
        cpu * 1000.0 / n as f64,
        "<= 1.3",
    );
    r.add("burst_operator_rss_mib", mib(cpu1.rss_kib), "");
    r.add("burst_operator_peak_rss_mib", mib(cpu1.hwm_kib), "");
    add_side_cpu(r, "burst", &side0, &side1);
    let all_cpu = cpu
        + [
            (side0.apiserver, side1.apiserver),
            (side0.etcd, side1.etcd),
            (side0.emulator, side1.emulator),
            (side0.driver, side1.driver),
        ]
        .iter()
        .map(|(a, b)| b.cpu_seconds - a.cpu_seconds)
        .sum::<f64>();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    r.add(
        "burst_cpu_share_of_machine",
        all_cpu / (elapsed * cores),
        "",
    );
    Ok(())
}

/// Identities the emulator holds (not deleted) that no AcsIdentity's status names: leaked.
async fn unreferenced_identities(w: &World) -> Result<usize, Error> {
    let referenced: HashSet<String> = w
        .api::<AcsIdentity>()
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|o| o.status.and_then(|s| s.identity_id))
        .collect();
    let live = w.emulator.live_identities().await?;
    Ok(live.iter().filter(|id| !referenced.contains(*id)).count())
}

/// Waits until the operator's reconcile count has not moved for three seconds (at most 60 s).
pub(crate) async fn settle(w: &World) -> Result<(), Error> {
    let started = Instant::now();
    let mut last = -1.0;
    let mut quiet_since = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let now = reconciles(&w.operator()?.metrics().await);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_secs(3) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("[settle] reconciles still moving after 60 s; going on");
    Ok(())
}

async fn restart(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    let n = cli.count;
    let mut w = World::setup(cli, bins, &[]).await?;
    w.start_operator().await?;
    burst_phase(&mut w, r).await?;
    settle(&w).await?;

    let identities = w.api::<AcsIdentity>();
    let secrets = w.api::<Secret>();
    let before = (
        resource_versions(&identities).await?,
        resource_versions(&secrets).await?,
    );
    let identity_writes = WriteCounter::start(w.api::<PartialObjectMeta<AcsIdentity>>()).await?;
    let secret_writes = WriteCounter::start(w.api::<PartialObjectMeta<Secret>>()).await?;
    let stats0 = w.emulator.stats().await?;
    let signal = cli.kill_signal.clone();
    w.operator_mut()?
        .proc
        .stop(&signal, Duration::from_secs(30))
        .await;

    let side0 = w.side();
    let started = Instant::now();
    w.spawn_operator()?;
    let ready = w
        .operator_mut()?
        .wait_ready(Duration::from_secs(120))
        .await?;
    let reobserved = loop {
        if reconciles(&w.operator()?.metrics().await) >= n as f64 {
            break started.elapsed();
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("identities not all re-observed within 600 s of the restart".into());
        }
        // Each scrape encodes every identity's series: poll gently.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let cpu_restart = w.operator_stats();
    let side1 = w.side();
    // Writes or calls that follow the last reconcile are still part of the restart.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stats = w.emulator.stats().await?.since(&stats0);
    let after = (
        resource_versions(&identities).await?,
        resource_versions(&secrets).await?,
    );
    r.add("restart_signal", signal, "");
    r.add("restart_ready_s", ready.as_secs_f64(), "");
    r.add("restart_reobserved_s", reobserved.as_secs_f64(), "<= 10");
    r.add("restart_acs_calls", stats.calls(), "0");
    r.add("restart_identity_writes", identity_writes.count(), "0");
    r.add("restart_secret_writes", secret_writes.count(), "0");
    r.add(
        "restart_identities_changed",
        changed(&before.0, &after.0),
        "0",
    );
    r.add("restart_secrets_changed", changed(&before.1, &after.1), "0");
    r.add(
        "restart_operator_cpu_s_to_reobserved",
        cpu_restart.cpu_seconds,
        "",
    );
    r.add("restart_operator_rss_mib", mib(cpu_restart.rss_kib), "");
    add_side_cpu(r, "restart", &side0, &side1);

    // Idle: nothing is due for hours (24 h tokens); nothing should run.
    let writes = [&identity_writes, &secret_writes];
    idle_phase(&w, r, Duration::from_secs(cli.idle_seconds), &writes, n).await
}

/// The idle figures of `idle` with `n` identities none of which is due: the operator's,
/// API server's and etcd's CPU, reconciles, ACS calls, `writes` and RSS. No /metrics polling
/// during the wait, which would cost CPU itself.
pub(crate) async fn idle_phase(
    w: &World,
    r: &mut Report,
    idle: Duration,
    writes: &[&WriteCounter],
    n: usize,
) -> Result<(), Error> {
    let count = || writes.iter().map(|c| c.count()).sum::<u64>();
    let (cpu0, side0, writes0) = (w.operator_stats(), w.side(), count());
    let stats0 = w.emulator.stats().await?;
    let reconciles0 = reconciles(&w.operator()?.metrics().await);
    tokio::time::sleep(idle).await;
    let (cpu1, side1) = (w.operator_stats(), w.side());
    let minutes = idle.as_secs_f64() / 60.0;
    let cpu_per_min = (cpu1.cpu_seconds - cpu0.cpu_seconds) / minutes;
    r.add("idle_seconds", idle.as_secs(), "");
    r.add("idle_operator_cpu_s_per_min", cpu_per_min, "");
    r.add(
        "idle_operator_cpu_s_per_min_per_10000",
        cpu_per_min / (n.max(1) as f64 / 10_000.0),
        "<= 0.1",
    );
    r.add(
        "idle_apiserver_cpu_s_per_min",
        (side1.apiserver.cpu_seconds - side0.apiserver.cpu_seconds) / minutes,
        "",
    );
    r.add(
        "idle_etcd_cpu_s_per_min",
        (side1.etcd.cpu_seconds - side0.etcd.cpu_seconds) / minutes,
        "",
    );
    r.add(
        "idle_reconciles",
        reconciles(&w.operator()?.metrics().await) - reconciles0,
        "",
    );
    r.add(
        "idle_acs_calls",
        w.emulator.stats().await?.since(&stats0).calls(),
        "0",
    );
    r.add("idle_writes", count() - writes0, "0");
    r.add("idle_operator_rss_mib", mib(cpu1.rss_kib), "");
    Ok(())
}

async fn memory(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    let mut w = World::setup(cli, bins, &[]).await?;
    let m = cli.secrets.unwrap_or(cli.count);
    let other = format!("{}-unrelated", w.ns);
    create_namespace(&w.client, &other).await?;
    let api: Api<Secret> = Api::namespaced(w.client.clone(), &other);
    let bytes = cli.secret_kib * 1024;
    let started = Instant::now();
    stream::iter(0..m)
        .map(|i| {
            let api = api.clone();
            async move {
                let mut data = vec![0u8; bytes];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
                let mut secret = Secret::default();
                secret.metadata.name = Some(format!("unrelated-{i:05}"));
                secret.data = Some(BTreeMap::from([("blob".to_string(), ByteString(data))]));
                let params = PostParams::default();
                retry_api(|| api.create(&params, &secret)).await.map(drop)
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<()>>()
        .await?;
    r.add("memory_unrelated_secrets", m, "");
    r.add("memory_unrelated_secret_kib", cli.secret_kib, "");
    r.add(
        "memory_unrelated_create_s",
        started.elapsed().as_secs_f64(),
        "",
    );
    let ready = w.start_operator().await?;
    let at_ready = w.operator_stats();
    r.add("memory_start_to_ready_s", ready.as_secs_f64(), "");
    r.add("memory_rss_at_ready_mib", mib(at_ready.rss_kib), "");
    burst_phase(&mut w, r).await?;
    settle(&w).await?;
    let end = w.operator_stats();
    let side = w.side();
    r.add("memory_rss_mib", mib(end.rss_kib), "<= 64");
    r.add("memory_peak_rss_mib", mib(end.hwm_kib), "<= 64");
    r.add("memory_apiserver_rss_mib", mib(side.apiserver.rss_kib), "");
    r.add("memory_etcd_rss_mib", mib(side.etcd.rss_kib), "");
    Ok(())
}

pub(crate) fn emulator_lifetime_args(cli: &Cli) -> Vec<String> {
    vec![
        "--token-lifetime-seconds".into(),
        cli.token_lifetime_seconds.to_string(),
    ]
}

async fn steady(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    let mut w = World::setup(cli, bins, &emulator_lifetime_args(cli)).await?;
    w.start_operator().await?;
    burst_phase(&mut w, r).await?;

    let recorder = RefreshRecorder::start(w.api::<AcsIdentity>()).await?;
    let consumer = ConsumerView::start(w.api::<Secret>(), Duration::from_millis(200)).await?;
    let stats0 = w.emulator.stats().await?;
    let cpu0 = w.operator_stats();
    let window_start = unix_now();
    let duration = Duration::from_secs(cli.duration_seconds);
    steady_window(duration, Duration::from_secs(30), &recorder, &consumer).await;
    let window_end = unix_now();
    let stats = w.emulator.stats().await?.since(&stats0);
    let cpu1 = w.operator_stats();
    r.add("steady_seconds", cli.duration_seconds, "");
    r.add("steady_token_lifetime_s", cli.token_lifetime_seconds, "");
    let refreshes = {
        let log = recorder.log.lock().expect("lock");
        add_refresh_figures(r, "steady", &log, window_start, window_end)
    };
    let issued = stats.operation("issueToken", Some("200"));
    r.add("steady_issue_calls", issued, "");
    r.add(
        "steady_issue_calls_per_refresh",
        num(issued as f64 / refreshes as f64),
        "1.00",
    );
    r.add("steady_acs_429", stats.status("429"), "0");
    r.add("steady_expired_tokens_seen", consumer.expired_count(), "0");
    r.add(
        "steady_expired_tokens_max_overdue_s",
        num(consumer.max_overdue_s()),
        "",
    );
    r.add(
        "steady_consumer_stale_watch_reads",
        consumer
            .stale_view
            .load(std::sync::atomic::Ordering::Relaxed),
        "",
    );
    r.add(
        "steady_consumer_checks",
        consumer.checks.load(std::sync::atomic::Ordering::Relaxed),
        "",
    );
    r.add(
        "steady_operator_cpu_s_per_min",
        (cpu1.cpu_seconds - cpu0.cpu_seconds) / (duration.as_secs_f64() / 60.0),
        "",
    );
    r.add("steady_operator_rss_mib", mib(cpu1.rss_kib), "");
    Ok(())
}

/// Lateness, duplicates and spread of the new tokens seen in [start, end].
///
/// A new token *answers* the token it replaced when it came at or after that token's
/// renewalTime; one that came earlier is a *premature* refresh (a duplicate: the token it
/// replaced was not due). Lateness is measured for answers whose renewalTime lies in the
/// window. A token still current at the end whose renewalTime is more than `grace` before the
/// end is *overdue*.
/// Waits out a steady window of `duration`, printing the refreshes and expired tokens seen so
/// far every `tick`.
pub(crate) async fn steady_window(
    duration: Duration,
    tick: Duration,
    recorder: &RefreshRecorder,
    consumer: &ConsumerView,
) {
    let started = Instant::now();
    while started.elapsed() < duration {
        let left = duration.saturating_sub(started.elapsed());
        tokio::time::sleep(left.min(tick)).await;
        eprintln!(
            "[steady] {:6.1} s: refreshes {}, expired tokens seen {}",
            started.elapsed().as_secs_f64(),
            recorder.log.lock().expect("lock").refreshes.len(),
            consumer.expired_count()
        );
    }
}

pub(crate) fn add_refresh_figures(
    r: &mut Report,
    prefix: &str,
    log: &crate::observe::RefreshLog,
    start: f64,
    end: f64,
) -> usize {
    let grace = 5.0;
    let in_window = |t: i64| (t as f64) >= start.ceil() && (t as f64) <= end;
    let seen: Vec<_> = log
        .refreshes
        .iter()
        .filter(|x| in_window(x.issued_at))
        .collect();
    let answers: Vec<_> = seen
        .iter()
        .filter(|x| x.issued_at >= x.due_at && in_window(x.due_at))
        .collect();
    let premature = seen.iter().filter(|x| x.issued_at < x.due_at).count();
    let overdue = log
        .current_renewal
        .values()
        .filter(|t| (**t as f64) < end - grace)
        .count();
    let mut late_status: Vec<f64> = answers
        .iter()
        .map(|x| (x.issued_at - x.due_at) as f64)
        .collect();
    let mut late_seen: Vec<f64> = answers
        .iter()
        .map(|x| x.observed_at - x.due_at as f64)
        .collect();
    late_status.sort_by(f64::total_cmp);
    late_seen.sort_by(f64::total_cmp);
    r.add(&format!("{prefix}_new_tokens"), seen.len(), "");
    r.add(
        &format!("{prefix}_answers_to_due_tokens"),
        answers.len(),
        "",
    );
    r.add(&format!("{prefix}_premature_refreshes"), premature, "0");
    r.add(
        &format!("{prefix}_refreshes_per_due_token"),
        num(seen.len() as f64 / (seen.len() - premature) as f64),
        "1.00",
    );
    r.add(&format!("{prefix}_overdue_at_end"), overdue, "0");
    r.add(
        &format!("{prefix}_answers_over_5s_late"),
        answers
            .iter()
            .filter(|x| x.issued_at - x.due_at > 5)
            .count(),
        "",
    );
    for (name, values) in [("status", &late_status), ("seen", &late_seen)] {
        r.add(
            &format!("{prefix}_lateness_{name}_p50_s"),
            num(percentile(values, 50.0)),
            "",
        );
        r.add(
            &format!("{prefix}_lateness_{name}_p99_s"),
            num(percentile(values, 99.0)),
            if name == "status" { "<= 1" } else { "" },
        );
        r.add(
            &format!("{prefix}_lateness_{name}_max_s"),
            num(values.last().copied().unwrap_or(f64::NAN)),
            "",
        );
    }
    // Spread: new tokens per second of issue, over the whole seconds of the window.
    let (first, last) = (start.ceil() as i64, end.floor() as i64);
    let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
    for x in &seen {
        if (first..last).contains(&x.issued_at) {
            *per_second.entry(x.issued_at).or_default() += 1;
        }
    }
    let total: u64 = per_second.values().sum();
    let mean = total as f64 / (last - first).max(1) as f64;
    let max = per_second.values().copied().max().unwrap_or(0);
    r.add(&format!("{prefix}_refreshes_per_second_mean"), mean, "");
    r.add(&format!("{prefix}_refreshes_per_second_max"), max, "");
    r.add(
        &format!("{prefix}_herd_ratio_max_to_mean"),
        num(max as f64 / mean),
        "<= 2",
    );
    seen.len()
}

/// Counts `panicked at` in every operator log of this run.
fn panics(w: &World) -> usize {
    std::fs::read_dir(&w.logs)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("operator-"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .map(|text| text.matches("panicked at").count())
                .sum()
        })
        .unwrap_or(0)
}

/// Injects faults into about `share` of the ACS calls of the last tick (as a run of the next
/// calls, alternating 500 and 503).
async fn inject_faults(w: &World, calls_last_tick: u64, share: f64, status: u16) -> u64 {
    let count = (calls_last_tick as f64 * share).round() as u64;
    if count == 0 {
        return 0;
    }
    let fault = json!({"operation": null, "count": count, "status": status});
    match w
        .emulator
        .admin_send(reqwest::Method::POST, "admin/faults", Some(fault))
        .await
    {
        Ok(()) => count,
        Err(e) => {
            eprintln!("[chaos] fault injection failed: {e}");
            0
        }
    }
}

async fn chaos(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    if cli.baseline {
        return Err("chaos runs the operator only".into());
    }
    let n = cli.count;
    let mut w = World::setup(cli, bins, &emulator_lifetime_args(cli)).await?;
    w.start_operator().await?;
    let identities = w.api::<AcsIdentity>();
    let mut tracker = ReadyTracker::start(identities.clone(), n).await?;
    let consumer = ConsumerView::start(w.api::<Secret>(), Duration::from_millis(200)).await?;
    let recorder = RefreshRecorder::start(identities.clone()).await?;
    let window_start = unix_now();

    let duration = Duration::from_secs(cli.duration_seconds);
    let started = Instant::now();
    let apiserver_restarts_at = [duration / 3, duration * 2 / 3];
    let can_restart_apiserver = cli.kubeconfig.is_none();
    let mut apiserver_restarts = 0;
    let mut kills = 0;
    let mut next_kill = Duration::from_secs(rand::random_range(30..=60));
    let mut next_throttle_burst = Duration::from_secs(45);
    let (mut faults, mut injected_429) = (0u64, 0u64);
    let mut last_calls = w.emulator.stats().await?.calls();
    let mut fault_status = 500;

    // The identities are created while the chaos runs, so the create-then-crash window is hit.
    let create = create_identities(identities.clone(), names(n), cli.create_concurrency);
    tokio::pin!(create);
    let mut created = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < duration {
        tokio::select! {
            result = &mut create, if !created => { result?; created = true; }
            _ = tick.tick() => {}
        }
        let now = started.elapsed();
        let calls = w
            .emulator
            .stats()
            .await
            .map(|s| s.calls())
            .unwrap_or(last_calls);
        faults += inject_faults(&w, calls.saturating_sub(last_calls), 0.1, fault_status).await;
        fault_status = if fault_status == 500 { 503 } else { 500 };
        last_calls = calls;
        if now >= next_throttle_burst {
            let fault =
                json!({"operation": null, "count": 20, "status": 429, "retryAfterSeconds": 2});
            if w.emulator
                .admin_send(reqwest::Method::POST, "admin/faults", Some(fault))
                .await
                .is_ok()
            {
                injected_429 += 20;
            }
            next_throttle_burst = now + Duration::from_secs(60);
        }
        if can_restart_apiserver
            && apiserver_restarts < 2
            && now >= apiserver_restarts_at[apiserver_restarts]
        {
            eprintln!(
                "[chaos] {:6.1} s: restarting the API server",
                now.as_secs_f64()
            );
            w.cluster.restart_apiserver().await?;
            apiserver_restarts += 1;
        }
        if now >= next_kill {
            eprintln!(
                "[chaos] {:6.1} s: SIGKILL operator (ready {}/{n}, expired seen {})",
                now.as_secs_f64(),
                tracker.progress().ready,
                consumer.expired_count()
            );
            w.operator_mut()?
                .proc
                .stop("KILL", Duration::from_secs(10))
                .await;
            w.spawn_operator()?;
            kills += 1;
            next_kill = now + Duration::from_secs(rand::random_range(30..=60));
        }
    }
    if !created {
        create.await?;
    }
    let _ = w
        .emulator
        .admin_send(reqwest::Method::DELETE, "admin/faults", None)
        .await;
    let chaos_ended = Instant::now();
    let window_end = unix_now();
    w.operator_mut()?
        .wait_ready(Duration::from_secs(120))
        .await?;
    // Backoff may have reached its 5-minute cap during the chaos: allow for one full wait.
    let recovered = tracker.wait_all(Duration::from_secs(400)).await;
    r.add("chaos_seconds", cli.duration_seconds, "");
    r.add("chaos_operator_kills", kills, "");
    r.add(
        "chaos_apiserver_restarts",
        if can_restart_apiserver {
            json!(apiserver_restarts)
        } else {
            json!("skipped: --kubeconfig cluster")
        },
        "2",
    );
    r.add("chaos_faults_5xx_injected", faults, "");
    r.add("chaos_faults_429_injected", injected_429, "");
    r.add("chaos_all_ready_after", recovered.is_some(), "true");
    r.add(
        "chaos_all_ready_s_after_end",
        num(recovered.map_or(f64::NAN, |t| {
            t.saturating_duration_since(chaos_ended).as_secs_f64()
        })),
        "",
    );
    r.add(
        "chaos_acs_by_operation",
        w.emulator.stats().await?.to_json(),
        "",
    );
    r.add("chaos_expired_tokens_seen", consumer.expired_count(), "0");
    r.add(
        "chaos_expired_tokens_max_overdue_s",
        num(consumer.max_overdue_s()),
        "",
    );
    r.add(
        "chaos_consumer_stale_watch_reads",
        consumer
            .stale_view
            .load(std::sync::atomic::Ordering::Relaxed),
        "",
    );
    {
        let log = recorder.log.lock().expect("lock");
        add_refresh_figures(r, "chaos", &log, window_start, window_end);
    }

    r.add(
        "chaos_unreferenced_identities_before_delete",
        unreferenced_identities(&w).await?,
        "0",
    );

    let deleting = Instant::now();
    stream::iter(names(n))
        .map(|name| {
            let api = identities.clone();
            async move {
                let params = DeleteParams::default();
                match retry_api(|| api.delete(&name, &params)).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(Error::from(e)),
                }
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    // Revoke and delete are limited to 500 per 30 s each: allow for that and more.
    let gone_limit = Duration::from_secs_f64(n as f64 * 2.0 * 30.0 / 500.0 + 300.0);
    let left = loop {
        let left = identities.list_metadata(&Default::default()).await?.items;
        if left.is_empty() || deleting.elapsed() > gone_limit {
            break left;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let stuck = left.iter().filter(|o| !o.finalizers().is_empty()).count();
    r.add("chaos_delete_s", deleting.elapsed().as_secs_f64(), "");
    r.add("chaos_finalizers_stuck", stuck, "0");
    r.add(
        "chaos_identities_left_in_acs",
        w.emulator.live_identities().await?.len(),
        "0",
    );
    r.add("chaos_panics", panics(&w), "0");
    Ok(())
}
