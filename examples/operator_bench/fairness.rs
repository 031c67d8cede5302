//! Fairness on a shared connection (issue 12): `--count` AcsIdentities of one namespace are
//! applied on a ClusterAcsConnection; once the operator holds a backlog of them in line, one
//! AcsIdentity of another namespace is applied. Its time to Ready is the figure (goal: 5 s
//! with 2,000 queued).

use crate::observe::is_ready;
use crate::processes::Error;
use crate::report::Report;
use crate::{Bins, Cli, World, create_identities_with, create_namespace, retry_api};
use acs_identity_operator::api::AcsIdentity;
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use std::time::{Duration, Instant};

/// The backlog (creates waiting for the ACS window) at which the newcomer is applied: the
/// issue's 2,000, or what `--count` beyond one window allows.
const BACKLOG: f64 = 2000.0;

pub async fn fairness(cli: &Cli, bins: Bins, r: &mut Report) -> Result<(), Error> {
    let mut w = World::setup(cli, bins, &[]).await?;
    let shared = w.create_shared_connection().await?;
    let params = PostParams::default();
    let other = format!("{}-other", w.ns);
    create_namespace(&w.client, &other).await?;
    w.start_operator().await?;

    let n = w.cli.count;
    let spec = json!({
        "connectionRef": {"kind": "ClusterAcsConnection", "name": shared},
        "scopes": ["chat"],
    });
    let names = (0..n).map(|i| format!("id-{i:05}")).collect();
    let t0 = Instant::now();
    let applied = create_identities_with(
        w.api::<AcsIdentity>(),
        names,
        w.cli.create_concurrency,
        spec.clone(),
    )
    .await?;
    r.add("heavy_applied_s", applied.as_secs_f64(), "");
    let waiting = wait_for_backlog(&w).await?;
    r.add("queued_creates_at_newcomer", waiting, "");
    r.add("newcomer_applied_at_s", t0.elapsed().as_secs_f64(), "");

    let newcomer: AcsIdentity = serde_json::from_value(json!({
        "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
        "metadata": {"name": "newcomer"}, "spec": spec,
    }))?;
    let api: Api<AcsIdentity> = Api::namespaced(w.client.clone(), &other);
    let started = Instant::now();
    retry_api(|| api.create(&params, &newcomer)).await?;
    let ready = await_condition(api, "newcomer", |o: Option<&AcsIdentity>| {
        o.is_some_and(is_ready)
    });
    tokio::time::timeout(Duration::from_secs(300), ready)
        .await
        .map_err(|_| "the newcomer was not Ready within 300 s")??;
    r.add(
        "newcomer_ready_s",
        started.elapsed().as_secs_f64(),
        "<= 5 s behind 2,000 queued creates",
    );
    let still = w.operator()?.metrics().await.sum(
        "acs_api_requests_waiting",
        &[("operation", "createIdentityWithToken")],
    );
    r.add("queued_creates_when_newcomer_ready", still, "");
    Ok(())
}

/// Waits until the operator reports at least [`BACKLOG`] creates in line (or all of
/// `--count` beyond one window, for smaller runs); returns how many.
async fn wait_for_backlog(w: &World) -> Result<f64, Error> {
    let want = BACKLOG
        .min(w.cli.count.saturating_sub(1000) as f64)
        .max(1.0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let waiting = w.operator()?.metrics().await.sum(
            "acs_api_requests_waiting",
            &[("operation", "createIdentityWithToken")],
        );
        if waiting >= want {
            return Ok(waiting);
        }
        if Instant::now() > deadline {
            return Err(format!("only {waiting} creates in line after 120 s").into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
