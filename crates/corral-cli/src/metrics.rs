//! `--metrics-addr`: Prometheus text metrics over HTTP, as fleets are watched.
//!
//! Any GET on the address answers with the current metrics (text format 0.0.4); a scrape
//! takes a snapshot through `render` and nothing else. A connection is answered once and
//! closed: scrapes are rare, and a server this small needs no keep-alive.
//!
//! Anyone who can reach the address can open connections to it: at most [`MAX_CONNECTIONS`]
//! are served at once (the others wait in the kernel's backlog, holding none of the run's
//! file descriptors), each must send its request within [`REQUEST_TIMEOUT`], and a scrape
//! lists the [`MAX_HOSTS`] busiest hosts, the others summed as `host="(others)"` (1131 idle
//! connections took a run to its fd limit, and a scrape of 16k hosts was 3.5 MB).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use corral_engine::hosts::{HostStat, HostTable};
use corral_engine::run::Observer;
use corral_engine::summary::Stats;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 8;
/// Time a connection has to send its request head, and then to take the answer.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Hosts listed by name in a scrape; the rest are summed.
pub(crate) const MAX_HOSTS: usize = 100;

/// Renders the metrics text at each scrape.
pub(crate) type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `render`'s text on `addr` until the returned task is aborted (or the process
/// ends). `Err` when the address cannot be bound.
pub(crate) async fn serve(
    addr: SocketAddr,
    render: Render,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            // A connection is accepted only when it can be served.
            let Ok(permit) = room.clone().acquire_owned().await else {
                return;
            };
            let mut conn = match listener.accept().await {
                Ok((conn, _)) => conn,
                Err(_) => {
                    // Out of descriptors, most likely: not a loop that burns a core.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let render = render.clone();
            tokio::spawn(async move {
                let _permit = permit;
                // The request head: read until its end (or 8 KiB); its path does not matter.
                let read = async {
                    let mut head = Vec::with_capacity(1024);
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return false,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    true
                };
                if !matches!(tokio::time::timeout(REQUEST_TIMEOUT, read).await, Ok(true)) {
                    return;
                }
                let body = render();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let write = async {
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                };
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, write).await;
            });
        }
    }))
}

/// The hosts a scrape lists: the [`MAX_HOSTS`] with the most requests (by name among equals),
/// and the others' counters summed (their breakers open counted), if there are others.
fn busiest(stats: HashMap<String, HostStat>) -> (Vec<(String, HostStat)>, Option<Others>) {
    let mut all: Vec<_> = stats.into_iter().collect();
    all.sort_by(|a, b| b.1.attempts.cmp(&a.1.attempts).then_with(|| a.0.cmp(&b.0)));
    let rest = all.split_off(all.len().min(MAX_HOSTS));
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let others = (!rest.is_empty()).then(|| {
        rest.into_iter().fold(Others::default(), |mut sum, (_, s)| {
            sum.stat.attempts += s.attempts;
            sum.stat.paused_by_retry_after += s.paused_by_retry_after;
            sum.stat.breaker_openings += s.breaker_openings;
            sum.open += u64::from(s.breaker_open);
            sum
        })
    });
    (all, others)
}

/// The hosts a scrape does not name, summed.
#[derive(Default)]
struct Others {
    stat: HostStat,
    /// How many of them have their breaker open.
    open: u64,
}

/// The engine's latest counters, kept for scrapes: an [`Observer`] of the run (clones share
/// them).
#[derive(Clone, Default)]
pub(crate) struct Latest(Arc<Mutex<(Option<Stats>, u64, u64)>>);

impl Observer for Latest {
    fn tick(&mut self, stats: &Stats, running: u64, waiting: u64) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            (Some(stats.clone()), running, waiting);
    }
}

/// A run's or a worker's metrics: jobs, in flight, waiting, and per host requests, pauses and
/// breakers; with a queue worker's counters, the jobs it holds and the job messages it refused.
pub(crate) fn engine(
    latest: Latest,
    hosts: Arc<dyn HostTable>,
    worker: Option<Arc<corral_queue::worker::Counters>>,
) -> Render {
    Arc::new(move || {
        let (stats, running, waiting) = latest
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (done, ok, failed, retries) =
            stats.map_or((0, 0, 0, 0), |s| (s.done, s.ok, s.failed, s.retries));
        let (named, others) = busiest(hosts.stats());
        let per = |f: fn(&HostStat) -> f64, other: fn(&Others) -> f64| {
            named
                .iter()
                .map(move |(h, s)| (h.as_str(), f(s)))
                .chain(others.iter().map(move |s| ("(others)", other(s))))
                .collect::<Vec<_>>()
        };
        let mut t = Text::default();
        t.one(
            "corral_jobs_done_total",
            "counter",
            "Jobs finished (results written or stored).",
            done as f64,
        )
        .one(
            "corral_jobs_ok_total",
            "counter",
            "Jobs that succeeded.",
            ok as f64,
        )
        .one(
            "corral_jobs_failed_total",
            "counter",
            "Jobs that failed.",
            failed as f64,
        )
        .one(
            "corral_retries_total",
            "counter",
            "Retries sent.",
            retries as f64,
        )
        .one(
            "corral_jobs_in_flight",
            "gauge",
            "Jobs under way (sending, or between retries).",
            running as f64,
        )
        .one(
            "corral_jobs_waiting",
            "gauge",
            "Jobs waiting for their host (slots, rate, pause, breaker).",
            waiting as f64,
        );
        if let Some(w) = &worker {
            let load = |n: &std::sync::atomic::AtomicU64| {
                n.load(std::sync::atomic::Ordering::Relaxed) as f64
            };
            t.one(
                "corral_jobs_held",
                "gauge",
                "Jobs pulled from the queue and not yet acked.",
                load(&w.held),
            )
            .one(
                "corral_jobs_rejected_total",
                "counter",
                "Job messages refused and dropped, never run (unsigned, for a line the run does not have, not UTF-8).",
                load(&w.rejected),
            );
        }
        t.per_host(
            "corral_host_requests_total",
            "counter",
            "Requests sent to each host; its rate is the per-host rate.",
            per(|s| s.attempts as f64, |o| o.stat.attempts as f64),
        )
        .per_host(
            "corral_host_retry_after_pauses_total",
            "counter",
            "Retry-After pauses of each host.",
            per(
                |s| s.paused_by_retry_after as f64,
                |o| o.stat.paused_by_retry_after as f64,
            ),
        )
        .per_host(
            "corral_host_breaker_openings_total",
            "counter",
            "Times each host's breaker opened.",
            per(
                |s| s.breaker_openings as f64,
                |o| o.stat.breaker_openings as f64,
            ),
        )
        .per_host(
            "corral_host_breaker_open",
            "gauge",
            "1 while the host's breaker is open (for \"(others)\", how many are).",
            per(|s| f64::from(u8::from(s.breaker_open)), |o| o.open as f64),
        );
        t.done()
    })
}

/// Builds metrics text: each metric's `# HELP` and `# TYPE` once, then its samples.
#[derive(Default)]
pub(crate) struct Text(String);

impl Text {
    /// A metric without labels.
    pub(crate) fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {value}");
        self
    }

    /// A metric with one sample per host.
    pub(crate) fn per_host<'a>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: impl IntoIterator<Item = (&'a str, f64)>,
    ) -> &mut Self {
        self.head(name, kind, help);
        for (host, value) in samples {
            let host = host.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(self.0, "{name}{{host=\"{host}\"}} {value}");
        }
        self
    }

    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// The text.
    pub(crate) fn done(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scrape_gets_the_text_of_the_moment() {
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = n.clone();
        let render: Render = Arc::new(move || {
            Text::default()
                .one(
                    "corral_jobs_done_total",
                    "counter",
                    "Jobs done.",
                    seen.load(std::sync::atomic::Ordering::SeqCst) as f64,
                )
                .per_host(
                    "corral_host_requests_total",
                    "counter",
                    "Requests.",
                    [("a:1", 2.0)],
                )
                .done()
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = serve(addr, render).await.unwrap();
        let scrape = || async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(scrape().await.contains("\ncorral_jobs_done_total 0\n"));
        n.store(7, std::sync::atomic::Ordering::SeqCst);
        let text = scrape().await;
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("# TYPE corral_jobs_done_total counter\ncorral_jobs_done_total 7\n"));
        assert!(
            text.contains("corral_host_requests_total{host=\"a:1\"} 2\n"),
            "{text}"
        );
        server.abort();
    }

    #[test]
    fn a_scrape_names_the_busiest_hosts_and_sums_the_rest() {
        let stats: HashMap<String, HostStat> = (0..16_000u64)
            .map(|i| {
                let s = HostStat {
                    attempts: i,
                    breaker_open: i % 2 == 0,
                    ..HostStat::default()
                };
                (format!("h{i}:80"), s)
            })
            .collect();
        let (named, others) = busiest(stats);
        assert_eq!(named.len(), MAX_HOSTS);
        assert!(named
            .iter()
            .all(|(_, s)| s.attempts >= 16_000 - MAX_HOSTS as u64));
        let others = others.unwrap();
        let rest = 16_000 - MAX_HOSTS as u64;
        assert_eq!(others.stat.attempts, (0..rest).sum::<u64>());
        assert_eq!(others.open, rest / 2);
        let few: HashMap<String, HostStat> = [("a:1".to_string(), HostStat::default())].into();
        assert!(busiest(few).1.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_are_closed_and_only_a_few_served_at_once() {
        let render: Render = Arc::new(|| "corral_jobs_done_total 1\n".to_string());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = serve(addr, render).await.unwrap();
        // More idle connections than are served: the server closes each one it took after
        // REQUEST_TIMEOUT, then takes the next.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS * 2 {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        for c in &mut idle {
            let mut b = [0u8; 16];
            let closed = tokio::time::timeout(REQUEST_TIMEOUT * 4, c.read(&mut b)).await;
            assert!(matches!(closed, Ok(Ok(0))), "an idle connection stays open");
        }
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).await.unwrap();
        assert!(out.contains("corral_jobs_done_total 1"), "{out}");
        server.abort();
    }
}
