//! The pinned command-line tools (helm, kubectl, promtool), installed into `.cache/tools/bin`
//! by `tests/tools/install` the first time a test asks for one (checksum-verified; seconds
//! when cached, a download of ~55 MB otherwise).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Longest the installer may take (a cold download).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

fn bin_dir() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(install) {
        Ok(dir) => dir,
        Err(message) => panic!("installing the test tools failed:\n{message}"),
    }
}

fn install() -> Result<PathBuf, String> {
    let script = super::workspace_root().join("tests/tools/install");
    let log = tempfile::NamedTempFile::new().map_err(|e| format!("log file: {e}"))?;
    let out = tempfile::NamedTempFile::new().map_err(|e| format!("output file: {e}"))?;
    let mut child = Command::new(&script)
        .stdin(Stdio::null())
        .stdout(out.reopen().map_err(|e| e.to_string())?)
        .stderr(log.reopen().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > INSTALL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{} did not finish within {INSTALL_TIMEOUT:?}:\n{}",
                script.display(),
                std::fs::read_to_string(log.path()).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let messages = std::fs::read_to_string(log.path()).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "{} failed ({status}):\n{messages}",
            script.display()
        ));
    }
    let dir = std::fs::read_to_string(out.path()).map_err(|e| e.to_string())?;
    Ok(PathBuf::from(dir.trim()))
}

/// Helm v4.2.3.
pub fn helm() -> PathBuf {
    bin_dir().join("helm")
}

/// kubectl v1.36.3, the test API server's minor version (the system's may be older).
pub fn kubectl() -> PathBuf {
    bin_dir().join("kubectl")
}

/// promtool from Debian's prometheus.
pub fn promtool() -> PathBuf {
    bin_dir().join("promtool")
}

/// A `helm` command whose configuration, cache and data live under the install directory, not
/// in the user's home.
pub fn helm_command() -> Command {
    let home = bin_dir().parent().unwrap().join("helm-home");
    let mut command = Command::new(helm());
    command
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"));
    command
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    super::workspace_root().join("charts/acs-identity-operator")
}
