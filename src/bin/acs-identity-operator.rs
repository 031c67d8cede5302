//! The operator binary: `run` the controllers, or print the `crds`.

use acs_identity_operator::{api, controller, telemetry};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
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
    Run(RunArgs),
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
    #[arg(long, value_enum, default_value = "text")]
    log_format: telemetry::LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", api::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => run(args).await,
    }
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
    let settings = controller::Settings {
        namespace: args.namespace,
        concurrency: args.concurrency.max(1),
        acs_timeout: Duration::from_secs(args.acs_timeout_seconds.max(1)),
        instance: std::env::var("POD_NAME").ok(),
        ..controller::Settings::default()
    };
    match controller::run(client, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator failed");
            ExitCode::FAILURE
        }
    }
}
