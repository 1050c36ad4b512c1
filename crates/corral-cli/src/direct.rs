//! A direct HTTP/1.1 client for plain `http://` targets: hyper connections kept per host, one
//! request at a time on each, reused when a response has been read to its end.
//!
//! A connection has no task of its own: the request that holds it drives it (see [`drive`]),
//! so sending, the response head and the body are read on one task without a hand-off
//! between tasks (or threads) per request. An idle connection is not polled at all; one the
//! server closed meanwhile is noticed when it is taken and replaced before the request goes
//! out. Each worker thread has its own client (connections belong to its runtime).
//!
//! Why not reqwest everywhere: on loopback, reqwest's pooled client (URL re-parsing, its pool's
//! request channel to a separate connection task, per-request boxing) cost ~2.5x the user CPU
//! per request of a bare hyper connection (`bench/http.sh` and a side-by-side probe: 0.55 s vs
//! 0.20 s user for 50 000 GETs). corral already bounds in-flight requests per host, so a
//! connection per in-flight request is exactly the pool it needs. reqwest stays for `https://`
//! (rustls, HTTP/2) and whenever a proxy is configured in the environment (`HTTP_PROXY`,
//! `ALL_PROXY`, lower-case too), which reqwest honours and this client does not.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, HOST, USER_AGENT};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::job::Job;

type Sender = SendRequest<Full<Bytes>>;
type Conn =
    Pin<Box<hyper::client::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>>>;

/// One connection: the request handle and the connection state machine, which is polled by the
/// request that holds it (see [`drive`]) instead of by a task of its own.
struct Connection {
    sender: Sender,
    /// `None` once the connection has ended.
    conn: Option<Conn>,
}

impl Connection {
    fn is_closed(&self) -> bool {
        self.conn.is_none() || self.sender.is_closed()
    }
}

/// Runs `fut` (which waits on `conn`) while driving the connection itself.
async fn drive<F: Future>(conn: &mut Option<Conn>, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(v);
        }
        if let Some(c) = conn.as_mut() {
            if c.as_mut().poll(cx).is_ready() {
                // Ended (closed or failed). Dropping it drops its end of every channel, so
                // `fut` now resolves (with an error if it was still waiting) instead of
                // waiting for a wake-up that cannot come.
                *conn = None;
                return fut.as_mut().poll(cx);
            }
        }
        Poll::Pending
    })
    .await
}

/// Why a direct request failed; the kinds match the reqwest path's.
pub enum DirectError {
    /// DNS or TCP connect failed (or took longer than the connect timeout).
    Connect(String),
    /// The connection failed while sending or before the response head arrived.
    Connection(String),
    /// The request cannot be expressed (bad header value ...): permanent.
    Request(String),
}

/// True when the environment configures a proxy for plain HTTP: then reqwest (which honours
/// it) must carry `http://` requests too.
pub fn proxy_configured() -> bool {
    ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
        .iter()
        .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// Idle connections per `host:port`.
pub struct Direct {
    idle: Mutex<HashMap<Arc<str>, Vec<Connection>>>,
    max_idle_per_host: usize,
    connect_timeout: Duration,
    user_agent: HeaderValue,
}

/// A connection lent to one request; give it back with [`Lease::release`] once the response
/// body has been read to its end, or drop it (closing the connection) otherwise.
pub struct Lease<'a> {
    owner: &'a Direct,
    key: Arc<str>,
    conn: Connection,
}

impl Lease<'_> {
    /// Returns the connection to the idle pool (if it is still usable and there is room).
    pub fn release(self) {
        if self.conn.is_closed() {
            return;
        }
        let mut idle = self.owner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(self.key).or_default();
        if list.len() < self.owner.max_idle_per_host {
            list.push(self.conn);
        }
    }

    /// Reads the next chunk of the response body, driving the connection meanwhile.
    pub async fn next_chunk(&mut self, body: &mut Incoming) -> Result<Option<Bytes>, String> {
        drive(&mut self.conn.conn, next_chunk(body)).await
    }
}

impl Direct {
    pub fn new(max_idle_per_host: usize, connect_timeout: Duration, user_agent: &str) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            max_idle_per_host,
            connect_timeout,
            user_agent: HeaderValue::from_str(user_agent)
                .unwrap_or_else(|_| HeaderValue::from_static("corral")),
        }
    }

    fn take_idle(&self, key: &str) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(key)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self, job: &Job) -> Result<Connection, DirectError> {
        let host = job.url.host_str().unwrap_or_default();
        let port = job.url.port_or_known_default().unwrap_or(80);
        let connect = async {
            // An IP literal needs no resolver round trip.
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => tokio::net::lookup_host((host, port)).await?.collect(),
            };
            let mut last = None;
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "no address for the host")
            }))
        };
        let stream = match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(DirectError::Connect(format!("cannot connect: {e}"))),
            Err(_) => {
                return Err(DirectError::Connect(format!(
                    "cannot connect: no connection within {:?}",
                    self.connect_timeout
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| {
                DirectError::Connect(format!("cannot connect: {}", crate::runner::chain(&e)))
            })?;
        Ok(Connection {
            sender,
            conn: Some(Box::pin(conn)),
        })
    }

    fn build(&self, job: &Job) -> Result<hyper::Request<Full<Bytes>>, DirectError> {
        let target = &job.url[url::Position::BeforePath..url::Position::AfterQuery];
        let authority = &job.url[url::Position::BeforeHost..url::Position::AfterPort];
        let mut req = hyper::Request::builder()
            .method(job.method.clone())
            .uri(if target.is_empty() { "/" } else { target })
            .body(Full::new(job.body.clone().unwrap_or_default()))
            .map_err(|e| DirectError::Request(format!("cannot build the request: {e}")))?;
        let headers = req.headers_mut();
        headers.clone_from(&job.headers);
        if !headers.contains_key(HOST) {
            let host = HeaderValue::from_str(authority)
                .map_err(|e| DirectError::Request(format!("bad host: {e}")))?;
            headers.insert(HOST, host);
        }
        if !headers.contains_key(USER_AGENT) {
            headers.insert(USER_AGENT, self.user_agent.clone());
        }
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        Ok(req)
    }

    /// Sends `job` on an idle connection to its host, or a new one. A reused connection that
    /// turns out to be closed before the request went out is replaced transparently (the
    /// request was not sent, so this is not a retry).
    pub async fn send(
        &self,
        job: &Job,
        key: &Arc<str>,
    ) -> Result<(hyper::Response<Incoming>, Lease<'_>), DirectError> {
        let mut req = self.build(job)?;
        loop {
            let (mut conn, reused) = match self.take_idle(key) {
                Some(c) => (c, true),
                None => (self.connect(job).await?, false),
            };
            if drive(&mut conn.conn, conn.sender.ready()).await.is_err() {
                if reused {
                    continue;
                }
                return Err(DirectError::Connection(
                    "the connection closed at once".into(),
                ));
            }
            let sent = drive(&mut conn.conn, conn.sender.try_send_request(req)).await;
            match sent {
                Ok(resp) => {
                    let lease = Lease {
                        owner: self,
                        key: key.clone(),
                        conn,
                    };
                    return Ok((resp, lease));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => {
                        return Err(DirectError::Connection(format!(
                            "error sending request: {}",
                            crate::runner::chain(e.error())
                        )))
                    }
                },
            }
        }
    }
}

/// Reads the next chunk of a direct response body.
async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>, String> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(crate::runner::chain(&e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
                // Trailers: not data, keep reading.
            }
        }
    }
}
