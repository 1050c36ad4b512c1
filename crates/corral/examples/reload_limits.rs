//! Pattern: limits that change while they run (seed 003's shutdown pattern listens for signals;
//! here SIGHUP means "read the limits file again", as nginx and HAProxy do).
//!
//! Workers call two hosts through a per-host rate limit read from `limits.txt`; each call also
//! goes through an adaptive concurrency limit that finds the capacity of a simulated service
//! (room for 3 calls; past that, it answers 503). After a second the program rewrites the file
//! and sends itself SIGHUP; the handler re-reads the file and calls `set_rate`, and the calls
//! per second change with it — no restart, no call lost. Unix only.
//!
//! Run: `cargo run -p corral --example reload_limits`

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::limit::{AdaptiveConcurrency, Aimd, KeyedRateLimiter, Rate, RateLimiter};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

/// Reads `rate = N/unit` from the limits file.
fn read_rate(path: &std::path::Path) -> Result<Rate, Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(path)?;
    for (n, line) in text.lines().enumerate() {
        if let Some(v) = line.trim().strip_prefix("rate") {
            let v = v
                .trim_start()
                .strip_prefix('=')
                .ok_or_else(|| format!("{}:{}: expected `rate = N/unit`", path.display(), n + 1))?;
            return Ok(v.trim().parse()?);
        }
    }
    Err(format!("{}: no `rate = ...` line", path.display()).into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("corral-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("limits.txt");
    std::fs::write(&file, "rate = 20/s\n")?;

    let per_host: KeyedRateLimiter<&str> = RateLimiter::builder()
        .rate(read_rate(&file)?)
        .build_keyed()?;
    let capacity = AdaptiveConcurrency::builder()
        .initial(2)
        .algorithm(Aimd::new())
        .build()?;

    // The SIGHUP handler: re-read, validate, apply. A bad file keeps the old limits.
    let mut hangups = signal(SignalKind::hangup())?;
    let (limiter, path) = (per_host.clone(), file.clone());
    let reloaded = Arc::new(tokio::sync::Notify::new());
    let told = reloaded.clone();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match read_rate(&path).map(|r| limiter.set_rate(r).map(|()| r)) {
                Ok(Ok(rate)) => println!("SIGHUP: rate is now {rate} per host"),
                Ok(Err(e)) => eprintln!("SIGHUP: kept the old rate: {e}"),
                Err(e) => eprintln!("SIGHUP: kept the old rate: {e}"),
            }
            told.notify_one();
        }
    });

    let calls = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let in_service = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..8 {
        let host = if w % 2 == 0 { "a.example" } else { "b.example" };
        let (limiter, capacity) = (per_host.clone(), capacity.clone());
        let (calls, refused, in_service) = (calls.clone(), refused.clone(), in_service.clone());
        workers.push(tokio::spawn(async move {
            while start.elapsed() < Duration::from_secs(2) {
                limiter.until_ready(&host).await;
                let permit = capacity.acquire().await;
                // The simulated service: room for 3 calls, 5 ms each; past that, a 503.
                let now = in_service.fetch_add(1, Ordering::SeqCst) + 1;
                let overloaded = now > 3;
                if !overloaded {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                in_service.fetch_sub(1, Ordering::SeqCst);
                if overloaded {
                    permit.dropped();
                    refused.fetch_add(1, Ordering::Relaxed);
                } else {
                    permit.success();
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = calls.load(Ordering::Relaxed);
    println!("first second: {before} calls (2 hosts × 20/s, plus the burst)");
    std::fs::write(&file, "rate = 200/s\n")?;
    let me = std::process::id().to_string();
    std::process::Command::new("kill")
        .args(["-HUP", &me])
        .status()?;
    reloaded.notified().await;
    for w in workers {
        w.await?;
    }
    let after = calls.load(Ordering::Relaxed) - before;
    println!("second second: {after} calls");
    println!(
        "adaptive concurrency limit: {} (the service holds 3; {} calls past it were refused, \
         each one cutting the limit)",
        capacity.limit(),
        refused.load(Ordering::Relaxed)
    );
    std::fs::remove_dir_all(&dir)?;
    if after < before * 3 {
        return Err(format!("the new rate did not take: {before} then {after} calls").into());
    }
    Ok(())
}
