//! A thousand requests through the engine's library API: per-host concurrency and rate limits,
//! retries, exactly one result line each (the `corral run` engine, without the binary).
//!
//! A small HTTP server on 127.0.0.1 answers the first request for every tenth item with a 503,
//! so a hundred jobs need a retry. Run: `cargo run -p corral-engine --example thousand_requests`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use corral_engine::job::Parsed;
use corral_engine::run::Run;
use corral_engine::settings::Settings;
use corral_engine::sink::Sink;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (base, served) = server().await?;

    // The library use, start to end.
    let run = Run::new(Settings {
        per_host_concurrency: 4,
        per_host_rate: Some("2000/s".parse()?),
        retries: 3,
        ..Settings::default()
    })?;
    let jobs = (1..=1000u64).map(move |n| Ok(Parsed::get(n, &format!("{base}/items/{n}"))));
    let path = std::env::temp_dir().join(format!("corral-example-{}.jsonl", std::process::id()));
    let file = std::fs::File::create(&path)?;
    let sink = Sink::File {
        file,
        path: path.clone(),
        sync: true,
    };
    let report = run.run(futures::stream::iter(jobs), sink).await?;

    let lines = std::fs::read_to_string(&path)?.lines().count();
    println!(
        "{} ok, {} failed, {} retries; {lines} result lines; the server saw {} requests",
        report.stats.ok,
        report.stats.failed,
        report.stats.retries,
        served.load(Ordering::Relaxed)
    );
    std::fs::remove_file(&path)?;
    assert_eq!(
        (report.stats.ok, lines),
        (1000, 1000),
        "every job once, all ok"
    );
    assert_eq!(report.stats.retries, 100, "one retry for each tenth item");
    Ok(())
}

/// A keep-alive HTTP/1.1 server on a free loopback port: 503 the first time an item whose
/// number ends in 0 is asked for, else 200.
async fn server() -> std::io::Result<(String, Arc<AtomicU64>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (count, seen) = (count.clone(), seen.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        count.fetch_add(1, Ordering::Relaxed);
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        let first = seen.lock().unwrap().insert(path.clone());
                        let reply: &[u8] = if first && path.ends_with('0') {
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                        } else {
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                        };
                        if sock.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    Ok((base, served))
}
