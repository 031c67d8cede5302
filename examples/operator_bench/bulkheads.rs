//! One tenant's trouble stays its own (issue 19, attack 3): `--count` AcsIdentities of team-b
//! on its own AcsConnection to a tarpit (a listener on 127.0.0.1 that accepts and never
//! answers), team-b touching that connection's Secret every 10 s, while team-a's 50
//! identities with short-lived tokens renew on the platform's ClusterAcsConnection and a new
//! AcsIdentity of team-a is applied every 15 s. Figures: each newcomer's time to Ready (goal
//! 2 s) and the lateness of team-a's renewals (goal 1 s). `--without-bulkheads` runs the
//! operator with the caps and breakers off and the connect and first-byte bounds at the
//! request timeout, for contrast.

use crate::observe::{RefreshRecorder, is_ready, unix_now};
use crate::processes::Error;
use crate::report::{Report, num, percentile};
use crate::scenarios::{add_refresh_figures, emulator_lifetime_args};
use crate::{Bins, Cli, World, create_identities_with, create_namespace, retry_api};
use acs_identity_operator::api::{AcsConnection, AcsIdentity};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// team-a's identities renewing through the run.
const STEADY: usize = 50;
const TOUCH_EVERY: Duration = Duration::from_secs(10);
const NEWCOMER_EVERY: Duration = Duration::from_secs(15);
/// The longest a newcomer is waited for.
const NEWCOMER_LIMIT: Duration = Duration::from_secs(300);

/// A listener that accepts, reads and never answers; counts connections.
struct Tarpit {
    port: u16,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Tarpit {
    async fn start() -> Result<Tarpit, Error> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let mut sink = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        Ok(Tarpit {
            port,
            accepted,
            task,
        })
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The operator's flags that turn the bulkheads off.
fn without_bulkheads() -> Vec<String> {
    vec![
        format!("--max-acs-calls-per-endpoint={}", u16::MAX),
        format!("--max-acs-calls-per-namespace={}", u16::MAX),
        "--acs-breaker-failures=0".into(),
        // The request timeout's default (30 s) for the other two bounds.
        "--acs-connect-timeout-seconds=30".into(),
        "--acs-first-byte-timeout-seconds=30".into(),
    ]
}

pub async fn run(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    let mut w = World::setup(cli, bins, &emulator_lifetime_args(cli)).await?;
    let shared = w.create_shared_connection().await?;
    let params = PostParams::default();

    // team-b: its own connection to the tarpit.
    let tarpit = Tarpit::start().await?;
    let team_b = format!("{}-b", w.ns);
    create_namespace(&w.client, &team_b).await?;
    let secrets: Api<Secret> = Api::namespaced(w.client.clone(), &team_b);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "own-conn"},
        "stringData": {"connectionString": format!(
            "endpoint=http://127.0.0.1:{}/;accesskey=dGFycGl0LWtleQ==", tarpit.port
        )},
    }))?;
    retry_api(|| secrets.create(&params, &secret)).await?;
    let own: AcsConnection = serde_json::from_value(json!({
        "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsConnection",
        "metadata": {"name": "own"},
        "spec": {"connectionStringSecretRef": {"name": "own-conn", "key": "connectionString"}},
    }))?;
    let own_api: Api<AcsConnection> = Api::namespaced(w.client.clone(), &team_b);
    retry_api(|| own_api.create(&params, &own)).await?;

    if w.cli.without_bulkheads {
        w.extra_args = without_bulkheads();
    }
    r.add("bulkheads", !w.cli.without_bulkheads, "");
    w.start_operator().await?;

    // team-a: steady identities on the shared connection, Ready before the attack.
    let shared_spec = json!({
        "connectionRef": {"kind": "ClusterAcsConnection", "name": shared},
        "scopes": ["chat"],
    });
    let steady = (0..STEADY).map(|i| format!("steady-{i:03}")).collect();
    create_identities_with(
        w.api(),
        steady,
        w.cli.create_concurrency,
        shared_spec.clone(),
    )
    .await?;
    let mut ready = crate::observe::ReadyTracker::start(w.api(), STEADY).await?;
    ready
        .wait_all(Duration::from_secs(300))
        .await
        .ok_or("team-a's identities were not Ready within 300 s")?;
    let recorder = RefreshRecorder::start(w.api::<AcsIdentity>()).await?;

    // The attack.
    let b_api: Api<AcsIdentity> = Api::namespaced(w.client.clone(), &team_b);
    let names = (0..w.cli.count).map(|i| format!("b-{i:04}")).collect();
    let own_spec = json!({"connectionRef": {"name": "own"}, "scopes": ["chat"]});
    let applied = create_identities_with(b_api, names, w.cli.create_concurrency, own_spec).await?;
    r.add("team_b_applied_s", applied.as_secs_f64(), "");
    let toucher = {
        let secrets = secrets.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let body = json!({"metadata": {"annotations": {"touched": i.to_string()}}});
                let patch = Patch::Merge(body);
                let _ = secrets
                    .patch("own-conn", &PatchParams::default(), &patch)
                    .await;
                tokio::time::sleep(TOUCH_EVERY).await;
            }
        })
    };

    let window_start = unix_now();
    let started = Instant::now();
    let duration = Duration::from_secs(w.cli.duration_seconds);
    let mut newcomers = Vec::new();
    let mut unready = 0;
    let mut i = 0;
    while started.elapsed() < duration {
        let name = format!("newcomer-{i:03}");
        i += 1;
        let newcomer: AcsIdentity = serde_json::from_value(json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
            "metadata": {"name": name}, "spec": shared_spec,
        }))?;
        let api = w.api::<AcsIdentity>();
        let applied = Instant::now();
        retry_api(|| api.create(&params, &newcomer)).await?;
        let became = await_condition(api, &name, |o: Option<&AcsIdentity>| {
            o.is_some_and(is_ready)
        });
        match tokio::time::timeout(NEWCOMER_LIMIT, became).await {
            Ok(Ok(_)) => newcomers.push(applied.elapsed().as_secs_f64()),
            _ => {
                unready += 1;
                newcomers.push(NEWCOMER_LIMIT.as_secs_f64());
            }
        }
        eprintln!(
            "[bulkheads] {:6.1} s: {name} Ready after {:.2} s; tarpit connections {}",
            started.elapsed().as_secs_f64(),
            newcomers.last().copied().unwrap_or_default(),
            tarpit.accepted.load(Ordering::Relaxed)
        );
        tokio::time::sleep(NEWCOMER_EVERY.saturating_sub(applied.elapsed())).await;
    }
    let window_end = unix_now();
    toucher.abort();

    newcomers.sort_by(f64::total_cmp);
    r.add("bulkheads_seconds", w.cli.duration_seconds, "");
    r.add("team_b_identities_on_tarpit", w.cli.count, "");
    r.add("newcomers", newcomers.len(), "");
    r.add(
        "newcomers_not_ready_within_300s",
        unready,
        "0 (counted as 300 s below)",
    );
    r.add(
        "newcomer_ready_p50_s",
        num(percentile(&newcomers, 50.0)),
        "",
    );
    r.add(
        "newcomer_ready_max_s",
        num(newcomers.last().copied().unwrap_or(f64::NAN)),
        "<= 2",
    );
    {
        let log = recorder.log.lock().expect("lock");
        add_refresh_figures(r, "team_a", &log, window_start, window_end);
    }
    let metrics = w.operator()?.metrics().await;
    r.add(
        "tarpit_connections",
        tarpit.accepted.load(Ordering::Relaxed),
        "",
    );
    r.add(
        "calls_refused_circuit_open",
        metrics.sum("acs_api_calls_refused_total", &[("reason", "circuit_open")]),
        "",
    );
    r.add(
        "calls_refused_crowded",
        metrics.sum(
            "acs_api_calls_refused_total",
            &[("reason", "namespace_busy")],
        ) + metrics.sum(
            "acs_api_calls_refused_total",
            &[("reason", "endpoint_busy")],
        ),
        "",
    );
    Ok(())
}
