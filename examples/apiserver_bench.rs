//! Secret create/get/update throughput of the test API server from one kube-rs
//! client (run by tests/kube-apiserver/bench; see BENCHMARKS.md).
//!
//! Uses the cluster named by KUBECONFIG, or starts a local one like the tests:
//!
//!     cargo run --example apiserver_bench -- [OBJECTS] [IN_FLIGHT]
//!
//! Each phase is bounded: the whole run gives up after ten minutes.

use acs_test_support as support;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const RUN_LIMIT: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let objects: usize = args
        .next()
        .map_or(500, |a| a.parse().expect("OBJECTS: a number"));
    let in_flight: usize = args
        .next()
        .map_or(16, |a| a.parse().expect("IN_FLIGHT: a number"));

    tokio::time::timeout(RUN_LIMIT, run(objects, in_flight))
        .await
        .expect("the benchmark took over ten minutes");
}

async fn run(objects: usize, in_flight: usize) {
    for concurrency in [1, in_flight] {
        let ns = support::TestNamespace::create("bench").await;
        let secrets: Api<Secret> = ns.api();
        let names: Vec<String> = (0..objects).map(|i| format!("bench-{i}")).collect();

        let create = timed(&names, concurrency, |name| {
            let secrets = secrets.clone();
            async move {
                secrets
                    .create(&PostParams::default(), &secret(&name, "v1"))
                    .await
                    .map(drop)
            }
        })
        .await;
        let get = timed(&names, concurrency, |name| {
            let secrets = secrets.clone();
            async move { secrets.get(&name).await.map(drop) }
        })
        .await;
        // A replace without resourceVersion: an unconditional update of the whole object.
        let update = timed(&names, concurrency, |name| {
            let secrets = secrets.clone();
            async move {
                secrets
                    .replace(&name, &PostParams::default(), &secret(&name, "v2"))
                    .await
                    .map(drop)
            }
        })
        .await;

        println!(
            "secrets: {objects} objects, {concurrency} in flight: create {create:.0}/s, get {get:.0}/s, update {update:.0}/s"
        );
    }
}

/// Runs `op` once per name, `concurrency` at a time on one client; objects per second.
async fn timed<F, Fut>(names: &[String], concurrency: usize, op: F) -> f64
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    let start = Instant::now();
    stream::iter(names.iter().cloned().map(op))
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await
        .expect("a request failed");
    names.len() as f64 / start.elapsed().as_secs_f64()
}

/// A Secret about the size of an ACS token Secret (a JWT and a few fields).
fn secret(name: &str, version: &str) -> Secret {
    let token = format!("{version}.{}", "x".repeat(1200));
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            ("token".to_string(), ByteString(token.into_bytes())),
            (
                "expiresOn".to_string(),
                ByteString(b"2030-01-01T00:00:00Z".to_vec()),
            ),
        ])),
        ..Secret::default()
    }
}
