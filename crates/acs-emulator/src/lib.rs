//! A local, wire-compatible emulator of the ACS Identity data plane, for offline development
//! and for proving clients (ours and the official SDKs) without Azure.
//!
//! It serves create identity (optionally with a first token), issue token, revoke tokens and
//! delete identity for the api-versions in [`acs_client::model::SUPPORTED_API_VERSIONS`] (the
//! previews among them with an idempotent create per `customId` and a read of an identity),
//! the retired 2020-07-20-preview2 of the first Python library, the Teams user token
//! exchange, and the `/access` operations (Teams Phone extension and Entra ID assignments, and
//! the exchanges of an Entra user's token they admit);
//! verifies the HMAC signature of every request against its access key (or, over TLS, a bearer
//! token from its own Entra ID token endpoint), mints JWT-shaped tokens, throttles like the
//! service, and offers an admin API to inspect state, inject faults, read counters and make
//! test Teams users' tokens. With a data directory its state survives restarts
//! (`persist`).
//! `EMULATOR.md` at the repository root is the user guide.
//!
//! The public surface is [`serve`], which takes an [`EmulatorConfig`] and returns an
//! [`EmulatorHandle`], and the types those name; how a request is served stays inside.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use acs_client::AccessKey;
//! use acs_emulator::{EmulatorConfig, serve};
//! let key = AccessKey::from_base64("ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let emulator = serve(EmulatorConfig::new(key), listener).await?;
//! let connection_string = emulator.connection_string(); // holds the key: never log it
//! emulator.shutdown().await;
//! # Ok(()) }
//! ```

// Everything below is the emulator's own; what callers need is re-exported here.
mod access;
mod access_api;
mod admin;
mod auth;
mod entra;
mod faults;
mod federation;
#[doc(hidden)]
pub mod fuzzing;
mod identity_api;
mod operation;
mod persist;
mod responses;
mod routes;
mod server;
mod service;
mod state;
mod stats;
mod teams;
#[cfg(feature = "testing")]
pub mod testing;
mod throttle;
mod tls;
mod tokens;
mod validation;

pub use entra::EntraConfig;
pub use federation::{DEFAULT_AUDIENCE as FEDERATED_AUDIENCE, FederatedCredential};
pub use operation::UnknownOperation;
pub use persist::JournalError;
pub use throttle::{ThrottleConfig, ThrottleConfigError};
pub use tls::{TlsError, TlsPem};
/// The first api-version, retired by the service (served unless `--retired-api-versions off`).
pub use validation::LEGACY_API_VERSION;

use acs_client::{AccessKey, ConnectionString};
use entra::EntraService;
use faults::FaultPlan;
use identity_api::IdentityService;
use service::App;
use state::IdentityStore;
use stats::RequestStats;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use throttle::Throttle;
use tls::Transport;
use tokens::TokenMinter;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::Url;

/// How to run an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// The resource's access key: every request must be signed with it.
    pub access_key: AccessKey,
    /// Serve HTTPS with this certificate; plain HTTP when `None`.
    pub tls: Option<TlsPem>,
    /// Replaces every token lifetime (`--token-lifetime-seconds`).
    pub token_lifetime: Option<Duration>,
    /// Largest accepted distance between `x-ms-date` and the emulator's clock; `None` accepts
    /// any date.
    pub max_clock_skew: Option<Duration>,
    pub throttle: ThrottleConfig,
    /// The resource GUID in every identity id; random when `None`.
    pub resource_id: Option<String>,
    /// The endpoint to advertise in the connection string instead of the derived one (e.g.
    /// behind a port mapping).
    pub public_endpoint: Option<Url>,
    /// The Entra ID token endpoint (`POST /{tenant}/oauth2/v2.0/token`).
    pub entra: EntraConfig,
    /// Keep identities, revocations and the token secrets in this directory across restarts
    /// (`--data-dir`); memory only when `None`.
    pub data_dir: Option<PathBuf>,
    /// Serve the retired api-version 2020-07-20-preview2 (`--retired-api-versions`).
    pub retired_api_versions: bool,
    /// Answer these api-versions `400 UnsupportedApiVersion`, as the service answers a
    /// version it has retired (`--retired-api-versions VERSION,...`): to see what a client
    /// does the day a preview it uses is retired.
    pub refused_api_versions: Vec<String>,
}

impl EmulatorConfig {
    /// Defaults: plain HTTP, service lifetimes, 15 minutes of clock skew, service throttling.
    pub fn new(access_key: AccessKey) -> Self {
        Self {
            access_key,
            tls: None,
            token_lifetime: None,
            max_clock_skew: Some(auth::DEFAULT_MAX_CLOCK_SKEW),
            throttle: ThrottleConfig::default(),
            resource_id: None,
            public_endpoint: None,
            entra: EntraConfig::default(),
            data_dir: None,
            retired_api_versions: true,
            refused_api_versions: Vec::new(),
        }
    }
}

/// Why [`serve`] could not start an emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("TLS setup failed: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot read the listener's address: {0}")]
    Listener(#[from] std::io::Error),
    #[error("invalid throttle configuration: {0}")]
    Throttle(#[from] ThrottleConfigError),
    #[error("cannot use the data directory: {0}")]
    State(#[from] JournalError),
}

/// A running emulator. Dropping the handle stops it too.
#[derive(Debug)]
pub struct EmulatorHandle {
    local_addr: SocketAddr,
    connection_string: ConnectionString,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl EmulatorHandle {
    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The endpoint clients use: `public_endpoint` if configured, else derived from the address.
    pub fn endpoint(&self) -> &Url {
        &self.connection_string.endpoint
    }

    /// Endpoint and key for a client. It holds the key: never log it.
    pub fn connection_string(&self) -> ConnectionString {
        self.connection_string.clone()
    }

    /// Stops accepting connections, lets in-flight requests finish (a few seconds at most),
    /// and returns when the server is down.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        if let Err(error) = self.task.await {
            tracing::warn!(%error, "emulator task ended abnormally");
        }
    }

    /// Whether the server stopped by itself (it only does if it panicked).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts serving on `listener` and returns once it is accepting.
pub async fn serve(
    config: EmulatorConfig,
    listener: TcpListener,
) -> Result<EmulatorHandle, EmulatorError> {
    let local_addr = listener.local_addr()?;
    let transport = Transport::of(config.tls.as_ref());
    let acceptor = config.tls.as_ref().map(TlsPem::acceptor).transpose()?;
    let throttle = config.throttle.clone().normalized()?;
    let endpoint = config
        .public_endpoint
        .clone()
        .unwrap_or_else(|| derived_endpoint(local_addr, transport));
    let (store, token_secret, entra_secret) = match &config.data_dir {
        Some(dir) => {
            let loaded = persist::open(dir, config.resource_id.as_deref(), state::random_uuid)?;
            let (token_secret, entra_secret) = (loaded.token_secret, loaded.entra_secret);
            let store = IdentityStore::with_journal(loaded)?;
            tracing::info!(
                data_dir = %dir.display(),
                identities = store.summaries().len(),
                "state loaded"
            );
            (store, token_secret, entra_secret)
        }
        None => {
            let resource_id = config
                .resource_id
                .clone()
                .unwrap_or_else(state::random_uuid);
            (
                IdentityStore::new(resource_id),
                rand::random(),
                rand::random(),
            )
        }
    };
    let app = Arc::new(App {
        identities: IdentityService::new(
            store,
            TokenMinter::new(token_secret),
            config.token_lifetime,
        ),
        verifier: auth::Verifier::new(config.access_key.clone(), config.max_clock_skew),
        entra: EntraService::with_secret(config.entra.clone(), entra_secret),
        throttle: Mutex::new(Throttle::new(throttle)),
        faults: Mutex::new(FaultPlan::default()),
        stats: RequestStats::default(),
        transport,
        retired_versions: config.retired_api_versions,
        refused_versions: config.refused_api_versions.clone(),
    });
    let (shutdown, stop) = watch::channel(false);
    let task = tokio::spawn(server::run(listener, acceptor, app, stop));
    tracing::info!(%endpoint, tls = (transport == Transport::Tls), "ACS emulator listening");
    Ok(EmulatorHandle {
        local_addr,
        connection_string: ConnectionString {
            endpoint,
            access_key: config.access_key,
        },
        shutdown,
        task,
    })
}

/// The endpoint clients should use. With TLS on a loopback or wildcard address it is
/// `https://localhost:PORT/`: certificates for local use name `localhost` (and usually
/// 127.0.0.1 too), and the SDKs sign whatever host the endpoint names. Without TLS it is the
/// numeric address (`http://127.0.0.1:PORT/`), which needs no name resolution.
fn derived_endpoint(addr: SocketAddr, transport: Transport) -> Url {
    let port = addr.port();
    let ip = addr.ip();
    let host = match (transport, ip) {
        (Transport::Tls, ip) if ip.is_loopback() || ip.is_unspecified() => "localhost".to_string(),
        (Transport::PlainHttp, IpAddr::V4(v4)) if v4.is_unspecified() => "127.0.0.1".to_string(),
        (Transport::PlainHttp, IpAddr::V6(v6)) if v6.is_unspecified() => "[::1]".to_string(),
        (_, IpAddr::V4(v4)) => v4.to_string(),
        (_, IpAddr::V6(v6)) => format!("[{v6}]"),
    };
    let scheme = transport.scheme();
    // Built from an IP address or "localhost" and a port: always a valid URL.
    Url::parse(&format!("{scheme}://{host}:{port}/")).expect("valid endpoint URL")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_for_each_kind_of_listen_address() {
        use Transport::{PlainHttp, Tls};
        let cases = [
            ("127.0.0.1:8443", Tls, "https://localhost:8443/"),
            ("0.0.0.0:8443", Tls, "https://localhost:8443/"),
            ("[::1]:8443", Tls, "https://localhost:8443/"),
            ("192.0.2.7:8443", Tls, "https://192.0.2.7:8443/"),
            ("127.0.0.1:8080", PlainHttp, "http://127.0.0.1:8080/"),
            ("0.0.0.0:8080", PlainHttp, "http://127.0.0.1:8080/"),
            ("[::]:8080", PlainHttp, "http://[::1]:8080/"),
            (
                "[2001:db8::1]:8080",
                PlainHttp,
                "http://[2001:db8::1]:8080/",
            ),
        ];
        for (addr, transport, expected) in cases {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(
                derived_endpoint(addr, transport).as_str(),
                expected,
                "{addr} {transport:?}"
            );
        }
    }
}
