//! The one launcher of the `acs-identity-operator` binary in tests: a process of the test's
//! own, with its metrics endpoint on a free loopback port, the emulators' endpoints allowed,
//! the test cluster's kubeconfig, its output in a log file, and killed when dropped.
//!
//! Cargo tells the binary's path only to the operator package's own tests
//! (`CARGO_BIN_EXE_acs-identity-operator`), so the caller gives it: [`operator_binary!`]
//! expands to it there.
//!
//! [`operator_binary!`]: crate::operator_binary

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The path of the operator binary, in a test of the operator package (where Cargo sets
/// `CARGO_BIN_EXE_acs-identity-operator`), for [`OperatorProcess::spawn`].
#[macro_export]
macro_rules! operator_binary {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_acs-identity-operator"))
    };
}

/// One operator process.
pub struct OperatorProcess {
    pub child: Child,
    /// `http://127.0.0.1:PORT`, where /metrics, /healthz and /readyz answer.
    pub metrics: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OperatorProcess {
    /// Starts `binary` (the operator's: [`operator_binary!`](crate::operator_binary)) with `args`
    /// (a subcommand first, e.g. `run`), then `--metrics-bind` and `--allowed-endpoints`;
    /// `configure` may add environment or replace `KUBECONFIG` (set to the test cluster's)
    /// before the process starts, and write files it needs into the process's own directory
    /// (removed when it is dropped).
    pub fn spawn<S: AsRef<OsStr>>(
        binary: &Path,
        args: impl IntoIterator<Item = S>,
        configure: impl FnOnce(&mut Command, &Path),
    ) -> OperatorProcess {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("operator.log");
        let file = std::fs::File::create(&log).unwrap();
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .args(args)
            .arg(format!("--metrics-bind=127.0.0.1:{port}"))
            .arg(super::operator::allowed_endpoints_arg())
            .env("KUBECONFIG", super::kubeconfig_env())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        configure(&mut command, dir.path());
        OperatorProcess {
            child: command.spawn().unwrap(),
            metrics: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// The status and body of `path` on the metrics endpoint, if it answers.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("{}{path}", self.metrics)).await.ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }

    /// Waits (at most `wait`) until `/readyz` answers 200.
    pub async fn wait_ready(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.get("/readyz").await.map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "operator not ready; log: {}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the process has written so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process, waits for it, and returns its log.
    pub async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.log_text()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
