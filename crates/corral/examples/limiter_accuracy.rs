//! Wall-clock accuracy of the rate limiter: 1000/s for 5 s should let through 5000 (+ burst)
//! calls, within 1 % — a measurement, printed, not a test assertion (it runs in real time).
//!
//! Run: `cargo run --release -p corral --example limiter_accuracy [SECONDS]`

use std::time::Duration;

use corral::limit::{Rate, RateLimiter};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secs: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let limiter = RateLimiter::builder()
        .rate(Rate::per_second(1000))
        .burst(1)
        .build()?;
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let limiter = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                limiter.until_ready().await;
                if tokio::time::Instant::now() >= deadline {
                    return n;
                }
                n += 1;
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await?;
    }
    let target = 1000 * secs;
    let error = (total as f64 - target as f64) / target as f64 * 100.0;
    println!(
        "limiter 1000/s over {secs} s: {total} calls passed, target {target}, error {error:+.3} %"
    );
    Ok(())
}
