//! Pattern: worker pool / work queue (seeds 000 and 003) — N long-lived workers pulling jobs
//! from a multi-consumer channel, a panicking job reported without killing its worker.
//!
//! Run: `cargo run -p corral --example worker_pool`

use std::time::Duration;

use corral::exec::{Exec, Strategy};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool = Exec::builder()
        .strategy(Strategy::WorkerPool)
        .limit(4)
        .ordered(true)
        .build()?;
    // The queue: any stream, consumed as workers free up (nothing is collected up front).
    let queue = futures::stream::iter(1..=20u64);
    let mut results = pool.run(queue, |job| async move {
        tokio::time::sleep(Duration::from_millis(5 * (job % 4))).await;
        if job == 13 {
            panic!("job 13 is cursed");
        }
        job * job
    });
    let (mut done, mut failed) = (0, 0);
    while let Some(r) = results.next().await {
        match r {
            Ok(square) => {
                done += 1;
                println!("square: {square}");
            }
            Err(e) => {
                failed += 1;
                println!("error:  {e}");
            }
        }
    }
    println!("{done} done, {failed} failed; the pool kept working after the panic");
    Ok(())
}
