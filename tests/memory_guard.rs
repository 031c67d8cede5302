//! The CI memory guard (issue 21): the operator binary's peak resident set (VmHWM) over a
//! start on a few thousand seeded identities with their Secrets and a wave of renewals may
//! not grow past the committed baseline (`tests/memory-baseline.toml`) by more than 10 %.
//!
//! The figure is the test build's: `cargo test` runs the debug operator binary, whose memory
//! differs from the release build's (BENCHMARKS.md has the release figures). After a change
//! that is meant to move it, refresh the baseline with
//!
//! ```sh
//! MEMORY_GUARD_UPDATE=1 cargo test --test memory_guard
//! ```
//!
//! and commit the file with the reason.

use acs_test_support as support;

use std::path::PathBuf;
use std::time::{Duration, Instant};
use support::operator::World;
use support::process::OperatorProcess;
use support::seed::{Plan, seed};

/// Seeded identities: enough that the per-identity memory dominates the fixed base.
const IDENTITIES: usize = 2000;
/// Identities asked to refresh at once after the start (within one ACS window).
const WAVE: usize = 200;
/// How much the peak may exceed the baseline.
const TOLERANCE: f64 = 0.10;

fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/memory-baseline.toml")
}

/// `peak_kib` from the baseline file.
fn baseline_kib() -> u64 {
    let text = std::fs::read_to_string(baseline_path()).expect("tests/memory-baseline.toml");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("peak_kib"))
        .and_then(|v| v.trim().trim_start_matches('=').trim().parse().ok())
        .expect("peak_kib = <KiB> in tests/memory-baseline.toml")
}

/// VmHWM of process `pid`, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// The sum of `name`'s samples in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split_once('{').map_or(series, |(m, _)| m);
            (metric == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Waits (at most `limit`) until `done` holds, checking every 250 ms.
async fn wait_for<F, Fut>(what: &str, limit: Duration, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_memory_stays_within_ten_percent_of_the_baseline() {
    let world = World::without_operator(|_| {}).await;
    let endpoint = world.emulator.as_ref().unwrap().endpoint().to_string();
    let mut plan = Plan::new(IDENTITIES, &world.connection_string());
    plan.concurrency = 16;
    let seeded = seed(&world.client, &world.ns, &endpoint, &plan)
        .await
        .expect("seeding");
    eprintln!(
        "memory guard: {IDENTITIES} identities seeded in {:.1} s",
        seeded.elapsed.as_secs_f64()
    );

    let operator = OperatorProcess::spawn(
        support::operator_binary!(),
        ["run", "--namespace", world.ns.as_str()],
        |_, _| {},
    );
    let pid = operator.child.id().expect("operator pid");
    operator.wait_ready(Duration::from_secs(60)).await;
    let reconciles = || async {
        let text = operator
            .get("/metrics")
            .await
            .map(|r| r.1)
            .unwrap_or_default();
        metric_sum(&text, "acs_identity_reconciles_total")
    };
    wait_for(
        "every identity re-observed",
        Duration::from_secs(60),
        || async { reconciles().await >= IDENTITIES as f64 },
    )
    .await;
    // Nothing was due: a start on a seeded state calls ACS for nothing.
    assert_eq!(world.admin.count("issueToken", 200).await, 0);

    // A wave of renewals.
    for i in 0..WAVE {
        let name = format!("id-{:05}", i * (IDENTITIES / WAVE));
        world
            .annotate(&name, "acsoperator.io/refresh-requested", "guard")
            .await;
    }
    wait_for("the renewal wave", Duration::from_secs(60), || async {
        world.admin.count("issueToken", 200).await >= WAVE as u64
    })
    .await;
    let peak = peak_kib(pid);
    let log = operator.stop().await;
    assert!(!log.contains("panicked at"), "operator panicked:\n{log}");

    if std::env::var_os("MEMORY_GUARD_UPDATE").is_some() {
        let text = format!(
            "# The memory guard's baseline (tests/memory_guard.rs): the debug operator binary's\n\
             # peak RSS (VmHWM) over a start on {IDENTITIES} seeded identities and {WAVE} renewals.\n\
             # Refresh: MEMORY_GUARD_UPDATE=1 cargo test --test memory_guard\n\
             identities = {IDENTITIES}\n\
             peak_kib = {peak}\n"
        );
        std::fs::write(baseline_path(), text).expect("writing the baseline");
        eprintln!("memory guard: baseline set to {peak} KiB");
        return;
    }
    let baseline = baseline_kib();
    let limit = (baseline as f64 * (1.0 + TOLERANCE)) as u64;
    eprintln!("memory guard: peak {peak} KiB, baseline {baseline} KiB, limit {limit} KiB");
    assert!(
        peak <= limit,
        "the operator's peak RSS {peak} KiB is more than 10 % above the baseline {baseline} KiB \
         (tests/memory-baseline.toml); if the growth is intended, refresh the baseline as the \
         file says"
    );
}
