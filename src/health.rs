//! The operator's HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the process
//! serves), `/readyz` (caches synced and reconciling, or standing by for the leader lease).

use crate::leader::Role;
use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::net::TcpListener;
use tracing::{debug, info};

#[derive(Clone)]
pub struct HealthState {
    pub metrics: Arc<Metrics>,
    pub synced: Arc<AtomicBool>,
    pub role: Arc<Role>,
    /// Whether leader election is on (a standby replica is then ready too).
    pub leader_election: bool,
}

/// A response body: a short text, or the metrics written piece by piece as they are sent.
enum Body {
    Text(String),
    Metrics,
}

impl HealthState {
    fn answer(&self, path: &str) -> (StatusCode, &'static str, Body) {
        const TEXT: &str = "text/plain; charset=utf-8";
        let (status, content_type, text) = match path {
            "/metrics" => {
                return (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    Body::Metrics,
                );
            }
            "/healthz" => (StatusCode::OK, TEXT, "ok\n".into()),
            "/readyz" => {
                let synced = self.synced.load(Ordering::Relaxed);
                let standby = self.leader_election && self.role.is_standby();
                let role = if self.leader_election {
                    self.role.describe()
                } else {
                    "single"
                };
                if synced || standby {
                    (StatusCode::OK, TEXT, format!("ready ({role})\n"))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        TEXT,
                        format!("not ready: caches syncing ({role})\n"),
                    )
                }
            }
            _ => (StatusCode::NOT_FOUND, TEXT, "not found\n".into()),
        };
        (status, content_type, Body::Text(text))
    }

    /// The body to send: the metrics are written a piece at a time, each when the connection
    /// takes the one before (a scrape at 100,000 identities is some 75 MB of text).
    fn body(&self, body: Body) -> BoxBody<Bytes, std::convert::Infallible> {
        match body {
            Body::Text(text) => Full::new(Bytes::from(text)).boxed(),
            Body::Metrics => {
                let pieces = self.metrics.pieces();
                let frames = futures::stream::iter(pieces.map(|p| Ok(Frame::data(Bytes::from(p)))));
                StreamBody::new(frames).boxed()
            }
        }
    }
}

/// Serves until the process ends.
pub async fn serve(listener: TcpListener, state: HealthState) {
    info!(address = ?listener.local_addr().ok(), "serving /metrics, /healthz, /readyz");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (status, content_type, body) = state.answer(req.uri().path());
                let response = Response::builder()
                    .status(status)
                    .header("content-type", content_type)
                    .body(state.body(body))
                    .expect("static response parts are valid");
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "health connection ended");
            }
        });
    }
}

pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader_election: bool) -> HealthState {
        HealthState {
            metrics: Arc::default(),
            synced: Arc::default(),
            role: Arc::default(),
            leader_election,
        }
    }

    #[test]
    fn readiness_follows_sync_and_standby() {
        let s = state(false);
        assert_eq!(s.answer("/readyz").0, StatusCode::SERVICE_UNAVAILABLE);
        s.synced.store(true, Ordering::Relaxed);
        assert_eq!(s.answer("/readyz").0, StatusCode::OK);
        assert_eq!(s.answer("/healthz").0, StatusCode::OK);
        assert_eq!(s.answer("/nope").0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_metrics_body_is_the_whole_exposition() {
        let s = state(false);
        s.metrics
            .observe_identity("ns", "alice", &crate::api::AcsIdentityStatus::default());
        let (status, _, body) = s.answer("/metrics");
        assert_eq!(status, StatusCode::OK);
        let sent = s.body(body).collect().await.unwrap().to_bytes();
        let text = std::str::from_utf8(&sent).unwrap();
        assert!(
            text.contains("acs_identity_reconcile_duration_seconds"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"acs_identity_ready_status{namespace="ns",name="alice",condition="Unknown"} 1"#
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
