//! A tenant's own "ACS": an HTTP server on 127.0.0.1 that speaks just enough of the identity
//! API for the operator to take its answers, and answers every create with the id it is told
//! to (another tenant's, say). It counts requests by operation and stops when dropped.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

#[derive(Default)]
struct State {
    answer: String,
    requests: HashMap<&'static str, u64>,
}

pub struct FakeAcs {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl FakeAcs {
    /// A server that answers creates with `id`.
    pub async fn start(id: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            answer: id.to_string(),
            ..State::default()
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                let service = hyper::service::service_fn(move |r| {
                    let response = answer(&state, r);
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                tokio::spawn(connection);
            }
        });
        Self { port, state, task }
    }

    /// The connection string of this server (any key: it checks none).
    pub fn connection_string(&self) -> String {
        format!(
            "endpoint=http://127.0.0.1:{}/;accesskey=ZmFrZS1rZXktb2YtdGVhbS1i",
            self.port
        )
    }

    /// From now on, creates are answered with `id`.
    pub fn answer_with(&self, id: &str) {
        self.state.lock().unwrap().answer = id.to_string();
    }

    /// Requests of `operation` (`create`, `issue`, `revoke`, `delete`) received so far.
    pub fn requests(&self, operation: &str) -> u64 {
        let state = self.state.lock().unwrap();
        state.requests.get(operation).copied().unwrap_or(0)
    }
}

impl Drop for FakeAcs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let expires = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(23)).to_string();
    let token = serde_json::json!({"token": "fake-token-of-team-b", "expiresOn": expires});
    let mut state = state.lock().unwrap();
    let (operation, status, body) = if path.ends_with(":issueAccessToken") {
        ("issue", 200, token.to_string())
    } else if path.ends_with(":revokeAccessTokens") {
        ("revoke", 204, String::new())
    } else if method == hyper::Method::DELETE {
        ("delete", 204, String::new())
    } else {
        let body = serde_json::json!({
            "identity": {"id": state.answer},
            "accessToken": token,
        });
        ("create", 201, body.to_string())
    };
    *state.requests.entry(operation).or_default() += 1;
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
