//! The operator binary: `run` the controllers, or print the `crds`.

use acs_identity_operator::{api, controller, telemetry};
use acs_identity_operator::{health, leader, memory, policy};
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    version,
    about = "Keeps Azure Communication Services identities and fresh tokens in Kubernetes Secrets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers against the cluster from KUBECONFIG or the in-cluster config.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (for a namespaced install); default: the whole cluster.
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 32)]
    concurrency: u16,
    /// Timeout of one ACS call, in seconds.
    #[arg(long, default_value_t = 30)]
    acs_timeout_seconds: u64,
    /// Timeout of connecting to ACS (TCP and TLS), in seconds; at most --acs-timeout-seconds.
    #[arg(long, default_value_t = 3)]
    acs_connect_timeout_seconds: u64,
    /// Timeout from sending an ACS call until its answer begins, in seconds; at most
    /// --acs-timeout-seconds. An endpoint that accepts and never answers is given up on then.
    #[arg(long, default_value_t = 10)]
    acs_first_byte_timeout_seconds: u64,
    /// At most this many ACS calls in flight to one endpoint; a reconcile that finds no room
    /// does not wait for it (it would hold a worker): it goes on when a place is given back,
    /// at the latest in 1 to 4 s.
    #[arg(long, default_value_t = policy::bulkhead::Limits::DEFAULT_PER_ENDPOINT)]
    max_acs_calls_per_endpoint: usize,
    /// At most this many ACS calls in flight for one namespace's identities (keep it well
    /// below --concurrency, so that no namespace holds the shared workers).
    #[arg(long, default_value_t = policy::bulkhead::Limits::DEFAULT_PER_NAMESPACE)]
    max_acs_calls_per_namespace: usize,
    /// An endpoint's circuit breaker opens after this many calls in a row without an answer
    /// (timeouts, failed connections): its calls are refused at once for a cooldown (10 s,
    /// doubling to 120 s), then one is tried. 0 turns the breakers off.
    #[arg(long, default_value_t = policy::bulkhead::Limits::DEFAULT_FAILURES_TO_OPEN)]
    acs_breaker_failures: u32,
    #[arg(long, value_enum, default_value = "text")]
    log_format: telemetry::LogFormat,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_bind: SocketAddr,
    /// Run only while holding the leader Lease (for more than one replica).
    #[arg(long)]
    leader_election: bool,
    /// Namespace of the leader Lease; default: the pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    #[arg(long, default_value = "acs-identity-operator")]
    leader_election_lease: String,
    /// Seconds a leader may go without renewing before another replica takes over.
    #[arg(long, default_value_t = 15)]
    leader_election_duration_seconds: u64,
    /// Create identities with the AcsIdentity's uid as customId (ACS preview api-version), so
    /// a retried create never makes a second identity; `--idempotent-create=false` uses the GA
    /// create, for ACS resources without the preview.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    idempotent_create: bool,
    /// Restart the workloads of these kinds (comma-separated: Deployment, StatefulSet,
    /// DaemonSet) that name a renewed AcsIdentity in their acsoperator.io/restart-on-renewal
    /// annotation. Off when empty (the default); needs the workload-restarts RBAC component.
    #[arg(long, value_delimiter = ',', value_parser = controller::restarts::WorkloadKind::parse)]
    restart_workloads: Vec<controller::restarts::WorkloadKind>,
    /// Renewals of a workload's identities within this many seconds of the first are one
    /// restart. Keep it well below the renewal margin (renewBefore).
    #[arg(long, default_value_t = 10)]
    restart_debounce_seconds: u64,
    /// A workload is restarted at most once in this many seconds, unless its old token would
    /// expire first.
    #[arg(long, default_value_t = 60)]
    restart_min_interval_seconds: u64,
    /// At most this many restarts start in any --restart-window-seconds, cluster-wide.
    #[arg(long, default_value_t = 10)]
    restart_rate: u32,
    #[arg(long, default_value_t = 10)]
    restart_window_seconds: u64,
    /// Endpoints connections may name besides ACS's own domains (*.communication.azure.com,
    /// .us, .cn on port 443), comma-separated: a host (`acs-proxy.internal`), every name under
    /// a domain (`*.internal.example`), an address (`10.0.0.7`, `[fd00::7]`), each on port 443
    /// or with `:<port>` or `:*` (any port). E.g. a proxy, a private link name, the emulator.
    #[arg(long, value_delimiter = ',')]
    allowed_endpoints: Vec<policy::endpoint::EndpointRule>,
    /// At most this many distinct ACS clients (endpoint, credential, CA bundle) for one
    /// namespace's AcsConnections (identical connections share one); the others are refused
    /// with ConnectionLimitReached. ClusterAcsConnections are not counted.
    #[arg(long, default_value_t = controller::connections::DEFAULT_MAX_CLIENTS_PER_NAMESPACE)]
    max_clients_per_namespace: usize,
    /// Reconcile only the AcsIdentities this label selector matches (e.g. `shard=a`, or
    /// `!shard` for those without the label): one of several instances that split a cluster,
    /// each with its own selector and leader Lease. Default: every AcsIdentity.
    #[arg(long)]
    watch_label_selector: Option<String>,
    /// How the watches get their state at start and after a lost watch: `auto` (streamed
    /// where the API server serves streaming lists, else paged), `paged` (lists in pages of
    /// 500; any Kubernetes version) or `streamed` (Kubernetes' streaming lists, one object at
    /// a time; needs an API server that serves them).
    #[arg(long, value_enum, default_value_t = controller::InitialList::Auto, env = "ACS_OPERATOR_INITIAL_LIST")]
    initial_list: controller::InitialList,
    /// Use at most this percentage of each ACS resource's rate limits (1-100), when several
    /// instances share resources: their percentages should add up to at most 100.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(1..=100))]
    acs_budget_percent: u8,
    /// Threads that run the operator. One, the default, runs it all on one thread: its work
    /// is many small steps (a watch event, a reconcile), and handing them between threads
    /// cost more CPU than a second thread gave (a start on 10,000 identities took 0.51 CPU-s
    /// on one thread, 1.16 on two). More only where one core is not enough.
    #[arg(long, default_value_t = 1, env = "ACS_OPERATOR_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=64))]
    worker_threads: u16,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", api::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => match runtime(args.worker_threads) {
            Ok(runtime) => runtime.block_on(run(*args)),
            Err(e) => {
                eprintln!("cannot start the async runtime: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The runtime the operator runs on: one thread unless `threads` asks for more.
fn runtime(threads: u16) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut multi = tokio::runtime::Builder::new_multi_thread();
        multi.worker_threads(threads.into());
        multi
    };
    builder.enable_all().build()
}

async fn run(args: RunArgs) -> ExitCode {
    telemetry::init(args.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build a Kubernetes client");
            return ExitCode::FAILURE;
        }
    };
    // AZURE_* from the AKS workload identity webhook, for connections with workloadIdentity.
    let workload_identity = match controller::connections::WorkloadIdentityDefaults::from_env() {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the workload identity environment");
            return ExitCode::FAILURE;
        }
    };
    // The AcsIdentities this instance watches: the selector's check and the list probe ask
    // about them.
    let identities: kube::Api<api::AcsIdentity> = match args.namespace.as_deref() {
        Some(ns) => kube::Api::namespaced(client.clone(), ns),
        None => kube::Api::all(client.clone()),
    };
    if let Some(selector) = &args.watch_label_selector
        && let Err(e) = check_selector(&identities, selector).await
    {
        tracing::error!(selector = %selector, error = %e, "--watch-label-selector is not usable");
        return ExitCode::FAILURE;
    }
    let initial_list = match args.initial_list {
        controller::InitialList::Auto => {
            if controller::cache::serves_streaming_lists(&identities).await {
                controller::InitialList::Streamed
            } else {
                controller::InitialList::Paged
            }
        }
        chosen => chosen,
    };
    tracing::info!(?initial_list, "how the watches list");
    let budget = args.acs_budget_percent;
    let settings = controller::Settings {
        namespace: args.namespace,
        identity_selector: args.watch_label_selector,
        initial_list,
        rate_limiter: Arc::new(move || {
            acs_identity_operator::acs::AcsRateLimiter::with_limits(|operation| {
                policy::shard::budget(operation.acs_limit(), budget)
            })
        }),
        concurrency: args.concurrency.max(1),
        acs_timeout: Duration::from_secs(args.acs_timeout_seconds.max(1)),
        acs_connect_timeout: Duration::from_secs(args.acs_connect_timeout_seconds.max(1)),
        acs_first_byte_timeout: Duration::from_secs(args.acs_first_byte_timeout_seconds.max(1)),
        bulkheads: policy::bulkhead::Limits {
            per_endpoint: args.max_acs_calls_per_endpoint.max(1),
            per_namespace: args.max_acs_calls_per_namespace.max(1),
            failures_to_open: args.acs_breaker_failures,
            ..Default::default()
        },
        instance: std::env::var("POD_NAME").ok(),
        workload_identity,
        idempotent_create: args.idempotent_create,
        restarts: (!args.restart_workloads.is_empty()).then(|| {
            controller::restarts::RestartSettings {
                kinds: args.restart_workloads.clone(),
                limits: acs_identity_operator::policy::restart::Limits {
                    debounce: Duration::from_secs(args.restart_debounce_seconds),
                    min_interval: Duration::from_secs(args.restart_min_interval_seconds),
                    per_window: args.restart_rate.max(1),
                    window: Duration::from_secs(args.restart_window_seconds.max(1)),
                },
            }
        }),
        allowed_endpoints: policy::endpoint::AllowedEndpoints::acs_and(args.allowed_endpoints),
        max_clients_per_namespace: args.max_clients_per_namespace.max(1),
        ..controller::Settings::default()
    };
    let allowed: Vec<String> = settings
        .allowed_endpoints
        .rules()
        .map(|r| r.to_string())
        .collect();
    tracing::info!(?allowed, "connections may name these endpoints");
    let role = Arc::new(leader::Role::default());
    let health = health::HealthState {
        metrics: settings.metrics.clone(),
        synced: settings.ready.clone(),
        role: role.clone(),
        leader_election: args.leader_election,
    };
    let listener = match health::bind(args.metrics_bind).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %args.metrics_bind, error = %e, "cannot listen for metrics");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(health::serve(listener, health));
    tokio::spawn(memory::release_after_bursts());

    let operator_client = client.clone();
    let metrics = settings.metrics.clone();
    // Polled only once this replica may reconcile: at once without leader election, after
    // taking the Lease with it (the process ends when it loses the Lease).
    let operator = async move {
        metrics.set_leader(true);
        controller::run(operator_client, settings).await;
    };
    if !args.leader_election {
        operator.await;
        return ExitCode::SUCCESS;
    }
    let lease = leader::LeaseSettings {
        namespace: args.leader_election_namespace,
        name: args.leader_election_lease,
        identity: std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id())),
        duration_seconds: args.leader_election_duration_seconds.max(2),
        grace_seconds: (args.leader_election_duration_seconds / 3).max(1),
    };
    match leader::run_as_leader(client, lease, role, operator).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "leader election ended");
            ExitCode::FAILURE
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "operator".into())
}

/// Lists one AcsIdentity with `selector`, so that a selector the API server refuses stops the
/// start with its reason instead of failing every watch afterwards.
async fn check_selector(
    api: &kube::Api<api::AcsIdentity>,
    selector: &str,
) -> Result<(), kube::Error> {
    let params = kube::api::ListParams::default().labels(selector).limit(1);
    api.list_metadata(&params).await.map(|_| ())
}
