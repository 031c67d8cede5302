//! The state a previous operator would have left, written fast (issue 21): identities in the
//! emulator with the tokens it minted (`POST /admin/identities:seed`, no data-plane call),
//! AcsIdentities with the status the operator records, and their token Secrets, all written
//! through the API server as the operator writes them (the Secret and the status by
//! server-side apply as field manager [`MANAGER`]). A restarted operator finds every token
//! current and its Secret at the recorded resourceVersion: no ACS call, no write, no GET.
//!
//! The status is put together by the operator's own [`status::build`] from the token record,
//! so it is what a reconcile would write; only the connection fingerprint is computed here,
//! as `controller::connections` computes it (a difference would show as an ACS call per
//! identity after a restart, which the benchmarks and the memory guard count).
//!
//! Renewals are spread: identity `i`'s renewal time falls at a random moment of
//! [`Plan::quiet`] .. [`Plan::quiet`] + [`Plan::spread`] after the seeding starts, so that
//! nothing is due for `quiet` and a steady run sees the renewals spread over the cycle.

use acs_identity_operator::api::{AcsIdentity, AcsIdentityStatus, ConnectionRef, Provenance};
use acs_identity_operator::controller::MANAGER;
use acs_identity_operator::controller::conditions::apply_status;
use acs_identity_operator::controller::identity::FINALIZER;
use acs_identity_operator::controller::status::{self, Change, Handled};
use acs_identity_operator::controller::token_secret::{self, TokenContent};
use acs_identity_operator::policy::{
    Phase, RenewBefore, TokenParams, TokenRecord, provenance, renewal_time, whole_seconds,
};
use futures::{StreamExt, TryStreamExt, stream};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Identities per `POST /admin/identities:seed` (the emulator takes up to 5000, in a body
/// of at most 64 KiB: about 800 of these).
const BATCH: usize = 500;

/// What to seed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// AcsIdentities `{prefix}{i:05}`, i in 0..count.
    pub count: usize,
    pub prefix: String,
    /// The AcsConnection (in the namespace) they use.
    pub connection: String,
    /// The connection string that AcsConnection's Secret holds.
    pub connection_string: String,
    pub scopes: Vec<String>,
    /// spec.tokenLifetimeMinutes (60..=1440), and the tokens' lifetime.
    pub lifetime_minutes: u32,
    /// No renewal falls due before this long after the seeding starts.
    pub quiet: Duration,
    /// Renewals fall over this long after `quiet`; at most the renewal cycle (two thirds of
    /// the lifetime) minus `quiet`, to which it is cut.
    pub spread: Option<Duration>,
    /// Identities written at once.
    pub concurrency: usize,
}

impl Plan {
    pub fn new(count: usize, connection_string: &str) -> Self {
        Self {
            count,
            prefix: "id-".into(),
            connection: "acs".into(),
            connection_string: connection_string.to_string(),
            scopes: vec!["chat".into(), "voip".into()],
            lifetime_minutes: 1440,
            quiet: Duration::from_secs(7200),
            spread: None,
            concurrency: 32,
        }
    }

    pub fn names(&self) -> Vec<String> {
        (0..self.count)
            .map(|i| format!("{}{i:05}", self.prefix))
            .collect()
    }

    fn lifetime(&self) -> Duration {
        Duration::from_secs(u64::from(self.lifetime_minutes) * 60)
    }

    /// The renewal cycle: issue to renewal, two thirds of the lifetime (the default renewBefore).
    fn cycle(&self) -> Duration {
        self.lifetime() - self.lifetime() / 3
    }

    fn spread(&self) -> Duration {
        let most = self.cycle().saturating_sub(self.quiet);
        self.spread.unwrap_or(most).min(most)
    }
}

/// What a seeding did.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub names: Vec<String>,
    pub elapsed: Duration,
    /// Time spent in the emulator's seed requests.
    pub emulator: Duration,
    /// Writes through the API server (3 per identity: create, Secret, status).
    pub writes: usize,
    pub first_renewal: Option<Timestamp>,
    pub last_renewal: Option<Timestamp>,
}

/// Fingerprint of endpoint and key, as `controller::connections` computes it.
fn fingerprint(connection_string: &str) -> Result<(String, String), Error> {
    let cs: acs_identity_operator::acs::ConnectionString = connection_string.parse()?;
    let fingerprint = acs_identity_operator::acs::fingerprint::short_sha256_hex(&[
        cs.endpoint.as_str().as_bytes(),
        cs.access_key.to_base64().as_bytes(),
    ]);
    let endpoint = provenance::normalise_endpoint(cs.endpoint.as_str())
        .ok_or("the connection string's endpoint has no host")?;
    Ok((fingerprint, endpoint))
}

/// One identity as the emulator minted it.
struct Minted {
    name: String,
    id: String,
    token: String,
    issued_at: Timestamp,
    expires_on: Timestamp,
}

/// Seeds `plan.count` identities into namespace `ns`, whose AcsConnection `plan.connection`
/// reaches the emulator at `emulator` (its endpoint, where `/admin/` answers).
pub async fn seed(client: &Client, ns: &str, emulator: &str, plan: &Plan) -> Result<Seeded, Error> {
    let started = Instant::now();
    let (connection_fingerprint, endpoint) = fingerprint(&plan.connection_string)?;
    let home = Provenance {
        endpoint,
        connection_ref: ConnectionRef {
            kind: Default::default(),
            name: plan.connection.clone(),
        },
        origin: acs_identity_operator::api::Origin::Created,
    };
    let params = TokenParams::new(
        &plan
            .scopes
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("unknown scope in {:?}", plan.scopes))?,
        plan.lifetime_minutes,
        connection_fingerprint,
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = format!("{}/admin/identities:seed", emulator.trim_end_matches('/'));
    let t0 = whole_seconds(Timestamp::now());
    let (quiet, spread) = (plan.quiet, plan.spread());
    let lifetime = SignedDuration::try_from(plan.lifetime())?;
    let margin = SignedDuration::try_from(plan.lifetime() / 3)?;
    let names = plan.names();
    let identities: Api<AcsIdentity> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut emulator_time = Duration::ZERO;
    let (mut first, mut last): (Option<Timestamp>, Option<Timestamp>) = (None, None);
    for chunk in names.chunks(BATCH) {
        // Each renewal at a random moment of the spread: its token was issued a cycle before.
        let issued: Vec<Timestamp> = chunk
            .iter()
            .map(|_| {
                let due = quiet + spread.mul_f64(rand::random::<f64>());
                let expires = t0 + SignedDuration::try_from(due).unwrap_or_default() + margin;
                whole_seconds(expires - lifetime).min(t0)
            })
            .collect();
        let body = json!({"identities": issued.iter().map(|at| json!({
            "scopes": plan.scopes, "expiresInMinutes": plan.lifetime_minutes,
            "issuedAt": at.as_second(),
        })).collect::<Vec<_>>()});
        let asked = Instant::now();
        let response = http.post(&url).json(&body).send().await?;
        if !response.status().is_success() {
            return Err(format!("{url}: {}", response.status()).into());
        }
        let answer: Value = response.json().await?;
        emulator_time += asked.elapsed();
        let list = answer["identities"]
            .as_array()
            .ok_or("the seed answer has no identities")?;
        let mut minted = Vec::with_capacity(chunk.len());
        for ((name, at), entry) in chunk.iter().zip(&issued).zip(list) {
            let text = |key: &str| {
                entry[key]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("the seed answer has no {key}"))
            };
            minted.push(Minted {
                name: name.clone(),
                id: text("id")?,
                token: text("token")?,
                issued_at: *at,
                expires_on: text("expiresOn")?.parse()?,
            });
        }
        let renewals: Vec<Timestamp> = stream::iter(minted)
            .map(|m| {
                let (identities, secrets, params, home) = (&identities, &secrets, &params, &home);
                async move { write_one(identities, secrets, plan, params, home, m).await }
            })
            .buffer_unordered(plan.concurrency.max(1))
            .try_collect()
            .await?;
        for r in renewals {
            first = Some(first.map_or(r, |f| f.min(r)));
            last = Some(last.map_or(r, |l| l.max(r)));
        }
    }
    Ok(Seeded {
        names,
        elapsed: started.elapsed(),
        emulator: emulator_time,
        writes: 3 * plan.count,
        first_renewal: first,
        last_renewal: last,
    })
}

/// Writes one AcsIdentity, its Secret and its status; returns its renewal time.
async fn write_one(
    identities: &Api<AcsIdentity>,
    secrets: &Api<Secret>,
    plan: &Plan,
    params: &TokenParams,
    home: &Provenance,
    m: Minted,
) -> Result<Timestamp, Error> {
    let identity: AcsIdentity = serde_json::from_value(json!({
        "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
        // The finalizer the operator adds before anything else.
        "metadata": {"name": m.name, "finalizers": [FINALIZER]},
        "spec": {
            "connectionRef": {"name": plan.connection},
            "scopes": plan.scopes,
            "tokenLifetimeMinutes": plan.lifetime_minutes,
        },
    }))?;
    let post = PostParams::default();
    let obj = crate::retry_api(|| identities.create(&post, &identity)).await?;
    let content = TokenContent {
        token: m.token.clone(),
        expires_on: m.expires_on,
        identity_id: m.id.clone(),
    };
    let secret = token_secret::desired(&obj, &content, None);
    let apply = PatchParams::apply(MANAGER).force();
    let patch = Patch::Apply(&secret);
    let secret_name = obj.secret_name();
    let written = crate::retry_api(|| secrets.patch(&secret_name, &apply, &patch)).await?;
    let renewal = renewal_time(
        m.issued_at,
        m.expires_on,
        RenewBefore::Default,
        Phase::Keep,
        rand::random::<f64>(),
    );
    let record = TokenRecord {
        identity_id: m.id,
        params: params.clone(),
        issued_at: Some(m.issued_at),
        expires_on: m.expires_on,
        renewal_time: whole_seconds(renewal),
        token_hash: token_secret::token_hash(&m.token),
        secret_resource_version: written.metadata.resource_version,
    };
    let built: AcsIdentityStatus = status::build(
        &obj,
        AcsIdentityStatus::default(),
        Change::Current {
            token: &record,
            handled: Handled::default(),
        },
        Some(home.clone()),
        whole_seconds(Timestamp::now()),
    );
    let name = obj.metadata.name.clone().unwrap_or_default();
    crate::retry_api(|| apply_status(identities, &name, &built)).await?;
    Ok(record.renewal_time)
}
