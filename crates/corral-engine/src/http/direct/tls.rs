//! TLS under the lean HTTP/1.1 client, for `https://` hosts that do not speak HTTP/2.
//!
//! Why: over HTTPS, reqwest's per-request path ran at 0.66x oha on HTTP/1.1 (`bench/https.sh`),
//! the gap the lean client closed for plain HTTP. The same rustls (ring) and the same trust as
//! reqwest's: the bundled Mozilla roots, the platform's store, `--cacert`, `--insecure`, and
//! the client certificate of `--cert`/`--key`. ALPN offers `h2` and `http/1.1`: a server that
//! picks `h2` is left to reqwest, which multiplexes (see [`super::DirectError::H2`]).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::error::ConfigError;
use crate::settings::TlsSettings;

/// The connector for `tls`'s settings; a bad certificate or key is named by its option.
pub fn connector(tls: &TlsSettings) -> Result<TlsConnector, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("TLS", e.to_string()))?;
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        // The platform's store, as far as it can be read (unreadable ones are skipped).
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        for pem in &tls.ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ConfigError::new("--cacert", e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::new("--cacert", e.to_string()))?;
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match &tls.identity_pem {
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ConfigError::new("--cert/--key", e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(pem)
                .map_err(|e| ConfigError::new("--cert/--key", e.to_string()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| ConfigError::new("--cert/--key", e.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `--insecure`: any certificate is accepted (signatures are still checked, so the session is
/// encrypted to whoever answered).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
