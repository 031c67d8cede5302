//! `acs-emulator`: a local ACS Identity endpoint (and, for bearer auth, its Entra ID token
//! endpoint). Prints one line,
//! `connection string: endpoint=<url>;accesskey=<key>`, on stdout once it accepts requests,
//! serves until SIGTERM or SIGINT, then exits 0. Logs go to stderr. See EMULATOR.md.

use acs_client::AccessKey;
use acs_emulator::{EmulatorConfig, ThrottleConfig, TlsPem, serve};
use clap::Parser;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use url::Url;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Local emulator of the Azure Communication Services Identity API"
)]
struct Cli {
    /// Address to listen on; port 0 picks a free port (the printed endpoint shows it).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// The resource's access key (base64), which clients sign requests with. A random key is
    /// generated when absent.
    #[arg(long, env = "ACS_EMULATOR_ACCESS_KEY", hide_env_values = true)]
    access_key: Option<String>,

    /// PEM certificate chain to serve HTTPS with (leaf first).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Give every token this lifetime, whatever the request asks (to watch refreshes happen).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    token_lifetime_seconds: Option<u64>,

    /// `default` (the service's limits per 30 s), `off`, or `operation=count,...` (others keep
    /// their default). Operations: createIdentity, createIdentityWithToken, issueToken,
    /// revokeTokens, deleteIdentity.
    #[arg(long, default_value = "default", value_parser = parse_throttle)]
    throttle: ThrottleConfig,

    /// Length of a throttling window.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    throttle_window_seconds: u64,

    /// Largest accepted difference between x-ms-date and the emulator's clock; 0 accepts any.
    #[arg(long, default_value_t = 900)]
    max_clock_skew_seconds: u64,

    /// Resource GUID that starts every identity id (random when absent).
    #[arg(long)]
    resource_id: Option<String>,

    /// Endpoint to print instead of the one derived from --listen (e.g. behind a port map).
    #[arg(long)]
    public_endpoint: Option<Url>,

    /// A tenant the Entra token endpoint (`POST /{tenant}/oauth2/v2.0/token`) knows; repeat
    /// for more. Absent: every well-formed tenant id gets tokens.
    #[arg(long = "entra-tenant", value_name = "TENANT")]
    entra_tenants: Vec<String>,

    /// `expires_in` of the Entra tokens issued (3599 like Entra; 0 issues expired tokens).
    #[arg(long, default_value_t = 3599)]
    entra_token_lifetime_seconds: u64,

    /// A federated identity credential of an application:
    /// `clientId=…,issuer=https://…,subject=system:serviceaccount:NS:NAME[,audience=…]`
    /// (audience default `api://AzureADTokenExchange`); repeat for more. Only applications
    /// with one exist, and a client assertion is accepted only as one of them allows.
    #[arg(long = "federated-credential", value_name = "CREDENTIAL")]
    federated_credentials: Vec<acs_emulator::FederatedCredential>,

    /// PEM certificates to trust, besides the system roots, for the issuers' OIDC discovery
    /// and keys (e.g. the cluster's CA, when its API server is the issuer).
    #[arg(long, value_name = "FILE")]
    entra_issuer_ca: Option<PathBuf>,

    /// Keep identities, revocations, customIds and the token signing secrets in this
    /// directory, so a restart loses nothing (created if missing). Memory only when absent.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// `on` also serves the retired api-version 2020-07-20-preview2 (for old code such as
    /// azure-communication-administration 1.0.0b4); `off` answers it 400 like the service now;
    /// a comma-separated list of api-versions answers exactly those 400 as retired (e.g.
    /// `2025-03-02-preview`, to see what a client does the day that preview is retired), and
    /// serves 2020-07-20-preview2 unless it is in the list.
    #[arg(long, default_value = "on", value_parser = parse_retired, action = clap::ArgAction::Set)]
    retired_api_versions: Retired,
}

/// What `--retired-api-versions` says: whether the legacy version is served, and which
/// versions are answered as retired.
#[derive(Debug, Clone)]
struct Retired {
    legacy_served: bool,
    refused: Vec<String>,
}

fn parse_retired(value: &str) -> Result<Retired, String> {
    use acs_client::model::SUPPORTED_API_VERSIONS;
    use acs_emulator::LEGACY_API_VERSION;
    match value {
        "on" => Ok(Retired {
            legacy_served: true,
            refused: Vec::new(),
        }),
        "off" => Ok(Retired {
            legacy_served: false,
            refused: Vec::new(),
        }),
        list => {
            let mut refused = Vec::new();
            for version in list.split(',').map(str::trim) {
                if version != LEGACY_API_VERSION && !SUPPORTED_API_VERSIONS.contains(&version) {
                    return Err(format!(
                        "`{version}` is not an api-version this emulator serves; expected `on`, `off` or a comma-separated list of: {LEGACY_API_VERSION}, {}",
                        SUPPORTED_API_VERSIONS.join(", ")
                    ));
                }
                refused.push(version.to_string());
            }
            Ok(Retired {
                legacy_served: !refused.iter().any(|v| v == LEGACY_API_VERSION),
                refused,
            })
        }
    }
}

fn parse_throttle(spec: &str) -> Result<ThrottleConfig, String> {
    ThrottleConfig::parse(spec).map_err(|e| e.to_string())
}

/// Colour only for a person at a terminal, and not when a non-empty `NO_COLOR` asks for none
/// (no-color.org): in a file, a pipe or a log collector escape codes are noise.
fn stderr_colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(stderr_colour())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("acs-emulator: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let config = config(&cli)?;
    // Handlers first: a signal that arrives right after the line is printed must be caught.
    let signals = Signals::install()?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let emulator = serve(config, listener).await.map_err(|e| e.to_string())?;

    let mut stdout = std::io::stdout().lock();
    let line = format!(
        "connection string: {}",
        emulator.connection_string().expose()
    );
    // A closed stdout must not stop the emulator: the line is a convenience.
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    drop(stdout);

    let signal = signals.next().await;
    tracing::info!(signal, "shutting down");
    emulator.shutdown().await;
    Ok(())
}

fn config(cli: &Cli) -> Result<EmulatorConfig, String> {
    let access_key = match &cli.access_key {
        Some(key) => AccessKey::from_base64(key).map_err(|e| format!("--access-key: {e}"))?,
        None => AccessKey::from_base64(&random_key()).map_err(|e| e.to_string())?,
    };
    let mut config = EmulatorConfig::new(access_key);
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        config.tls = Some(TlsPem::from_files(cert, key).map_err(|e| e.to_string())?);
    }
    config.token_lifetime = cli.token_lifetime_seconds.map(Duration::from_secs);
    config.max_clock_skew =
        (cli.max_clock_skew_seconds > 0).then(|| Duration::from_secs(cli.max_clock_skew_seconds));
    config.throttle = ThrottleConfig {
        window_seconds: cli.throttle_window_seconds,
        ..cli.throttle.clone()
    };
    if let Some(id) = &cli.resource_id {
        let guid_like = !id.is_empty() && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if !guid_like {
            return Err("--resource-id must be a GUID (hex digits and dashes)".into());
        }
        config.resource_id = Some(id.to_ascii_lowercase());
    }
    config.public_endpoint.clone_from(&cli.public_endpoint);
    config.entra.tenants = cli.entra_tenants.iter().cloned().collect();
    config.entra.token_lifetime = Duration::from_secs(cli.entra_token_lifetime_seconds);
    config
        .entra
        .federated_credentials
        .clone_from(&cli.federated_credentials);
    if let Some(path) = &cli.entra_issuer_ca {
        let pem = std::fs::read(path)
            .map_err(|e| format!("--entra-issuer-ca {}: {e}", path.display()))?;
        config.entra.issuer_ca_pem = Some(pem);
    }
    config.data_dir.clone_from(&cli.data_dir);
    config.retired_api_versions = cli.retired_api_versions.legacy_served;
    config.refused_api_versions = cli.retired_api_versions.refused.clone();
    Ok(config)
}

fn random_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, String> {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind| signal(kind).map_err(|e| format!("cannot handle signals: {e}"));
        Ok(Self {
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
        })
    }

    async fn next(mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_retired;

    #[test]
    fn retired_api_versions_reads_on_off_and_lists() {
        let cases: [(&str, bool, &[&str]); 5] = [
            ("on", true, &[]),
            ("off", false, &[]),
            ("2025-03-02-preview", true, &["2025-03-02-preview"]),
            (
                "2025-03-02-preview, 2020-07-20-preview2",
                false,
                &["2025-03-02-preview", "2020-07-20-preview2"],
            ),
            ("2026-09-23", true, &["2026-09-23"]),
        ];
        for (value, legacy_served, refused) in cases {
            let parsed = parse_retired(value).unwrap();
            assert_eq!(parsed.legacy_served, legacy_served, "{value}");
            assert_eq!(parsed.refused, refused, "{value}");
        }
        let error = parse_retired("2024-01-01").unwrap_err();
        assert!(
            error.contains("`2024-01-01` is not an api-version"),
            "{error}"
        );
        assert!(error.contains("2025-03-02-preview"), "{error}");
    }
}
