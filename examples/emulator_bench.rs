//! Request latency and throughput of the ACS emulator on loopback.
//!
//! Starts the emulator in-process on 127.0.0.1:0 (plain HTTP, throttling off so the service's
//! 1000-per-30-s limit does not cap the figure), creates a pool of identities, then drives
//! signed `:issueAccessToken` requests from `--concurrency` workers until `--requests` are done
//! or `--seconds` have passed, and prints requests/s and latency percentiles. Client and
//! server share the machine (and this process's runtime), so the figure is end to end:
//! signing, HTTP, HMAC verification, token minting.
//!
//! `cargo run --release --example emulator_bench -- --requests 20000 --concurrency 16`
//!
//! `--data-dir DIR` runs the emulator with its state journaled there (`--data-dir` of
//! `acs-emulator`); `--operation create` measures creates (each one fsynced with a data dir)
//! instead of issue-token.

use acs_emulator::{EmulatorConfig, ThrottleConfig, serve};
use acs_identity_operator::acs::model::encode_identity_id;
use acs_identity_operator::acs::{AccessKey, signing};
use clap::Parser;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};
use url::Url;

#[derive(Debug, Parser)]
struct Args {
    /// Issue-token requests to send in total (upper bound).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Stop after this long even if requests remain.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Identities the requests are spread over.
    #[arg(long, default_value_t = 100)]
    identities: usize,
    /// Keep the emulator's state in this directory (journaled, as `acs-emulator --data-dir`).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// What to measure: `issue-token` or `create`.
    #[arg(long, default_value = "issue-token")]
    operation: String,
}

const KEY: &str = "ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";
const BODY: &[u8] = br#"{"scopes":["chat","voip"],"expiresInMinutes":60}"#;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let key = AccessKey::from_base64(KEY).expect("test key");
    let mut config = EmulatorConfig::new(key.clone());
    config.throttle = ThrottleConfig::off();
    config.data_dir.clone_from(&args.data_dir);
    let create = match args.operation.as_str() {
        "issue-token" => false,
        "create" => true,
        other => panic!("--operation must be issue-token or create, not {other}"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let emulator = serve(config, listener).await.expect("start emulator");
    let endpoint = emulator.endpoint().clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");

    let mut urls = Vec::with_capacity(args.identities);
    for _ in 0..args.identities {
        let url = endpoint
            .join("/identities?api-version=2023-10-01")
            .expect("url");
        let response = send(&http, &key, "POST", url, b"").await.expect("create");
        let created: serde_json::Value = response.json().await.expect("create body");
        let id = created["identity"]["id"].as_str().expect("id");
        let path = format!(
            "/identities/{}/:issueAccessToken?api-version=2023-10-01",
            encode_identity_id(id)
        );
        urls.push(endpoint.join(&path).expect("url"));
    }

    if create {
        let url = endpoint
            .join("/identities?api-version=2023-10-01")
            .expect("url");
        urls = vec![url];
    }
    let (body, success): (&'static [u8], u16) = if create { (b"", 201) } else { (BODY, 200) };
    let urls = Arc::new(urls);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let total = args.requests;
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (http, key, urls, next) = (http.clone(), key.clone(), urls.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0usize;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total || Instant::now() >= deadline {
                        break;
                    }
                    let url = urls[n % urls.len()].clone();
                    let sent = Instant::now();
                    match send(&http, &key, "POST", url, body).await {
                        Ok(response) if response.status() == success => {
                            // Read the body: a request is done when its answer is.
                            let ok = response.bytes().await.is_ok();
                            if ok {
                                latencies.push(sent.elapsed());
                            } else {
                                errors += 1;
                            }
                        }
                        _ => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();

    let mut latencies = Vec::with_capacity(args.requests);
    let mut errors = 0;
    for worker in workers {
        let (mut l, e) = worker.await.expect("worker");
        latencies.append(&mut l);
        errors += e;
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let stats = http
        .get(endpoint.join("/admin/stats").expect("url"))
        .send()
        .await
        .expect("stats")
        .text()
        .await
        .expect("stats body");
    emulator.shutdown().await;

    let ok = latencies.len();
    println!(
        "{} on loopback{}: {ok} ok, {errors} errors, {} identities, concurrency {}, {:.2} s",
        args.operation,
        if args.data_dir.is_some() {
            " with --data-dir"
        } else {
            ""
        },
        args.identities,
        args.concurrency,
        elapsed.as_secs_f64()
    );
    println!(
        "throughput: {:.0} requests/s",
        ok as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies.last().copied().unwrap_or_default()),
    );
    println!("emulator counters: {stats}");
}

async fn send(
    http: &reqwest::Client,
    key: &AccessKey,
    method: &str,
    url: Url,
    body: &[u8],
) -> reqwest::Result<reqwest::Response> {
    let signature = signing::sign_request(key, method, &url, body, SystemTime::now());
    http.request(method.parse().expect("method"), url)
        .header("x-ms-date", signature.x_ms_date)
        .header("x-ms-content-sha256", signature.x_ms_content_sha256)
        .header("authorization", signature.authorization)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}
