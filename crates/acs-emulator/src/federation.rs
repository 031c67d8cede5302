//! Federated identity credentials: how the emulator's Entra side checks a client assertion, as
//! Entra does for a workload identity. An application (client id) is known only through the
//! federated credentials configured for it, each an (issuer, subject, audiences) triple. An
//! assertion is accepted when
//!
//! 1. it is a JWT (else `AADSTS50027`),
//! 2. its client id has a federated credential at all (else `AADSTS700016`, unknown
//!    application) and one for the assertion's `iss` (else `AADSTS700211`),
//! 3. its signature verifies against a key of the issuer, found through the issuer's OIDC
//!    discovery document and its `jwks_uri`, fetched over https trusting the system roots and
//!    the configured issuer CA (unreachable: `AADSTS50166`; bad signature: `AADSTS50027`),
//! 4. it is within its valid time range (`exp`, `nbf`; else `AADSTS700024`),
//! 5. a credential of that issuer names its `sub` and one of its `aud` (else `AADSTS70021`).
//!
//! Keys are cached per issuer for a minute, and fetched again at once for an unknown key id.

use super::entra::EntraError;
use hyper::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The audience Entra expects of a federated assertion unless a credential names another.
pub const DEFAULT_AUDIENCE: &str = "api://AzureADTokenExchange";

/// How long an issuer's keys are used before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(60);
/// Bound of one discovery or keys request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How far in the future `nbf` may be (clock skew between the issuer and Entra).
const NBF_SKEW_SECONDS: i64 = 300;

/// One federated identity credential of an application.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FederatedCredential {
    pub client_id: String,
    /// The issuer URL, compared exactly with the assertion's `iss`.
    pub issuer: String,
    /// Compared exactly with the assertion's `sub`, e.g. `system:serviceaccount:NS:NAME`.
    pub subject: String,
    /// At least one must be among the assertion's `aud`.
    #[serde(default = "default_audiences")]
    pub audiences: Vec<String>,
}

fn default_audiences() -> Vec<String> {
    vec![DEFAULT_AUDIENCE.to_string()]
}

impl std::str::FromStr for FederatedCredential {
    type Err = String;

    /// `clientId=…,issuer=…,subject=…[,audience=…]` (audience repeatable; default
    /// `api://AzureADTokenExchange`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut client_id, mut issuer, mut subject, mut audiences) = (None, None, None, vec![]);
        for part in s.split(',') {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not key=value"))?;
            let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
            match key.trim() {
                "clientId" => client_id = value,
                "issuer" => issuer = value,
                "subject" => subject = value,
                "audience" => audiences.extend(value),
                other => return Err(format!("unknown key {other:?}")),
            }
        }
        let need = |v: Option<String>, what: &str| v.ok_or_else(|| format!("{what} is required"));
        Ok(Self {
            client_id: need(client_id, "clientId")?,
            issuer: need(issuer, "issuer")?,
            subject: need(subject, "subject")?,
            audiences: if audiences.is_empty() {
                default_audiences()
            } else {
                audiences
            },
        })
    }
}

/// The claims of an assertion that are checked.
#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    #[serde(deserialize_with = "one_or_many")]
    aud: Vec<String>,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// A JSON Web Key Set, as far as it is used: RSA and EC signing keys.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

impl Jwk {
    fn decoding_key(&self) -> Option<DecodingKey> {
        match self.kty.as_str() {
            "RSA" => DecodingKey::from_rsa_components(self.n.as_deref()?, self.e.as_deref()?).ok(),
            "EC" => DecodingKey::from_ec_components(self.x.as_deref()?, self.y.as_deref()?).ok(),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// The federated credentials of every application, and the issuers' keys seen.
#[derive(Debug)]
pub struct Federation {
    credentials: Mutex<Vec<FederatedCredential>>,
    issuer_ca_pem: Option<Vec<u8>>,
    keys: Mutex<HashMap<String, (Instant, Jwks)>>,
}

impl Federation {
    pub fn new(credentials: Vec<FederatedCredential>, issuer_ca_pem: Option<Vec<u8>>) -> Self {
        Self {
            credentials: Mutex::new(credentials),
            issuer_ca_pem,
            keys: Mutex::default(),
        }
    }

    /// Adds a credential (`POST /admin/federatedCredentials`); an identical one is kept once.
    pub fn add(&self, credential: FederatedCredential) {
        let mut credentials = self.credentials.lock().expect("credentials lock");
        if !credentials.contains(&credential) {
            credentials.push(credential);
        }
    }

    pub fn credentials(&self) -> Vec<FederatedCredential> {
        self.credentials.lock().expect("credentials lock").clone()
    }

    /// Uses `jwks` as `issuer`'s keys for the next minute (for tests without an issuer).
    #[cfg(test)]
    pub fn seed_keys(&self, issuer: &str, jwks: Jwks) {
        self.keys
            .lock()
            .unwrap()
            .insert(issuer.to_string(), (Instant::now(), jwks));
    }

    /// Checks `assertion` for `client_id` of `tenant` at `now` (unix seconds).
    pub async fn check(
        &self,
        tenant: &str,
        client_id: &str,
        assertion: &str,
        now: i64,
    ) -> Result<(), EntraError> {
        let malformed = || invalid(50027, "JWT token is invalid or malformed.".into());
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| malformed())?;
        let claims: AssertionClaims = unverified_claims(assertion).ok_or_else(malformed)?;
        let of_client: Vec<FederatedCredential> = self
            .credentials()
            .into_iter()
            .filter(|c| c.client_id == client_id)
            .collect();
        if of_client.is_empty() {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'."
                ),
            ));
        }
        let of_issuer: Vec<FederatedCredential> = of_client
            .into_iter()
            .filter(|c| c.issuer == claims.iss)
            .collect();
        if of_issuer.is_empty() {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                700211,
                format!(
                    "No matching federated identity record found for presented assertion issuer '{}'.",
                    claims.iss
                ),
            ));
        }
        self.verify_signature(&claims.iss, &header, assertion)
            .await?;
        if claims.exp <= now || claims.nbf.is_some_and(|nbf| nbf > now + NBF_SKEW_SECONDS) {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                700024,
                "Client assertion is not within its valid time range.".into(),
            ));
        }
        let matches = of_issuer
            .iter()
            .any(|c| c.subject == claims.sub && c.audiences.iter().any(|a| claims.aud.contains(a)));
        if !matches {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_client",
                70021,
                format!(
                    "No matching federated identity record found for presented assertion. Assertion Issuer: '{}'. Assertion Subject: '{}'. Assertion Audience: '{}'.",
                    claims.iss,
                    claims.sub,
                    claims.aud.join(",")
                ),
            ));
        }
        Ok(())
    }

    async fn verify_signature(
        &self,
        issuer: &str,
        header: &jsonwebtoken::Header,
        assertion: &str,
    ) -> Result<(), EntraError> {
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid(
                50027,
                format!(
                    "JWT token is invalid: algorithm {:?} is not accepted.",
                    header.alg
                ),
            ));
        }
        let mut jwks = self.keys_of(issuer, false).await?;
        let knows_kid =
            |jwks: &Jwks| header.kid.is_none() || jwks.keys.iter().any(|k| k.kid == header.kid);
        if !knows_kid(&jwks) {
            jwks = self.keys_of(issuer, true).await?;
        }
        let mut validation = Validation::new(header.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let verified = jwks
            .keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .filter_map(Jwk::decoding_key)
            .any(|key| {
                jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation).is_ok()
            });
        if verified {
            return Ok(());
        }
        Err(invalid(
            50027,
            format!("JWT token failed signature validation against the keys of issuer '{issuer}'."),
        ))
    }

    /// The issuer's keys, from the cache unless `refresh` or stale.
    async fn keys_of(&self, issuer: &str, refresh: bool) -> Result<Jwks, EntraError> {
        if !refresh {
            let keys = self.keys.lock().expect("keys lock");
            if let Some((at, jwks)) = keys.get(issuer)
                && at.elapsed() < KEYS_TTL
            {
                return Ok(jwks.clone());
            }
        }
        let jwks = self.fetch(issuer).await.map_err(|why| {
            tracing::info!(issuer, why, "issuer discovery failed");
            EntraError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                50166,
                format!("Request to External OIDC endpoint failed: {why}"),
            )
        })?;
        self.keys
            .lock()
            .expect("keys lock")
            .insert(issuer.to_string(), (Instant::now(), jwks.clone()));
        Ok(jwks)
    }

    async fn fetch(&self, issuer: &str) -> Result<Jwks, String> {
        let http = acs_client::client::http_client(
            FETCH_TIMEOUT,
            FETCH_TIMEOUT,
            self.issuer_ca_pem.as_deref(),
        )
        .map_err(|e| e.to_string())?;
        let https = |url: &str| {
            url::Url::parse(url)
                .ok()
                .filter(|u| u.scheme() == "https")
                .ok_or_else(|| format!("{url} is not an https URL"))
        };
        let discovery_url = https(&format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        ))?;
        let get = |url: url::Url| {
            let http = http.clone();
            async move {
                let response = http.get(url).send().await.map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("HTTP {}", response.status().as_u16()));
                }
                let body = acs_client::client::read_capped(response)
                    .await
                    .map_err(|_| "the answer could not be read".to_string())?;
                Ok::<_, String>(body)
            }
        };
        let discovery: Discovery = serde_json::from_slice(&get(discovery_url).await?)
            .map_err(|e| format!("discovery document: {e}"))?;
        if discovery.issuer != issuer {
            return Err(format!(
                "the discovery document names issuer {:?}",
                discovery.issuer
            ));
        }
        serde_json::from_slice(&get(https(&discovery.jwks_uri)?).await?)
            .map_err(|e| format!("keys: {e}"))
    }
}

fn invalid(code: u32, description: String) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        code,
        description,
    )
}

fn unverified_claims<T: serde::de::DeserializeOwned>(jwt: &str) -> Option<T> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Signing keys and assertions for the tests of this module and of the token endpoint.
#[cfg(test)]
pub(super) mod test_support {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    /// An EC P-256 key made for these tests (PKCS#8 DER) and its public point.
    pub fn signer() -> (EncodingKey, Jwks) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = key.serialize_der();
        let public = key.public_key_raw(); // 0x04 || x || y
        use base64::Engine;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let jwk = Jwk {
            kty: "EC".into(),
            kid: Some("k1".into()),
            n: None,
            e: None,
            x: Some(b64(&public[1..33])),
            y: Some(b64(&public[33..65])),
        };
        (EncodingKey::from_ec_der(&der), Jwks { keys: vec![jwk] })
    }

    pub fn assertion(key: &EncodingKey, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{assertion, signer};
    use super::*;

    const ISSUER: &str = "https://issuer.example";
    const CLIENT: &str = "app-b";
    const SUBJECT: &str = "system:serviceaccount:team-b:acs";

    fn claims(sub: &str, aud: &str, exp: i64) -> serde_json::Value {
        serde_json::json!({"iss": ISSUER, "sub": sub, "aud": [aud], "exp": exp, "nbf": exp - 600, "iat": exp - 600})
    }

    fn federation(jwks: Jwks) -> Federation {
        let federation = Federation::new(
            vec![FederatedCredential {
                client_id: CLIENT.into(),
                issuer: ISSUER.into(),
                subject: SUBJECT.into(),
                audiences: default_audiences(),
            }],
            None,
        );
        federation.seed_keys(ISSUER, jwks);
        federation
    }

    #[tokio::test]
    async fn assertions_are_checked_as_entra_checks_them() {
        let (key, jwks) = signer();
        let (other_key, _) = signer();
        let federation = federation(jwks);
        let now = 1_800_000_000;
        let good = assertion(&key, claims(SUBJECT, DEFAULT_AUDIENCE, now + 600));
        assert_eq!(federation.check("t", CLIENT, &good, now).await, Ok(()));
        let foreign_issuer = {
            let mut c = claims(SUBJECT, DEFAULT_AUDIENCE, now + 600);
            c["iss"] = "https://elsewhere.example".into();
            assertion(&key, c)
        };
        let cases = [
            ("app-a", good.clone(), 700016),
            (CLIENT, "not.a.jwt".into(), 50027),
            (CLIENT, foreign_issuer, 700211),
            (
                CLIENT,
                assertion(&other_key, claims(SUBJECT, DEFAULT_AUDIENCE, now + 600)),
                50027,
            ),
            (
                CLIENT,
                assertion(&key, claims(SUBJECT, DEFAULT_AUDIENCE, now)),
                700024,
            ),
            (
                CLIENT,
                assertion(&key, claims(SUBJECT, DEFAULT_AUDIENCE, now + 2000)),
                700024,
            ),
            (
                CLIENT,
                assertion(
                    &key,
                    claims(
                        "system:serviceaccount:platform:op",
                        DEFAULT_AUDIENCE,
                        now + 600,
                    ),
                ),
                70021,
            ),
            (
                CLIENT,
                assertion(&key, claims(SUBJECT, "https://127.0.0.1:6443", now + 600)),
                70021,
            ),
        ];
        for (client, jwt, code) in cases {
            let error = federation.check("t", client, &jwt, now).await.unwrap_err();
            assert_eq!(error.code, code, "{}", error.description);
            assert!(!error.description.contains(&jwt), "assertion echoed");
        }
    }

    #[test]
    fn credentials_parse_from_flags() {
        let c: FederatedCredential =
            "clientId=a,issuer=https://i,subject=system:serviceaccount:n:s"
                .parse()
                .unwrap();
        assert_eq!(c.audiences, vec![DEFAULT_AUDIENCE.to_string()]);
        let two: FederatedCredential =
            "clientId=a,issuer=https://i,subject=s,audience=x,audience=y"
                .parse()
                .unwrap();
        assert_eq!(two.audiences, vec!["x".to_string(), "y".to_string()]);
        for bad in [
            "clientId=a,issuer=https://i",
            "clientId=a,issuer=i,subject=s,x=1",
            "junk",
        ] {
            assert!(bad.parse::<FederatedCredential>().is_err(), "{bad}");
        }
    }
}
