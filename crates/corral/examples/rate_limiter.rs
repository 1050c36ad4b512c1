//! Pattern: rate limiter (seed 003) — GCRA per host, with a Retry-After pause for one host.
//!
//! Run: `cargo run -p corral --example rate_limiter`

use std::time::Duration;

use corral::limit::RateLimiter;
use tokio::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let per_host = RateLimiter::builder()
        .rate("20/s".parse()?)
        .burst(2)
        .build_keyed::<&str>()?;
    let start = Instant::now();
    // "b" answered 429 with Retry-After: 300 ms — pause it alone.
    per_host.pause_until(&"b", start + Duration::from_millis(300));
    let mut tasks = Vec::new();
    for host in ["a", "b"] {
        let limiter = per_host.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..6 {
                limiter.until_ready(&host).await;
                println!(
                    "{:>4} ms  host {host} request {i}",
                    start.elapsed().as_millis()
                );
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    println!("each host: 2 at once (burst), then one every 50 ms; b started after its pause");
    Ok(())
}
