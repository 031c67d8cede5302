//! One tenant's trouble stays its own (issue 19, attack 3): team-b points its own
//! AcsConnection at an endpoint that accepts connections and never answers (a tarpit), puts
//! many AcsIdentities on it and touches its connection Secret; team-a, on the platform's
//! ClusterAcsConnection (the emulator), must not wait for it. Runs a cluster-wide operator on
//! the test API server, so the tests take turns ([`ONE_OPERATOR`]).

use acs_test_support as support;

use acs_emulator::testing::TEST_KEY;
use acs_identity_operator::api::{AcsConnection, AcsIdentity, ClusterAcsConnection};
use acs_identity_operator::controller::Settings;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::operator::{World, ready_reason, status_of};
use tokio::io::AsyncReadExt;

static ONE_OPERATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The first-byte bound the tests run with: short, so that a test of a silent endpoint does
/// not wait ten seconds per call.
const FIRST_BYTE: Duration = Duration::from_secs(2);

/// A TCP server on 127.0.0.1 that accepts connections and never answers. As a relay, it
/// passes connections on to `upstream` until it is made silent; then it drops the open ones
/// and tarpits the next.
struct Tarpit {
    port: u16,
    silent: Arc<AtomicBool>,
    /// Connections accepted while silent.
    tarpitted: Arc<AtomicU64>,
    /// Connections being relayed now.
    relayed: Arc<AtomicU64>,
    /// The most silent connections open at once.
    most_open: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Tarpit {
    async fn start() -> Self {
        Self::relay(None).await
    }

    async fn relay(upstream: Option<SocketAddr>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(AtomicBool::new(upstream.is_none()));
        let counter = || Arc::new(AtomicU64::new(0));
        let (tarpitted, open, most_open) = (counter(), counter(), counter());
        let relayed = counter();
        let relaying = relayed.clone();
        let state = (
            silent.clone(),
            Arc::clone(&tarpitted),
            Arc::clone(&open),
            Arc::clone(&most_open),
        );
        let task = tokio::spawn(async move {
            let (silent, tarpitted, open, most_open) = state;
            while let Ok((mut stream, _)) = listener.accept().await {
                let (silent, open, most_open) = (silent.clone(), open.clone(), most_open.clone());
                if silent.load(Ordering::SeqCst) {
                    tarpitted.fetch_add(1, Ordering::SeqCst);
                    let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                    most_open.fetch_max(now, Ordering::SeqCst);
                    tokio::spawn(async move {
                        // Reads (and ignores) until the client gives up.
                        let mut sink = [0u8; 4096];
                        while let Ok(n) = stream.read(&mut sink).await {
                            if n == 0 {
                                break;
                            }
                        }
                        open.fetch_sub(1, Ordering::SeqCst);
                    });
                    continue;
                }
                let upstream = upstream.expect("a relay until silent");
                let relaying = relaying.clone();
                relaying.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let relay = tokio::io::copy_bidirectional(&mut stream, &mut server);
                        let silenced = async {
                            while !silent.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        };
                        tokio::select! {
                            _ = relay => {}
                            _ = silenced => {}
                        }
                    }
                    relaying.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            silent,
            tarpitted,
            relayed,
            most_open,
            task,
        }
    }

    /// From now on nothing is answered: the connections being relayed are dropped.
    async fn silence(&self) {
        self.silent.store(true, Ordering::SeqCst);
        within(Duration::from_secs(5), || async {
            self.relayed.load(Ordering::SeqCst) == 0
        })
        .await
        .expect("relayed connections dropped");
    }

    fn connection_string(&self) -> String {
        format!(
            "endpoint=http://127.0.0.1:{}/;accesskey={TEST_KEY}",
            self.port
        )
    }

    fn tarpitted(&self) -> u64 {
        self.tarpitted.load(Ordering::SeqCst)
    }

    fn most_open(&self) -> u64 {
        self.most_open.load(Ordering::SeqCst)
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reconciles seen, as (namespace, name, when).
type Seen = Arc<Mutex<Vec<(String, String, Instant)>>>;

/// The platform's namespace (the emulator, its connection Secret) with a cluster-wide
/// operator at the default bulkheads, a ClusterAcsConnection to the emulator for team-a, and
/// team-b's namespace with its own AcsConnection `own` to `endpoint` (a connection string).
struct Tenants {
    platform: World,
    a: World,
    b: World,
    shared: String,
    seen: Seen,
}

impl Tenants {
    async fn new(token_lifetime: Option<Duration>, configure: impl FnOnce(&mut Settings)) -> Self {
        let mut platform = World::without_operator(|c| c.token_lifetime = token_lifetime).await;
        let a = platform.neighbour("team-a").await;
        let b = platform.neighbour("team-b").await;
        let shared = format!("{}-shared", platform.ns);
        let body = json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "ClusterAcsConnection",
            "metadata": {"name": shared},
            "spec": {
                "connectionStringSecretRef": {
                    "namespace": platform.ns, "name": "acs-conn", "key": "connectionString"
                },
                "allowedNamespaces": {"names": [a.ns, b.ns]},
            },
        });
        Api::<ClusterAcsConnection>::all(platform.client.clone())
            .patch(
                &shared,
                &PatchParams::apply("platform-team").force(),
                &Patch::Apply(body),
            )
            .await
            .unwrap();
        let seen = Seen::default();
        let hook_seen = seen.clone();
        platform.start_operator_with(move |s| {
            s.namespace = None;
            s.concurrency = Settings::default().concurrency;
            s.acs_first_byte_timeout = FIRST_BYTE;
            let counted = s.on_reconciled.clone();
            s.on_reconciled = Some(Arc::new(move |ns: &str, name: &str| {
                hook_seen
                    .lock()
                    .unwrap()
                    .push((ns.to_string(), name.to_string(), Instant::now()));
                if let Some(counted) = &counted {
                    counted(ns, name);
                }
            }));
            configure(s);
        });
        Tenants {
            platform,
            a,
            b,
            shared,
            seen,
        }
    }

    fn shared_spec(&self) -> Value {
        json!({
            "connectionRef": {"kind": "ClusterAcsConnection", "name": self.shared},
            "scopes": ["chat"],
        })
    }

    /// team-b's AcsConnection `own`, reading Secret `own-conn` that holds `connection_string`.
    async fn team_b_connection(&self, connection_string: &str) {
        self.b
            .put_secret("own-conn", "connectionString", connection_string)
            .await;
        self.b
            .apply::<AcsConnection>(
                "own",
                json!({"spec": {"connectionStringSecretRef": {"name": "own-conn", "key": "connectionString"}}}),
            )
            .await;
    }

    /// `count` AcsIdentities `b-0`, `b-1`, ... of team-b on its own connection.
    async fn team_b_identities(&self, count: usize) -> Vec<String> {
        let names: Vec<String> = (0..count).map(|i| format!("b-{i}")).collect();
        futures::stream::iter(names.clone())
            .for_each_concurrent(16, |name| async move {
                self.b
                    .identity(
                        &name,
                        json!({"connectionRef": {"name": "own"}, "scopes": ["chat"]}),
                    )
                    .await;
            })
            .await;
        names
    }

    /// team-b touches its connection Secret (an annotation: the content stays the same).
    async fn touch_team_b_secret(&self, value: &str) {
        let body = json!({"metadata": {"annotations": {"touched": value}}});
        self.b
            .api::<Secret>()
            .patch("own-conn", &PatchParams::default(), &Patch::Merge(body))
            .await
            .unwrap();
    }

    /// Reconciles of team-b's identities since `since`, in order.
    fn team_b_reconciles_since(&self, since: Instant) -> Vec<Instant> {
        let mut at: Vec<Instant> = self
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(ns, _, t)| *ns == self.b.ns && *t >= since)
            .map(|(_, _, t)| *t)
            .collect();
        at.sort();
        at
    }
}

impl Drop for Tenants {
    fn drop(&mut self) {
        let api = Api::<ClusterAcsConnection>::all(self.platform.client.clone());
        let name = self.shared.clone();
        // Cluster-scoped: not removed with the test's namespaces.
        tokio::spawn(async move { api.delete(&name, &DeleteParams::default()).await });
    }
}

/// Polls `check` every 200 ms for at most `bound`; the time it took, or `None`.
async fn within<F, Fut>(bound: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < bound {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

fn condition(obj: &AcsIdentity, type_: &str) -> Option<(String, String)> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// 150 identities of team-b on a tarpit, and team-b touching its Secret, delay neither a new
/// identity of team-a nor a renewal that falls due meanwhile, and team-b never holds more ACS
/// calls in flight than a namespace's share.
#[tokio::test]
async fn a_silent_tenant_delays_neither_a_newcomer_nor_a_renewal_of_another() {
    let _one = ONE_OPERATOR.lock().await;
    let t = Tenants::new(Some(Duration::from_secs(20)), |_| {}).await;
    t.a.identity("steady", t.shared_spec()).await;
    t.a.wait_ready("steady").await;

    let tarpit = Tarpit::start().await;
    t.team_b_connection(&tarpit.connection_string()).await;
    t.team_b_identities(150).await;
    within(Duration::from_secs(30), || async { tarpit.tarpitted() > 0 })
        .await
        .expect("team-b's identities reach the tarpit");
    t.touch_team_b_secret("1").await;

    t.a.identity("newcomer", t.shared_spec()).await;
    let ready = within(Duration::from_secs(20), || async {
        t.a.get::<AcsIdentity>("newcomer")
            .await
            .is_some_and(|o| ready_reason(&o).0 == "True")
    })
    .await;
    let took = ready.unwrap_or_else(|| panic!("newcomer not Ready within 20 s"));
    eprintln!("newcomer Ready after {took:?}");

    // A renewal of team-a that falls due while team-b keeps touching its Secret.
    let before = status_of(&t.a.get::<AcsIdentity>("steady").await.unwrap()).clone();
    let due = before.renewal_time.clone().expect("a renewal time").0;
    let touching = async {
        for i in 2..6 {
            t.touch_team_b_secret(&i.to_string()).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    };
    let renewed = async {
        within(Duration::from_secs(40), || async {
            let now = t.a.get::<AcsIdentity>("steady").await.unwrap();
            status_of(&now).renewal_time != before.renewal_time
        })
        .await
        .expect("steady renewed within 40 s");
        jiff::Timestamp::now()
    };
    let (_, renewed_at) = futures::future::join(touching, renewed).await;
    let late = renewed_at.duration_since(due).as_secs_f64();
    eprintln!("steady renewed {late:.1} s after its renewal time");
    assert!(late <= 5.0, "renewal {late:.1} s late");

    let most = tarpit.most_open();
    let cap = acs_identity_operator::policy::bulkhead::Limits::DEFAULT_PER_NAMESPACE as u64;
    eprintln!(
        "tarpit: {} connections, at most {most} open at once",
        tarpit.tarpitted()
    );
    assert!(
        most <= cap,
        "team-b held {most} ACS calls at once (a namespace's share is {cap})"
    );
}

/// A silent endpoint is found out: after a few calls its breaker opens, its identities say
/// AcsCircuitOpen and retry by themselves (Reconciling, not Stalled), and the endpoint sees
/// one probe per cooldown instead of every identity's retries.
#[tokio::test]
async fn a_silent_endpoint_opens_its_breaker_and_its_identities_back_off() {
    let _one = ONE_OPERATOR.lock().await;
    let t = Tenants::new(None, |_| {}).await;
    let tarpit = Tarpit::start().await;
    t.team_b_connection(&tarpit.connection_string()).await;
    let names = t.team_b_identities(20).await;
    for name in &names {
        let obj = t.b.wait_reason(name, "AcsCircuitOpen").await;
        assert_eq!(
            condition(&obj, "Reconciling"),
            Some(("True".into(), "AcsCircuitOpen".into())),
            "{name}"
        );
        assert_ne!(
            condition(&obj, "Stalled").map(|c| c.0),
            Some("True".into()),
            "{name}"
        );
    }
    let (at, window) = (tarpit.tarpitted(), Duration::from_secs(30));
    tokio::time::sleep(window).await;
    let calls = tarpit.tarpitted() - at;
    eprintln!("{calls} connections to the silent endpoint in {window:?} once open");
    // Cooldowns of 10, 20, 40 s: two or three probes; 20 identities retrying on their own
    // would have made dozens.
    assert!(calls <= 4, "{calls} connections in {window:?}");
    t.platform
        .wait_metrics("acs_api_calls_refused_total{reason=\"circuit_open\"}")
        .await;
    assert!(
        t.platform
            .metrics
            .encode()
            .contains("acs_api_circuits_open 1")
    );
}

/// A touched connection Secret queues the connection's identities again spread over a few
/// seconds, not all at once ahead of everyone else.
#[tokio::test]
async fn touching_a_connection_secret_requeues_its_identities_spread_out() {
    let _one = ONE_OPERATOR.lock().await;
    let t = Tenants::new(None, |_| {}).await;
    t.team_b_connection(&t.platform.connection_string()).await;
    let names = t.team_b_identities(150).await;
    for name in &names {
        t.b.wait_ready(name).await;
    }
    // Quiet: nothing of team-b's is reconciled for a second.
    within(Duration::from_secs(30), || async {
        let last = t.team_b_reconciles_since(Instant::now() - Duration::from_secs(1));
        last.is_empty()
    })
    .await
    .expect("team-b quiet");

    let touched = Instant::now();
    t.touch_team_b_secret("1").await;
    within(Duration::from_secs(30), || async {
        t.team_b_reconciles_since(touched).len() >= names.len()
    })
    .await
    .expect("every identity of the connection looked at again");
    let at = t.team_b_reconciles_since(touched);
    let (first, last) = (at[0], at[names.len() - 1]);
    let early = at
        .iter()
        .filter(|t| **t < first + Duration::from_millis(300))
        .count();
    eprintln!(
        "150 identities requeued over {:?}; {early} in the first 300 ms",
        last - first
    );
    assert!(
        last - first >= Duration::from_secs(1),
        "all requeued within {:?}",
        last - first
    );
    assert!(early <= 50, "{early} of 150 in the first 300 ms");
}

/// Cleanup goes through the breaker too: deleting many identities whose endpoint went silent
/// costs the endpoint a few calls, not one per identity and retry, and no identity is let go
/// of without its cleanup.
#[tokio::test]
async fn cleanups_of_a_silent_endpoint_go_through_its_breaker() {
    let _one = ONE_OPERATOR.lock().await;
    let t = Tenants::new(None, |_| {}).await;
    let emulator = t.platform.emulator.as_ref().unwrap().endpoint().clone();
    let upstream: SocketAddr = format!(
        "{}:{}",
        emulator.host_str().unwrap(),
        emulator.port().unwrap()
    )
    .parse()
    .unwrap();
    let relay = Tarpit::relay(Some(upstream)).await;
    t.team_b_connection(&relay.connection_string()).await;
    let names = t.team_b_identities(20).await;
    for name in &names {
        t.b.wait_ready(name).await;
    }
    relay.silence().await;
    for name in &names {
        t.b.delete::<AcsIdentity>(name).await;
    }
    let events: Api<k8s_openapi::api::events::v1::Event> = t.b.api();
    within(Duration::from_secs(45), || async {
        let list = events.list(&Default::default()).await.unwrap();
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("AcsCircuitOpen"))
    })
    .await
    .expect("a cleanup refused by the open breaker");
    let (at, window) = (relay.tarpitted(), Duration::from_secs(20));
    tokio::time::sleep(window).await;
    let calls = relay.tarpitted() - at;
    eprintln!("{calls} cleanup connections to the silent endpoint in {window:?} once open");
    assert!(calls <= 4, "{calls} connections in {window:?}");
    for name in &names {
        assert!(
            t.b.get::<AcsIdentity>(name).await.is_some(),
            "{name} let go of without its cleanup"
        );
    }
}
