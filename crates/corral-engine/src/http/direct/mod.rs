//! A direct HTTP/1.1 client for plain `http://` targets: connections kept per host, one request
//! at a time on each, reused when a response has been read to its end.
//!
//! The request is written from its parts ([`Request`]: method, URL, headers, body; this client
//! knows nothing of jobs) in one buffer, and the response is parsed with
//! `httparse` (the parser under hyper) straight from the connection's read buffer: no request
//! object, no per-request channels between a connection task and the request, and no header map
//! unless one is needed (a status that may carry `Retry-After`, or `--save-headers`). Framing
//! follows RFC 9112 §6: no body for `HEAD`, 1xx, 204 and 304; `Transfer-Encoding: chunked`;
//! `Content-Length`; otherwise the body runs to the end of the connection. A connection is
//! reused only when its response was read to its end and neither side asked to close.
//!
//! Why not hyper's client connection: corral already does what its dispatcher is for (one
//! request at a time per connection, bounded by corral's own per-host limits), and the
//! dispatcher's machinery (a request channel, a response oneshot, a body channel per response)
//! was the biggest share of corral's user CPU per request after the kernel's loopback path
//! (`bench/http.sh`, see BENCHMARKS.md). reqwest (hyper underneath) stays for `https://`
//! (rustls, HTTP/2) and whenever a proxy is configured in the environment (`HTTP_PROXY`,
//! `ALL_PROXY`, lower-case too), which reqwest honours and this client does not.
//!
//! An idle connection is not watched; one the server closed meanwhile is noticed when it is
//! taken (its socket reports the end, at no cost when it does not) and replaced before the
//! request goes out. Should a server close a reused connection just as an idempotent request
//! went out, with not one byte of response, the error says so ([`DirectError::Unanswered`]):
//! the caller may send it once more on a new connection (`fresh`), as browsers and hyper do;
//! that is not a retry, but it is a request, so the caller passes its rate gates first.
//!
//! By concern: `conn` opens a connection and holds its buffers, `encode` writes a request,
//! `head` reads a response head and decides the body's framing, `body` reads the body and gives
//! the connection back; this file sends a request through them, with the idle pool.

mod body;
mod conn;
mod encode;
pub(crate) mod head;
pub mod tls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderValue;
use http::{HeaderMap, Method};
use tokio::io::AsyncWriteExt;
use url::Url;

use super::pool::Pool;
pub use body::Lease;
use conn::{Conn, READ_SIZE};
pub use head::Head;
use head::{read_head, ReadError};
use tokio_rustls::TlsConnector;

/// What to send: a request's parts, borrowed from wherever they live (the engine's job).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URL (`http://` only: this client speaks no TLS).
    pub url: &'a Url,
    /// The request's own headers; corral adds `Host`, `User-Agent`, `Accept` and
    /// `Authorization` (from URL credentials) only where these have none.
    pub headers: &'a HeaderMap,
    /// The body, if any; framed by its length. (`Bytes`: reqwest takes it without a copy.)
    pub body: Option<&'a Bytes>,
    /// How long connecting may take, when it differs from the client's own (a host's
    /// `connect_timeout_ms`).
    pub connect_timeout: Option<Duration>,
}

/// Why a direct request failed; the kinds match the reqwest path's.
#[derive(Debug)]
pub enum DirectError {
    /// The host's name could not be resolved (temporarily or not).
    Dns(crate::http::error::DnsError),
    /// TCP connect failed (or took longer than the connect timeout).
    Connect(String),
    /// The process is out of file descriptors (`EMFILE`, `ENFILE`): not the host's fault.
    FdLimit(String),
    /// The connection failed while sending or before the response head arrived, or the
    /// response was not valid HTTP/1.
    Connection(String),
    /// A reused connection was closed by the server as an idempotent request went out, with no
    /// byte of answer: it may go once more at once, on a new connection (`fresh`).
    Unanswered(String),
    /// The TLS handshake failed on a certificate (kind `tls`).
    Tls(String),
    /// The server chose HTTP/2 (ALPN): the request was not sent; reqwest, which multiplexes,
    /// carries this host from now on (see [`Direct::speaks_h2`]).
    H2,
}

/// Idle connections per `host:port`.
pub struct Direct {
    idle: Mutex<Pool<Conn>>,
    connect_timeout: Duration,
    user_agent: HeaderValue,
    /// For `https://` hosts.
    tls: TlsConnector,
    /// `host:port`s whose TLS servers chose HTTP/2: reqwest carries them.
    h2: Mutex<foldhash::HashSet<Arc<str>>>,
    /// `host:port`s that closed a reused connection under the next request (they close
    /// keep-alive connections after an answer without saying so): a request that may not be
    /// repeated goes to them on a new connection, where that cannot happen (a GET keeps its
    /// transparent re-send instead).
    drops_reused: Mutex<foldhash::HashSet<Arc<str>>>,
}

impl Direct {
    /// A client keeping at most `max_idle_per_host` idle connections to one host and
    /// `max_idle` in all (see [`Pool`]).
    pub fn new(
        max_idle_per_host: usize,
        max_idle: usize,
        connect_timeout: Duration,
        user_agent: &str,
        tls: TlsConnector,
    ) -> Self {
        Self {
            idle: Mutex::new(Pool::new(max_idle_per_host, max_idle)),
            connect_timeout,
            user_agent: HeaderValue::from_str(user_agent)
                .unwrap_or_else(|_| HeaderValue::from_static("corral")),
            tls,
            h2: Mutex::new(foldhash::HashSet::default()),
            drops_reused: Mutex::new(foldhash::HashSet::default()),
        }
    }

    /// True when `key` closed a reused connection under a request before.
    fn drops_reused(&self, key: &str) -> bool {
        self.drops_reused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    /// True when `key`'s TLS server chose HTTP/2 before: its requests go to reqwest.
    pub fn speaks_h2(&self, key: &str) -> bool {
        self.h2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    fn take_idle(&self, key: &str) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.take(key, Conn::is_usable)
    }

    /// Gives a connection whose response was read to its end back to the pool.
    fn put_idle(&self, key: Arc<str>, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.put(key, conn);
    }

    /// Connects to `req`'s host. Out of file descriptors, it closes this client's idle
    /// connections and tries once more; failing again, the error says so (kind `fd_limit`).
    async fn connect(&self, req: &Request<'_>) -> Result<Conn, DirectError> {
        let host = req.url.host_str().unwrap_or_default();
        let port = req.url.port_or_known_default().unwrap_or(80);
        let limit = req.connect_timeout.unwrap_or(self.connect_timeout);
        let tls = (req.url.scheme() == "https").then_some(&self.tls);
        match conn::open(host, port, limit, tls).await {
            Err(DirectError::FdLimit(_)) => {
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
                conn::open(host, port, limit, tls).await
            }
            r => r,
        }
    }

    /// Sends `req` on an idle connection to its host, or a new one, and reads the response
    /// head. `want_headers`: build the header map even for a 2xx/3xx response (it is always
    /// built for other statuses, which may carry `Retry-After`). `sending` is set once the
    /// request starts to go out (before that, a failure cannot have reached the server).
    /// `fresh`: on a new connection, not an idle one (to send again after
    /// [`DirectError::Unanswered`]).
    pub async fn send(
        &self,
        req: Request<'_>,
        key: &Arc<str>,
        want_headers: bool,
        sending: &AtomicBool,
        fresh: bool,
    ) -> Result<(Head, Lease<'_>), DirectError> {
        {
            // Only a POST, PATCH ... asks: a GET's path is one test of its method.
            let fresh = fresh || (!req.method.is_idempotent() && self.drops_reused(key));
            let (mut conn, reused) = match (!fresh).then(|| self.take_idle(key)).flatten() {
                Some(c) => (c, true),
                None => match self.connect(&req).await {
                    Err(DirectError::H2) => {
                        self.h2
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(key.clone());
                        return Err(DirectError::H2);
                    }
                    r => (r?, false),
                },
            };
            let mut write = std::mem::take(&mut conn.write);
            let close = encode::encode(&req, &self.user_agent, &mut write);
            // From here on the server may see the request, whatever happens next.
            sending.store(true, Ordering::Relaxed);
            let sent = write_request(&mut conn, &write).await;
            conn.write = write;
            let result = match sent {
                Ok(Sent::Whole) => read_head(&mut conn, req.method, want_headers).await,
                // The server answered, or closed, before the request was all sent (a 413 for
                // a body it will not take): its answer is the response.
                Ok(Sent::Cut) => read_head(&mut conn, req.method, want_headers)
                    .await
                    .map(|(head, framing, _)| (head, framing, false)),
                // It may have answered before it closed: that answer is worth more than the
                // write error.
                Err(e) => match read_head(&mut conn, req.method, want_headers).await {
                    Ok((head, framing, _)) => Ok((head, framing, false)),
                    Err(tls @ ReadError::Tls(_)) => Err(tls),
                    Err(_) => Err(ReadError::Nothing(format!(
                        "error sending the request: {e}"
                    ))),
                },
            };
            match result {
                Ok((head, framing, keep_alive)) => {
                    let lease = Lease {
                        owner: self,
                        key: key.clone(),
                        conn,
                        framing,
                        keep_alive: keep_alive && !close,
                    };
                    Ok((head, lease))
                }
                // A reused connection the server closed as the request went out: nothing was
                // answered, so an idempotent request may go again on a new connection; the
                // host is remembered for the requests that may not.
                Err(ReadError::Nothing(m)) if reused => {
                    self.drops_reused
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key.clone());
                    if req.method.is_idempotent() {
                        Err(DirectError::Unanswered(m))
                    } else {
                        Err(DirectError::Connection(m))
                    }
                }
                Err(ReadError::Nothing(m) | ReadError::Bad(m)) => Err(DirectError::Connection(m)),
                Err(ReadError::Tls(m)) => Err(DirectError::Tls(m)),
            }
        }
    }
}

/// Requests larger than this are written while watching for an early answer; smaller ones fit
/// the socket's buffer and go out in one write.
pub(crate) const WATCH_ABOVE: usize = 64 * 1024;

/// How a request went out.
enum Sent {
    Whole,
    /// The server answered or closed before the end: the rest was not sent, and the
    /// connection cannot be reused.
    Cut,
}

/// Writes a request; a large one piece by piece while watching the connection, so that a
/// server that answers before it has read the body (`413 Content Too Large`, `401`) is heard
/// at once instead of the write failing with a reset after megabytes.
async fn write_request(conn: &mut Conn, buf: &[u8]) -> std::io::Result<Sent> {
    // (Larger requests over TLS go through reqwest: see `client`.)
    if buf.len() <= WATCH_ABOVE || matches!(conn.stream, conn::Stream::Tls(_)) {
        conn.stream.write_all(buf).await?;
        conn.stream.flush().await?;
        return Ok(Sent::Whole);
    }
    let conn::Stream::Tcp(tcp) = &conn.stream else {
        return Ok(Sent::Whole);
    };
    let mut off = 0;
    while off < buf.len() {
        tokio::select! {
            biased;
            r = tcp.readable() => {
                r?;
                conn.read.reserve(READ_SIZE);
                match tcp.try_read_buf(&mut conn.read) {
                    Ok(_) => return Ok(Sent::Cut),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            w = tcp.writable() => {
                w?;
                match tcp.try_write(&buf[off..]) {
                    Ok(n) => off += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(Sent::Whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{parse_line, Input, Job, Parsed};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The parts of `job` to send.
    fn req(job: &Job) -> Request<'_> {
        Request {
            method: &job.method,
            url: &job.url,
            headers: &job.headers,
            body: job.body.as_ref(),
            connect_timeout: None,
        }
    }
    use std::collections::VecDeque;
    use tokio::net::TcpListener;

    /// What the scripted server does with one request on a connection.
    #[derive(Clone)]
    enum Reply {
        /// Writes these bytes.
        Send(&'static [u8]),
        /// Closes the connection without a word.
        Hang,
        /// Answers as soon as the request's head is in, without reading its body, and closes.
        Early(&'static [u8]),
    }

    /// Requests the server saw (raw) and connections it accepted.
    #[derive(Default)]
    struct Seen {
        /// Each request with the number of the connection it came on (0-based).
        requests: Mutex<Vec<(usize, Vec<u8>)>>,
        connections: std::sync::atomic::AtomicUsize,
        /// Connections the server has closed.
        closed: tokio::sync::watch::Sender<usize>,
    }

    /// A loopback server: the n-th connection follows the n-th script (a reply per request,
    /// then it closes).
    async fn server(scripts: Vec<Vec<Reply>>) -> (String, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let scripts = Arc::new(Mutex::new(VecDeque::from(scripts)));
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let n = s
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let script = scripts.lock().unwrap().pop_front().unwrap_or_default();
                let s = s.clone();
                tokio::spawn(async move {
                    serve_one(&mut sock, n, script, &s).await;
                    drop(sock);
                    s.closed.send_modify(|n| *n += 1);
                });
            }
        });
        (format!("http://{addr}"), seen)
    }

    async fn serve_one(sock: &mut tokio::net::TcpStream, n: usize, script: Vec<Reply>, s: &Seen) {
        let mut buf = Vec::new();
        for reply in script {
            // One request: the head, then a body of its content-length.
            let req = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    if let Reply::Early(bytes) = reply {
                        s.requests.lock().unwrap().push((n, buf[..end].to_vec()));
                        sock.write_all(bytes).await.unwrap();
                        return;
                    }
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if buf.len() >= end + 4 + len {
                        break buf.drain(..end + 4 + len).collect::<Vec<u8>>();
                    }
                }
                let mut chunk = [0u8; 4096];
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            s.requests.lock().unwrap().push((n, req));
            match reply {
                Reply::Send(bytes) => sock.write_all(bytes).await.unwrap(),
                Reply::Hang | Reply::Early(_) => return,
            }
        }
    }

    fn job(line: &str) -> Job {
        match parse_line(1, line, &Input::default()) {
            Parsed::Job(j) => *j,
            Parsed::Invalid(i) => panic!("{}", i.message),
        }
    }

    fn get(base: &str, path: &str) -> Job {
        job(&format!(r#"{{"url":"{base}{path}"}}"#))
    }

    fn client() -> Direct {
        Direct::new(
            8,
            64,
            Duration::from_secs(5),
            "corral-test",
            tls::connector(Arc::new(
                tls::client_config(&crate::settings::TlsSettings::default(), false).unwrap(),
            )),
        )
    }

    /// Sends `job` and reads the whole body; gives the connection back when it was complete.
    async fn fetch(d: &Direct, job: &Job) -> Result<(Head, Vec<u8>), String> {
        within(fetch_inner(d, job)).await
    }

    /// `f`, failing instead of hanging when it waits for bytes that never come.
    async fn within<F: std::future::Future>(f: F) -> F::Output {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .unwrap_or_else(|_| panic!("no complete response within 10 s"))
    }

    /// Sends as the engine does: once more on a new connection after `Unanswered`.
    async fn fetch_inner(d: &Direct, job: &Job) -> Result<(Head, Vec<u8>), String> {
        let key: Arc<str> = job.host_key().into();
        let sent = match d
            .send(req(job), &key, true, &AtomicBool::new(false), false)
            .await
        {
            Err(DirectError::Unanswered(_)) => {
                d.send(req(job), &key, true, &AtomicBool::new(false), true)
                    .await
            }
            r => r,
        };
        let (head, mut lease) = sent.map_err(|e| format!("{e:?}"))?;
        let mut body = Vec::new();
        while let Some(chunk) = lease.next_chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
        }
        lease.release();
        Ok((head, body))
    }

    /// How many requests each connection carried.
    fn per_connection(seen: &Seen) -> Vec<usize> {
        let mut n = vec![0; connections(seen)];
        for (c, _) in seen.requests.lock().unwrap().iter() {
            n[*c] += 1;
        }
        n
    }

    fn connections(seen: &Seen) -> usize {
        seen.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    const OK_HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Tag: a\r\n\r\nhello";

    #[tokio::test]
    async fn content_length_bodies_reuse_one_connection() {
        let (base, seen) = server(vec![vec![Reply::Send(OK_HELLO), Reply::Send(OK_HELLO)]]).await;
        let d = client();
        for _ in 0..2 {
            let (head, body) = fetch(&d, &get(&base, "/a?b=c")).await.unwrap();
            assert_eq!((head.status, body.as_slice()), (200, &b"hello"[..]));
            assert_eq!(head.headers["x-tag"], "a");
        }
        assert_eq!(connections(&seen), 1);
        let req = String::from_utf8(seen.requests.lock().unwrap()[0].1.clone()).unwrap();
        assert!(req.starts_with("GET /a?b=c HTTP/1.1\r\n"), "{req}");
        let host = base.trim_start_matches("http://");
        assert!(req.contains(&format!("host: {host}\r\n")), "{req}");
        assert!(req.contains("user-agent: corral-test\r\n"), "{req}");
        assert!(req.contains("accept: */*\r\n"), "{req}");
        assert!(!req.contains("content-length"), "{req}");
    }

    #[tokio::test]
    async fn chunked_bodies_with_extensions_and_trailers() {
        let chunked: &[u8] = b"HTTP/1.1 200 OK\r\nTRANSFER-encoding: chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n1\r\n \r\nb\r\nworld, done\r\n0\r\nX-Trailer: t\r\n\r\n";
        let (base, seen) = server(vec![vec![Reply::Send(chunked), Reply::Send(OK_HELLO)]]).await;
        let d = client();
        let (_, body) = fetch(&d, &get(&base, "/")).await.unwrap();
        assert_eq!(String::from_utf8(body).unwrap(), "hello world, done");
        // Read to its end, trailers and all: the connection serves the next request.
        let (_, body) = fetch(&d, &get(&base, "/")).await.unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(connections(&seen), 1);
    }

    #[tokio::test]
    async fn bad_chunk_sizes_and_lengths_are_errors() {
        let bad_chunk: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
        let two_lengths: &[u8] =
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello";
        let short: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello";
        let garbage: &[u8] = b"SMTP ready\r\n\r\n";
        let plus: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello";
        let bare_lf: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n";
        let plus_chunk: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n";
        let (base, _) = server(vec![
            vec![Reply::Send(bad_chunk)],
            vec![Reply::Send(two_lengths)],
            vec![Reply::Send(short)],
            vec![Reply::Send(garbage)],
            vec![Reply::Send(plus)],
            vec![Reply::Send(bare_lf)],
            vec![Reply::Send(plus_chunk)],
        ])
        .await;
        let d = client();
        let e = fetch(&d, &get(&base, "/")).await.unwrap_err();
        assert!(e.contains("bad chunk size"), "{e}");
        let e = fetch(&d, &get(&base, "/")).await.unwrap_err();
        assert!(e.contains("conflicting Content-Length"), "{e}");
        let e = fetch(&d, &get(&base, "/")).await.unwrap_err();
        assert!(e.contains("45 bytes of the body still to come"), "{e}");
        let e = fetch(&d, &get(&base, "/")).await.unwrap_err();
        assert!(e.contains("invalid HTTP response"), "{e}");
        let e = fetch(&d, &get(&base, "/")).await.unwrap_err();
        assert!(e.contains("invalid Content-Length"), "{e}");
        let e = fetch(&d, &get(&base, "/")).await.unwrap_err();
        assert!(e.contains("bare LF"), "{e}");
        let e = fetch(&d, &get(&base, "/")).await.unwrap_err();
        assert!(e.contains("bad chunk size"), "{e}");
    }

    #[tokio::test]
    async fn a_body_without_length_runs_to_the_close() {
        let open_ended: &[u8] = b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nall of this";
        let (base, seen) = server(vec![
            vec![Reply::Send(open_ended)],
            vec![Reply::Send(OK_HELLO)],
        ])
        .await;
        let d = client();
        let (_, body) = fetch(&d, &get(&base, "/")).await.unwrap();
        assert_eq!(body, b"all of this");
        fetch(&d, &get(&base, "/")).await.unwrap();
        assert_eq!(connections(&seen), 2);
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_bodiless_ones_have_no_body() {
        let interim: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n\
              HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
        let no_content: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
        // A HEAD response announces a length but carries no body.
        let head: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n";
        let (base, seen) = server(vec![vec![
            Reply::Send(interim),
            Reply::Send(no_content),
            Reply::Send(head),
            Reply::Send(OK_HELLO),
        ]])
        .await;
        let d = client();
        let (h, body) = fetch(&d, &get(&base, "/")).await.unwrap();
        assert_eq!((h.status, body.as_slice()), (201, &b"ok"[..]));
        let (h, body) = fetch(&d, &get(&base, "/")).await.unwrap();
        assert_eq!((h.status, body.len()), (204, 0));
        let head_job = job(&format!(r#"{{"method":"HEAD","url":"{base}/"}}"#));
        let (h, body) = fetch(&d, &head_job).await.unwrap();
        assert_eq!((h.status, body.len()), (200, 0));
        let (_, body) = fetch(&d, &get(&base, "/")).await.unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(connections(&seen), 1);
    }

    #[tokio::test]
    async fn connections_asked_to_close_are_not_reused() {
        // Header names in any case.
        let close: &[u8] = b"HTTP/1.1 200 OK\r\nCONNECTION: close\r\ncontent-LENGTH: 2\r\n\r\nok";
        let http10: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let http10_ka: &[u8] =
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\nCONTENT-LENGTH: 2\r\n\r\nok";
        // Should a connection be reused wrongly, the server takes the request and hangs up.
        let (base, seen) = server(vec![
            vec![Reply::Send(close), Reply::Hang],
            vec![Reply::Send(http10), Reply::Hang],
            vec![Reply::Send(http10_ka), Reply::Send(OK_HELLO)],
        ])
        .await;
        let d = client();
        for _ in 0..4 {
            fetch(&d, &get(&base, "/")).await.unwrap();
        }
        // close, then 1.0, then 1.0 keep-alive and its reuse.
        assert_eq!(per_connection(&seen), [1, 1, 2]);
        // A job that asks to close gets a fresh connection next time.
        let (base, seen) = server(vec![
            vec![Reply::Send(OK_HELLO), Reply::Hang],
            vec![Reply::Send(OK_HELLO)],
        ])
        .await;
        let closing = job(&format!(
            r#"{{"url":"{base}/","headers":{{"Connection":"close"}}}}"#
        ));
        fetch(&d, &closing).await.unwrap();
        fetch(&d, &get(&base, "/")).await.unwrap();
        assert_eq!(per_connection(&seen), [1, 1]);
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced() {
        // The server answers once and closes without saying so.
        let (base, seen) = server(vec![
            vec![Reply::Send(OK_HELLO)],
            vec![Reply::Send(OK_HELLO)],
        ])
        .await;
        let d = client();
        fetch(&d, &get(&base, "/")).await.unwrap();
        // Once the server has closed, and our runtime has looked at its sockets again ...
        seen.closed.subscribe().wait_for(|n| *n == 1).await.unwrap();
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        // ... a POST (never sent twice) goes out on a new connection, not on the closed one.
        let post = job(&format!(
            r#"{{"method":"POST","url":"{base}/","body":"x"}}"#
        ));
        let (_, body) = fetch(&d, &post).await.unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(connections(&seen), 2);
    }

    #[tokio::test]
    async fn unanswered_requests_on_reused_connections_go_again_only_when_idempotent() {
        // Each connection answers once, then takes the next request and closes without a word.
        let (base, seen) = server(vec![
            vec![Reply::Send(OK_HELLO), Reply::Hang],
            vec![Reply::Send(OK_HELLO), Reply::Hang],
            vec![Reply::Send(OK_HELLO)],
        ])
        .await;
        let d = client();
        fetch(&d, &get(&base, "/")).await.unwrap();
        // POST on the reused first connection: not sent twice, an error; the host is now known
        // to close reused connections.
        let post = job(&format!(
            r#"{{"method":"POST","url":"{base}/","body":"x"}}"#
        ));
        let e = fetch(&d, &post).await.unwrap_err();
        assert!(e.contains("closed before the response"), "{e}");
        assert_eq!(connections(&seen), 1);
        // GET: on a new connection, then on that one reused: the caller is told it may go
        // again.
        fetch(&d, &get(&base, "/")).await.unwrap();
        assert_eq!(connections(&seen), 2);
        let key: Arc<str> = get(&base, "/").host_key().into();
        let e = d
            .send(
                req(&get(&base, "/")),
                &key,
                false,
                &AtomicBool::new(false),
                false,
            )
            .await
            .err();
        assert!(matches!(e, Some(DirectError::Unanswered(_))), "{e:?}");
        // A POST to that host now goes on a new connection, where it is answered.
        let (_, body) = fetch(&d, &post).await.unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(connections(&seen), 3);
        assert_eq!(seen.requests.lock().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn bodies_are_framed_by_corral_not_by_job_headers() {
        let (base, seen) = server(vec![vec![Reply::Send(OK_HELLO), Reply::Send(OK_HELLO)]]).await;
        let d = client();
        let post = job(&format!(
            r#"{{"method":"POST","url":"{base}/p","headers":{{"Content-Length":"3","X-Key":"v"}},"body":"abc"}}"#
        ));
        fetch(&d, &post).await.unwrap();
        let empty_put = job(&format!(r#"{{"method":"PUT","url":"{base}/p"}}"#));
        fetch(&d, &empty_put).await.unwrap();
        let reqs = seen.requests.lock().unwrap();
        let first = String::from_utf8_lossy(&reqs[0].1).to_lowercase();
        assert!(first.ends_with("content-length: 3\r\n\r\nabc"), "{first}");
        // The job's own (agreeing) length is not sent a second time.
        assert_eq!(first.matches("content-length").count(), 1, "{first}");
        assert!(first.contains("x-key: v\r\n"), "{first}");
        let second = String::from_utf8_lossy(&reqs[1].1).to_lowercase();
        assert!(second.ends_with("content-length: 0\r\n\r\n"), "{second}");
    }

    #[tokio::test]
    async fn url_credentials_become_basic_authorization() {
        let (base, seen) = server(vec![vec![Reply::Send(OK_HELLO), Reply::Send(OK_HELLO)]]).await;
        let d = client();
        let with_creds = base.replace("http://", "http://al%20ice:p%40ss@");
        fetch(&d, &get(&with_creds, "/")).await.unwrap();
        // An Authorization header of the job's own wins.
        let own = job(&format!(
            r#"{{"url":"{with_creds}/","headers":{{"Authorization":"Bearer t"}}}}"#
        ));
        fetch(&d, &own).await.unwrap();
        let reqs = seen.requests.lock().unwrap();
        let first = String::from_utf8_lossy(&reqs[0].1).to_string();
        // base64("al ice:p@ss")
        assert!(
            first.contains("authorization: Basic YWwgaWNlOnBAc3M=\r\n"),
            "{first}"
        );
        assert!(!first.contains("al%20ice"), "{first}");
        let second = String::from_utf8_lossy(&reqs[1].1).to_string();
        assert!(second.contains("authorization: Bearer t\r\n"), "{second}");
        assert!(!second.contains("Basic"), "{second}");
    }

    #[tokio::test]
    async fn headers_are_kept_for_statuses_that_may_need_them() {
        let limited: &[u8] =
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n";
        let (base, _) = server(vec![vec![Reply::Send(OK_HELLO), Reply::Send(limited)]]).await;
        let d = client();
        let j = get(&base, "/");
        let key: Arc<str> = j.host_key().into();
        let (head, mut lease) = d
            .send(req(&j), &key, false, &AtomicBool::new(false), false)
            .await
            .unwrap();
        assert!(head.headers.is_empty());
        assert_eq!(
            within(lease.next_chunk()).await.unwrap().unwrap(),
            &b"hello"[..]
        );
        assert_eq!(within(lease.next_chunk()).await.unwrap(), None);
        lease.release();
        let (head, _) = within(d.send(req(&j), &key, false, &AtomicBool::new(false), false))
            .await
            .unwrap();
        assert_eq!(head.status, 429);
        assert_eq!(head.headers["retry-after"], "7");
    }

    #[tokio::test]
    async fn an_answer_before_the_body_is_sent_is_the_response() {
        const TOO_LARGE: &[u8] =
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope";
        let (base, seen) = server(vec![
            vec![Reply::Early(TOO_LARGE)],
            vec![Reply::Send(OK_HELLO)],
        ])
        .await;
        let d = client();
        let body = "x".repeat(16 << 20);
        let post = job(&format!(
            r#"{{"method":"POST","url":"{base}/upload","body":"{body}"}}"#
        ));
        let (head, got) = fetch(&d, &post).await.unwrap();
        assert_eq!((head.status, &got[..]), (413, &b"nope"[..]));
        // The connection, cut short, is not reused.
        fetch(&d, &get(&base, "/next")).await.unwrap();
        assert_eq!(connections(&seen), 2);
    }

    #[tokio::test]
    async fn oversized_heads_are_refused() {
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let big = BIG.get_or_init(|| {
            let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..2000 {
                v.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
            }
            v.extend_from_slice(b"Content-Length: 0\r\n\r\n");
            v
        });
        let (base, _) = server(vec![vec![Reply::Send(big)]]).await;
        let e = fetch(&client(), &get(&base, "/")).await.unwrap_err();
        assert!(
            e.contains("invalid HTTP response") || e.contains("larger than"),
            "{e}"
        );
    }
}
