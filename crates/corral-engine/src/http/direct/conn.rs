//! One connection to a host and its buffers, and how it is opened.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::DirectError;

/// How much room a read asks for.
pub(super) const READ_SIZE: usize = 16 * 1024;

/// True for "too many open files", of the process (`EMFILE`) or the system (`ENFILE`).
pub fn is_fd_limit(e: &std::io::Error) -> bool {
    // Linux's errno values; std has no ErrorKind for them.
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    matches!(e.raw_os_error(), Some(ENFILE | EMFILE))
}

/// One connection and its buffers (kept with it, so a request allocates none).
pub(super) struct Conn {
    pub(super) stream: TcpStream,
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
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Reads more bytes; `Ok(0)` at the end of the connection.
    pub(super) async fn fill(&mut self) -> std::io::Result<usize> {
        if self.read.capacity() - self.read.len() < READ_SIZE / 4 {
            self.read.reserve(READ_SIZE);
        }
        self.stream.read_buf(&mut self.read).await
    }
}

/// Opens a connection to `host:port` within `timeout`.
pub(super) async fn open(host: &str, port: u16, timeout: Duration) -> Result<Conn, DirectError> {
    let connect = async {
        // An IP literal needs no resolver round trip.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::net::lookup_host((host, port)).await {
                Ok(a) => a.collect(),
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
    let stream = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(Ok(s))) => s,
        Ok(Ok(Err(e))) => {
            return Err(DirectError::Dns(format!("cannot resolve {host}: {e}")));
        }
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
    Ok(Conn {
        stream,
        read: BytesMut::with_capacity(READ_SIZE),
        write: Vec::with_capacity(1024),
    })
}
