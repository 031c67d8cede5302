//! The operator benchmarks of issue 6: one command per scenario, figures printed as a table
//! and as one JSON line.
//!
//! ```sh
//! cargo run --release --example operator_bench -- burst                # 1,000 identities
//! cargo run --release --example operator_bench -- burst --count 10000
//! cargo run --release --example operator_bench -- burst --baseline     # the reference loop
//! cargo run --release --example operator_bench -- restart --idle-seconds 60
//! cargo run --release --example operator_bench -- memory --count 1000 --secrets 1000
//! cargo run --release --example operator_bench -- steady --duration-seconds 600
//! cargo run --release --example operator_bench -- chaos --duration-seconds 600
//! cargo run --release --example operator_bench -- restarts             # 1,000 identities, 200 Deployments
//! cargo run --release --example operator_bench -- connections          # 1,000 connections, 64 KiB CA bundles
//! cargo run --release --example operator_bench -- bulkheads --count 500  # a tenant on a tarpit
//! # Issue 21: from a seeded state (what a previous operator left), 100,000 in minutes
//! cargo run --release --example operator_bench -- restart --seeded --count 100000
//! cargo run --release --example operator_bench -- memory --seeded --count 100000 --secret-kib 1
//! cargo run --release --example operator_bench -- steady --seeded --count 100000 --duration-seconds 600
//! ```
//!
//! `--seeded` (restart, memory, steady; `seeded.rs`) does not create the identities through
//! the operator at the ACS limit: it seeds the emulator's identities and tokens through its
//! admin API and writes the AcsIdentities, their status and their token Secrets as the
//! operator would have (`acs_test_support::seed`), then starts the operator on that state.
//!
//! Each run builds what it starts (`cargo build --bins --examples`, the same build as
//! `cargo build --release --bins --examples` and a no-op after it; `--no-build` skips it), then starts a test API server
//! (`tests/kube-apiserver/cluster up`, or reuses `--kubeconfig`), the `acs-emulator` binary at
//! the real ACS limits, installs the CRDs from `acs-identity-operator crds`, creates a
//! namespace with the connection Secret and AcsConnection, and runs the operator binary as a
//! child process so its CPU time and memory can be read from /proc. Everything it started is
//! stopped when the run ends, fails, times out (`--timeout-seconds`) or is interrupted.
//! See BENCHMARKS.md for the figures and the definitions behind them.

mod bulkheads;
mod connections;
mod fairness;
mod observe;
mod processes;
mod report;
mod restarts;
mod scenarios;
mod seeded;

use acs_identity_operator::api::{AcsConnection, AcsIdentity, ClusterAcsConnection};
use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use processes::{Cluster, Emulator, Error, Operator, ProcStats};
use serde::Deserialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N identities created at once; time to all Ready against the ACS limit.
    Burst,
    /// N identities Ready, the operator restarted: ACS calls, writes, time to re-observe; then idle CPU.
    Restart,
    /// N identities and M unrelated large Secrets: the operator's memory.
    Memory,
    /// N identities with short-lived tokens: refresh lateness, duplicates, expired tokens, herds.
    Steady,
    /// Short-lived tokens under ACS faults, operator kills and API server restarts; then delete all.
    Chaos,
    /// N creates from one namespace on a ClusterAcsConnection, then one from another: its wait.
    Fairness,
    /// N identities consumed by N/5 Deployments: restarts through a renewal cycle, a key
    /// rotation, an operator restart and a Git re-apply (issue 14).
    Restarts,
    /// N AcsConnections with the largest caBundle allowed, distinct or identical: the
    /// operator's memory, and through a restart (issue 19).
    Connections,
    /// N identities of one namespace on a tarpit, its Secret touched every 10 s: another
    /// namespace's newcomers' time to Ready and its renewals' lateness (issue 19).
    Bulkheads,
}

#[derive(Debug, Clone, Parser)]
#[command(about = "Operator scale, restart, memory, refresh and fault benchmarks (issue 6)")]
pub struct Cli {
    pub scenario: Scenario,
    /// Identities to create (default 1000).
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// Run the baseline (examples/baseline_operator.rs) instead of the operator.
    #[arg(long)]
    pub baseline: bool,
    /// Use this cluster instead of starting a test API server.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The operator's (and baseline's) --concurrency.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u16,
    /// Run the operator with --namespace (default: cluster-wide, as installed by default).
    #[arg(long)]
    pub namespaced: bool,
    /// AcsIdentity creates in flight from the driver.
    #[arg(long, default_value_t = 16)]
    pub create_concurrency: usize,
    /// restart: length of the idle measurement after the restart.
    #[arg(long, default_value_t = 60)]
    pub idle_seconds: u64,
    /// restart: signal that stops the operator (TERM like a rollout, or KILL).
    #[arg(long, default_value = "TERM")]
    pub kill_signal: String,
    /// memory: unrelated Secrets in another namespace (default: --count).
    #[arg(long)]
    pub secrets: Option<usize>,
    /// memory: size of each unrelated Secret in KiB.
    #[arg(long, default_value_t = 100)]
    pub secret_kib: usize,
    /// steady, chaos: measurement window.
    #[arg(long, default_value_t = 600)]
    pub duration_seconds: u64,
    /// steady, chaos: the emulator's --token-lifetime-seconds.
    #[arg(long, default_value_t = 60)]
    pub token_lifetime_seconds: u64,
    /// The baseline's listing interval.
    #[arg(long, default_value_t = 10)]
    pub baseline_interval_seconds: u64,
    /// Give up (and clean up) after this long.
    #[arg(long, default_value_t = 3600)]
    pub timeout_seconds: u64,
    /// Also append the JSON line to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Keep the directory with the logs of the emulator, operator and cluster.
    #[arg(long)]
    pub keep_logs: bool,
    /// Do not run `cargo build` for the binaries first.
    #[arg(long)]
    pub no_build: bool,
    /// restarts: the operator's --restart-rate (restarts started per 10 s).
    #[arg(long, default_value_t = 50)]
    pub restart_rate: u32,
    /// restarts: the operator's --restart-debounce-seconds.
    #[arg(long, default_value_t = 60)]
    pub restart_debounce_seconds: u64,
    /// restarts: the renewal cycle's refreshes fall at random moments of this many seconds.
    #[arg(long, default_value_t = 30)]
    pub restart_spread_seconds: u64,
    /// connections: the operator's --max-clients-per-namespace, and connections per namespace.
    #[arg(long, default_value_t = 10)]
    pub clients_per_namespace: usize,
    /// connections: every connection with the same CA bundle (default: all different).
    #[arg(long)]
    pub identical_bundles: bool,
    /// bulkheads: run the operator with the caps and breakers off, for contrast.
    #[arg(long)]
    pub without_bulkheads: bool,
    /// restart, memory, steady: start from a seeded state instead of creating the identities
    /// through the operator (issue 21).
    #[arg(long)]
    pub seeded: bool,
    /// --seeded: no renewal falls due before this long after the seeding starts (default:
    /// 7200 for restart and memory, 0 for steady).
    #[arg(long)]
    pub seed_quiet_seconds: Option<u64>,
    /// --seeded: identities (and memory's unrelated Secrets) written at once.
    #[arg(long, default_value_t = 32)]
    pub seed_concurrency: usize,
    /// memory --seeded: identities asked to refresh at once (default: count/10, at most 3000).
    #[arg(long)]
    pub renewal_wave: Option<usize>,
}

impl Cli {
    pub fn implementation(&self) -> &'static str {
        if self.baseline {
            "baseline"
        } else {
            "operator"
        }
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The binaries the driver runs, next to its own executable.
pub struct Bins {
    pub operator: PathBuf,
    pub emulator: PathBuf,
    pub baseline: PathBuf,
}

impl Bins {
    fn locate() -> Result<(Bins, bool), Error> {
        let exe = std::env::current_exe()?;
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("cannot locate the target directory")?;
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        Ok((
            Bins {
                operator: profile_dir.join("acs-identity-operator"),
                emulator: profile_dir.join("acs-emulator"),
                baseline: profile_dir.join("examples/baseline_operator"),
            },
            release,
        ))
    }

    /// `cargo run --example` builds the example only; the driver needs the binaries too.
    /// All examples are built with them: that is the release build README documents, and an
    /// example build enables the dev-dependencies' features, so building the binaries alone
    /// would resolve other features and recompile half the tree at every switch.
    fn build(release: bool) -> Result<(), Error> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command
            .args(["build", "--bins", "--examples"])
            .current_dir(repo());
        // `cargo run` gives this process the package's CARGO_PKG_* and friends; build
        // scripts that watch such variables (ring's does) would see them changed and
        // rebuild half the tree compared with the same build from a shell.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let per_crate = [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ];
            if per_crate.iter().any(|p| key.starts_with(p)) || key == "CARGO_PRIMARY_PACKAGE" {
                command.env_remove(key.as_ref());
            }
        }
        if release {
            command.arg("--release");
        }
        let status = command.status()?;
        if !status.success() {
            return Err(format!("cargo build failed: {status}").into());
        }
        Ok(())
    }
}

/// Everything one run started. Fields drop in order: the operator first, the cluster last.
pub struct World {
    pub operator: Option<Operator>,
    pub emulator: Emulator,
    pub client: kube::Client,
    pub cluster: Cluster,
    pub ns: String,
    pub cli: Cli,
    pub bins: Bins,
    pub logs: PathBuf,
    /// More arguments for the operator (not the baseline).
    pub extra_args: Vec<String>,
    starts: u32,
    _tmp: Option<tempfile::TempDir>,
}

/// CPU seconds and memory of the other processes on the machine that the run involves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Side {
    pub apiserver: ProcStats,
    pub etcd: ProcStats,
    pub emulator: ProcStats,
    pub driver: ProcStats,
}

impl World {
    /// Creates the ClusterAcsConnection `<namespace>-shared` on the run's connection string
    /// (the platform's shared connection of the tenancy scenarios); returns its name.
    pub async fn create_shared_connection(&self) -> Result<String, Error> {
        let shared = format!("{}-shared", self.ns);
        let connection: ClusterAcsConnection = serde_json::from_value(json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "ClusterAcsConnection",
            "metadata": {"name": shared},
            "spec": {"connectionStringSecretRef": {
                "namespace": self.ns, "name": "acs-conn", "key": "connectionString"
            }},
        }))?;
        let connections: Api<ClusterAcsConnection> = Api::all(self.client.clone());
        let params = PostParams::default();
        retry_api(|| connections.create(&params, &connection)).await?;
        Ok(shared)
    }

    pub async fn setup(cli: &Cli, bins: Bins, emulator_args: &[String]) -> Result<World, Error> {
        let tmp = tempfile::Builder::new()
            .prefix("operator-bench-")
            .tempdir()?;
        let logs = tmp.path().to_path_buf();
        let tmp = if cli.keep_logs {
            eprintln!("operator_bench: logs in {}", tmp.keep().display());
            None
        } else {
            Some(tmp)
        };
        let cluster = match &cli.kubeconfig {
            Some(k) => Cluster::existing(k),
            None => {
                let dir = logs.join("cluster");
                tokio::task::spawn_blocking(move || Cluster::up(&dir)).await??
            }
        };
        let client = cluster.client().await?;
        let emulator =
            Emulator::start(&bins.emulator, emulator_args, logs.join("emulator.log")).await?;
        install_crds(&client, &bins.operator).await?;
        let scenario = format!("{:?}", cli.scenario).to_lowercase();
        let ns = format!("bench-{scenario}-{}", std::process::id());
        create_namespace(&client, &ns).await?;
        let world = World {
            operator: None,
            emulator,
            client,
            cluster,
            ns,
            cli: cli.clone(),
            bins,
            logs,
            extra_args: Vec::new(),
            starts: 0,
            _tmp: tmp,
        };
        world.create_connection().await?;
        Ok(world)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create_connection(&self) -> Result<(), Error> {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "acs-conn"},
            "stringData": {"connectionString": self.emulator.connection_string},
        }))?;
        self.api::<Secret>()
            .create(&PostParams::default(), &secret)
            .await?;
        let connection: AcsConnection = serde_json::from_value(json!({
            "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsConnection",
            "metadata": {"name": "acs"},
            "spec": {"connectionStringSecretRef": {"name": "acs-conn", "key": "connectionString"}},
        }))?;
        retry_api(|| async {
            self.api::<AcsConnection>()
                .create(&PostParams::default(), &connection)
                .await
        })
        .await?;
        Ok(())
    }

    /// Starts the operator (or baseline) without waiting for it.
    pub fn spawn_operator(&mut self) -> Result<(), Error> {
        self.starts += 1;
        let kubeconfig = self.cluster.kubeconfig.display().to_string();
        let concurrency = self.cli.concurrency.to_string();
        let log = self
            .logs
            .join(format!("{}-{}.log", self.cli.implementation(), self.starts));
        let operator = if self.cli.baseline {
            Operator::start(
                "baseline",
                &self.bins.baseline,
                vec![
                    "--namespace".into(),
                    self.ns.clone(),
                    "--concurrency".into(),
                    concurrency,
                    "--interval-seconds".into(),
                    self.cli.baseline_interval_seconds.to_string(),
                ],
                &[
                    ("KUBECONFIG", kubeconfig),
                    (
                        "ACS_CONNECTION_STRING",
                        self.emulator.connection_string.clone(),
                    ),
                ],
                log,
            )?
        } else {
            // The emulator listens on 127.0.0.1 (localhost with TLS): not an ACS endpoint.
            let mut args = vec![
                "run".into(),
                "--concurrency".into(),
                concurrency,
                "--allowed-endpoints=localhost:*,127.0.0.1:*".into(),
            ];
            if self.cli.namespaced {
                args.extend(["--namespace".into(), self.ns.clone()]);
            }
            args.extend(self.extra_args.iter().cloned());
            Operator::start(
                "operator",
                &self.bins.operator,
                args,
                &[("KUBECONFIG", kubeconfig)],
                log,
            )?
        };
        self.operator = Some(operator);
        Ok(())
    }

    /// Starts the operator and waits for /readyz; returns the time it took.
    pub async fn start_operator(&mut self) -> Result<Duration, Error> {
        self.spawn_operator()?;
        self.operator_mut()?
            .wait_ready(Duration::from_secs(120))
            .await
    }

    pub fn operator(&self) -> Result<&Operator, Error> {
        self.operator.as_ref().ok_or_else(|| "no operator".into())
    }

    pub fn operator_mut(&mut self) -> Result<&mut Operator, Error> {
        self.operator.as_mut().ok_or_else(|| "no operator".into())
    }

    pub fn operator_stats(&self) -> ProcStats {
        self.operator
            .as_ref()
            .map(|o| o.proc.stats())
            .unwrap_or_default()
    }

    pub fn side(&self) -> Side {
        let read = |pid: Option<u32>| pid.and_then(ProcStats::read).unwrap_or_default();
        Side {
            apiserver: read(self.cluster.apiserver_pid()),
            etcd: read(self.cluster.etcd_pid()),
            emulator: self.emulator.proc.stats(),
            driver: read(Some(std::process::id())),
        }
    }
}

/// Creates `names` as AcsIdentities in `api`'s namespace, `concurrency` at a time.
pub async fn create_identities(
    api: Api<AcsIdentity>,
    names: Vec<String>,
    concurrency: usize,
) -> Result<Duration, Error> {
    let spec = json!({"connectionRef": {"name": "acs"}, "scopes": ["chat", "voip"]});
    create_identities_with(api, names, concurrency, spec).await
}

/// Like [`create_identities`], each with `spec`.
pub async fn create_identities_with(
    api: Api<AcsIdentity>,
    names: Vec<String>,
    concurrency: usize,
    spec: serde_json::Value,
) -> Result<Duration, Error> {
    let started = Instant::now();
    stream::iter(names)
        .map(|name| {
            let (api, spec) = (api.clone(), spec.clone());
            async move {
                let identity: AcsIdentity = serde_json::from_value(json!({
                    "apiVersion": "acsoperator.io/v1alpha1", "kind": "AcsIdentity",
                    "metadata": {"name": name},
                    "spec": spec,
                }))?;
                let params = PostParams::default();
                match retry_api(|| api.create(&params, &identity)).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    Err(e) => Err(Error::from(e)),
                }
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

pub use acs_test_support::retry_api;

async fn install_crds(client: &kube::Client, operator: &Path) -> Result<(), Error> {
    let output = tokio::process::Command::new(operator)
        .arg("crds")
        .output()
        .await?;
    if !output.status.success() {
        return Err(format!("`{} crds` failed", operator.display()).into());
    }
    let yaml = String::from_utf8(output.stdout)?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let crd = CustomResourceDefinition::deserialize(doc)?;
        let name = crd.metadata.name.clone().ok_or("a CRD without a name")?;
        api.patch(
            &name,
            &PatchParams::apply("operator-bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(60), established)
            .await
            .map_err(|_| format!("CRD {name} not established within 60 s"))??;
    }
    Ok(())
}

pub async fn create_namespace(client: &kube::Client, name: &str) -> Result<(), Error> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// The commit and whether the build had uncommitted changes in what is compiled.
fn commit() -> (String, Vec<String>) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(repo())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
            .unwrap_or_default()
    };
    // A run from an exported tree (no .git) names its commit in OPERATOR_BENCH_COMMIT.
    let head = std::env::var("OPERATOR_BENCH_COMMIT")
        .unwrap_or_else(|_| git(&["rev-parse", "--short=12", "HEAD"]));
    let dirty = git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "examples",
    ]);
    (
        head,
        dirty
            .lines()
            .map(|l| l.get(3..).unwrap_or(l).to_string())
            .collect(),
    )
}

async fn run(cli: Cli, bins: Bins) -> Result<report::Report, Error> {
    let mut report = report::Report::new(&format!("{:?}", cli.scenario).to_lowercase());
    let (head, dirty) = commit();
    report.add("implementation", cli.implementation(), "");
    report.add("commit", head, "");
    report.add("uncommitted_files", dirty.join(" "), "");
    report.add(
        "cores",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        "",
    );
    report.add("load_average_start", processes::load_average(), "");
    report.add("count", cli.count, "");
    if let Err(e) = scenarios::run(&cli, bins, &mut report).await {
        // A long run's figures so far are worth keeping (a 100,000 run takes half an hour).
        eprintln!(
            "operator_bench: failed; the figures so far:\n{}",
            report.table()
        );
        return Err(e);
    }
    report.add("load_average_end", processes::load_average(), "");
    Ok(report)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (bins, release) = match Bins::locate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("operator_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !release {
        eprintln!("operator_bench: a debug build measures nothing useful; use --release");
    }
    if !cli.no_build
        && let Err(e) = Bins::build(release)
    {
        eprintln!("operator_bench: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("operator_bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let limit = Duration::from_secs(cli.timeout_seconds);
    let json_out = cli.json_out.clone();
    let result = runtime.block_on(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(e) => return Err(Error::from(e)),
            };
        tokio::select! {
            r = tokio::time::timeout(limit, run(cli, bins)) => {
                r.map_err(|_| Error::from(format!("gave up after {limit:?} (--timeout-seconds)")))?
            }
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
            _ = term.recv() => Err("terminated".into()),
        }
    });
    match result {
        Ok(report) => {
            println!("{}", report.table());
            println!("{}", report.json_line());
            if let Some(path) = json_out {
                use std::io::Write;
                let appended = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| writeln!(f, "{}", report.json_line()));
                if let Err(e) = appended {
                    eprintln!("operator_bench: writing {}: {e}", path.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("operator_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
