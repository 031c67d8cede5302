//! The processes a benchmark runs: the test API server (started by the tests' launcher,
//! `acs_test_support::cluster`), the `acs-emulator` binary, and the operator (or the baseline)
//! binary. Each is stopped when its handle is dropped, so a failed or timed-out run leaves
//! nothing behind.
//!
//! Children are started through `setpriv --pdeathsig KILL` when it exists, so that even a
//! SIGKILLed driver takes them along; the cluster gets `CLUSTER_OWNER_PID` for the same reason.
//!
//! The operator is started here, not by the tests' `acs_test_support::process::OperatorProcess`:
//! that one points the process at the test binary's own cluster and allows the emulators'
//! endpoints, while here the process may be the baseline binary, runs under `setpriv`, is
//! measured from `/proc`, stopped by the signal a scenario names, and its time to ready is a
//! figure polled every 50 ms.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// CPU time and memory of one process, from `/proc/<pid>/stat` and `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    /// Peak resident set (VmHWM).
    pub hwm_kib: u64,
}

impl ProcStats {
    pub fn read(pid: u32) -> Option<ProcStats> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may contain spaces) start at field 3: utime
        // and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 =
            fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        Some(ProcStats {
            cpu_seconds: ticks / clock_ticks(),
            rss_kib: kib("VmRSS:"),
            hwm_kib: kib("VmHWM:"),
        })
    }
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A child process, killed when dropped; its stderr goes to a log file.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        log: PathBuf,
        stdout: Stdio,
    ) -> Result<Proc, Error> {
        let mut command = if has_setpriv() {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let pid = child.id().ok_or("child exited at once")?;
        Ok(Proc {
            name: name.to_string(),
            child,
            pid,
            log,
        })
    }

    pub fn stats(&self) -> ProcStats {
        ProcStats::read(self.pid).unwrap_or_default()
    }

    /// Sends `signal` (TERM or KILL), then waits up to `grace` before SIGKILL.
    pub async fn stop(&mut self, signal: &str, grace: Duration) {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status();
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "{} did not exit within {grace:?} of SIG{signal}; killing it",
                self.name
            );
            let _ = self.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        }
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

fn has_setpriv() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::process::Command::new("setpriv")
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The test API server: started here (and brought down on drop) or given by `--kubeconfig`.
pub struct Cluster {
    pub kubeconfig: PathBuf,
    /// The cluster directory when this run started the cluster.
    owned: Option<PathBuf>,
    /// Where `apiserver.pid` and `etcd.pid` are (also for a reused cluster of the script).
    dir: PathBuf,
}

impl Cluster {
    /// Starts one in `dir` with the tests' launcher (`tests/kube-apiserver/cluster up`).
    pub fn up(dir: &Path) -> Result<Cluster, Error> {
        // Made first, so that a failed start is brought down too.
        let mut cluster = Cluster {
            kubeconfig: dir.join("kubeconfig"),
            owned: Some(dir.to_path_buf()),
            dir: dir.to_path_buf(),
        };
        cluster.kubeconfig = acs_test_support::cluster::up(dir)?;
        Ok(cluster)
    }

    pub fn existing(kubeconfig: &Path) -> Cluster {
        Cluster {
            kubeconfig: kubeconfig.to_path_buf(),
            owned: None,
            dir: kubeconfig.parent().unwrap_or(Path::new(".")).to_path_buf(),
        }
    }

    fn pid(&self, file: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn apiserver_pid(&self) -> Option<u32> {
        self.pid("apiserver.pid")
    }

    pub fn etcd_pid(&self) -> Option<u32> {
        self.pid("etcd.pid")
    }

    pub async fn client(&self) -> Result<kube::Client, Error> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let file = Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Kills the API server (not etcd) and starts it again on the same port with the same
    /// arguments: watches drop, state survives. Only for a cluster this run started.
    pub async fn restart_apiserver(&self) -> Result<(), Error> {
        let dir = self.owned.as_ref().ok_or("not our cluster")?;
        let pid = self.apiserver_pid().ok_or("no apiserver.pid")?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let mut args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let port = std::fs::read_to_string(dir.join("apiserver.port"))?
            .trim()
            .to_string();
        if let Some(i) = args.iter().position(|a| a == "--secure-port") {
            args[i + 1] = port.clone();
        }
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Detached like the script does it, so `cluster down` (which reads apiserver.pid)
        // stops it as before.
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("apiserver.log"))?;
        let child = std::process::Command::new("setsid")
            .args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        std::fs::write(dir.join("apiserver.pid"), child.id().to_string())?;
        // Reap it when it exits, or `cluster down` would wait for a zombie.
        let mut child = child;
        std::thread::spawn(move || child.wait());
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = self.client().await?;
        while Instant::now() < deadline {
            if client.apiserver_version().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("the API server did not come back within 60 s".into())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(dir) = &self.owned {
            acs_test_support::cluster::down(dir);
        }
    }
}

/// The `acs-emulator` binary and its admin API.
pub struct Emulator {
    pub proc: Proc,
    pub endpoint: String,
    pub connection_string: String,
    http: reqwest::Client,
}

/// ACS requests the emulator answered, by operation and status.
#[derive(Debug, Clone, Default)]
pub struct AcsStats {
    pub by_operation: BTreeMap<String, BTreeMap<String, u64>>,
}

impl AcsStats {
    /// Data-plane calls (Entra token requests are not ACS Identity calls).
    pub fn calls(&self) -> u64 {
        self.sum(|op, _| op != "entraToken")
    }

    pub fn status(&self, code: &str) -> u64 {
        self.sum(|op, c| op != "entraToken" && c == code)
    }

    pub fn operation(&self, operation: &str, code: Option<&str>) -> u64 {
        self.sum(|op, c| op == operation && code.is_none_or(|code| code == c))
    }

    fn sum(&self, keep: impl Fn(&str, &str) -> bool) -> u64 {
        self.by_operation
            .iter()
            .flat_map(|(op, codes)| codes.iter().map(move |(c, n)| (op, c, n)))
            .filter(|(op, c, _)| keep(op, c))
            .map(|(_, _, n)| n)
            .sum()
    }

    /// What was counted after `earlier`.
    pub fn since(&self, earlier: &AcsStats) -> AcsStats {
        let mut by_operation = self.by_operation.clone();
        for (op, codes) in &earlier.by_operation {
            for (code, n) in codes {
                if let Some(v) = by_operation.get_mut(op).and_then(|c| c.get_mut(code)) {
                    *v = v.saturating_sub(*n);
                }
            }
        }
        AcsStats { by_operation }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(&self.by_operation).unwrap_or_default()
    }
}

impl Emulator {
    pub async fn start(bin: &Path, args: &[String], log: PathBuf) -> Result<Emulator, Error> {
        let mut all = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
        all.extend_from_slice(args);
        let mut proc = Proc::spawn("acs-emulator", bin, &all, &[], log, Stdio::piped())?;
        let stdout = proc.child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| "the emulator printed no connection string within 30 s")??
            .ok_or_else(|| format!("the emulator exited: {}", proc.log_tail(20)))?;
        let connection_string = line
            .strip_prefix("connection string: ")
            .ok_or("unexpected first line from the emulator")?
            .to_string();
        let endpoint = connection_string
            .split(';')
            .find_map(|p| p.strip_prefix("endpoint="))
            .ok_or("no endpoint in the connection string")?
            .to_string();
        Ok(Emulator {
            proc,
            endpoint,
            connection_string,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.endpoint, path.trim_start_matches('/'))
    }

    pub async fn admin_get(&self, path: &str) -> Result<Value, Error> {
        let response = self.http.get(self.url(path)).send().await?;
        if !response.status().is_success() {
            return Err(format!("GET {path}: {}", response.status()).into());
        }
        Ok(response.json().await?)
    }

    pub async fn admin_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(), Error> {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(format!("{path}: {}", response.status()).into());
        }
        Ok(())
    }

    pub async fn stats(&self) -> Result<AcsStats, Error> {
        let v = self.admin_get("admin/stats").await?;
        let by_operation = serde_json::from_value(v["operations"].clone())?;
        Ok(AcsStats { by_operation })
    }

    /// Ids of the identities the emulator holds that are not deleted.
    pub async fn live_identities(&self) -> Result<Vec<String>, Error> {
        let v = self.admin_get("admin/identities").await?;
        Ok(v["identities"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|i| i["deleted"] == Value::Bool(false))
                    .filter_map(|i| i["id"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// The operator (or baseline) process and its metrics endpoint.
pub struct Operator {
    pub proc: Proc,
    pub base: String,
    http: reqwest::Client,
}

impl Operator {
    pub fn start(
        name: &str,
        bin: &Path,
        mut args: Vec<String>,
        env: &[(&str, String)],
        log: PathBuf,
    ) -> Result<Operator, Error> {
        let port = free_port()?;
        args.extend(["--metrics-bind".into(), format!("127.0.0.1:{port}")]);
        let proc = Proc::spawn(name, bin, &args, env, log, Stdio::null())?;
        Ok(Operator {
            proc,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }

    /// Waits until `/readyz` answers 200 (caches synced, reconcilers running).
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<Duration, Error> {
        let started = Instant::now();
        loop {
            if self.get("/readyz").await.map(|r| r.0) == Some(200) {
                return Ok(started.elapsed());
            }
            if let Some(status) = self.proc.exited() {
                return Err(format!(
                    "{} exited ({status}); log:\n{}",
                    self.proc.name,
                    self.proc.log_tail(30)
                )
                .into());
            }
            if started.elapsed() > limit {
                return Err(format!("{} not ready within {limit:?}", self.proc.name).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn metrics(&self) -> Metrics {
        Metrics(self.get("/metrics").await.map(|r| r.1).unwrap_or_default())
    }
}

/// A Prometheus text exposition.
pub struct Metrics(pub String);

impl Metrics {
    /// Sum of the samples of `name` whose labels include every `label="value"` given.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                (metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }
}

fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
