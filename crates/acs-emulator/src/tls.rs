//! TLS for the emulator: a certificate chain and key in PEM, served with rustls on the `ring`
//! provider, HTTP/2 and HTTP/1.1 offered by ALPN; and [`Transport`], whether it is served at all.

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// How clients reach the emulator. Decided once from the configuration (a [`TlsPem`] given or
/// not) and asked wherever the scheme matters: the advertised endpoint, the URIs quoted in
/// answers, and bearer tokens, which are refused over plain HTTP as the SDKs refuse to send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    PlainHttp,
    Tls,
}

impl Transport {
    pub fn of(tls: Option<&TlsPem>) -> Self {
        match tls {
            Some(_) => Transport::Tls,
            None => Transport::PlainHttp,
        }
    }

    /// The URL scheme clients use: `https` or `http`.
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::PlainHttp => "http",
            Transport::Tls => "https",
        }
    }
}

/// A server certificate chain (leaf first) and its private key, both PEM.
#[derive(Clone)]
pub struct TlsPem {
    pub cert_chain: Vec<u8>,
    pub private_key: Vec<u8>,
}

impl fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsPem")
            .field(
                "cert_chain",
                &format_args!("{} bytes", self.cert_chain.len()),
            )
            .field("private_key", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the certificate file holds no PEM certificate")]
    NoCertificate,
    #[error("the certificate file is not valid PEM: {0}")]
    BadCertificate(rustls::pki_types::pem::Error),
    #[error("the key file holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {0}")]
    BadKey(rustls::pki_types::pem::Error),
    #[error("the certificate and key do not make a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

impl TlsPem {
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |what, path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                what,
                path: path.display().to_string(),
                source,
            })
        };
        Ok(Self {
            cert_chain: read("certificate", cert)?,
            private_key: read("key", key)?,
        })
    }

    pub(super) fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let chain = CertificateDer::pem_slice_iter(&self.cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsError::BadCertificate)?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(&self.private_key).map_err(TlsError::BadKey)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let pem = TlsPem {
            cert_chain: b"not pem".to_vec(),
            private_key: b"not pem".to_vec(),
        };
        assert!(matches!(pem.acceptor(), Err(TlsError::NoCertificate)));
        assert!(!format!("{pem:?}").contains("not pem"));
    }

    #[test]
    fn a_generated_certificate_is_accepted() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let pem = TlsPem {
            cert_chain: cert.cert.pem().into_bytes(),
            private_key: cert.signing_key.serialize_pem().into_bytes(),
        };
        assert!(pem.acceptor().is_ok());
    }
}
