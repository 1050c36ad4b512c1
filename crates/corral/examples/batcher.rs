//! Pattern: batcher (seed 003) — group writes and flush on size, on a deadline, and on close.
//!
//! Run: `cargo run -p corral --example batcher`

use std::time::Duration;

use corral::batch::{Batch, Batcher};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let batcher = Batcher::builder()
        .max_size(5)
        .max_delay(Duration::from_millis(100))
        .build(|batch: Batch<u32>| async move {
            println!(
                "flush #{} ({:?}): {:?}",
                batch.seq(),
                batch.reason(),
                batch.items()
            );
            Ok::<(), std::io::Error>(())
        })?;
    for i in 0..12 {
        batcher.push(i).await?; // 0..10 flush by size
    }
    tokio::time::sleep(Duration::from_millis(150)).await; // 10, 11 flush by deadline
    batcher.push(12).await?; // flushed on close
    let report = batcher.close().await?;
    println!(
        "{} items in {} batches, {} failed flushes",
        report.items,
        report.batches,
        report.failures.len()
    );
    Ok(())
}
