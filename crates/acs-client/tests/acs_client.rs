//! The Rust ACS client runs the quickstart flow against the emulator over HTTP and HTTPS, and
//! the emulator's admin view confirms each step took effect.

use acs_client::{
    AcsClient, AcsError, ClientOptions, ConnectionString, CreateIdentityParams, FirstToken, Scope,
    TokenLifetime,
};
use acs_emulator::testing::test_ca;
use acs_emulator::testing::{Admin, start_emulator};
use std::time::Duration;

async fn quickstart_flow(client: &AcsClient, admin: &Admin) {
    let day = TokenLifetime::MAX;

    // Create a user, then issue a token for it.
    let user = client.create_identity().await.unwrap();
    assert!(user.starts_with("8:acs:"), "{user}");
    assert_eq!(admin.identity(&user).await.unwrap()["tokensIssued"], 0);
    let voip = client
        .issue_token(&user, &[Scope::Voip], day)
        .await
        .unwrap();
    assert_eq!(admin.verify(&voip.token).await, (true, "ok".into()));
    let lifetime = voip.expires_on.duration_since(jiff::Timestamp::now());
    assert!(
        lifetime.as_secs() > 23 * 3600 && lifetime.as_secs() <= 24 * 3600,
        "{lifetime:?}"
    );

    // Create a user and its token in one call, with a custom lifetime.
    let hour = TokenLifetime::from_minutes(60).unwrap();
    let (second, chat) = client
        .create_identity_with_token(&[Scope::Chat, Scope::ChatJoin], hour)
        .await
        .unwrap();
    assert_eq!(admin.identity(&second).await.unwrap()["tokensIssued"], 1);
    let lifetime = chat.expires_on.duration_since(jiff::Timestamp::now());
    assert!(
        lifetime.as_secs() > 3500 && lifetime.as_secs() <= 3600,
        "{lifetime:?}"
    );

    // Revoke: every token issued before is invalid, the identity still exists.
    client.revoke_tokens(&user).await.unwrap();
    assert_eq!(admin.verify(&voip.token).await, (false, "revoked".into()));
    assert_eq!(admin.identity(&user).await.unwrap()["revocations"], 1);
    let after = client
        .issue_token(&user, &[Scope::Voip], day)
        .await
        .unwrap();
    assert_eq!(admin.verify(&after.token).await, (true, "ok".into()));

    // Delete: tokens die with it and the id becomes unknown.
    client.delete_identity(&user).await.unwrap();
    assert_eq!(admin.identity(&user).await.unwrap()["deleted"], true);
    assert_eq!(admin.verify(&after.token).await, (false, "deleted".into()));
    let gone = client
        .issue_token(&user, &[Scope::Voip], day)
        .await
        .unwrap_err();
    assert!(matches!(gone, AcsError::NotFound(_)), "{gone:?}");
    assert!(matches!(
        client.delete_identity(&user).await,
        Err(AcsError::NotFound(_))
    ));

    // The untouched identity keeps a valid token throughout.
    assert_eq!(admin.verify(&chat.token).await, (true, "ok".into()));
}

#[tokio::test]
async fn rust_client_runs_the_quickstart_over_http() {
    let emulator = start_emulator(|_| {}).await;
    let admin = Admin::new(&emulator, None);
    let client = AcsClient::new(&emulator.connection_string(), ClientOptions::default()).unwrap();
    assert_eq!(client.endpoint().scheme(), "http");
    quickstart_flow(&client, &admin).await;
    emulator.shutdown().await;
}

#[tokio::test]
async fn rust_client_runs_the_quickstart_over_https_with_an_extra_ca() {
    let ca = test_ca();
    let emulator = start_emulator(|c| c.tls = Some(ca.server.clone())).await;
    let admin = Admin::new(&emulator, Some(&ca.ca_pem));
    // The emulator advertises https://localhost:PORT/; connect by address to stay on loopback.
    let mut connection = emulator.connection_string();
    connection.endpoint.set_host(Some("127.0.0.1")).unwrap();
    let options = ClientOptions {
        extra_ca_pem: Some(ca.ca_pem.clone().into_bytes()),
        ..ClientOptions::default()
    };
    let client = AcsClient::new(&connection, options).unwrap();
    assert_eq!(client.endpoint().scheme(), "https");
    quickstart_flow(&client, &admin).await;

    // Without the CA the same endpoint is refused at the TLS layer: a configuration error
    // that says what to fix, not an outage to retry forever.
    let untrusting = AcsClient::new(&connection, ClientOptions::default()).unwrap();
    let err = untrusting.create_identity().await.unwrap_err();
    assert!(matches!(err, AcsError::UntrustedCertificate(_)), "{err:?}");
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("caBundle"), "{err}");
    emulator.shutdown().await;
}

#[tokio::test]
async fn wrong_key_is_unauthorized_and_not_retriable() {
    let emulator = start_emulator(|_| {}).await;
    let wrong: ConnectionString =
        format!("endpoint={};accesskey=d3Jvbmcta2V5", emulator.endpoint())
            .parse()
            .unwrap();
    let client = AcsClient::new(&wrong, ClientOptions::default()).unwrap();
    let err = client.create_identity().await.unwrap_err();
    assert!(
        matches!(err, AcsError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(err.service_code(), Some("Denied"));
    assert!(!err.is_retriable());
    emulator.shutdown().await;
}

#[tokio::test]
async fn injected_faults_map_to_typed_errors() {
    let emulator = start_emulator(|_| {}).await;
    let admin = Admin::new(&emulator, None);
    let client = AcsClient::new(&emulator.connection_string(), ClientOptions::default()).unwrap();
    let user = client.create_identity().await.unwrap();

    admin
        .post("admin/faults", serde_json::json!({"operation": "issueToken", "count": 1, "status": 429, "retryAfterSeconds": 7}))
        .await;
    let err = client
        .issue_token(&user, &[Scope::Chat], TokenLifetime::MAX)
        .await
        .unwrap_err();
    match &err {
        AcsError::Throttled { retry_after, .. } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert!(err.is_retriable());

    admin
        .post(
            "admin/faults",
            serde_json::json!({"operation": "issueToken", "count": 1, "status": 503}),
        )
        .await;
    let err = client
        .issue_token(&user, &[Scope::Chat], TokenLifetime::MAX)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AcsError::Unavailable { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.is_retriable());

    // The faults are used up: the next call succeeds.
    client
        .issue_token(&user, &[Scope::Chat], TokenLifetime::MAX)
        .await
        .unwrap();
    emulator.shutdown().await;
}

#[tokio::test]
async fn every_call_times_out() {
    let emulator = start_emulator(|_| {}).await;
    let admin = Admin::new(&emulator, None);
    admin
        .post(
            "admin/faults",
            serde_json::json!({"operation": null, "count": 1, "delayMs": 3000}),
        )
        .await;
    let options = ClientOptions {
        timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let client = AcsClient::new(&emulator.connection_string(), options).unwrap();
    let err = client.create_identity().await.unwrap_err();
    assert!(matches!(err, AcsError::Timeout { .. }), "{err:?}");
    assert!(err.is_retriable());
    emulator.shutdown().await;
}

#[tokio::test]
async fn creating_twice_with_one_custom_id_gives_one_identity() {
    let emulator = start_emulator(|_| {}).await;
    let admin = Admin::new(&emulator, None);
    let client = AcsClient::new(&emulator.connection_string(), ClientOptions::default()).unwrap();
    let params = CreateIdentityParams {
        custom_id: Some("0b7a3c52-uid"),
        first_token: Some(FirstToken {
            scopes: &[Scope::Chat],
            lifetime: TokenLifetime::from_minutes(60).unwrap(),
        }),
    };
    let first = client.create_identity_with(&params).await.unwrap();
    let second = client.create_identity_with(&params).await.unwrap();
    assert_eq!(second.id, first.id);
    assert_eq!(second.custom_id.as_deref(), Some("0b7a3c52-uid"));
    assert!(second.last_token_issued_at.is_some());
    for created in [first, second] {
        let token = created.token.unwrap();
        assert_eq!(admin.verify(&token.token).await, (true, "ok".into()));
    }
    let live = admin.live_identities().await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["customId"], "0b7a3c52-uid");
    assert_eq!(live[0]["tokensIssued"], 2);

    // Without a token, same identity; the GA calls stay on the GA version and create anew.
    let bare = CreateIdentityParams {
        custom_id: Some("0b7a3c52-uid"),
        first_token: None,
    };
    let third = client.create_identity_with(&bare).await.unwrap();
    assert_eq!(
        (third.id.as_str(), third.token),
        (live[0]["id"].as_str().unwrap(), None)
    );
    client.create_identity().await.unwrap();
    assert_eq!(admin.live_identities().await.len(), 2);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_lost_answer_to_a_create_with_a_custom_id_is_recovered_by_retrying() {
    let emulator = start_emulator(|_| {}).await;
    let admin = Admin::new(&emulator, None);
    let client = AcsClient::new(&emulator.connection_string(), ClientOptions::default()).unwrap();
    admin
        .post(
            "admin/faults",
            serde_json::json!({"operation": "createIdentity", "status": 503, "afterCommit": true}),
        )
        .await;
    let params = CreateIdentityParams {
        custom_id: Some("lost-answer"),
        first_token: Some(FirstToken {
            scopes: &[Scope::Voip],
            lifetime: TokenLifetime::MAX,
        }),
    };
    let err = client.create_identity_with(&params).await.unwrap_err();
    assert!(
        matches!(err, AcsError::Unavailable { status: 503, .. }),
        "{err:?}"
    );
    let (id, _) = client
        .create_identity_with(&params)
        .await
        .unwrap()
        .into_id_and_token()
        .unwrap();
    let live = admin.live_identities().await;
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["id"], id.as_str());
    emulator.shutdown().await;
}

/// Serves one canned HTTP response per connection, for `connections` connections (at most
/// 10 s each); the address to connect to.
async fn hostile_server(head: &'static str, body_len: usize, connections: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..connections {
            let Ok(Ok((mut socket, _))) =
                tokio::time::timeout(Duration::from_secs(10), listener.accept()).await
            else {
                return;
            };
            let mut request = vec![0u8; 64 * 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut request)).await;
            let chunk = vec![b'x'; 64 * 1024];
            let _ = socket.write_all(head.as_bytes()).await;
            let mut sent = 0;
            while sent < body_len {
                if socket.write_all(&chunk).await.is_err() {
                    break; // the client stopped reading: what it should do
                }
                sent += chunk.len();
            }
        }
    });
    format!("endpoint=http://{addr}/;accesskey=d3Jvbmcta2V5")
}

#[tokio::test]
async fn a_huge_response_body_is_refused_not_buffered() {
    let cases = [
        // Announced: refused before reading.
        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\n\r\n",
        // Not announced (read until close): refused once 1 MiB has come.
        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
    ];
    for head in cases {
        let connection: ConnectionString =
            hostile_server(head, 100 << 20, 1).await.parse().unwrap();
        let client = AcsClient::new(&connection, ClientOptions::default()).unwrap();
        let err = client.create_identity().await.unwrap_err();
        assert!(
            matches!(&err, AcsError::InvalidResponse(m) if m.contains("larger than 1024 KiB")),
            "{head:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_redirect_is_an_error_not_followed() {
    // A server that redirects to itself: followed, it would loop until reqwest gives up.
    let head = "HTTP/1.1 302 Found\r\nlocation: /identities?api-version=2023-10-01\r\ncontent-length: 0\r\n\r\n";
    let connection: ConnectionString = hostile_server(head, 0, 11).await.parse().unwrap();
    let client = AcsClient::new(&connection, ClientOptions::default()).unwrap();
    let err = client.create_identity().await.unwrap_err();
    assert!(
        matches!(err, AcsError::Rejected { status: 302, .. }),
        "{err:?}"
    );
    assert!(!err.is_retriable());
}

/// A client of `endpoint` with a whole-call bound of 20 s and the default connect (3 s) and
/// first-byte (10 s) bounds shortened to 1 s and 2 s.
fn client_with_phases(endpoint: std::net::SocketAddr) -> AcsClient {
    let cs: ConnectionString = format!("endpoint=http://{endpoint}/;accesskey=c2VjcmV0")
        .parse()
        .unwrap();
    let options = ClientOptions {
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(1),
        first_byte_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    AcsClient::new(&cs, options).unwrap()
}

/// An endpoint that accepts and never answers is given up on at the first-byte bound, not
/// after the whole call's, and the error says which bound without anything the peer sent.
#[tokio::test]
async fn a_server_that_never_answers_is_given_up_on_at_the_first_byte() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let started = std::time::Instant::now();
    let err = client_with_phases(endpoint)
        .create_identity()
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            AcsError::Timeout {
                phase: acs_client::TimeoutPhase::FirstByte,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(5), "gave up after {took:?}");
    assert!(err.is_retriable() && err.is_unreachable());
    assert_eq!(
        err.to_string(),
        "ACS accepted the connection but did not begin to answer within 2s"
    );
    held.abort();
}

/// A listener that never accepts (its backlog full) is given up on at the connect bound.
#[tokio::test]
async fn a_listener_that_never_accepts_is_given_up_on_at_the_connect_bound() {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let endpoint = listener.local_addr().unwrap();
    // Fill the backlog: once it is full, the kernel answers no more handshakes.
    let mut queued = Vec::new();
    for _ in 0..64 {
        let connect = tokio::net::TcpStream::connect(endpoint);
        match tokio::time::timeout(Duration::from_millis(300), connect).await {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break,
        }
    }
    let started = std::time::Instant::now();
    let err = client_with_phases(endpoint)
        .create_identity()
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(
            err,
            AcsError::Timeout {
                phase: acs_client::TimeoutPhase::Connect,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(4), "gave up after {took:?}");
    assert_eq!(err.to_string(), "could not connect to ACS within 1s");
    drop(listener);
}
