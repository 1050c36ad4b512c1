//! Pattern: circuit breaker (seed 003) — stop calling a failing service, probe it after a
//! cool-down, close again when it recovers.
//!
//! Run: `cargo run -p corral --example circuit_breaker`

use std::time::Duration;

use corral::breaker::CircuitBreaker;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let breaker = CircuitBreaker::builder()
        .failure_rate(0.5)
        .min_calls(4)
        .window(Duration::from_millis(500))
        .cool_down(Duration::from_millis(200))
        .on_state_change(|c| println!("  breaker: {:?} -> {:?}", c.from, c.to))
        .build()?;
    let start = tokio::time::Instant::now();
    // The service is down for the first 300 ms.
    for call in 0..16 {
        let healthy = start.elapsed() > Duration::from_millis(300);
        let r = breaker
            .call(async move {
                if healthy {
                    Ok("pong")
                } else {
                    Err("503")
                }
            })
            .await;
        println!(
            "call {call:>2} at {:>3} ms: {r:?}",
            start.elapsed().as_millis()
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    println!("openings: {}", breaker.stats().openings);
    Ok(())
}
