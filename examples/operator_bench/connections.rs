//! The `connections` scenario (issue 19, attack 7): `--count` AcsConnections, each with the
//! largest `caBundle` the CRD allows (64 KiB of real CA certificates), spread over namespaces
//! of `--clients-per-namespace` connections so that every one of them is admitted and builds
//! its own client. The bundles are all different (each a different run of certificates from a
//! pool), or with `--identical-bundles` all the same. The operator's memory is read once every
//! connection is Ready, and through a restart (its peak while it lists and checks them all
//! again), against the 256 MiB limit of `deploy/`.
//!
//! ```sh
//! cargo run --release --example operator_bench -- connections --count 1000
//! cargo run --release --example operator_bench -- connections --count 1000 --identical-bundles
//! ```

use crate::processes::Error;
use crate::report::Report;
use crate::{Bins, Cli, World, create_namespace, retry_api};
use acs_identity_operator::api::AcsConnection;
use acs_identity_operator::api::connection::MAX_CA_BUNDLE;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use std::time::{Duration, Instant};

/// The limit `deploy/base/deployment.yaml` sets.
const LIMIT_MIB: f64 = 256.0;
const LABEL: &str = "operator-bench/connections";

pub async fn run(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    let n = cli.count;
    let per_ns = cli.clients_per_namespace.max(1);
    let mut w = World::setup(cli, bins, &[]).await?;
    w.extra_args
        .push(format!("--max-clients-per-namespace={per_ns}"));

    let started = Instant::now();
    let pool = certificate_pool(n.max(200));
    let bundles: Vec<String> = (0..n)
        .map(|i| bundle(&pool, if cli.identical_bundles { 0 } else { i }))
        .collect();
    let bundle_bytes = bundles.iter().map(String::len).max().unwrap_or(0);
    let certificates = bundles[0].matches("BEGIN CERTIFICATE").count();
    let distinct: std::collections::HashSet<&String> = bundles.iter().collect();
    r.add("connections_count", n, "");
    r.add("connections_bundle_bytes", bundle_bytes, "<= 65536");
    r.add("connections_bundle_certificates", certificates, "");
    r.add("connections_distinct_bundles", distinct.len(), "");
    r.add("connections_per_namespace", per_ns, "");

    // Namespaces of `per_ns` connections, each namespace with the emulator's Secret.
    let namespaces: Vec<String> = (0..n.div_ceil(per_ns))
        .map(|k| format!("{}-c{k:03}", w.ns))
        .collect();
    for ns in &namespaces {
        create_namespace(&w.client, ns).await?;
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "acs-conn"},
            "stringData": {"connectionString": w.emulator.connection_string},
        }))?;
        let api: Api<Secret> = Api::namespaced(w.client.clone(), ns);
        let params = PostParams::default();
        retry_api(|| api.create(&params, &secret)).await?;
    }
    stream::iter(bundles.into_iter().enumerate())
        .map(|(i, bundle)| {
            let api: Api<AcsConnection> =
                Api::namespaced(w.client.clone(), &namespaces[i / per_ns]);
            async move {
                let connection: AcsConnection = serde_json::from_value(json!({
                    "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsConnection",
                    "metadata": {"name": format!("c{i:04}"), "labels": {LABEL: "1"}},
                    "spec": {
                        "connectionStringSecretRef": {"name": "acs-conn"},
                        "caBundle": bundle,
                    },
                }))?;
                let params = PostParams::default();
                retry_api(|| api.create(&params, &connection)).await?;
                Ok::<(), Error>(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    r.add("connections_create_s", started.elapsed().as_secs_f64(), "");

    let ready = w.start_operator().await?;
    r.add("connections_start_to_readyz_s", ready.as_secs_f64(), "");
    let all_ready = wait_all_ready(&w, n).await?;
    r.add("connections_all_ready_s", all_ready.as_secs_f64(), "");
    let settled = sample_peak(&w, Duration::from_secs(10)).await;
    let stats = w.operator_stats();
    r.add("connections_rss_mib", mib(stats.rss_kib), "< 256");
    r.add(
        "connections_peak_rss_mib",
        mib(stats.hwm_kib.max(settled)),
        "< 256",
    );

    // Through a restart: the new process lists every connection and checks it again.
    w.operator_mut()?
        .proc
        .stop("TERM", Duration::from_secs(30))
        .await;
    let restarted = w.start_operator().await?;
    r.add(
        "connections_restart_to_readyz_s",
        restarted.as_secs_f64(),
        "",
    );
    // VmHWM holds the peak of the whole restart; sampled as well while it settles.
    let peak = sample_peak(&w, Duration::from_secs(30)).await;
    let after = w.operator_stats();
    r.add("connections_restart_rss_mib", mib(after.rss_kib), "< 256");
    r.add(
        "connections_restart_peak_rss_mib",
        mib(after.hwm_kib.max(peak)),
        "< 256",
    );
    r.add("connections_limit_mib", LIMIT_MIB, "");
    if let Some(status) = w.operator_mut()?.proc.exited() {
        return Err(format!("the operator exited after the restart: {status}").into());
    }
    Ok(())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `count` self-signed CA certificates (PEM), each with its own key and name.
fn certificate_pool(count: usize) -> Vec<String> {
    use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair};
    (0..count)
        .map(|i| {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let mut name = DistinguishedName::new();
            name.push(
                DnType::CommonName,
                format!("operator-bench private CA {i:05}"),
            );
            name.push(DnType::OrganizationName, "acs-identity-operator benchmarks");
            params.distinguished_name = name;
            let key = KeyPair::generate().expect("key");
            params.self_signed(&key).expect("certificate").pem()
        })
        .collect()
}

/// A bundle of at most [`MAX_CA_BUNDLE`] bytes: certificates of the pool from `start` on.
fn bundle(pool: &[String], start: usize) -> String {
    let mut bundle = String::new();
    for k in 0..pool.len() {
        let cert = &pool[(start + k) % pool.len()];
        if bundle.len() + cert.len() > MAX_CA_BUNDLE {
            break;
        }
        bundle.push_str(cert);
    }
    bundle
}

/// Waits until all `n` connections are Ready=True; the time it took.
async fn wait_all_ready(w: &World, n: usize) -> Result<Duration, Error> {
    let started = Instant::now();
    let api: Api<AcsConnection> = Api::all(w.client.clone());
    let params = ListParams::default().labels(&format!("{LABEL}=1"));
    loop {
        let list = retry_api(|| api.list(&params)).await?;
        let ready = list
            .items
            .iter()
            .filter(|c| {
                c.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(900) {
            let reasons: std::collections::BTreeMap<String, usize> = list
                .items
                .iter()
                .flat_map(|c| c.status.iter().flat_map(|s| s.conditions.iter()))
                .filter(|c| c.type_ == "Ready" && c.status != "True")
                .fold(Default::default(), |mut m, c| {
                    *m.entry(c.reason.clone()).or_default() += 1;
                    m
                });
            return Err(
                format!("{ready} of {n} connections Ready after 900 s: {reasons:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The highest RSS (KiB) of the operator sampled every 100 ms for `window`.
async fn sample_peak(w: &World, window: Duration) -> u64 {
    let started = Instant::now();
    let mut peak = 0;
    while started.elapsed() < window {
        peak = peak.max(w.operator_stats().rss_kib);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak
}
