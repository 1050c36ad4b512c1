//! Pattern: buffered stream (seed 000) — `buffer_unordered`-style concurrency without spawning,
//! with backpressure: a slow consumer stops the producer.
//!
//! Run: `cargo run -p corral --example buffered_stream`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::exec::Exec;
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let produced = Arc::new(AtomicU64::new(0));
    let p = produced.clone();
    // An endless producer: only backpressure keeps this program's memory flat.
    let input = futures::stream::iter(0u64..).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let exec = Exec::builder().limit(8).ordered(true).build()?;
    let mut results = exec.run(input, |i| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        i * 2
    });
    for _ in 0..5 {
        let v = results.next().await.ok_or("ended")??;
        tokio::time::sleep(Duration::from_millis(50)).await; // a slow consumer
        println!(
            "consumed {v}; producer has produced {}",
            produced.load(Ordering::SeqCst)
        );
    }
    println!("the producer stayed within 8 items of the consumer");
    Ok(())
}
