//! The cluster a test binary talks to: the one `KUBECONFIG` names, or a local
//! API server started once per test binary by `tests/kube-apiserver/cluster`.
//!
//! Teardown of the local one: Rust test binaries exit without running the
//! destructors of statics, and may be killed, so the process cannot reliably
//! stop the cluster itself. Instead `cluster up` runs with
//! `CLUSTER_OWNER_PID=<this process>` and leaves a watchdog that runs
//! `cluster down` (stopping etcd and the server, removing the directory) once
//! this process has exited, however it exited.
//!
//! [`up`] and [`down`] start and stop one such server in a directory of the caller's: the
//! benchmarks' cluster (`examples/operator_bench`) is started the same way.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

enum Cluster {
    /// The cluster of the caller's `KUBECONFIG`.
    FromEnvironment,
    /// A local test API server that this process started.
    Local { kubeconfig: PathBuf },
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster of this test binary, started on first use. The first test to
/// get here blocks its thread until the server is ready (minutes on a cold
/// build cache, about a second after); the others wait for it.
fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(message) => panic!("{message}"),
    }
}

/// Whether the tests run against the local test server, which has no
/// controllers (so the harness deletes what a namespace holds itself).
pub(crate) fn is_local() -> bool {
    matches!(cluster(), Cluster::Local { .. })
}

fn start() -> Result<Cluster, String> {
    if std::env::var_os("KUBECONFIG").is_some() {
        return Ok(Cluster::FromEnvironment);
    }
    let dir = tempfile::Builder::new()
        .prefix("acs-test-apiserver-")
        .tempdir()
        .map_err(|e| format!("creating a directory for the test cluster: {e}"))?
        .keep(); // removed by `cluster down`, run by the watchdog
    let kubeconfig = up(&dir)?;
    Ok(Cluster::Local { kubeconfig })
}

/// `tests/kube-apiserver/cluster`, the script that starts and stops a test API server.
fn script() -> PathBuf {
    super::workspace_root().join("tests/kube-apiserver/cluster")
}

/// The one launcher of the test API server: `cluster up DIR`, with a watchdog that brings it
/// down once this process has exited, however it exited (`CLUSTER_OWNER_PID`). Returns the
/// path of its admin kubeconfig. Blocks until the server is ready (minutes on a cold build
/// cache); the script's progress and errors go straight to the terminal (a test harness
/// captures only what Rust code prints).
pub fn up(dir: &Path) -> Result<PathBuf, String> {
    let script = script();
    let status = Command::new(&script)
        .arg("up")
        .arg(dir)
        .env("CLUSTER_OWNER_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!(
            "`{} up {}` failed ({status}); its messages are above",
            script.display(),
            dir.display()
        ));
    }
    Ok(dir.join("kubeconfig"))
}

/// `cluster down DIR`: stops the server [`up`] started in `dir` and removes the directory,
/// without waiting for this process to exit.
pub fn down(dir: &Path) {
    let _ = Command::new(script())
        .arg("down")
        .arg(dir)
        .stdin(Stdio::null())
        .status();
}

/// The client configuration of the test cluster (admin: may do anything).
pub async fn cluster_config() -> Config {
    match cluster() {
        Cluster::FromEnvironment => Config::infer()
            .await
            .expect("reading the cluster configuration named by KUBECONFIG"),
        Cluster::Local { kubeconfig } => {
            let file = Kubeconfig::read_from(kubeconfig)
                .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .expect("using the test cluster's kubeconfig")
        }
    }
}

/// The `KUBECONFIG` value that points a child process (kubectl, the operator binary) at the
/// test cluster.
pub fn kubeconfig_env() -> std::ffi::OsString {
    match cluster() {
        Cluster::FromEnvironment => std::env::var_os("KUBECONFIG").unwrap_or_default(),
        Cluster::Local { kubeconfig } => kubeconfig.clone().into_os_string(),
    }
}

/// A client of the test cluster. Make one per test: a `kube::Client` belongs
/// to the tokio runtime it was made on, and each `#[tokio::test]` has its own.
pub async fn client() -> Client {
    Client::try_from(cluster_config().await).expect("creating a client of the test cluster")
}
