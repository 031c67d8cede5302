//! The ACS client's wire code checked against the recorded fixtures in `../shared/acs/recordings`:
//! the 16 HMAC signing vectors from the official SDKs.

use acs_identity_operator::acs::AccessKey;
use acs_identity_operator::acs::signing;
use serde::Deserialize;
use std::path::PathBuf;

fn recordings_dir() -> PathBuf {
    std::env::var_os("ACS_RECORDINGS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/acs/recordings")
        })
}

#[derive(Deserialize)]
struct VectorFile {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    source: String,
    access_key_b64: String,
    method: String,
    path_and_query: String,
    x_ms_date: String,
    host: String,
    body_utf8: String,
    x_ms_content_sha256: String,
    string_to_sign: String,
    signature: String,
    authorization_header: Option<String>,
}

#[test]
fn all_sixteen_hmac_vectors_sign_and_verify() {
    let path = recordings_dir().join("hmac_test_vectors.json");
    let file: VectorFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        file.vectors.len(),
        16,
        "fixture set changed: {}",
        path.display()
    );
    for v in &file.vectors {
        let key = AccessKey::from_base64(&v.access_key_b64).unwrap();
        let hash = signing::content_hash(v.body_utf8.as_bytes());
        assert_eq!(hash, v.x_ms_content_sha256, "{}", v.source);
        let sts =
            signing::string_to_sign(&v.method, &v.path_and_query, &v.x_ms_date, &v.host, &hash);
        assert_eq!(sts, v.string_to_sign, "{}", v.source);
        assert_eq!(signing::signature(&key, &sts), v.signature, "{}", v.source);
        assert!(signing::signature_matches(&key, &sts, &v.signature));
        if let Some(header) = &v.authorization_header {
            let parsed = signing::parse_authorization(header).unwrap();
            assert_eq!(parsed.signature, v.signature);
            assert_eq!(parsed.signed_headers.join(";"), signing::SIGNED_HEADERS);
        }
    }
}

#[test]
fn sign_request_reproduces_captured_sdk_requests() {
    // The captured vectors carry a full request: rebuilding the URL and signing it must give
    // the SDK's exact Authorization header.
    let path = recordings_dir().join("hmac_test_vectors.json");
    let file: VectorFile = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let captured: Vec<_> = file
        .vectors
        .iter()
        .filter(|v| v.authorization_header.is_some())
        .collect();
    assert_eq!(captured.len(), 10);
    for v in captured {
        let key = AccessKey::from_base64(&v.access_key_b64).unwrap();
        let url = url::Url::parse(&format!("http://{}{}", v.host, v.path_and_query)).unwrap();
        let at = httpdate::parse_http_date(&v.x_ms_date).unwrap();
        let signed = signing::sign_request(&key, &v.method, &url, v.body_utf8.as_bytes(), at);
        assert_eq!(signed.x_ms_date, v.x_ms_date);
        assert_eq!(signed.x_ms_content_sha256, v.x_ms_content_sha256);
        assert_eq!(
            Some(&signed.authorization),
            v.authorization_header.as_ref(),
            "{}",
            v.source
        );
    }
}
