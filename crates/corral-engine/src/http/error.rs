//! Why a request failed, told by type where the failure is born — never read back from an
//! error's message, which a library may word differently in its next version (or another
//! language).
//!
//! Two causes need more than the client's own error kinds: a name that did not resolve,
//! which is worth trying again only when the resolver could not answer (`EAI_AGAIN`) and not
//! when the name does not exist — std and tokio keep the resolver's code only in the words of
//! their error, so names are resolved here with `getaddrinfo` through `dns-lookup`, which keeps
//! it ([`resolve`], for both clients); and a certificate refused in a TLS handshake, which is a
//! setting to fix rather than an outage, found by the type of rustls's error in the error's
//! source chain ([`refuses_certificate`]), as reqwest and ripgrep downcast theirs.

use std::error::Error;
use std::net::SocketAddr;

use crate::error::ErrorKind;

/// What failed, typed where it failed: what the engine decides on (retry or not, the result's
/// kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The host's name did not resolve; `temporary`: the resolver could not answer now
    /// (a later try may), otherwise the name does not exist.
    Dns {
        /// The resolver could not answer (`EAI_AGAIN`).
        temporary: bool,
    },
    /// The TCP connection could not be made (refused, unreachable, connect timeout, a TLS
    /// handshake that failed other than on a certificate).
    Connect,
    /// The process ran out of file descriptors.
    FdLimit,
    /// A certificate was refused in the TLS handshake (the server's, or the client's by the
    /// server).
    Tls,
    /// No response within the time allowed.
    Timeout,
    /// The connection failed after it was made (reset, closed, not HTTP).
    Connection,
    /// The response body could not be read to its end.
    Body,
    /// The request could not be built.
    Request,
}

impl Cause {
    /// The kind a result says.
    pub fn kind(self) -> ErrorKind {
        match self {
            Cause::Dns { .. } => ErrorKind::Dns,
            Cause::Connect => ErrorKind::Connect,
            Cause::FdLimit => ErrorKind::FdLimit,
            Cause::Tls => ErrorKind::Tls,
            Cause::Timeout => ErrorKind::Timeout,
            Cause::Connection => ErrorKind::Connection,
            Cause::Body => ErrorKind::Body,
            Cause::Request => ErrorKind::Request,
        }
    }

    /// Whether the same request will fail the same way however often it is tried: a name that
    /// does not exist, a certificate refused, a request that cannot be built.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Cause::Dns { temporary: false } | Cause::Tls | Cause::Request
        )
    }
}

/// A name that did not resolve, with the resolver's verdict.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {reason}")]
pub struct DnsError {
    host: String,
    reason: String,
    /// The resolver could not answer now (`EAI_AGAIN`): a later try may resolve it.
    pub temporary: bool,
}

/// The addresses of `host` (with `port`), from the system's resolver (`getaddrinfo`, as std
/// and tokio use it: `/etc/hosts`, `nsswitch.conf`), on a blocking thread.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, DnsError> {
    let name = host.to_string();
    let looked = tokio::task::spawn_blocking(move || {
        let hints = dns_lookup::AddrInfoHints {
            socktype: dns_lookup::SockType::Stream.into(),
            ..dns_lookup::AddrInfoHints::default()
        };
        dns_lookup::getaddrinfo(Some(&name), None, Some(hints)).map(|infos| {
            infos
                .filter_map(Result::ok)
                .map(|info| SocketAddr::new(info.sockaddr.ip(), port))
                .collect::<Vec<_>>()
        })
    })
    .await;
    let failed = |reason: String, temporary: bool| DnsError {
        host: host.to_string(),
        reason,
        temporary,
    };
    match looked {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(failed("no address for the name".into(), false)),
        Ok(Err(e)) => {
            let temporary = matches!(
                e.kind(),
                dns_lookup::LookupErrorKind::Again | dns_lookup::LookupErrorKind::System
            );
            Err(failed(std::io::Error::from(e).to_string(), temporary))
        }
        // The blocking pool is shutting down: not the name's fault.
        Err(e) => Err(failed(e.to_string(), true)),
    }
}

/// The first error of type `T` in `e`'s source chain. An `io::Error` that wraps another error
/// is looked into (its `source()` skips what it wraps), however deep the wrapping.
pub fn find<'a, T: Error + 'static>(e: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// Whether `e` is (or was caused by) a certificate refused in a TLS handshake: the server's
/// (untrusted, expired, for another name) or ours by the server.
pub fn refuses_certificate(e: &(dyn Error + 'static)) -> bool {
    use rustls::AlertDescription as A;
    match find::<rustls::Error>(e) {
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented) => true,
        Some(rustls::Error::AlertReceived(alert)) => matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::CertificateRequired
                | A::BadCertificateStatusResponse
        ),
        _ => false,
    }
}

/// What a refused certificate means and what to do, in plain words, for the refusals whose
/// rustls names say little (`CaUsedAsEndEntity`); `None` for the others.
pub fn certificate_advice(e: &(dyn Error + 'static)) -> Option<&'static str> {
    use rustls::CertificateError as C;
    match find::<rustls::Error>(e)? {
        rustls::Error::InvalidCertificate(c) => Some(match c {
            C::UnknownIssuer => {
                "the server's certificate is not signed by a CA this run trusts: give that CA's \
                 certificate with --cacert (or, for a test server only, --insecure)"
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the server's certificate is for another name than the URL's host"
            }
            C::Expired | C::ExpiredContext { .. } => "the server's certificate has expired",
            C::Other(other)
                if other.0.downcast_ref::<webpki::Error>()
                    == Some(&webpki::Error::CaUsedAsEndEntity) =>
            {
                CA_AS_LEAF
            }
            _ => return None,
        }),
        _ => None,
    }
}

/// `CaUsedAsEndEntity`, in words.
const CA_AS_LEAF: &str = "the server presents a CA certificate (basicConstraints CA:TRUE, as \
    `openssl req -x509` makes by default) as its own, which TLS clients refuse: give the server \
    a certificate signed by that CA and the CA to --cacert, or make its self-signed \
    certificate with CA:FALSE (for a test server only, --insecure)";

/// `message` with [`certificate_advice`] for `e` appended, when there is some.
pub fn with_advice(message: String, e: &(dyn Error + 'static)) -> String {
    match certificate_advice(e) {
        Some(advice) => format!("{message} ({advice})"),
        None => message,
    }
}

/// The full chain of an error's messages ("error sending request: connection closed ..."),
/// for the result's words.
pub fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let m = inner.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = inner.source();
    }
    s
}

/// The resolver reqwest uses: [`resolve`], so that its DNS failures carry a [`DnsError`] in
/// their source chain, as the lean client's do.
pub(crate) struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolve_and_a_name_that_cannot_exist_is_permanent() {
        let addrs = resolve("localhost", 8080).await.unwrap();
        assert!(addrs
            .iter()
            .all(|a| a.port() == 8080 && a.ip().is_loopback()));
        // A label over 63 bytes cannot exist: getaddrinfo says so without asking a server
        // (a name it had to ask about would depend on the machine's network).
        let name = format!("{}.invalid", "a".repeat(64));
        let e = resolve(&name, 80).await.unwrap_err();
        assert!(!e.temporary, "{e}");
        assert!(e.to_string().contains(&name), "{e}");
    }

    #[test]
    fn a_certificate_refusal_is_found_by_its_type_through_io_errors() {
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::other(refused);
        assert!(refuses_certificate(&wrapped));
        let alert = std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        ));
        assert!(refuses_certificate(&alert));
        let other = std::io::Error::other(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert!(!refuses_certificate(&other));
        // However deep inside io errors (as reqwest's connector hands it on).
        let deep = std::io::Error::other(std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        )));
        assert!(refuses_certificate(&deep));
        // Its words alone decide nothing.
        let words = std::io::Error::other("certificate verify failed");
        assert!(!refuses_certificate(&words));
    }

    #[test]
    fn only_what_will_fail_the_same_way_is_permanent() {
        assert!(Cause::Dns { temporary: false }.is_permanent());
        assert!(!Cause::Dns { temporary: true }.is_permanent());
        assert!(Cause::Tls.is_permanent() && Cause::Request.is_permanent());
        assert!(!Cause::Connect.is_permanent() && !Cause::Timeout.is_permanent());
        assert_eq!(Cause::Dns { temporary: true }.kind(), ErrorKind::Dns);
    }
}
