//! The embedded mock HTTP server behind `corral demo` and `corral serve-mock`.
//!
//! Each simulated host is its own listener on 127.0.0.1 (so `host:port` differs and per-host
//! limits apply to it), with a [`Profile`] deciding how it answers. Query parameters override the
//! profile per request, for tests: `status=503`, `latency_ms=20`, `size=1000`, `retry_after=1`,
//! `close` (answer with `Connection: close`), `location=URL` (a redirect there, 302 unless
//! `status` says otherwise), `usage=N` (a JSON body `{"usage":{"total_tokens":N}}`, as LLM
//! APIs report what a request cost; N is written as given, so `1e308` or `"x"` too),
//! `ratelimit_remaining=N` and `ratelimit_reset=S` (those `RateLimit-*` headers, as given),
//! `binary=N` (N bytes that are not UTF-8), `json=TEXT` (the body, as given), `torn_first=1`
//! (the first answer to each target cut in half, as a dropped stream leaves JSON), `sse=N`
//! (a `text/event-stream` of N events with data, the first `first_event_ms` after the head,
//! default 0, the others 10 ms apart), `encoding=gzip`
//! (or `deflate`, `br`: the body compressed so), `bomb=MIB` (MIB mebibytes of zeros, gzipped).
//!
//! Every host counts what a client did to it — requests, most requests in flight at once, most
//! requests in one wall-clock second — and serves those counts as JSON at `GET /__stats`, so
//! tests can check that limits were respected from the server's side. It also keeps the last
//! few requests as received (target and headers), for tests of what a client sends.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How a simulated host behaves.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Profile {
    /// 200 at once, small body.
    Fast,
    /// 200 after 20–120 ms.
    Slow,
    /// 500/503 for `percent` % of requests.
    Flaky { percent: u32 },
    /// Answers 429 with `Retry-After: 1` beyond `per_sec` requests in a second.
    Limited { per_sec: u32 },
    /// Drops the connection without an answer for `percent` % of requests.
    Reset { percent: u32 },
    /// A `mib` MiB body, sent slowly in 64 KiB chunks.
    Huge { mib: u32 },
    /// 503 for every request between `from_s` and `to_s` seconds after start, else fast.
    Outage { from_s: u64, to_s: u64 },
    /// 503 for the first request of each target (path and query), 200 for the next ones: a
    /// host every request succeeds on at its second try.
    SecondTry,
}

impl Profile {
    pub fn name(&self) -> &'static str {
        match self {
            Profile::Fast => "fast",
            Profile::Slow => "slow",
            Profile::Flaky { .. } => "flaky",
            Profile::Limited { .. } => "limited",
            Profile::Reset { .. } => "reset",
            Profile::Huge { .. } => "huge",
            Profile::Outage { .. } => "outage",
            Profile::SecondTry => "second-try",
        }
    }

    /// A profile by name, its parameter after a colon: `fast`, `slow`, `flaky:30` (percent),
    /// `limited:40` (requests a second), `reset:20` (percent), `huge:4` (MiB), `outage:2-7`
    /// (seconds after start), `second-try`. Without a parameter, the demo's.
    pub fn parse(spec: &str) -> Result<Profile, String> {
        let spec = spec.trim();
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (spec, None),
        };
        let bad = || {
            format!(
                "mock profile {spec:?}: expected fast, slow, flaky[:PERCENT], limited[:PER_SECOND], \
                 reset[:PERCENT], huge[:MIB], outage[:FROM-TO] or second-try"
            )
        };
        let num = |d: u32| -> Result<u32, String> {
            arg.map_or(Ok(d), |a| a.trim().parse().map_err(|_| bad()))
        };
        let demo = demo_profiles();
        let default = |n: &str| demo.iter().copied().find(|p| p.name() == n);
        Ok(match (name, default(name)) {
            ("fast", _) if arg.is_none() => Profile::Fast,
            ("slow", _) if arg.is_none() => Profile::Slow,
            ("second-try", _) if arg.is_none() => Profile::SecondTry,
            ("flaky", Some(Profile::Flaky { percent })) => Profile::Flaky {
                percent: num(percent)?,
            },
            ("limited", Some(Profile::Limited { per_sec })) => Profile::Limited {
                per_sec: num(per_sec)?,
            },
            ("reset", Some(Profile::Reset { percent })) => Profile::Reset {
                percent: num(percent)?,
            },
            ("huge", Some(Profile::Huge { mib })) => Profile::Huge { mib: num(mib)? },
            ("outage", Some(Profile::Outage { from_s, to_s })) => match arg {
                None => Profile::Outage { from_s, to_s },
                Some(a) => {
                    let (f, t) = a.split_once('-').ok_or_else(bad)?;
                    let from_s = f.trim().parse().map_err(|_| bad())?;
                    let to_s = t.trim().parse().map_err(|_| bad())?;
                    Profile::Outage { from_s, to_s }
                }
            },
            _ => return Err(bad()),
        })
    }
}

/// The demo's set of hosts.
pub fn demo_profiles() -> Vec<Profile> {
    vec![
        Profile::Fast,
        Profile::Slow,
        Profile::Flaky { percent: 30 },
        Profile::Limited { per_sec: 40 },
        Profile::Reset { percent: 20 },
        Profile::Huge { mib: 4 },
        Profile::Outage { from_s: 2, to_s: 7 },
    ]
}

#[derive(Debug, Default)]
struct Counters {
    in_flight: u64,
    max_in_flight: u64,
    per_second: HashMap<u64, u64>,
    statuses: HashMap<u16, u64>,
    recent: std::collections::VecDeque<Seen>,
}

/// Requests kept in [`HostStats::recent`].
const RECENT: usize = 32;

/// One request as the host received it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Seen {
    /// The request target as sent: a path, or an absolute URL when sent to a proxy.
    pub target: String,
    /// The HTTP version (`HTTP/1.1`, `HTTP/2.0`).
    pub version: String,
    pub headers: std::collections::BTreeMap<String, String>,
}

/// What one host saw.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct HostStats {
    pub requests: u64,
    /// TCP connections accepted (shows whether clients reuse connections).
    pub connections: u64,
    pub max_in_flight: u64,
    pub max_per_second: u64,
    /// Requests in each wall-clock second since the host started.
    #[serde(default)]
    pub per_second: std::collections::BTreeMap<u64, u64>,
    pub statuses: HashMap<u16, u64>,
    /// The last requests received, oldest first.
    #[serde(default)]
    pub recent: Vec<Seen>,
}

struct Host {
    profile: Profile,
    started: Instant,
    requests: AtomicU64,
    connections: AtomicU64,
    counters: Mutex<Counters>,
    /// Targets asked for so far (for [`Profile::SecondTry`] only).
    seen: Mutex<std::collections::HashSet<String>>,
}

impl Host {
    fn stats(&self) -> HostStats {
        let c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        HostStats {
            requests: self.requests.load(Ordering::SeqCst),
            connections: self.connections.load(Ordering::SeqCst),
            max_in_flight: c.max_in_flight,
            max_per_second: c.per_second.values().copied().max().unwrap_or(0),
            per_second: c.per_second.iter().map(|(k, v)| (*k, *v)).collect(),
            statuses: c.statuses.clone(),
            recent: c.recent.iter().cloned().collect(),
        }
    }
}

/// A running mock host.
pub struct MockHost {
    pub addr: SocketAddr,
    pub profile: Profile,
    host: Arc<Host>,
}

impl MockHost {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn stats(&self) -> HostStats {
        self.host.stats()
    }
}

/// The running server: its hosts, stopped when `stop` is cancelled.
pub struct MockServer {
    pub hosts: Vec<MockHost>,
    pub stop: CancellationToken,
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Binds one listener per profile on 127.0.0.1 (`base_port` 0 = any free ports) and serves.
pub async fn start(profiles: &[Profile], base_port: u16) -> std::io::Result<MockServer> {
    let stop = CancellationToken::new();
    let mut hosts = Vec::new();
    for (i, profile) in profiles.iter().enumerate() {
        let port = if base_port == 0 {
            0
        } else {
            base_port + i as u16
        };
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let host = Arc::new(Host {
            profile: *profile,
            started: Instant::now(),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            counters: Mutex::new(Counters::default()),
            seen: Mutex::new(std::collections::HashSet::new()),
        });
        tokio::spawn(accept_loop(listener, host.clone(), stop.clone()));
        hosts.push(MockHost {
            addr,
            profile: *profile,
            host,
        });
    }
    Ok(MockServer { hosts, stop })
}

async fn accept_loop(listener: TcpListener, host: Arc<Host>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        host.connections.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let host = host.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(host.clone(), req));
            // HTTP/1.1, or HTTP/2 with prior knowledge (h2c), as the client speaks.
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

/// Dropped when a request ends, however it ends.
struct InFlight(Arc<Host>);
impl Drop for InFlight {
    fn drop(&mut self) {
        let mut c = self.0.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.in_flight -= 1;
    }
}

#[derive(Debug)]
struct ResetConnection;
impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated connection reset")
    }
}
impl std::error::Error for ResetConnection {}

async fn handle(
    host: Arc<Host>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, ResetConnection> {
    if req.uri().path() == "/__stats" {
        let body = serde_json::to_vec(&host.stats()).unwrap_or_default();
        return Ok(full(StatusCode::OK, body));
    }
    let n = host.requests.fetch_add(1, Ordering::SeqCst);
    let second = host.started.elapsed().as_secs();
    let this_second = {
        let mut c = host.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.in_flight += 1;
        c.max_in_flight = c.max_in_flight.max(c.in_flight);
        let s = c.per_second.entry(second).or_insert(0);
        *s += 1;
        let this_second = *s;
        if c.recent.len() == RECENT {
            c.recent.pop_front();
        }
        c.recent.push_back(Seen {
            target: req.uri().to_string(),
            version: format!("{:?}", req.version()),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    (k.as_str().to_string(), v)
                })
                .collect(),
        });
        this_second
    };
    let _guard = InFlight(host.clone());
    let q: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let qnum = |k: &str| q.get(k).and_then(|v| v.parse::<u64>().ok());
    // A cheap deterministic "random" per request.
    let roll = (n.wrapping_mul(2654435761) >> 7) % 100;

    let mut latency = qnum("latency_ms").map(Duration::from_millis);
    let mut status = qnum("status").and_then(|s| StatusCode::from_u16(s as u16).ok());
    let mut retry_after = qnum("retry_after");
    let mut size = qnum("size").unwrap_or(64) as usize;
    let mut huge: Option<u32> = None;
    match host.profile {
        Profile::Fast => {}
        Profile::Slow => latency = latency.or(Some(Duration::from_millis(20 + roll))),
        Profile::Flaky { percent } => {
            if status.is_none() && roll < u64::from(percent) {
                status = Some(if roll.is_multiple_of(2) {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                });
            }
        }
        Profile::Limited { per_sec } => {
            if status.is_none() && this_second > u64::from(per_sec) {
                status = Some(StatusCode::TOO_MANY_REQUESTS);
                retry_after = retry_after.or(Some(1));
            }
        }
        Profile::Reset { percent } => {
            if roll < u64::from(percent) {
                record_status(&host, 0);
                return Err(ResetConnection);
            }
        }
        Profile::Huge { mib } => huge = Some(mib),
        Profile::Outage { from_s, to_s } => {
            if status.is_none() && (from_s..to_s).contains(&second) {
                status = Some(StatusCode::SERVICE_UNAVAILABLE);
            }
        }
        Profile::SecondTry => {
            let first = host
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(req.uri().to_string());
            if status.is_none() && first {
                status = Some(StatusCode::SERVICE_UNAVAILABLE);
            }
        }
    }
    if let Some(d) = latency {
        tokio::time::sleep(d).await;
    }
    let status = match status {
        Some(s) => s,
        None if q.contains_key("location") => StatusCode::FOUND,
        None => StatusCode::OK,
    };
    record_status(&host, status.as_u16());
    if let Some(n) = qnum("sse").filter(|_| status.is_success()) {
        let first = Duration::from_millis(qnum("first_event_ms").unwrap_or(0));
        let stream = futures::stream::iter(0..n).then(move |i| async move {
            tokio::time::sleep(if i == 0 {
                first
            } else {
                Duration::from_millis(10)
            })
            .await;
            let event = format!(": keep-alive\n\ndata: {{\"token\":{i}}}\n\n");
            Ok::<_, std::io::Error>(Frame::data(Bytes::from(event)))
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        return Ok(r);
    }
    if let Some(mib) = huge.filter(|_| status.is_success()) {
        size = mib as usize * 1024 * 1024;
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let chunks = size / chunk.len();
        let stream = futures::stream::iter(0..chunks).then(move |_| {
            let chunk = chunk.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok::<_, std::io::Error>(Frame::data(chunk))
            }
        });
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert("content-length", size.into());
        return Ok(r);
    }
    let mut body = match (q.get("usage"), qnum("binary"), q.get("json")) {
        (Some(n), _, _) => Bytes::from(format!(r#"{{"usage":{{"total_tokens":{n}}}}}"#)),
        (None, Some(n), _) => binary(n as usize),
        (None, None, Some(text)) => Bytes::from(text.clone()),
        (None, None, None) => Bytes::from(vec![b'.'; size]),
    };
    if q.contains_key("torn_first")
        && host
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.uri().to_string())
    {
        body.truncate(body.len() / 2);
    }
    let mut encoding = q.get("encoding").cloned();
    if let Some(mib) = qnum("bomb") {
        body = Bytes::from(vec![0u8; (mib as usize) << 20]);
        encoding = Some("gzip".into());
    }
    if let Some(e) = &encoding {
        body = compress(e, &body);
    }
    let mut r = full(status, body);
    if let Some(e) = encoding.and_then(|e| hyper::header::HeaderValue::from_str(&e).ok()) {
        r.headers_mut().insert(hyper::header::CONTENT_ENCODING, e);
    }
    if let Some(to) = q.get("location") {
        if let Ok(v) = hyper::header::HeaderValue::from_str(to) {
            r.headers_mut().insert(hyper::header::LOCATION, v);
        }
    }
    if let Some(ra) = retry_after.filter(|_| {
        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
    }) {
        r.headers_mut().insert("retry-after", ra.into());
    }
    for (param, header) in [
        ("ratelimit_remaining", "ratelimit-remaining"),
        ("ratelimit_reset", "ratelimit-reset"),
    ] {
        if let Some(v) = q
            .get(param)
            .and_then(|v| hyper::header::HeaderValue::from_str(v).ok())
        {
            r.headers_mut().insert(header, v);
        }
    }
    r.headers_mut().insert(
        "set-cookie",
        hyper::header::HeaderValue::from_static("session=mock-secret"),
    );
    r.headers_mut().insert(
        "x-mock-profile",
        hyper::header::HeaderValue::from_static(host.profile.name()),
    );
    if q.contains_key("close") {
        // The server closes the connection after this response.
        r.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    Ok(r)
}

/// `n` bytes that are not UTF-8 (every byte value, in a fixed order).
pub fn binary(n: usize) -> Bytes {
    (0..n).map(|i| (i * 7 % 256) as u8).collect()
}

/// `body` compressed with `encoding` (gzip, deflate or br; anything else as it is).
fn compress(encoding: &str, body: &[u8]) -> Bytes {
    use std::io::Write;
    let out = match encoding {
        "gzip" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = e.write_all(body);
            e.finish().unwrap_or_default()
        }
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = e.write_all(body);
            e.finish().unwrap_or_default()
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                let _ = w.write_all(body);
            }
            out
        }
        _ => body.to_vec(),
    };
    Bytes::from(out)
}

fn record_status(host: &Host, status: u16) {
    let mut c = host.counters.lock().unwrap_or_else(|p| p.into_inner());
    *c.statuses.entry(status).or_insert(0) += 1;
}
