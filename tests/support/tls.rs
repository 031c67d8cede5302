//! A throw-away certificate authority and a server certificate for `localhost` and
//! `127.0.0.1`, for every test that serves TLS.

use acs_identity_operator::emulator::TlsPem;

/// A CA and a leaf for localhost and 127.0.0.1 signed by it.
pub struct TestCa {
    pub ca_pem: String,
    pub server: TlsPem,
}

pub fn test_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf_params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    TestCa {
        ca_pem: ca.pem(),
        server: TlsPem {
            cert_chain: leaf.pem().into_bytes(),
            private_key: leaf_key.serialize_pem().into_bytes(),
        },
    }
}
