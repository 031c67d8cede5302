//! `--seeded` (issue 21): `restart`, `memory` and `steady` from the state a previous operator
//! left, seeded in minutes instead of created at the ACS limit (100,000 identities would take
//! 50 minutes): identities and tokens in the emulator (`POST /admin/identities:seed`, not a
//! data-plane call), AcsIdentities with their status and their token Secrets written through
//! the API server ([`acs_test_support::seed`]). Renewals are spread at random over the renewal
//! cycle after `--seed-quiet-seconds`. Definitions in BENCHMARKS.md ("100,000 identities").

use crate::observe::{
    ConsumerView, RefreshRecorder, WriteCounter, changed, resource_versions, unix_now,
};
use crate::processes::{Error, ProcStats};
use crate::report::{Report, num};
use crate::scenarios::{
    add_refresh_figures, add_side_cpu, idle_phase, mib, reconciles, settle, steady_window,
};
use crate::{Bins, Cli, Scenario, World, create_namespace, retry_api};
use acs_identity_operator::api::AcsIdentity;
use acs_test_support::seed::{Plan, seed};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub async fn run(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    match cli.scenario {
        Scenario::Restart => restart(cli, bins, r).await,
        Scenario::Memory => memory(cli, bins, r).await,
        Scenario::Steady => steady(cli, bins, r).await,
        other => Err(format!("--seeded is for restart, memory and steady, not {other:?}").into()),
    }
}

/// Seeds `--count` identities into the run's namespace; adds the seeding figures.
async fn seed_identities(w: &World, r: &mut Report, quiet_s: u64) -> Result<(), Error> {
    let mut plan = Plan::new(w.cli.count, &w.emulator.connection_string);
    plan.quiet = Duration::from_secs(w.cli.seed_quiet_seconds.unwrap_or(quiet_s));
    plan.concurrency = w.cli.seed_concurrency;
    let side0 = w.side();
    let seeded = seed(&w.client, &w.ns, &w.emulator.endpoint, &plan).await?;
    let side1 = w.side();
    let s = seeded.elapsed.as_secs_f64();
    eprintln!("[seeded] {} identities in {s:.1} s", w.cli.count);
    r.add("seed_s", s, "a few minutes at 100,000");
    r.add("seed_emulator_s", seeded.emulator.as_secs_f64(), "");
    r.add("seed_concurrency", plan.concurrency, "");
    r.add("seed_api_writes", seeded.writes, "");
    r.add("seed_api_writes_per_s", seeded.writes as f64 / s, "");
    r.add("seed_quiet_s", plan.quiet.as_secs(), "");
    if let (Some(a), Some(b)) = (seeded.first_renewal, seeded.last_renewal) {
        r.add("seed_first_renewal", a.to_string(), "");
        r.add("seed_last_renewal", b.to_string(), "");
    }
    add_side_cpu(r, "seed", &side0, &side1);
    Ok(())
}

/// GETs of single objects the API server answered, for `resource`, from its /metrics (verb
/// GET; a list is LIST).
async fn apiserver_requests(
    client: &kube::Client,
    verb: &str,
    resource: &str,
) -> Result<f64, Error> {
    apiserver_metric(client, "apiserver_request_total", verb, resource).await
}

/// The API server's watches of `resource` open now. A watch is counted in
/// `apiserver_request_total` only when it ends, so a streamed list is not seen there.
async fn apiserver_watches(client: &kube::Client, resource: &str) -> Result<f64, Error> {
    apiserver_metric(client, "apiserver_longrunning_requests", "WATCH", resource).await
}

/// The sum of the API server's `metric` series for `verb` on `resource`.
async fn apiserver_metric(
    client: &kube::Client,
    metric: &str,
    verb: &str,
    resource: &str,
) -> Result<f64, Error> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let prefix = format!("{metric}{{");
    Ok(text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| {
            l.contains(&format!("verb=\"{verb}\""))
                && l.contains(&format!("resource=\"{resource}\""))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

/// Waits until the operator has reconciled `n` identities (each re-observed once).
async fn wait_reobserved(w: &World, n: usize, limit: Duration) -> Result<Duration, Error> {
    let started = Instant::now();
    loop {
        if reconciles(&w.operator()?.metrics().await) >= n as f64 {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(format!("identities not all re-observed within {limit:?}").into());
        }
        // Each scrape encodes every identity's series: poll gently.
        tokio::time::sleep(Duration::from_millis(if n > 20_000 { 1000 } else { 250 })).await;
    }
}

async fn restart(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    let n = cli.count;
    let mut w = World::setup(cli, bins, &[]).await?;
    seed_identities(&w, r, 7200).await?;
    let identities = w.api::<AcsIdentity>();
    let secrets = w.api::<Secret>();
    let before = (
        resource_versions(&identities).await?,
        resource_versions(&secrets).await?,
    );
    let identity_writes = WriteCounter::start(w.api::<PartialObjectMeta<AcsIdentity>>()).await?;
    let secret_writes = WriteCounter::start(w.api::<PartialObjectMeta<Secret>>()).await?;
    let stats0 = w.emulator.stats().await?;
    let gets0 = (
        apiserver_requests(&w.client, "GET", "secrets").await?,
        apiserver_requests(&w.client, "GET", "acsidentities").await?,
    );
    let side0 = w.side();
    let started = Instant::now();
    w.spawn_operator()?;
    let ready = w
        .operator_mut()?
        .wait_ready(Duration::from_secs(300))
        .await?;
    wait_reobserved(&w, n, Duration::from_secs(600)).await?;
    let reobserved = started.elapsed();
    let cpu = w.operator_stats();
    let side1 = w.side();
    // Writes or calls that follow the last reconcile are still part of the restart.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stats = w.emulator.stats().await?.since(&stats0);
    let gets = (
        apiserver_requests(&w.client, "GET", "secrets").await? - gets0.0,
        apiserver_requests(&w.client, "GET", "acsidentities").await? - gets0.1,
    );
    let after = (
        resource_versions(&identities).await?,
        resource_versions(&secrets).await?,
    );
    r.add("restart_ready_s", ready.as_secs_f64(), "");
    r.add("restart_reobserved_s", reobserved.as_secs_f64(), "<= 15");
    r.add("restart_acs_calls", stats.calls(), "0");
    r.add("restart_identity_writes", identity_writes.count(), "0");
    r.add("restart_secret_writes", secret_writes.count(), "0");
    r.add("restart_secret_gets", gets.0, "0");
    r.add("restart_identity_gets", gets.1, "0");
    r.add(
        "restart_identities_changed",
        changed(&before.0, &after.0),
        "0",
    );
    r.add("restart_secrets_changed", changed(&before.1, &after.1), "0");
    r.add("restart_operator_cpu_s_to_reobserved", cpu.cpu_seconds, "");
    r.add("restart_operator_rss_mib", mib(cpu.rss_kib), "");
    r.add("restart_operator_peak_rss_mib", mib(cpu.hwm_kib), "");
    add_side_cpu(r, "restart", &side0, &side1);

    // Idle: nothing is due before --seed-quiet-seconds.
    let writes = [&identity_writes, &secret_writes];
    idle_phase(&w, r, Duration::from_secs(cli.idle_seconds), &writes, n).await
}

/// `m` unrelated Secrets of `kib` KiB (random bytes) in namespace `ns`.
async fn unrelated_secrets(w: &World, ns: &str, m: usize, kib: usize) -> Result<(), Error> {
    let api: Api<Secret> = Api::namespaced(w.client.clone(), ns);
    let bytes = kib * 1024;
    stream::iter(0..m)
        .map(|i| {
            let api = api.clone();
            async move {
                let mut data = vec![0u8; bytes];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut data);
                let mut secret = Secret::default();
                secret.metadata.name = Some(format!("unrelated-{i:06}"));
                secret.data = Some(BTreeMap::from([("blob".to_string(), ByteString(data))]));
                let params = PostParams::default();
                retry_api(|| api.create(&params, &secret)).await.map(drop)
            }
        })
        .buffer_unordered(w.cli.seed_concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Annotates `names` with a refresh request, 16 at a time.
async fn request_refresh(
    api: &Api<AcsIdentity>,
    names: &[String],
    value: &str,
) -> Result<(), Error> {
    stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            let patch = Patch::Merge(
                json!({"metadata": {"annotations": {"acsoperator.io/refresh-requested": value}}}),
            );
            async move {
                let params = PatchParams::default();
                retry_api(|| api.patch(&name, &params, &patch))
                    .await
                    .map(drop)
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn memory(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    let n = cli.count;
    let mut w = World::setup(cli, bins, &[]).await?;
    let m = cli.secrets.unwrap_or(n);
    let other = format!("{}-unrelated", w.ns);
    create_namespace(&w.client, &other).await?;
    let started = Instant::now();
    unrelated_secrets(&w, &other, m, cli.secret_kib).await?;
    r.add("memory_unrelated_secrets", m, "");
    r.add("memory_unrelated_secret_kib", cli.secret_kib, "");
    r.add(
        "memory_unrelated_create_s",
        started.elapsed().as_secs_f64(),
        "",
    );

    // The fixed base: the operator with no identity (the unrelated Secrets are there).
    w.start_operator().await?;
    settle(&w).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let base = w.operator_stats();
    r.add("memory_base_rss_mib", mib(base.rss_kib), "");
    r.add("memory_base_peak_rss_mib", mib(base.hwm_kib), "");
    w.operator_mut()?
        .proc
        .stop("TERM", Duration::from_secs(30))
        .await;

    seed_identities(&w, r, 7200).await?;
    // The start is a restart on the seeded state: counted as `restart` counts it.
    let identity_writes = WriteCounter::start(w.api::<PartialObjectMeta<AcsIdentity>>()).await?;
    let secret_writes = WriteCounter::start(w.api::<PartialObjectMeta<Secret>>()).await?;
    let stats0 = w.emulator.stats().await?;
    let gets0 = apiserver_requests(&w.client, "GET", "secrets").await?
        + apiserver_requests(&w.client, "GET", "acsidentities").await?;
    let side0 = w.side();
    let started = Instant::now();
    let ready = w.start_operator().await?;
    wait_reobserved(&w, n, Duration::from_secs(900)).await?;
    let reobserved = started.elapsed();
    let at_start = w.operator_stats();
    let side1 = w.side();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let gets = apiserver_requests(&w.client, "GET", "secrets").await?
        + apiserver_requests(&w.client, "GET", "acsidentities").await?
        - gets0;
    r.add(
        "memory_start_acs_calls",
        w.emulator.stats().await?.since(&stats0).calls(),
        "0",
    );
    r.add(
        "memory_start_writes",
        identity_writes.count() + secret_writes.count(),
        "0",
    );
    r.add("memory_start_gets", gets, "0 per identity");
    drop((identity_writes, secret_writes));
    r.add("memory_start_to_ready_s", ready.as_secs_f64(), "");
    r.add("memory_reobserved_s", reobserved.as_secs_f64(), "");
    // Who spent the start's two cores: the operator, and the API server that sends it all.
    r.add("memory_start_operator_cpu_s", at_start.cpu_seconds, "");
    r.add(
        "memory_start_apiserver_cpu_s",
        side1.apiserver.cpu_seconds - side0.apiserver.cpu_seconds,
        "",
    );
    r.add(
        "memory_start_etcd_cpu_s",
        side1.etcd.cpu_seconds - side0.etcd.cpu_seconds,
        "",
    );
    r.add("memory_start_peak_rss_mib", mib(at_start.hwm_kib), "<= 256");
    settle(&w).await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let steady = w.operator_stats();
    r.add("memory_steady_rss_mib", mib(steady.rss_kib), "");
    r.add(
        "memory_kib_per_identity_above_base",
        num((steady.rss_kib as f64 - base.rss_kib as f64) / n.max(1) as f64),
        "<= 2",
    );

    // A wave of renewals, at the ACS rate.
    let wave = cli.renewal_wave.unwrap_or((n / 10).min(3000));
    if wave > 0 {
        let stats0 = w.emulator.stats().await?;
        let t0 = Instant::now();
        let names: Vec<String> = (0..wave)
            .map(|i| format!("id-{:05}", i * (n / wave).max(1)))
            .collect();
        request_refresh(&w.api::<AcsIdentity>(), &names, "wave-1").await?;
        let limit = Duration::from_secs_f64(wave as f64 * 30.0 / 1000.0 + 300.0);
        loop {
            let issued = w
                .emulator
                .stats()
                .await?
                .since(&stats0)
                .operation("issueToken", Some("200"));
            if issued >= wave as u64 {
                break;
            }
            if t0.elapsed() > limit {
                return Err(format!("{issued}/{wave} renewals within {limit:?}").into());
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        settle(&w).await?;
        let after = w.operator_stats();
        r.add("memory_renewal_wave", wave, "");
        r.add("memory_renewal_wave_s", t0.elapsed().as_secs_f64(), "");
        r.add("memory_after_wave_rss_mib", mib(after.rss_kib), "");
    }
    // A relist of every watch: the API server restarts, and its watch cache starts at the
    // newest resourceVersion. A write just before makes that newer than every resourceVersion
    // the operator's watches hold, so they cannot resume ("too old") and list again.
    if cli.kubeconfig.is_none() {
        let t0 = Instant::now();
        let marker: k8s_openapi::api::core::v1::ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "relist-marker"}}))?;
        w.api::<k8s_openapi::api::core::v1::ConfigMap>()
            .create(&PostParams::default(), &marker)
            .await?;
        let reconciled = reconciles(&w.operator()?.metrics().await);
        w.cluster.restart_apiserver().await?;
        // The operator's watches back, as the new API server counts them: a paged list ends
        // before its watch starts; a streamed one is an open watch. Its watches are one of
        // AcsIdentities and two of Secrets (its own, and changes to the others).
        let mut lists = 0.0;
        while t0.elapsed() < Duration::from_secs(120) {
            lists = apiserver_requests(&w.client, "LIST", "acsidentities").await?
                + apiserver_requests(&w.client, "LIST", "secrets").await?;
            let identities = apiserver_watches(&w.client, "acsidentities").await?;
            let secrets = apiserver_watches(&w.client, "secrets").await?;
            if lists >= 2.0 || (identities >= 1.0 && secrets >= 2.0) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        settle(&w).await?;
        let after = w.operator_stats();
        // What the re-list made the operator do: nothing changed, so nothing to reconcile.
        r.add(
            "memory_relist_reconciles",
            reconciles(&w.operator()?.metrics().await) - reconciled,
            "0 (nothing changed)",
        );
        // Does the operator still serve requests after the relist? 10 refreshes, 120 s.
        let stats0 = w.emulator.stats().await?;
        let probe: Vec<String> = (0..10.min(n))
            .map(|i| format!("id-{:05}", n - 1 - i))
            .collect();
        request_refresh(&w.api::<AcsIdentity>(), &probe, "after-relist").await?;
        let t1 = Instant::now();
        let mut served = 0;
        while t1.elapsed() < Duration::from_secs(120) && served < probe.len() as u64 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            served = w
                .emulator
                .stats()
                .await?
                .since(&stats0)
                .operation("issueToken", Some("200"));
        }
        r.add(
            "memory_after_relist_refreshes_served",
            format!("{served}/{}", probe.len()),
            "all",
        );
        r.add(
            "memory_after_relist_refresh_s",
            t1.elapsed().as_secs_f64(),
            "",
        );
        r.add("memory_relist_lists_seen", lists, "");
        r.add("memory_relist_s", t0.elapsed().as_secs_f64(), "");
        r.add("memory_after_relist_rss_mib", mib(after.rss_kib), "");
        r.add(
            "memory_after_relist_peak_rss_mib",
            mib(after.hwm_kib),
            "<= 256",
        );
    }

    let end = w.operator_stats();
    let side = w.side();
    r.add("memory_rss_mib", mib(end.rss_kib), "");
    r.add("memory_peak_rss_mib", mib(end.hwm_kib), "<= 256");
    r.add("memory_apiserver_rss_mib", mib(side.apiserver.rss_kib), "");
    r.add("memory_etcd_rss_mib", mib(side.etcd.rss_kib), "");
    r.add("memory_driver_rss_mib", mib(side.driver.rss_kib), "");
    Ok(())
}

async fn steady(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    let n = cli.count;
    let mut w = World::setup(cli, bins, &[]).await?;
    // Renewals from the start of the seeding on: what falls due while seeding is the
    // operator's first work, before the window.
    seed_identities(&w, r, 0).await?;
    let started = Instant::now();
    w.start_operator().await?;
    wait_reobserved(&w, n, Duration::from_secs(900)).await?;
    let reobserved = started.elapsed();
    r.add("steady_reobserved_s", reobserved.as_secs_f64(), "");
    settle(&w).await?;

    let identity_writes = WriteCounter::start(w.api::<PartialObjectMeta<AcsIdentity>>()).await?;
    let secret_writes = WriteCounter::start(w.api::<PartialObjectMeta<Secret>>()).await?;
    let recorder = RefreshRecorder::start(w.api::<AcsIdentity>()).await?;
    let consumer = ConsumerView::start(w.api::<Secret>(), Duration::from_secs(1)).await?;
    let stats0 = w.emulator.stats().await?;
    let (cpu0, side0) = (w.operator_stats(), w.side());
    let window_start = unix_now();
    let duration = Duration::from_secs(cli.duration_seconds);
    steady_window(duration, Duration::from_secs(60), &recorder, &consumer).await;
    let window_end = unix_now();
    let (cpu1, side1) = (w.operator_stats(), w.side());
    let stats = w.emulator.stats().await?.since(&stats0);
    let seconds = duration.as_secs_f64();
    r.add("steady_seconds", cli.duration_seconds, "");
    let refreshes = {
        let log = recorder.log.lock().expect("lock");
        let per_minute = per_minute(&log, window_start, window_end);
        let mean = per_minute.iter().sum::<u64>() as f64 / per_minute.len().max(1) as f64;
        let max = per_minute.iter().copied().max().unwrap_or(0);
        r.add("steady_refreshes_per_minute_mean", num(mean), "");
        r.add("steady_refreshes_per_minute_max", max, "");
        r.add(
            "steady_herd_ratio_minute_max_to_mean",
            num(max as f64 / mean),
            "<= 2",
        );
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
    let minutes = seconds / 60.0;
    let cpu = cpu1.cpu_seconds - cpu0.cpu_seconds;
    r.add("steady_operator_cpu_s_per_min", cpu / minutes, "");
    r.add(
        "steady_operator_cpu_s_per_min_per_10000",
        cpu / minutes / (n as f64 / 10_000.0),
        "<= 0.1",
    );
    r.add("steady_operator_rss_mib", mib(cpu1.rss_kib), "");
    r.add("steady_operator_peak_rss_mib", mib(cpu1.hwm_kib), "");
    // Load per identity per day, scaled from the window.
    let per_day = |x: f64| x * 86_400.0 / seconds / n as f64;
    let writes = (identity_writes.count() + secret_writes.count()) as f64;
    let d = |a: &ProcStats, b: &ProcStats| b.cpu_seconds - a.cpu_seconds;
    r.add(
        "steady_writes_per_identity_per_day",
        num(per_day(writes)),
        "",
    );
    r.add(
        "steady_identity_writes_per_identity_per_day",
        num(per_day(identity_writes.count() as f64)),
        "",
    );
    r.add(
        "steady_secret_writes_per_identity_per_day",
        num(per_day(secret_writes.count() as f64)),
        "",
    );
    // Each write is one watch event to each watcher of its kind; the operator watches both.
    r.add(
        "steady_operator_watch_events_per_identity_per_day",
        num(per_day(writes)),
        "",
    );
    r.add(
        "steady_apiserver_cpu_ms_per_identity_per_day",
        num(per_day(d(&side0.apiserver, &side1.apiserver)) * 1000.0),
        "",
    );
    r.add(
        "steady_etcd_cpu_ms_per_identity_per_day",
        num(per_day(d(&side0.etcd, &side1.etcd)) * 1000.0),
        "",
    );
    r.add(
        "steady_operator_cpu_ms_per_identity_per_day",
        num(per_day(cpu) * 1000.0),
        "",
    );
    r.add("steady_apiserver_rss_mib", mib(side1.apiserver.rss_kib), "");
    r.add("steady_etcd_rss_mib", mib(side1.etcd.rss_kib), "");
    Ok(())
}

/// New tokens issued in each whole minute of [start, end].
fn per_minute(log: &crate::observe::RefreshLog, start: f64, end: f64) -> Vec<u64> {
    let minutes = ((end - start) / 60.0).floor() as usize;
    let mut counts = vec![0u64; minutes];
    for x in &log.refreshes {
        let offset = x.issued_at as f64 - start.ceil();
        if offset >= 0.0 {
            let i = (offset / 60.0) as usize;
            if i < minutes {
                counts[i] += 1;
            }
        }
    }
    counts
}
