//! BASELINE — not the operator. The straightforward reference implementation that issue 6's
//! burst and restart benchmarks compare the operator with: what a user might write instead.
//!
//! Every `--interval-seconds` it lists all AcsIdentities of a namespace and, for each one
//! (`--concurrency` at a time), reads its Secret; when the Secret is missing or its token has
//! less than a third of the requested lifetime left, it creates an ACS identity with a token
//! (or issues a token for the identity its status names), writes the Secret and the status.
//! No watches, no cache, no client-side rate limiter, no backoff: a failed call is simply
//! tried again on the next pass. No finalizer: deleting an AcsIdentity leaves its ACS identity.
//!
//! ```sh
//! KUBECONFIG=... ACS_CONNECTION_STRING='endpoint=...;accesskey=...' \
//!   target/release/examples/baseline_operator --namespace NS --metrics-bind 127.0.0.1:9000
//! ```
//!
//! For the benchmark driver it serves `/readyz` and `/metrics` with the operator's metric
//! names for reconciles (`acs_identity_reconciles_total`: identities looked at) and ACS calls
//! (`acs_api_requests_total{operation,code}`).

use acs_identity_operator::acs::{AcsClient, ClientOptions, ConnectionString, TokenLifetime};
use acs_identity_operator::api::AcsIdentity;
use clap::Parser;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    namespace: String,
    #[arg(long, default_value_t = 10)]
    interval_seconds: u64,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value = "127.0.0.1:9000")]
    metrics_bind: SocketAddr,
}

#[derive(Default)]
struct Counters {
    reconciles: AtomicU64,
    acs: Mutex<BTreeMap<(String, String), u64>>,
}

impl Counters {
    fn acs_call(&self, operation: &str, code: String) {
        *self
            .acs
            .lock()
            .expect("lock")
            .entry((operation.to_string(), code))
            .or_default() += 1;
    }

    fn render(&self) -> String {
        let mut out = format!(
            "acs_identity_reconciles_total{{result=\"success\"}} {}\n",
            self.reconciles.load(Ordering::Relaxed)
        );
        for ((op, code), n) in self.acs.lock().expect("lock").iter() {
            out.push_str(&format!(
                "acs_api_requests_total{{operation=\"{op}\",code=\"{code}\"}} {n}\n"
            ));
        }
        out
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let connection: ConnectionString = std::env::var("ACS_CONNECTION_STRING")?.parse()?;
    let acs = AcsClient::new(&connection, ClientOptions::default())?;
    let client = Client::try_default().await?;
    let counters: &'static Counters = Box::leak(Box::default());
    let listener = tokio::net::TcpListener::bind(cli.metrics_bind).await?;
    tokio::spawn(serve_metrics(listener, counters));

    let identities: Api<AcsIdentity> = Api::namespaced(client.clone(), &cli.namespace);
    let secrets: Api<Secret> = Api::namespaced(client, &cli.namespace);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        match identities.list(&ListParams::default()).await {
            Ok(list) => {
                futures::stream::iter(list.items)
                    .for_each_concurrent(cli.concurrency, |identity| {
                        sync(identity, &identities, &secrets, &acs, counters)
                    })
                    .await
            }
            Err(e) => eprintln!("listing AcsIdentities: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(cli.interval_seconds)) => {}
            _ = term.recv() => return Ok(()),
        }
    }
}

/// Makes sure one identity's Secret holds a token with a third of its lifetime left.
async fn sync(
    identity: AcsIdentity,
    identities: &Api<AcsIdentity>,
    secrets: &Api<Secret>,
    acs: &AcsClient,
    counters: &Counters,
) {
    counters.reconciles.fetch_add(1, Ordering::Relaxed);
    let name = identity.name_any();
    let secret_name = identity.spec.secret_name.clone().unwrap_or(name.clone());
    let lifetime_s = i64::from(identity.spec.token_lifetime_minutes) * 60;
    let now = Timestamp::now();
    let expires = match secrets.get_opt(&secret_name).await {
        Ok(s) => s.and_then(|s| {
            let bytes = s.data?.remove("expiresOn")?.0;
            String::from_utf8(bytes).ok()?.parse::<Timestamp>().ok()
        }),
        Err(e) => {
            eprintln!("{name}: reading the Secret: {e}");
            return;
        }
    };
    if expires.is_some_and(|t| t.as_second() - now.as_second() > lifetime_s / 3) {
        return;
    }
    let Ok(lifetime) = TokenLifetime::from_minutes(identity.spec.token_lifetime_minutes) else {
        return;
    };
    let known_id = identity.status.as_ref().and_then(|s| s.identity_id.clone());
    let issued = match &known_id {
        Some(id) => acs
            .issue_token(id, &identity.spec.scopes, lifetime)
            .await
            .map(|t| (id.clone(), t)),
        None => {
            acs.create_identity_with_token(&identity.spec.scopes, lifetime)
                .await
        }
    };
    let operation = if known_id.is_some() {
        "issueToken"
    } else {
        "createIdentityWithToken"
    };
    let (id, token) = match issued {
        Ok(ok) => {
            counters.acs_call(
                operation,
                if known_id.is_some() { "200" } else { "201" }.into(),
            );
            ok
        }
        Err(e) => {
            let code = e.status().map_or("error".into(), |s| s.to_string());
            counters.acs_call(operation, code);
            eprintln!("{name}: ACS: {e}");
            return;
        }
    };
    let expires_on = Timestamp::from_second(token.expires_on.as_second()).unwrap_or(now);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name},
        "stringData": {"token": token.token, "expiresOn": expires_on.to_string(), "identityId": id},
    });
    let apply = PatchParams::apply("baseline-operator").force();
    if let Err(e) = secrets
        .patch(&secret_name, &apply, &Patch::Apply(&secret))
        .await
    {
        eprintln!("{name}: writing the Secret: {e}");
        return;
    }
    let now_s = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let status = json!({
        "status": {
            "identityId": id,
            "secretName": secret_name,
            "tokenExpiresOn": expires_on,
            "lastIssuedAt": now_s,
            "observedGeneration": identity.metadata.generation,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "TokenValid", "message": "",
                "observedGeneration": identity.metadata.generation,
                "lastTransitionTime": now_s,
            }],
        }
    });
    if let Err(e) = identities
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        eprintln!("{name}: writing the status: {e}");
    }
}

/// `/readyz` (always 200) and `/metrics`, one request per connection.
async fn serve_metrics(listener: tokio::net::TcpListener, counters: &'static Counters) {
    while let Ok((mut stream, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let body = if request.starts_with("GET /metrics") {
                counters.render()
            } else {
                "ok\n".to_string()
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
