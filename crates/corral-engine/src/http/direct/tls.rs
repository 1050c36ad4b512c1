//! The run's TLS: one rustls configuration for both clients — the lean HTTP/1.1 client (for
//! `https://` hosts that do not speak HTTP/2) and reqwest (given it preconfigured).
//!
//! Why a TLS layer under the lean client: over HTTPS, reqwest's per-request path ran at 0.66x
//! oha on HTTP/1.1 (`bench/https.sh`), the gap the lean client closed for plain HTTP. Why one
//! configuration: both clients trust the same servers (the bundled Mozilla roots, the
//! platform's store, `--cacert`; anything with `--insecure`) and show the same client
//! certificate (`--cert`/`--key`), and the platform's store is read and parsed once per
//! process, not per client (it made a debug build's start-up 0.3 s). ALPN offers `h2` and
//! `http/1.1`: reqwest multiplexes a server that picks `h2`; the lean client leaves such a host
//! to it (see [`super::DirectError::H2`]).

use std::sync::{Arc, LazyLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use crate::error::ConfigError;
use crate::settings::TlsSettings;

/// The bundled roots and the platform's store (as far as it can be read), once per process.
static BASE_ROOTS: LazyLock<RootCertStore> = LazyLock::new(|| {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
});

/// The lean client's connector for a configuration from [`client_config`].
pub fn connector(config: Arc<rustls::ClientConfig>) -> TlsConnector {
    TlsConnector::from(config)
}

/// The run's TLS configuration from `tls`'s settings; a bad certificate or key is named by its
/// option.
pub fn client_config(tls: &TlsSettings) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("TLS", e.to_string()))?;
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else {
        let mut roots = BASE_ROOTS.clone();
        for pem in &tls.ca_pem {
            let mut found = false;
            for cert in CertificateDer::pem_slice_iter(pem) {
                found = true;
                let cert = cert.map_err(|e| ConfigError::new("--cacert", e.to_string()))?;
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::new("--cacert", e.to_string()))?;
            }
            if !found {
                return Err(ConfigError::new(
                    "--cacert",
                    "the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                ));
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
    Ok(config)
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
