//! The official ACS SDKs (Python and JavaScript) that tests run against the emulator,
//! installed once per test binary by `tests/sdk/setup.sh` into `.cache/sdk` (or
//! `SDK_CACHE_DIR`), pinned and hash-checked there. Bounded: a setup that hangs fails after
//! [`SETUP_TIMEOUT`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Installing both SDKs from nothing takes well under a minute here; this only bounds a hang.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where the installed SDKs are.
pub struct Sdks {
    /// The virtualenv's python, with azure-communication-identity, -chat and -administration.
    pub python: PathBuf,
    /// The folder whose `node_modules` holds the JavaScript SDKs.
    pub js_dir: PathBuf,
}

/// The workspace root: `.cache/` and `tests/sdk/` live there.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The SDKs, installed on first use; panics with the setup's log when that fails.
pub fn sdks() -> &'static Sdks {
    static SDKS: OnceLock<Result<Sdks, String>> = OnceLock::new();
    match SDKS.get_or_init(install_sdks) {
        Ok(sdks) => sdks,
        Err(e) => panic!("installing the official SDKs failed:\n{e}"),
    }
}

fn install_sdks() -> Result<Sdks, String> {
    let root = repo_root();
    let cache = std::env::var_os("SDK_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/sdk"));
    let log = tempfile::NamedTempFile::new().map_err(|e| format!("log file: {e}"))?;
    let started = Instant::now();
    let mut child = std::process::Command::new("bash")
        .arg(root.join("tests/sdk/setup.sh"))
        .env("SDK_CACHE_DIR", &cache)
        .stdin(Stdio::null())
        .stdout(log.reopen().map_err(|e| e.to_string())?)
        .stderr(log.reopen().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot run tests/sdk/setup.sh: {e}"))?;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if started.elapsed() > SETUP_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "tests/sdk/setup.sh did not finish within {SETUP_TIMEOUT:?}:\n{}",
                    read_lossy(log.path())
                ));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let output = read_lossy(log.path());
    if !status.success() {
        return Err(format!("tests/sdk/setup.sh failed ({status}):\n{output}"));
    }
    eprintln!(
        "SDK setup took {:.1}s:\n{output}",
        started.elapsed().as_secs_f64()
    );
    Ok(Sdks {
        python: cache.join("venv/bin/python"),
        js_dir: cache.join("js"),
    })
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}
