//! The run's TLS: one rustls configuration for both clients — the lean HTTP/1.1 client (for
//! `https://` hosts that do not speak HTTP/2) and reqwest (given it preconfigured).
//!
//! Why a TLS layer under the lean client: over HTTPS, reqwest's per-request path ran at 0.66x
//! oha on HTTP/1.1 (`bench/https.sh`), the gap the lean client closed for plain HTTP. Why one
//! configuration: both clients trust the same servers (the bundled Mozilla roots, the
//! platform's store, `--cacert`; anything with `--insecure`) and show the same client
//! certificate (`--cert`/`--key`), and the platform's store is read and parsed once per
//! process, not per client (it made a debug build's start-up 0.3 s) — and only when a
//! certificate is first checked ([`Trust`]): reading it was 18 M instructions, two thirds of the
//! start-up of a run that has no `https://` job at all. ALPN offers `h2` and
//! `http/1.1`: reqwest multiplexes a server that picks `h2`; the lean client leaves such a host
//! to it (see [`super::DirectError::H2`]).

use std::sync::{Arc, LazyLock, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
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

/// The run's TLS configuration from `tls`'s certificates (any server's accepted when
/// `insecure`); a bad certificate or key is named by its option.
pub fn client_config(
    tls: &TlsSettings,
    insecure: bool,
) -> Result<rustls::ClientConfig, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("TLS", e.to_string()))?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else {
        // `--cacert` is read now, so that a bad file is refused before any job runs; the
        // store it joins is built at the first certificate to check.
        let mut extra = RootCertStore::empty();
        for pem in &tls.ca_pem {
            let mut found = false;
            for cert in CertificateDer::pem_slice_iter(pem) {
                found = true;
                let cert = cert.map_err(|e| ConfigError::new("--cacert", e.to_string()))?;
                extra
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
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Trust {
                provider,
                extra,
                verifier: OnceLock::new(),
            }))
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

/// The certificate check of a run that checks them: rustls's own (`WebPkiServerVerifier`, as
/// `with_root_certificates` builds it), over the bundled roots, the platform's store and
/// `--cacert`'s, built when the first certificate is to be checked rather than at start-up.
#[derive(Debug)]
struct Trust {
    provider: Arc<CryptoProvider>,
    /// `--cacert`'s certificates, as trust anchors.
    extra: RootCertStore,
    verifier: OnceLock<Option<Arc<WebPkiServerVerifier>>>,
}

impl Trust {
    /// rustls's verifier over every root; `None` only if rustls refuses to build one (it does
    /// for an empty store, and the bundled roots are never empty).
    fn verifier(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.verifier
            .get_or_init(|| {
                let mut roots = BASE_ROOTS.clone();
                roots.extend(self.extra.roots.iter().cloned());
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                    .build()
                    .ok()
            })
            .as_ref()
    }
}

impl ServerCertVerifier for Trust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.verifier() {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
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
