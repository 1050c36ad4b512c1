//! `--metrics-addr`: Prometheus text metrics over HTTP, as fleets are watched.
//!
//! Any GET on the address answers with the current metrics (text format 0.0.4); a scrape
//! takes a snapshot through `render` and nothing else. A connection is answered once and
//! closed: scrapes are rare, and a server this small needs no keep-alive.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Renders the metrics text at each scrape.
pub(crate) type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `render`'s text on `addr` until the returned task is aborted (or the process
/// ends). `Err` when the address cannot be bound.
pub(crate) async fn serve(
    addr: SocketAddr,
    render: Render,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let render = render.clone();
            tokio::spawn(async move {
                // The request head: read until its end (or 8 KiB); its path does not matter.
                let mut head = Vec::with_capacity(1024);
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let body = render();
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    }))
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
}
