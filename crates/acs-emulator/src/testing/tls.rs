//! A throw-away certificate authority and a server certificate for `localhost` and
//! `127.0.0.1`, for every test that serves TLS: the in-process emulator, the `acs-emulator`
//! binary, and the official SDKs that connect to it.
//!
//! The certificates carry what strict verifiers insist on (CA key usages, the server-auth
//! extended key usage, an authority key identifier), so that OpenSSL in the Python SDK and
//! Node's TLS accept them as readily as rustls does.

use crate::TlsPem;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A CA and a leaf for localhost and 127.0.0.1 signed by it.
pub struct TestCa {
    /// The CA certificate, for clients to trust.
    pub ca_pem: String,
    /// The leaf certificate and its key, for the server.
    pub server: TlsPem,
}

/// A fresh CA and server certificate (new keys on every call).
pub fn test_ca() -> TestCa {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "acs-identity-operator test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("CA key");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    // rcgen turns "127.0.0.1" into an IP address SAN.
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("leaf params");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");
    TestCa {
        ca_pem: ca.pem(),
        server: TlsPem {
            cert_chain: leaf.pem().into_bytes(),
            private_key: leaf_key.serialize_pem().into_bytes(),
        },
    }
}
