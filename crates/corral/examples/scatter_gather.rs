//! Pattern: scatter/gather (seed 000) — ask several replicas at once, gather every answer.
//!
//! `Strategy::Scatter` starts one task per item immediately: right for a small, known set.
//! `gather` returns the results in input order, failures included.
//!
//! Run: `cargo run -p corral --example scatter_gather`

use std::time::Duration;

use corral::exec::{Exec, Strategy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let replicas = vec![("eu", 30u64), ("us", 10), ("ap", 50), ("broken", 0)];
    let exec = Exec::builder().strategy(Strategy::Scatter).build()?;
    let started = tokio::time::Instant::now();
    let answers = exec
        .gather(replicas, |(name, ms)| async move {
            assert!(name != "broken", "replica {name} is down");
            tokio::time::sleep(Duration::from_millis(ms)).await;
            format!("{name} answered after {ms} ms")
        })
        .await;
    for a in &answers {
        match a {
            Ok(text) => println!("ok:     {text}"),
            Err(e) => println!("failed: {e}"),
        }
    }
    // All at once: the whole gather takes as long as the slowest replica, not the sum.
    println!(
        "gathered {} answers in {:?}",
        answers.len(),
        started.elapsed()
    );
    Ok(())
}
