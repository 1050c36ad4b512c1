//! One connection to a host and its buffers, and how it is opened (TCP, and TLS for
//! `https://`).

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::DirectError;
use crate::http::error::{chain, refuses_certificate};

/// How much room a read asks for.
pub(super) const READ_SIZE: usize = 16 * 1024;

/// True for "too many open files", of the process (`EMFILE`) or the system (`ENFILE`).
pub fn is_fd_limit(e: &std::io::Error) -> bool {
    // Linux's errno values; std has no ErrorKind for them.
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(ENFILE | EMFILE))
}

/// A connection's byte stream: plain TCP, or TLS over it.
pub(super) enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One connection and its buffers (kept with it, so a request allocates none).
pub(super) struct Conn {
    pub(super) stream: Stream,
    /// Bytes read and not yet consumed.
    pub(super) read: BytesMut,
    /// The request being written.
    pub(super) write: Vec<u8>,
}

impl Conn {
    /// False when the server has closed the connection (or sent something unasked) while it
    /// was idle. Costs no system call unless the socket has reported an event since.
    pub(super) fn is_usable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        match &self.stream {
            Stream::Tcp(s) => {
                matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
            // Under TLS a byte read would be lost to the session: peek at the socket instead.
            // Anything there (a close_notify, an end of stream) makes the connection unusable.
            Stream::Tls(s) => {
                let mut buf = ReadBuf::new(&mut probe);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                s.get_ref().0.poll_peek(&mut cx, &mut buf).is_pending()
            }
        }
    }

    /// Reads more bytes; `Ok(0)` at the end of the connection.
    pub(super) async fn fill(&mut self) -> std::io::Result<usize> {
        if self.read.capacity() - self.read.len() < READ_SIZE / 4 {
            self.read.reserve(READ_SIZE);
        }
        self.stream.read_buf(&mut self.read).await
    }
}

/// Opens a connection to `host:port` within `timeout`, with TLS when `tls` is given.
pub(super) async fn open(
    host: &str,
    port: u16,
    timeout: Duration,
    tls: Option<&TlsConnector>,
) -> Result<Conn, DirectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let connect = async {
        // An IP literal needs no resolver round trip.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match crate::http::error::resolve(host, port).await {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            },
        };
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(Ok(s)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
        }))
    };
    // Ok(Err(_)): the name did not resolve; Err(_): no connection.
    let stream = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(Ok(s))) => s,
        Ok(Ok(Err(e))) => return Err(DirectError::Dns(e)),
        Ok(Err(e)) if is_fd_limit(&e) => {
            return Err(DirectError::FdLimit(format!(
                "cannot connect: out of file descriptors ({e}); lower --concurrency or raise `ulimit -n`"
            )))
        }
        Ok(Err(e)) => return Err(DirectError::Connect(format!("cannot connect: {e}"))),
        Err(_) => {
            return Err(DirectError::Connect(format!(
                "cannot connect: no connection within {:?}",
                timeout
            )))
        }
    };
    let _ = stream.set_nodelay(true);
    let stream = match tls {
        None => Stream::Tcp(stream),
        Some(connector) => {
            let name = rustls::pki_types::ServerName::try_from(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            )
            .map_err(|e| DirectError::Connect(format!("not a TLS server name {host:?}: {e}")))?;
            let tls = match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let m = crate::http::error::with_advice(
                        format!("TLS handshake failed: {}", chain(&e)),
                        &e,
                    );
                    return Err(if refuses_certificate(&e) {
                        DirectError::Tls(m)
                    } else {
                        DirectError::Connect(m)
                    });
                }
                Err(_) => {
                    return Err(DirectError::Connect(format!(
                        "cannot connect: no TLS session within {timeout:?}"
                    )))
                }
            };
            if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                return Err(DirectError::H2);
            }
            Stream::Tls(Box::new(tls))
        }
    };
    Ok(Conn {
        stream,
        read: BytesMut::with_capacity(READ_SIZE),
        write: Vec::with_capacity(1024),
    })
}
