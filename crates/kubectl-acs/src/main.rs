//! `kubectl acs-identity`: the day-two questions about acs-identity-operator in one command
//! each. Installed as `kubectl-acs_identity` on PATH, kubectl runs it as
//! `kubectl acs-identity ...` (krew's convention). It acts with the user's own credentials and
//! only through the API the operator reads: annotations for requests, status for answers.

mod check;
mod gather;
mod inspect;
mod report;
mod request;
mod token;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// What went wrong, said so that the user knows what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Usage(String),
    #[error("the API server refused: {0}")]
    Kube(#[from] kube::Error),
}

#[derive(Parser)]
#[command(
    name = "kubectl acs-identity",
    bin_name = "kubectl acs-identity",
    version,
    about = "Status, renewal, revocation and checks for acs-identity-operator's AcsIdentities",
    after_help = "Examples:\n  kubectl acs-identity status alice\n  kubectl acs-identity status -A\n  kubectl acs-identity renew alice --wait\n  kubectl acs-identity inspect alice\n  kubectl acs-identity check --wait 2m"
)]
struct Cli {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(clap::Args)]
struct Which {
    /// The AcsIdentity's name.
    name: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only identities with these labels (e.g. `team=a`).
    #[arg(short = 'l', long)]
    selector: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Ready/Reconciling/Stalled, identity, token expiry and renewal, Secret, connection,
    /// consumers and recent Events of AcsIdentities.
    Status {
        #[command(flatten)]
        which: Which,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Ask for a new token now (the refresh annotation).
    Renew {
        #[command(flatten)]
        which: Which,
        /// Every AcsIdentity in the namespace (or with -A, everywhere).
        #[arg(long)]
        all: bool,
        /// Wait until the new token is in the Secret.
        #[arg(long)]
        wait: bool,
        /// How long to wait, e.g. 90s or 2m.
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Revoke every token of an identity and put a new one in its Secret (the revoke
    /// annotation): the incident path when a token leaked.
    Revoke {
        name: String,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        /// Wait until the old tokens are revoked and a new one is in the Secret.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// What the token in the Secret says (identity, scopes, issue and expiry times) and
    /// whether it is the token status records. The token is not printed unless asked.
    Inspect {
        name: String,
        /// Print the token too.
        #[arg(long)]
        show_token: bool,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// The CRDs are served, an operator holds the leader Lease and is ready, and every
    /// connection in scope is usable. Exit code 0 when all are, 1 otherwise.
    Check {
        /// Keep checking until all pass or this long has passed (e.g. 2m).
        #[arg(long, value_parser = parse_duration)]
        wait: Option<Duration>,
        /// Namespace of the operator's leader Lease.
        #[arg(long, default_value = "acs-identity-operator")]
        operator_namespace: String,
        /// Name of the operator's leader Lease.
        #[arg(long, default_value = "acs-identity-operator")]
        lease: String,
        /// Check connections in every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// The plugin's version and the running operator's.
    Version {
        #[arg(long, default_value = "acs-identity-operator")]
        operator_namespace: String,
        #[arg(long, default_value = "acs-identity-operator")]
        lease: String,
    },
    /// Shell completion script (e.g. `kubectl acs-identity completion bash`).
    Completion { shell: clap_complete::Shell },
}

/// `90s`, `2m`, `1h`, or plain seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 90s, 2m, 1h)"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?} is not a duration (e.g. 90s, 2m, 1h)")),
    };
    Ok(Duration::from_secs(seconds))
}

async fn client(cli: &Cli) -> Result<(Client, String), Error> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::Usage(format!("--kubeconfig {}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| {
        Error::Usage(format!(
            "no usable kubeconfig ({e}); set KUBECONFIG or pass --kubeconfig and --context"
        ))
    })?;
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(Error::Kube)?;
    Ok((client, namespace))
}

fn print<T: serde::Serialize>(value: &T, output: Output, text: impl FnOnce() -> String) {
    match output {
        Output::Text => print!("{}", text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).expect("plain data serializes")
        ),
        Output::Yaml => print!(
            "{}",
            serde_yaml::to_string(value).expect("plain data serializes")
        ),
    }
}

fn confirm(question: &str) -> Result<bool, Error> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "revoke asks for confirmation at a terminal; pass --yes to revoke without asking"
                .into(),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::Failed(format!("could not read the answer: {e}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

async fn run(cli: Cli) -> Result<ExitCode, Error> {
    if let Command::Completion { shell } = &cli.command {
        let mut command = Cli::command();
        clap_complete::generate(
            *shell,
            &mut command,
            "kubectl-acs_identity",
            &mut std::io::stdout(),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (client, namespace) = client(&cli).await?;
    let now = jiff::Timestamp::now();
    match &cli.command {
        Command::Status { which, output } => {
            let selection = gather::Selection {
                namespace: (!which.all_namespaces).then_some(namespace.as_str()),
                name: which.name.as_deref(),
                selector: which.selector.as_deref(),
            };
            let found = gather::identities(&client, &selection).await?;
            if found.is_empty() {
                eprintln!("no AcsIdentities found");
            }
            let mut reports = Vec::new();
            for obj in &found {
                reports.push(gather::report(&client, obj).await);
            }
            let text = || {
                reports
                    .iter()
                    .map(|r| report::render(r, now))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            match (which.name.is_some(), reports.first()) {
                (true, Some(one)) => print(one, *output, text),
                _ => print(&reports, *output, text),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Renew {
            which,
            all,
            wait,
            timeout,
        } => {
            if which.name.is_none() && !*all && which.selector.is_none() {
                return Err(Error::Usage(
                    "name an AcsIdentity, or pass --all or -l SELECTOR".into(),
                ));
            }
            let selection = gather::Selection {
                namespace: (!which.all_namespaces).then_some(namespace.as_str()),
                name: which.name.as_deref(),
                selector: which.selector.as_deref(),
            };
            let found = gather::identities(&client, &selection).await?;
            request_all(&client, &found, request::Request::Renew, *wait, *timeout).await
        }
        Command::Revoke {
            name,
            yes,
            wait,
            timeout,
        } => {
            let selection = gather::Selection {
                namespace: Some(&namespace),
                name: Some(name),
                selector: None,
            };
            let found = gather::identities(&client, &selection).await?;
            let question = format!(
                "Revoke every token of {namespace}/{name}? Workloads keep working only once they read the new token."
            );
            if !*yes && !confirm(&question)? {
                eprintln!("not revoked");
                return Ok(ExitCode::FAILURE);
            }
            request_all(&client, &found, request::Request::Revoke, *wait, *timeout).await
        }
        Command::Inspect {
            name,
            show_token,
            output,
        } => {
            let selection = gather::Selection {
                namespace: Some(&namespace),
                name: Some(name),
                selector: None,
            };
            let obj = gather::identities(&client, &selection).await?.remove(0);
            let secret_name = obj
                .status
                .as_ref()
                .and_then(|s| s.secret_name.clone())
                .unwrap_or_else(|| obj.secret_name());
            let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(client.clone(), &namespace);
            let secret = secrets.get_opt(&secret_name).await?.ok_or_else(|| {
                Error::NotFound(format!(
                    "Secret {namespace}/{secret_name} not found: the operator has not written it yet; see `kubectl acs-identity status {name}`"
                ))
            })?;
            let token = gather::token_in(&secret).ok_or_else(|| {
                Error::NotFound(format!(
                    "Secret {namespace}/{secret_name} holds no token key"
                ))
            })?;
            let mut found = inspect::inspect(&obj, &secret_name, &token, now);
            if *show_token {
                found.token = Some(token);
            }
            print(&found, *output, || inspect::render(&found, now));
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            wait,
            operator_namespace,
            lease,
            all_namespaces,
        } => {
            let lease = check::LeaseRef {
                namespace: operator_namespace,
                name: lease,
            };
            let scope = (!*all_namespaces).then_some(namespace.as_str());
            let deadline = wait.map(|w| tokio::time::Instant::now() + w);
            loop {
                let findings = check::run(&client, scope, &lease).await;
                let ok = findings.iter().all(|f| f.ok);
                let last = deadline.is_none_or(|d| tokio::time::Instant::now() >= d);
                if ok || last {
                    for f in &findings {
                        println!("{} {}", if f.ok { "ok  " } else { "FAIL" }, f.what);
                    }
                    return Ok(if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    });
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Command::Version {
            operator_namespace,
            lease,
        } => {
            println!("plugin   {}", env!("CARGO_PKG_VERSION"));
            println!(
                "operator {}",
                operator_version(&client, operator_namespace, lease).await
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion { .. } => unreachable!("handled before connecting"),
    }
}

/// The leader's image tag, or why it is unknown.
async fn operator_version(client: &Client, namespace: &str, lease: &str) -> String {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), namespace);
    let holder = match leases.get_opt(lease).await {
        Ok(Some(l)) => l.spec.and_then(|s| s.holder_identity),
        Ok(None) => return format!("unknown (no Lease {namespace}/{lease})"),
        Err(e) => return format!("unknown (Lease {namespace}/{lease}: {e})"),
    };
    let Some(holder) = holder else {
        return "unknown (no operator holds the Lease)".into();
    };
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), namespace);
    match pods.get_opt(&holder).await {
        Ok(Some(pod)) => pod
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image)
            .map(|image| format!("{image} (pod {})", pod.metadata.name.unwrap_or_default()))
            .unwrap_or_else(|| "unknown (the pod names no image)".into()),
        _ => format!("unknown ({holder} is not a pod in {namespace})"),
    }
}

async fn request_all(
    client: &Client,
    found: &[acs_identity_operator::api::AcsIdentity],
    request: request::Request,
    wait: bool,
    timeout: Duration,
) -> Result<ExitCode, Error> {
    let value = request::new_value();
    for obj in found {
        request::send(client, obj, request, &value).await?;
        let verb = match request {
            request::Request::Renew => "renewal requested",
            request::Request::Revoke => "revocation requested",
        };
        println!(
            "{}/{}: {verb}",
            obj.namespace().unwrap_or_default(),
            obj.name_any()
        );
    }
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let waits = found
        .iter()
        .map(|obj| request::wait(client, obj, request, &value, timeout));
    let mut failed = false;
    for (obj, result) in found.iter().zip(futures::future::join_all(waits).await) {
        match result {
            Ok(()) => println!(
                "{}/{}: the new token is in the Secret",
                obj.namespace().unwrap_or_default(),
                obj.name_any()
            ),
            Err(e) => {
                failed = true;
                eprintln!("{e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                Error::Usage(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl_wait_timeouts() {
        for (text, seconds) in [("90", 90), ("90s", 90), ("2m", 120), ("1h", 3600)] {
            assert_eq!(parse_duration(text), Ok(Duration::from_secs(seconds)));
        }
        for bad in ["", "m", "2d", "1.5m", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_text_carries_the_kubectl_prefix() {
        let help = Cli::command().render_help().to_string();
        assert!(help.contains("kubectl acs-identity"), "{help}");
        Cli::command().debug_assert();
    }
}
