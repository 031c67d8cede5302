//! The hostile-input corpus: one row per case, what is done and what must follow. CORPUS.md
//! beside this file is the same table for people; a test keeps the two in step. To add a
//! case (a tenancy attack, say), add a row here and run the suite: it prints the new table.

use serde_json::{Value, json};

/// What a case does to its namespace (which always holds a working connection `acs` to its
/// own emulator and a Ready bystander AcsIdentity `bystander` using it).
#[derive(Clone, Debug)]
pub enum Setup {
    /// The AcsIdentity `victim` is applied with this spec (connection `acs`), after `extra`
    /// objects (a Secret of another type, say) are created.
    Manifest { spec: Value, extra: Extra },
    /// As `Manifest`, with this metadata.name instead of `victim`.
    Named { name: String },
    /// `victim` uses connection `bad`, whose Secret `bad-conn` holds this connection string;
    /// `{emulator}` is replaced by the emulator's endpoint (`http://127.0.0.1:port`).
    ConnectionString(String),
    /// `victim` uses connection `bad`, pointing at a second emulator serving TLS with a
    /// certificate from a test CA, and trusting this CA bundle.
    CaBundle(Ca),
    /// `victim` uses connection `bad`, pointing at a hostile server giving this answer.
    Answer(super::server::Answer),
    /// `victim` uses AcsConnection `bad`: the emulator's https endpoint with this
    /// `workloadIdentity`.
    WorkloadIdentity(Value),
    /// `victim` uses connection `bad`, whose endpoint is a server on 127.0.0.2 (not an
    /// endpoint the operator is allowed to reach: the suite allows the emulators' 127.0.0.1
    /// and localhost only), by a connection string or, with `true`, by `spec.endpoint` and a
    /// workload identity (bearer tokens). The server must not see a single connection, and
    /// the connection's own status names the reason.
    Unlisted { workload_identity: bool },
    /// `victim` becomes Ready through `acs` (an emulator issuing 8-second tokens when
    /// `Edit::ConnectionSecretDeleted`), then this is done under the operator.
    Edit(Edit),
}

#[derive(Clone, Copy, Debug)]
pub enum Extra {
    None,
    /// A `kubernetes.io/tls` Secret named `tls`.
    TlsSecret,
}

#[derive(Clone, Copy, Debug)]
pub enum Ca {
    Garbage,
    PemWithoutCertificate,
    SomeoneElses,
    /// The server's own leaf certificate, which is no CA.
    ServerCertificate,
    /// The right CA, padded with more certificates to past 64 KiB: refused by the schema.
    Oversized,
    /// The right CA in a Secret (`caSecretRef`), padded to 100 KiB: refused when read.
    OversizedSecret,
    /// The CA that signed the server certificate, and that certificate, both expired.
    /// (An expired CA alone is no error: TLS checks the dates of the chain it is given, and
    /// a trust anchor is a name and a key.)
    Expired,
}

#[derive(Clone, Copy, Debug)]
pub enum Edit {
    SecretEmptied,
    SecretForeignData,
    SecretOtherOwner,
    /// Connection `victim-conn`'s Secret deleted while 8-second tokens renew.
    ConnectionSecretDeleted,
}

/// What must follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The API server refuses the manifest, with a message naming this.
    Rejected(&'static str),
    /// Ready False with this reason, a useful message and a Warning Event of that reason.
    Reason(&'static str),
    /// Survived: Ready True with a valid token (and the Secret as the operator wrote it).
    Ready,
    /// Ready True, the Secret holding this token just as ACS gave it (the operator does not
    /// judge a token's format: ACS documents none, and its recorded answers carry
    /// placeholders).
    ReadyWith(&'static str),
}

pub struct Case {
    pub name: &'static str,
    pub group: &'static str,
    pub setup: Setup,
    pub expect: Expect,
}

fn spec(extra: Value) -> Value {
    let mut spec = json!({"connectionRef": {"name": "acs"}, "scopes": ["chat"]});
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    spec
}

fn manifest(name: &'static str, extra: Value, expect: Expect) -> Case {
    Case {
        name,
        group: "manifest",
        setup: Setup::Manifest {
            spec: spec(extra),
            extra: Extra::None,
        },
        expect,
    }
}

fn connection(name: &'static str, text: String, expect: Expect) -> Case {
    Case {
        name,
        group: "connection string",
        setup: Setup::ConnectionString(text),
        expect,
    }
}

fn answer(name: &'static str, answer: super::server::Answer, expect: Expect) -> Case {
    Case {
        name,
        group: "ACS answer",
        setup: Setup::Answer(answer),
        expect,
    }
}

fn whole(
    status: u16,
    content_type: &'static str,
    body: impl Into<String>,
) -> super::server::Answer {
    super::server::Answer::Whole {
        status,
        content_type,
        body: body.into(),
    }
}

/// A create-with-token answer with this token and expiry (`{now+1d}` style placeholders are
/// resolved by the server module's caller: see `main.rs`).
fn created(token: &str, expires_on: &str) -> String {
    json!({"identity": {"id": "8:acs:hostile_1"},
           "accessToken": {"token": token, "expiresOn": expires_on}})
    .to_string()
}

/// Text of an internal service that a hostile endpoint's answer carries: it must not appear in
/// any condition or Event.
pub const INTERNAL: &str = "postgres://app:hunter2@db.internal:5432/prod";

pub const KEY: &str = "ZW11bGF0b3ItdGVzdC1rZXktMDEyMzQ1Njc4OWFiY2RlZg==";
const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJza3lwZWlkIjoiYWNzOmgifQ.c2lnbmF0dXJl";

pub fn cases() -> Vec<Case> {
    use super::server::Answer;
    use Expect::*;
    let long = |n: usize| "a".repeat(n);
    vec![
        // Manifests the CRD schema refuses: the API server's message must name the field.
        manifest(
            "scopes-empty",
            json!({"scopes": []}),
            Rejected("spec.scopes"),
        ),
        manifest(
            "scopes-unknown-unicode",
            json!({"scopes": ["chät\u{202e}"]}),
            Rejected("spec.scopes"),
        ),
        manifest(
            "scopes-repeated",
            json!({"scopes": ["chat", "chat"]}),
            Rejected("scopes must not repeat"),
        ),
        manifest(
            "scopes-wrong-type",
            json!({"scopes": "chat"}),
            Rejected("spec.scopes"),
        ),
        manifest(
            "lifetime-below-minimum",
            json!({"tokenLifetimeMinutes": 59}),
            Rejected("spec.tokenLifetimeMinutes"),
        ),
        manifest(
            "lifetime-above-maximum",
            json!({"tokenLifetimeMinutes": 1441}),
            Rejected("spec.tokenLifetimeMinutes"),
        ),
        manifest(
            "lifetime-wrong-type",
            json!({"tokenLifetimeMinutes": "sixty"}),
            Rejected("spec.tokenLifetimeMinutes"),
        ),
        manifest(
            "lifetime-huge",
            json!({"tokenLifetimeMinutes": 1e300}),
            Rejected("spec.tokenLifetimeMinutes"),
        ),
        manifest(
            "renew-before-not-a-duration",
            json!({"renewBefore": "1d"}),
            Rejected("spec.renewBefore"),
        ),
        manifest(
            "renew-before-control-characters",
            json!({"renewBefore": "5m\u{0}\n"}),
            Rejected("spec.renewBefore"),
        ),
        manifest(
            "renew-before-both-forms",
            json!({"renewBefore": "5m", "renewBeforePercentage": 10}),
            Rejected("mutually exclusive"),
        ),
        manifest(
            "renew-percentage-100",
            json!({"renewBeforePercentage": 100}),
            Rejected("spec.renewBeforePercentage"),
        ),
        manifest(
            "secret-name-254-characters",
            json!({"secretName": long(254)}),
            Rejected("spec.secretName"),
        ),
        manifest(
            "identity-id-513-characters",
            json!({"identityId": long(513)}),
            Rejected("spec.identityId"),
        ),
        manifest(
            "connection-kind-unknown",
            json!({"connectionRef": {"kind": "Secret", "name": "acs"}}),
            Rejected("spec.connectionRef.kind"),
        ),
        manifest(
            "connection-name-empty",
            json!({"connectionRef": {"name": ""}}),
            Rejected("spec.connectionRef.name"),
        ),
        Case {
            name: "name-254-characters",
            group: "manifest",
            setup: Setup::Named { name: long(254) },
            expect: Rejected("metadata.name"),
        },
        // Manifests the schema lets through: the operator must cope.
        Case {
            name: "name-253-characters",
            group: "manifest",
            setup: Setup::Named { name: long(253) },
            expect: Ready,
        },
        manifest(
            "secret-name-control-characters",
            json!({"secretName": "tok\u{7}en"}),
            Rejected("spec.secretName"),
        ),
        manifest(
            "secret-name-unicode",
            json!({"secretName": "tökén"}),
            Rejected("spec.secretName"),
        ),
        manifest(
            "secret-name-is-the-connection-secret",
            json!({"secretName": "acs-conn"}),
            Reason("SecretConflict"),
        ),
        manifest(
            "secret-name-is-another-identitys-secret",
            json!({"secretName": "bystander"}),
            Reason("SecretConflict"),
        ),
        Case {
            name: "secret-name-is-a-tls-secret",
            group: "manifest",
            setup: Setup::Manifest {
                spec: spec(json!({"secretName": "tls"})),
                extra: Extra::TlsSecret,
            },
            expect: Reason("SecretConflict"),
        },
        manifest(
            "connection-ref-wrong-kind",
            json!({"connectionRef": {"kind": "ClusterAcsConnection", "name": "acs"}}),
            Reason("ConnectionNotFound"),
        ),
        manifest(
            "connection-ref-missing",
            json!({"connectionRef": {"name": "nowhere"}}),
            Reason("ConnectionNotFound"),
        ),
        manifest(
            "secret-template-invalid-label",
            json!({"secretTemplate": {"labels": {"bad key!": "v"}}}),
            Reason("KubernetesError"),
        ),
        manifest(
            "secret-template-huge-annotation",
            json!({"secretTemplate": {"annotations": {"a": long(300_000)}}}),
            Reason("KubernetesError"),
        ),
        // Connection strings (the Secret of connection `bad`).
        connection(
            "connection-string-empty",
            String::new(),
            Reason("InvalidConnectionString"),
        ),
        connection(
            "key-empty",
            "endpoint={emulator};accesskey=".into(),
            Reason("InvalidConnectionString"),
        ),
        connection(
            "key-not-base64",
            "endpoint={emulator};accesskey=not base64!!".into(),
            Reason("InvalidConnectionString"),
        ),
        connection(
            "key-wrong",
            "endpoint={emulator};accesskey=d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=".into(),
            Reason("AcsUnauthorized"),
        ),
        connection(
            "key-1mb",
            format!("endpoint={{emulator}};accesskey={}", "A".repeat(1_000_000)),
            Reason("InvalidConnectionString"),
        ),
        connection(
            "value-1mb-garbage",
            "x".repeat(1_000_000),
            Reason("InvalidConnectionString"),
        ),
        connection(
            "scheme-ftp",
            format!("endpoint=ftp://127.0.0.1/;accesskey={KEY}"),
            Reason("InvalidConnectionString"),
        ),
        connection(
            "https-to-a-plain-http-server",
            format!("endpoint={{emulator-https}};accesskey={KEY}"),
            Reason("AcsUnavailable"),
        ),
        connection(
            "endpoint-with-path",
            format!("endpoint={{emulator}}/acs;accesskey={KEY}"),
            Reason("InvalidConnectionString"),
        ),
        connection(
            "endpoint-with-query",
            format!("endpoint={{emulator}}/?x=1;accesskey={KEY}"),
            Reason("InvalidConnectionString"),
        ),
        connection(
            "endpoint-with-credentials",
            format!("endpoint=http://user:pw@127.0.0.1:1;accesskey={KEY}"),
            Reason("InvalidConnectionString"),
        ),
        connection(
            "port-out-of-range",
            format!("endpoint=http://127.0.0.1:99999;accesskey={KEY}"),
            Reason("InvalidConnectionString"),
        ),
        connection(
            "ipv6-nothing-listening",
            format!("endpoint=http://[::1]:9;accesskey={KEY}"),
            Reason("AcsUnavailable"),
        ),
        connection(
            "control-characters",
            format!("endpoint=http://127.0.0.1\u{0}:1;accesskey={KEY}"),
            Reason("InvalidConnectionString"),
        ),
        // Endpoints that are not ACS's (the suite allows only its emulators' in addition).
        connection(
            "endpoint-cloud-metadata",
            format!("endpoint=https://169.254.169.254/;accesskey={KEY}"),
            Reason("EndpointNotAllowed"),
        ),
        connection(
            "endpoint-internal-database-port",
            format!("endpoint=https://db.internal.example:5432/;accesskey={KEY}"),
            Reason("EndpointNotAllowed"),
        ),
        connection(
            "endpoint-acs-name-other-port",
            format!("endpoint=https://r.communication.azure.com:8443/;accesskey={KEY}"),
            Reason("EndpointNotAllowed"),
        ),
        connection(
            "endpoint-acs-lookalike",
            format!("endpoint=https://r.communication.azure.com.evil.example/;accesskey={KEY}"),
            Reason("EndpointNotAllowed"),
        ),
        Case {
            name: "endpoint-unlisted-server-signed",
            group: "endpoint",
            setup: Setup::Unlisted {
                workload_identity: false,
            },
            expect: Reason("EndpointNotAllowed"),
        },
        Case {
            name: "endpoint-unlisted-server-bearer",
            group: "endpoint",
            setup: Setup::Unlisted {
                workload_identity: true,
            },
            expect: Reason("EndpointNotAllowed"),
        },
        // CA bundles (connection `bad` over TLS).
        Case {
            name: "ca-garbage",
            group: "CA bundle",
            setup: Setup::CaBundle(Ca::Garbage),
            expect: Reason("InvalidCaBundle"),
        },
        Case {
            name: "ca-pem-without-certificate",
            group: "CA bundle",
            setup: Setup::CaBundle(Ca::PemWithoutCertificate),
            expect: Reason("InvalidCaBundle"),
        },
        Case {
            name: "ca-of-someone-else",
            group: "CA bundle",
            setup: Setup::CaBundle(Ca::SomeoneElses),
            expect: Reason("AcsCertificateUntrusted"),
        },
        Case {
            name: "ca-not-a-ca",
            group: "CA bundle",
            setup: Setup::CaBundle(Ca::ServerCertificate),
            expect: Reason("AcsCertificateUntrusted"),
        },
        Case {
            name: "ca-bundle-over-64-kib",
            group: "CA bundle",
            setup: Setup::CaBundle(Ca::Oversized),
            expect: Rejected("spec.caBundle"),
        },
        Case {
            name: "ca-secret-over-64-kib",
            group: "CA bundle",
            setup: Setup::CaBundle(Ca::OversizedSecret),
            expect: Reason("InvalidCaBundle"),
        },
        Case {
            name: "certificate-and-ca-expired",
            group: "CA bundle",
            setup: Setup::CaBundle(Ca::Expired),
            expect: Reason("AcsCertificateUntrusted"),
        },
        // ACS answers (a hostile server behind connection `bad`).
        answer(
            "answer-truncated-json",
            whole(201, "application/json", r#"{"identity":{"id":"8:acs:x"#),
            Reason("AcsInvalidResponse"),
        ),
        answer(
            "answer-not-json",
            whole(201, "application/json", "not json at all"),
            Reason("AcsInvalidResponse"),
        ),
        answer(
            "answer-html-error-page",
            whole(
                502,
                "text/html",
                "<html><body><h1>502 Bad Gateway</h1></body></html>",
            ),
            Reason("AcsUnavailable"),
        ),
        answer(
            "answer-html-success",
            whole(201, "text/html", "<html><body>Welcome</body></html>"),
            Reason("AcsInvalidResponse"),
        ),
        answer(
            "answer-wrong-types",
            whole(
                201,
                "application/json",
                r#"{"identity":{"id":5},"accessToken":{"token":[],"expiresOn":true}}"#,
            ),
            Reason("AcsInvalidResponse"),
        ),
        answer(
            "answer-missing-fields",
            whole(201, "application/json", "{}"),
            Reason("AcsInvalidResponse"),
        ),
        answer(
            "answer-no-token",
            whole(
                201,
                "application/json",
                r#"{"identity":{"id":"8:acs:hostile_1"}}"#,
            ),
            Reason("AcsInvalidResponse"),
        ),
        answer(
            "answer-expires-in-the-past",
            whole(
                201,
                "application/json",
                created(JWT, "2001-01-01T00:00:00Z"),
            ),
            Reason("AcsInvalidResponse"),
        ),
        answer(
            "answer-expires-years-ahead",
            whole(
                201,
                "application/json",
                created(JWT, "2999-01-01T00:00:00Z"),
            ),
            Reason("AcsInvalidResponse"),
        ),
        answer(
            "answer-token-not-jwt",
            whole(201, "application/json", created("not a jwt", "{in-1-hour}")),
            ReadyWith("not a jwt"),
        ),
        answer(
            "answer-100mb-body",
            Answer::Huge,
            Reason("AcsInvalidResponse"),
        ),
        answer(
            "answer-never-finishes",
            Answer::NeverFinishes,
            Reason("AcsUnavailable"),
        ),
        answer(
            "answer-redirect",
            Answer::Redirect(9),
            Reason("AcsRejected"),
        ),
        answer(
            "answer-huge-error-message",
            whole(
                400,
                "application/json",
                json!({"error": {"code": "BadRequest", "message": long(500_000)}}).to_string(),
            ),
            Reason("AcsRejected"),
        ),
        // An internal service's answers: shown by status only, never quoted.
        answer(
            "answer-403-internal-page",
            whole(
                403,
                "text/html",
                format!("<html><h1>Forbidden</h1><p>session store {INTERNAL}</p></html>"),
            ),
            Reason("AcsUnauthorized"),
        ),
        answer(
            "answer-500-internal-stack-trace",
            whole(
                500,
                "text/plain",
                format!("panic: dial {INTERNAL}: connection refused\ngoroutine 1 [running]"),
            ),
            Reason("AcsUnavailable"),
        ),
        answer(
            "answer-400-other-apis-json",
            whole(
                400,
                "application/json",
                json!({"detail": INTERNAL, "status": 400}).to_string(),
            ),
            Reason("AcsRejected"),
        ),
        answer(
            "answer-409-error-code-carries-text",
            whole(
                409,
                "application/json",
                json!({"error": {"code": INTERNAL, "message": INTERNAL}}).to_string(),
            ),
            Reason("AcsRejected"),
        ),
        answer(
            "answer-201-internal-values",
            whole(
                201,
                "application/json",
                json!({"identity": {"id": "8:acs:x"}, "accessToken": {"token": "t", "expiresOn": INTERNAL}})
                    .to_string(),
            ),
            Reason("AcsInvalidResponse"),
        ),
        answer(
            "answer-401-html",
            whole(401, "text/html", "<html>Login</html>"),
            Reason("AcsUnauthorized"),
        ),
        // A create answered with an id that is no ACS identity of any resource (a tenant's
        // own server planting a name): nothing recorded.
        answer(
            "answer-id-not-an-acs-identity",
            whole(
                201,
                "application/json",
                json!({"identity": {"id": "alice"},
                       "accessToken": {"token": JWT, "expiresOn": "{in-1-hour}"}})
                .to_string(),
            ),
            Reason("ForeignIdentity"),
        ),
        // Objects edited under the operator.
        Case {
            name: "token-secret-emptied",
            group: "edited",
            setup: Setup::Edit(Edit::SecretEmptied),
            expect: Ready,
        },
        Case {
            name: "token-secret-foreign-data",
            group: "edited",
            setup: Setup::Edit(Edit::SecretForeignData),
            expect: Ready,
        },
        // Another controller took the token Secret: the operator never writes it again and
        // says so at its next look (the edit itself does not trigger one, since the Secret no
        // longer names the AcsIdentity as its owner; the case asks for a refresh).
        Case {
            name: "token-secret-other-owner",
            group: "edited",
            setup: Setup::Edit(Edit::SecretOtherOwner),
            expect: Reason("SecretConflict"),
        },
        Case {
            name: "connection-secret-deleted-while-renewing",
            group: "edited",
            setup: Setup::Edit(Edit::ConnectionSecretDeleted),
            expect: Reason("ConnectionNotFound"),
        },
        // A namespaced connection borrowing the operator's own Entra identity (issue 19,
        // item 2): refused before anything is sent to Entra.
        Case {
            name: "workload-identity-ambient",
            group: "workload identity",
            setup: Setup::WorkloadIdentity(json!({})),
            expect: Reason("InvalidWorkloadIdentity"),
        },
        Case {
            name: "workload-identity-pods-client-id",
            group: "workload identity",
            setup: Setup::WorkloadIdentity(
                json!({"clientId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "tenantId": "t"}),
            ),
            expect: Reason("InvalidWorkloadIdentity"),
        },
        Case {
            name: "workload-identity-service-account-missing",
            group: "workload identity",
            setup: Setup::WorkloadIdentity(
                json!({"serviceAccountName": "nobody", "clientId": "app", "tenantId": "t"}),
            ),
            expect: Reason("InvalidWorkloadIdentity"),
        },
        // An endpoint that accepts and never answers (issue 19, attack 3): found out at the
        // first-byte bound and retried with backoff (its breaker, which opens after a few
        // such calls, is tests/bulkheads.rs's).
        answer(
            "answer-silent-tarpit",
            Answer::Silent,
            Reason("AcsUnavailable"),
        ),
    ]
}

impl Expect {
    pub fn describe(&self) -> String {
        match self {
            Expect::Rejected(what) => format!("refused by the API server (`{what}`)"),
            Expect::Reason(reason) => format!("`{reason}`"),
            Expect::Ready => "Ready `TokenValid`".into(),
            Expect::ReadyWith(token) => format!("Ready `TokenValid`, token `{token}` passed on"),
        }
    }
}

/// The markdown table of CORPUS.md.
pub fn table() -> String {
    let cases = cases();
    let mut out = String::from("| # | group | case | expected |\n| --- | --- | --- | --- |\n");
    for (index, case) in cases.iter().enumerate() {
        out.push_str(&format!(
            "| {} | {} | `{}` | {} |\n",
            index + 1,
            case.group,
            case.name,
            case.expect.describe()
        ));
    }
    out
}
