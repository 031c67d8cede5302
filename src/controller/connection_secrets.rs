//! Noticing when a Secret that a connection reads changes, without listing the cluster's
//! Secrets.
//!
//! Connections read a handful of Secrets (connection strings, CA bundles), which tenants
//! write and the operator cannot label, so no selector picks them out. kube-runtime's watcher
//! begins every watch with the state of everything it watches: each start of the operator
//! read the metadata of every Secret of the cluster (200,000 in the run at 100,000
//! identities), only to throw nearly all of it away. This watch starts at "now" instead, the
//! resourceVersion of a one-item list. A client built later reads its Secret then, so only
//! later changes matter, and those the watch brings.
//!
//! When the watch is lost for longer than the API server keeps events (410 Gone, as after an
//! API server restart), the changes in between are found without a list: the version each
//! cached client read of each of its Secrets, and what each failed build found (a missing
//! Secret too), is compared with the Secret's version now, one GET of metadata per Secret
//! ([`crate::policy::secret_versions`]). The same re-check runs after the first list, for
//! what changed before it answered.
//!
//! Our own token Secrets are left out by label: they change at every renewal and no
//! connection reads them.

use super::context::Context;
use super::token_secret::{MANAGED_BY_KEY, MANAGED_BY_VALUE};
use crate::policy::secret_versions::{self, SecretKey};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::DefaultBackoff;
use kube::{Client, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Seconds the API server keeps one watch request open before the next is made.
const WATCH_SECONDS: u32 = 290;

/// Follows changes to Secrets (metadata only) in `secrets`' scope and, for each that a
/// connection reads, drops the client built from it and re-checks the connections, which
/// then nudge their identities. Runs until dropped.
pub async fn watch(secrets: Api<PartialObjectMeta<Secret>>, ctx: Arc<Context>) {
    let selector = format!("{MANAGED_BY_KEY}!={MANAGED_BY_VALUE}");
    let mut backoff = DefaultBackoff::default();
    loop {
        let version = match now(&secrets, &selector).await {
            Ok(version) => version,
            Err(error) => {
                warn!(%error, "could not start the watch of connection Secrets");
                pause(&mut backoff).await;
                continue;
            }
        };
        // What changed before "now" and after a client read it: after a lost watch, whatever
        // changed while it was away; at the first start, a Secret read by a check that ran
        // before the list answered.
        if let Err(error) = recheck(&ctx).await {
            warn!(%error, "could not re-check the connections' Secrets");
            pause(&mut backoff).await;
            continue;
        }
        follow(&secrets, &selector, version, &ctx, &mut backoff).await;
        info!("watch of connection Secrets lost; re-checking and starting again");
        // A server that keeps saying "gone" at once is asked again at the backoff's pace.
        pause(&mut backoff).await;
    }
}

/// The resourceVersion of "now": that of a list of at most one object.
async fn now(
    secrets: &Api<PartialObjectMeta<Secret>>,
    selector: &str,
) -> Result<String, kube::Error> {
    let params = ListParams::default().labels(selector).limit(1);
    let list = secrets.list(&params).await?;
    Ok(list.metadata.resource_version.unwrap_or_default())
}

/// Watches from `version` on, across the API server's ends of each watch request, until the
/// server says the events since the last version seen are gone.
async fn follow(
    secrets: &Api<PartialObjectMeta<Secret>>,
    selector: &str,
    mut version: String,
    ctx: &Context,
    backoff: &mut DefaultBackoff,
) {
    let params = WatchParams::default()
        .labels(selector)
        .timeout(WATCH_SECONDS);
    loop {
        let events = match secrets.watch(&params, &version).await {
            Ok(events) => events,
            Err(kube::Error::Api(s)) if s.code == 410 => return,
            Err(error) => {
                debug!(%error, "watch of connection Secrets failed; trying again");
                pause(backoff).await;
                continue;
            }
        };
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            let secret = match event {
                Ok(WatchEvent::Added(s) | WatchEvent::Modified(s) | WatchEvent::Deleted(s)) => s,
                Ok(WatchEvent::Bookmark(b)) => {
                    version = b.metadata.resource_version;
                    continue;
                }
                Ok(WatchEvent::Error(s)) if s.code == 410 => return,
                Ok(WatchEvent::Error(s)) => {
                    debug!(code = s.code, message = %s.message, "watch of connection Secrets ended");
                    pause(backoff).await;
                    break;
                }
                Err(error) => {
                    debug!(%error, "watch of connection Secrets broke");
                    pause(backoff).await;
                    break;
                }
            };
            if let Some(v) = secret.resource_version() {
                version = v;
            }
            let key = (secret.namespace().unwrap_or_default(), secret.name_any());
            changed(ctx, &key);
        }
    }
}

/// A Secret changed: if connections read it, their clients read it again at next use and
/// their identities are nudged.
fn changed(ctx: &Context, (namespace, name): &SecretKey) {
    let users = ctx.connections.connections_using_secret(namespace, name);
    if users.is_empty() {
        return;
    }
    debug!(%namespace, %name, "connection Secret changed");
    ctx.connections.forget_secret(namespace, name);
    for (kind, conn_ns, conn_name) in users {
        ctx.nudge_identities(kind, conn_ns.as_deref(), &conn_name);
    }
}

/// The Secrets the cached clients and the failed builds read that changed since, each
/// counted as a change.
async fn recheck(ctx: &Context) -> Result<(), kube::Error> {
    let read = ctx.connections.secrets_read();
    let versions = versions_now(&ctx.client, &secret_versions::to_ask(&read)).await?;
    for key in secret_versions::changed(&read, &versions) {
        changed(ctx, &key);
    }
    Ok(())
}

/// The version each Secret of `keys` has now (`None`: it is gone).
pub async fn versions_now(
    client: &Client,
    keys: &[SecretKey],
) -> Result<HashMap<SecretKey, Option<String>>, kube::Error> {
    let mut versions = HashMap::with_capacity(keys.len());
    for (namespace, name) in keys {
        let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), namespace);
        let version = api.get_opt(name).await?.and_then(|s| s.resource_version());
        versions.insert((namespace.clone(), name.clone()), version);
    }
    Ok(versions)
}

async fn pause(backoff: &mut DefaultBackoff) {
    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
    tokio::time::sleep(delay).await;
}
