//! Which certificates the ACS and Entra clients trust: the system's roots, read once per
//! process and shared by every client, and a connection's own PEM bundle beside them.
//!
//! reqwest, left to itself, reads and parses the whole system store for every client it
//! builds and keeps a copy in each; with a client per distinct connection that is ~150
//! roots per tenant connection. Here the system roots are one verifier for the process, and a
//! connection's bundle is a second, small verifier tried when the first does not know the
//! issuer: what each client adds is only its own bundle.

use super::error::AcsError;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, OnceLock};

/// TLS sessions a client remembers for resumption (its endpoint's, a few times over).
const SESSIONS_PER_CLIENT: usize = 4;

/// The crypto of every client: ring, as the rest of the operator.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's roots as one verifier, read on first use. A store that cannot be read leaves
/// only what connections trust themselves (logged once).
fn system_verifier() -> Arc<dyn ServerCertVerifier> {
    static SYSTEM: OnceLock<Arc<dyn ServerCertVerifier>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(%error, "reading the system's root certificates");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
            tracing::debug!(added, ignored, "system root certificates loaded");
            match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider()).build()
            {
                Ok(verifier) => verifier,
                Err(error) => {
                    tracing::warn!(%error, "no system root certificates: only connections' own CAs are trusted");
                    Arc::new(NoRoots)
                }
            }
        })
        .clone()
}

/// The TLS configuration of a client: the system roots, and `extra_ca_pem` (PEM) besides.
pub(crate) fn tls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, AcsError> {
    let system = system_verifier();
    let verifier: Arc<dyn ServerCertVerifier> = match extra_ca_pem {
        None => system,
        Some(pem) => Arc::new(EitherRoots {
            own: own_verifier(pem)?,
            system,
        }),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AcsError::Config(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // What reqwest offers with its own configuration.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // A client talks to one host: rustls's default session cache is sized for 256 and
    // allocated up front (about 150 KiB a client). Never shared between clients: a resumed
    // session skips certificate verification, and clients differ in the CAs they trust.
    config.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS_PER_CLIENT);
    Ok(config)
}

/// A verifier trusting exactly the certificates of a PEM bundle.
fn own_verifier(pem: &[u8]) -> Result<Arc<WebPkiServerVerifier>, AcsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let cert = cert.map_err(|e| AcsError::InvalidCaBundle(format!("not valid PEM: {e}")))?;
        roots.add(cert).map_err(|e| {
            AcsError::InvalidCaBundle(format!("certificate {} is not usable: {e}", index + 1))
        })?;
    }
    if roots.is_empty() {
        return Err(AcsError::InvalidCaBundle("holds no certificate".into()));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| AcsError::InvalidCaBundle(e.to_string()))
}

/// Trusts a chain to a connection's own roots or to the system's: rustls's own verifier for
/// each, the second asked only when the first does not know the issuer (what one store of
/// both would accept, without a copy of the system roots per connection).
#[derive(Debug)]
struct EitherRoots {
    own: Arc<WebPkiServerVerifier>,
    system: Arc<dyn ServerCertVerifier>,
}

impl ServerCertVerifier for EitherRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verify = |v: &dyn ServerCertVerifier| {
            v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        };
        match verify(self.own.as_ref()) {
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
                verify(self.system.as_ref())
            }
            decided => decided,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.own.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.own.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.own.supported_verify_schemes()
    }
}

/// Trusts nothing: a process without readable system roots.
#[derive(Debug)]
struct NoRoots;

impl ServerCertVerifier for NoRoots {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_that_trust_nothing_are_refused() {
        for (pem, says) in [
            (&b"not a certificate"[..], "holds no certificate"),
            (
                b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
                "certificate 1 is not usable",
            ),
        ] {
            match tls_config(Some(pem)) {
                Err(AcsError::InvalidCaBundle(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// The system store is read once: every client without a bundle shares one verifier.
    #[test]
    fn the_system_roots_are_shared() {
        let a = system_verifier();
        let b = system_verifier();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
