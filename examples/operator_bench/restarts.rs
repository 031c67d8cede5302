//! The `restarts` scenario (issue 14): `--count` identities (1,000) consumed by `--count / 5`
//! Deployments (200; half consume one identity, half nine), through a renewal cycle (every
//! token refreshed once, at random moments over `--restart-spread-seconds`), a key rotation
//! (the connection changes, so ACS re-issues every token, at its rate), an operator restart
//! and a re-apply of every Deployment from "Git"; then another namespace's restarts behind
//! this one's backlog (issue 19, attack 6). Definitions in BENCHMARKS.md.

use crate::processes::Error;
use crate::report::{Report, num};
use crate::{Cli, World, create_identities, create_namespace, retry_api};
use acs_identity_operator::api::AcsIdentity;
use acs_identity_operator::policy::restart::{
    CONSUMES_ANNOTATION, RESTARTED_FOR_ANNOTATION, restart_value,
};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The operator's restart flags in this scenario.
pub fn operator_args(cli: &Cli) -> Vec<String> {
    vec![
        "--restart-workloads=Deployment".into(),
        format!(
            "--restart-debounce-seconds={}",
            cli.restart_debounce_seconds
        ),
        "--restart-min-interval-seconds=60".into(),
        format!("--restart-rate={}", cli.restart_rate),
        "--restart-window-seconds=10".into(),
    ]
}

/// The identities Deployment `d` of `targets` consumes: its own, and 8 more for the first half.
fn consumed(d: usize, targets: usize, names: &[String]) -> Vec<String> {
    let mut out = vec![names[d].clone()];
    if d < targets / 2 {
        let first = targets + 8 * d;
        out.extend(names.iter().skip(first).take(8).cloned());
    }
    out
}

fn manifest(name: &str, consumes: &[String]) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": {CONSUMES_ANNOTATION: consumes.join(",")}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            },
        },
    })
}

/// When each Deployment's generation went up, from a metadata watch.
struct Rollouts {
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Rollouts {
    fn watch(api: Api<PartialObjectMeta<Deployment>>) -> Self {
        let seen: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let mut generations: HashMap<String, i64> = HashMap::new();
            let stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let Ok(d) = event else { continue };
                let name = d.metadata.name.clone().unwrap_or_default();
                let g = d.metadata.generation.unwrap_or(0);
                let before = generations.insert(name.clone(), g);
                if let Some(before) = before {
                    for _ in before..g {
                        sink.lock()
                            .expect("lock")
                            .push((name.clone(), Instant::now()));
                    }
                }
            }
        });
        Self { seen, task }
    }

    fn since(&self, t: Instant) -> Vec<(String, Instant)> {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, at)| *at >= t)
            .cloned()
            .collect()
    }
}

impl Drop for Rollouts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The most restarts started in any window of `window` among `times`.
fn max_in_window(times: &mut [Instant], window: Duration) -> usize {
    times.sort();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

/// The value each Deployment must carry for the identities' current tokens.
async fn wanted(
    w: &World,
    targets: &[(String, Vec<String>)],
) -> Result<HashMap<String, String>, Error> {
    let identities = w.api::<AcsIdentity>().list(&Default::default()).await?;
    let hashes: HashMap<String, String> = identities
        .items
        .into_iter()
        .filter_map(|o| {
            let h = o.status?.issued_for?.token_hash;
            Some((o.metadata.name?, h))
        })
        .collect();
    Ok(targets
        .iter()
        .map(|(name, ids)| {
            let v = restart_value(
                ids.iter()
                    .map(|i| (i.as_str(), hashes.get(i).map(String::as_str))),
            );
            (name.clone(), v)
        })
        .collect())
}

/// Waits until every Deployment's template carries the value for the current tokens (and
/// the tokens stopped changing); returns how many do not after `limit`.
async fn wait_settled(
    w: &World,
    targets: &[(String, Vec<String>)],
    limit: Duration,
) -> Result<usize, Error> {
    let started = Instant::now();
    loop {
        let want = wanted(w, targets).await?;
        let list = w.api::<Deployment>().list(&Default::default()).await?;
        let behind = list
            .items
            .iter()
            .filter(|d| {
                let name = d.metadata.name.as_deref().unwrap_or_default();
                let template = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.annotations.as_ref())
                    .and_then(|a| a.get(RESTARTED_FOR_ANNOTATION));
                want.get(name).is_some_and(|v| template != Some(v))
            })
            .count();
        if behind == 0 || started.elapsed() > limit {
            return Ok(behind);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until every identity's token differs from `before`.
async fn wait_all_renewed(
    w: &World,
    before: &HashMap<String, String>,
    limit: Duration,
) -> Result<(), Error> {
    let started = Instant::now();
    loop {
        let list = w.api::<AcsIdentity>().list(&Default::default()).await?;
        let same = list
            .items
            .iter()
            .filter(|o| {
                let h = o
                    .status
                    .as_ref()
                    .and_then(|s| s.issued_for.as_ref())
                    .map(|i| &i.token_hash);
                h == before.get(o.metadata.name.as_deref().unwrap_or_default())
            })
            .count();
        if same == 0 {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(format!("{same} identities not renewed within {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn hashes(w: &World) -> Result<HashMap<String, String>, Error> {
    let list = w.api::<AcsIdentity>().list(&Default::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|o| Some((o.metadata.name?, o.status?.issued_for?.token_hash)))
        .collect())
}

/// Figures of one phase: restarts per target, the most started in any 10 s.
fn phase_figures(
    r: &mut Report,
    prefix: &str,
    rollouts: &Rollouts,
    since: Instant,
    targets: usize,
    behind: usize,
    cli: &Cli,
) {
    let restarts = rollouts.since(since);
    let mut times: Vec<Instant> = restarts.iter().map(|(_, t)| *t).collect();
    let mut per_target: HashMap<&str, usize> = HashMap::new();
    for (n, _) in &restarts {
        *per_target.entry(n.as_str()).or_default() += 1;
    }
    r.add(&format!("{prefix}_restarts"), restarts.len(), "");
    r.add(
        &format!("{prefix}_restarts_per_target"),
        num(restarts.len() as f64 / targets as f64),
        "1.00",
    );
    r.add(
        &format!("{prefix}_targets_restarted_more_than_once"),
        per_target.values().filter(|&&c| c > 1).count(),
        "0",
    );
    r.add(&format!("{prefix}_targets_behind"), behind, "0");
    r.add(
        &format!("{prefix}_max_restarts_in_10s"),
        max_in_window(&mut times, Duration::from_secs(10)),
        &format!("<= {}", cli.restart_rate),
    );
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        r.add(
            &format!("{prefix}_rollout_s"),
            num((*last - *first).as_secs_f64()),
            "",
        );
    }
}

pub async fn run(cli: &Cli, bins: crate::Bins, r: &mut Report) -> Result<(), Error> {
    let n = cli.count;
    let targets_n = (n / 5).max(2);
    let mut w = World::setup(cli, bins, &[]).await?;
    w.extra_args = operator_args(cli);
    w.start_operator().await?;
    let names: Vec<String> = (0..n).map(|i| format!("id-{i:05}")).collect();
    create_identities(
        w.api::<AcsIdentity>(),
        names.clone(),
        cli.create_concurrency,
    )
    .await?;
    let t0 = Instant::now();
    while hashes(&w).await?.len() < n {
        if t0.elapsed() > Duration::from_secs(600) {
            return Err("identities not all issued within 600 s".into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "[restarts] {n} identities issued in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let targets: Vec<(String, Vec<String>)> = (0..targets_n)
        .map(|d| (format!("app-{d:04}"), consumed(d, targets_n, &names)))
        .collect();
    let deployments = w.api::<Deployment>();
    let git = PatchParams::apply("git");
    let apply_all = |deployments: Api<Deployment>| {
        let targets = targets.clone();
        let git = git.clone();
        async move {
            stream::iter(targets)
                .map(|(name, ids)| {
                    let (api, git) = (deployments.clone(), git.clone());
                    async move {
                        let body = Patch::Apply(manifest(&name, &ids));
                        retry_api(|| api.patch(&name, &git, &body)).await.map(drop)
                    }
                })
                .buffer_unordered(16)
                .try_collect::<Vec<()>>()
                .await
        }
    };
    apply_all(deployments.clone()).await?;
    let rollouts = Rollouts::watch(w.api::<PartialObjectMeta<Deployment>>());
    // Opting in records the value without a restart.
    let t0 = Instant::now();
    loop {
        let list = deployments.list(&Default::default()).await?;
        let done = list
            .items
            .iter()
            .filter(|d| {
                d.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(RESTARTED_FOR_ANNOTATION))
            })
            .count();
        if done == targets_n {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            return Err(format!("{done}/{targets_n} Deployments recorded within 300 s").into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    r.add("targets", targets_n, "");
    r.add("targets_consuming_several", targets_n / 2, "");
    r.add("restart_rate_per_10s", cli.restart_rate, "");
    r.add("restart_debounce_s", cli.restart_debounce_seconds, "");
    r.add(
        "opt_in_restarts",
        rollouts.since(t0 - Duration::from_secs(3600)).len(),
        "0",
    );

    // A renewal cycle: each token renewed once, at a random moment of the spread.
    let before = hashes(&w).await?;
    let spread = Duration::from_secs(cli.restart_spread_seconds);
    let phase = Instant::now();
    let mut order: Vec<(Duration, String)> = names
        .iter()
        .map(|n| (spread.mul_f64(rand::random::<f64>()), n.clone()))
        .collect();
    order.sort();
    let identities = w.api::<AcsIdentity>();
    for (at, name) in order {
        tokio::time::sleep_until((phase + at).into()).await;
        let patch = Patch::Merge(
            json!({"metadata": {"annotations": {"acsoperator.io/refresh-requested": "cycle-1"}}}),
        );
        let params = PatchParams::default();
        retry_api(|| identities.patch(&name, &params, &patch)).await?;
    }
    wait_all_renewed(&w, &before, Duration::from_secs(600)).await?;
    let behind = wait_settled(&w, &targets, Duration::from_secs(900)).await?;
    phase_figures(r, "renewal", &rollouts, phase, targets_n, behind, cli);
    eprintln!(
        "[restarts] renewal cycle done in {:.1} s",
        phase.elapsed().as_secs_f64()
    );

    // A key rotation: the connection names the emulator by another host name, so every
    // token's connection fingerprint changes and ACS re-issues all of them.
    let before = hashes(&w).await?;
    let phase = Instant::now();
    let rotated = w
        .emulator
        .connection_string
        .replace("127.0.0.1", "localhost");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "acs-conn"},
                        "stringData": {"connectionString": rotated}});
    w.api::<Secret>()
        .patch(
            "acs-conn",
            &PatchParams::apply("bench").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    wait_all_renewed(&w, &before, Duration::from_secs(600)).await?;
    let behind = wait_settled(&w, &targets, Duration::from_secs(900)).await?;
    phase_figures(r, "rotation", &rollouts, phase, targets_n, behind, cli);
    eprintln!(
        "[restarts] key rotation done in {:.1} s",
        phase.elapsed().as_secs_f64()
    );

    // The operator restarts: nothing new was issued, nothing restarts.
    let quiet = Duration::from_secs(20);
    let phase = Instant::now();
    w.operator_mut()?
        .proc
        .stop("TERM", Duration::from_secs(30))
        .await;
    w.start_operator().await?;
    tokio::time::sleep(quiet).await;
    r.add(
        "operator_restart_restarts",
        rollouts.since(phase).len(),
        "0",
    );

    // Every Deployment re-applied from Git (server-side, another field manager).
    let phase = Instant::now();
    apply_all(deployments.clone()).await?;
    tokio::time::sleep(quiet).await;
    r.add("git_reapply_restarts", rollouts.since(phase).len(), "0");
    let kept = deployments
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|d| {
            d.spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .is_some_and(|a| a.contains_key(RESTARTED_FOR_ANNOTATION))
        })
        .count();
    r.add(
        "git_reapply_annotations_kept",
        format!("{kept}/{targets_n}"),
        "all",
    );
    let m = w.operator()?.metrics().await;
    r.add(
        "restarts_skipped_debounced_after_restart",
        m.sum(
            "acs_identity_workload_restarts_skipped_total",
            &[("reason", "debounced")],
        ),
        "",
    );
    r.add(
        "restarts_failed_after_restart",
        m.sum(
            "acs_identity_workload_restarts_total",
            &[("result", "failed")],
        ),
        "0",
    );
    backlog(&w, r).await
}

/// team-b's opted-in Deployments in the backlog phase, all on one identity.
const BACKLOG_TARGETS: usize = 100;
/// How long team-a's restart is waited for before it counts as not done.
const BACKLOG_LIMIT: Duration = Duration::from_secs(300);

/// Issue 19, attack 6: this namespace (team-b) keeps `BACKLOG_TARGETS` Deployments due, on
/// one identity with 60-minute tokens refreshed every 2 s; another namespace (team-a), with
/// a 24-hour token, renews, then revokes. Figures: team-a's time from its new token to its
/// Deployment's restart, each.
async fn backlog(w: &World, r: &mut Report) -> Result<(), Error> {
    let team_a = format!("{}-team-a", w.ns);
    create_namespace(&w.client, &team_a).await?;
    let apply = PatchParams::apply("bench").force();
    let a_secrets: Api<Secret> = Api::namespaced(w.client.clone(), &team_a);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "acs-conn"},
                        "stringData": {"connectionString": w.emulator.connection_string}});
    let body = Patch::Apply(&secret);
    retry_api(|| a_secrets.patch("acs-conn", &apply, &body)).await?;
    let a_connections: Api<acs_identity_operator::api::AcsConnection> =
        Api::namespaced(w.client.clone(), &team_a);
    let connection = json!({"apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsConnection",
        "metadata": {"name": "acs"},
        "spec": {"connectionStringSecretRef": {"name": "acs-conn", "key": "connectionString"}}});
    let body = Patch::Apply(&connection);
    retry_api(|| a_connections.patch("acs", &apply, &body)).await?;
    let identity = |name: &str, minutes: u32| {
        json!({"apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
            "metadata": {"name": name},
            "spec": {"connectionRef": {"name": "acs"}, "scopes": ["chat"], "tokenLifetimeMinutes": minutes}})
    };
    let a_identities: Api<AcsIdentity> = Api::namespaced(w.client.clone(), &team_a);
    let b_identities = w.api::<AcsIdentity>();
    let (bulk_body, alice_body) = (
        Patch::Apply(identity("bulk", 60)),
        Patch::Apply(identity("alice", 1440)),
    );
    retry_api(|| b_identities.patch("bulk", &apply, &bulk_body)).await?;
    retry_api(|| a_identities.patch("alice", &apply, &alice_body)).await?;
    let token = |api: Api<AcsIdentity>, name: &'static str, not: Option<String>| async move {
        let t0 = Instant::now();
        loop {
            let hash = api
                .get(name)
                .await?
                .status
                .and_then(|s| s.issued_for)
                .map(|i| i.token_hash);
            if hash.is_some() && hash != not {
                return Ok::<String, Error>(hash.unwrap_or_default());
            }
            if t0.elapsed() > BACKLOG_LIMIT {
                return Err(format!("{name}: no new token within {BACKLOG_LIMIT:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    token(b_identities.clone(), "bulk", None).await?;
    let alice = token(a_identities.clone(), "alice", None).await?;
    let bulk: Vec<String> = (0..BACKLOG_TARGETS)
        .map(|i| format!("bulk-{i:03}"))
        .collect();
    let b_deployments = w.api::<Deployment>();
    let git = PatchParams::apply("git");
    for name in &bulk {
        let body = Patch::Apply(manifest(name, &["bulk".to_string()]));
        retry_api(|| b_deployments.patch(name, &git, &body)).await?;
    }
    let a_deployments: Api<Deployment> = Api::namespaced(w.client.clone(), &team_a);
    let body = Patch::Apply(manifest("web", &["alice".to_string()]));
    retry_api(|| a_deployments.patch("web", &git, &body)).await?;
    let template = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(RESTARTED_FOR_ANNOTATION).cloned())
    };
    let recorded = |d: &Deployment| {
        d.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(RESTARTED_FOR_ANNOTATION))
    };
    let t0 = Instant::now();
    loop {
        let b = b_deployments.list(&Default::default()).await?;
        let a = a_deployments.get("web").await?;
        let done = b
            .items
            .iter()
            .filter(|d| {
                recorded(d)
                    && d.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("bulk-"))
            })
            .count();
        if done == BACKLOG_TARGETS && recorded(&a) {
            break;
        }
        if t0.elapsed() > BACKLOG_LIMIT {
            return Err(
                format!("{done}/{BACKLOG_TARGETS} of team-b's Deployments recorded").into(),
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // team-b's load: its identity refreshed every 2 s until the phase ends.
    let refresher = {
        let api = b_identities.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                let patch = Patch::Merge(
                    json!({"metadata": {"annotations": {"acsoperator.io/refresh-requested": format!("load-{n}")}}}),
                );
                let _ = api.patch("bulk", &PatchParams::default(), &patch).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let behind = || async {
        let hash = b_identities
            .get("bulk")
            .await?
            .status
            .and_then(|s| s.issued_for)
            .map(|i| i.token_hash);
        let value = restart_value([("bulk", hash.as_deref())]);
        let list = b_deployments.list(&Default::default()).await?;
        Ok::<usize, Error>(
            list.items
                .iter()
                .filter(|d| {
                    d.metadata
                        .name
                        .as_deref()
                        .is_some_and(|n| n.starts_with("bulk-"))
                })
                .filter(|d| template(d).as_deref() != Some(value.as_str()))
                .count(),
        )
    };
    // Let the backlog build: as many behind as there will be, or 60 s.
    let t0 = Instant::now();
    let mut waiting = behind().await?;
    while waiting < BACKLOG_TARGETS / 2 && t0.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        waiting = behind().await?;
    }
    r.add("backlog_team_b_targets", BACKLOG_TARGETS, "");
    r.add("backlog_team_b_behind_at_renewal", waiting, "");

    // team-a's restart after a new token for `annotation`: seconds, or the limit if none.
    let measure = |annotation: &'static str, old: String| {
        let (a_identities, a_deployments) = (a_identities.clone(), a_deployments.clone());
        async move {
            let patch = Patch::Merge(json!({"metadata": {"annotations": {annotation: "bench"}}}));
            let params = PatchParams::default();
            retry_api(|| a_identities.patch("alice", &params, &patch)).await?;
            let new = token(a_identities.clone(), "alice", Some(old)).await?;
            let handled = Instant::now();
            let value = restart_value([("alice", Some(new.as_str()))]);
            loop {
                let d = a_deployments.get("web").await?;
                if template(&d).as_deref() == Some(value.as_str()) {
                    return Ok::<(f64, String), Error>((handled.elapsed().as_secs_f64(), new));
                }
                if handled.elapsed() > BACKLOG_LIMIT {
                    return Ok((BACKLOG_LIMIT.as_secs_f64(), new));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // The renewal first: a revoke's restart does not wait for the workload's minimum
    // interval after the one before, a renewal's would.
    let (renewal_s, alice) = measure("acsoperator.io/refresh-requested", alice).await?;
    r.add(
        "backlog_team_a_renewal_restart_s",
        num(renewal_s),
        "<= 10 (300 = not within 300 s)",
    );
    r.add("backlog_team_b_behind_at_revoke", behind().await?, "");
    let (revoke_s, _) = measure("acsoperator.io/revoke-requested", alice).await?;
    r.add(
        "backlog_team_a_revoke_restart_s",
        num(revoke_s),
        "<= 10 (300 = not within 300 s)",
    );
    refresher.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_window_is_counted() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let mut times = vec![s(0), s(5000), s(9999), s(10_000), s(25_000)];
        assert_eq!(max_in_window(&mut times, Duration::from_secs(10)), 3);
        assert_eq!(max_in_window(&mut [], Duration::from_secs(10)), 0);
    }
}
