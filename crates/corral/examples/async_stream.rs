//! Pattern: async stream (seed 001) and generator-style stream (book ch. 5, in place of nightly
//! coroutines) — a stream produced lazily by a state machine (`futures::stream::unfold`),
//! consumed with bounded concurrency.
//!
//! Run: `cargo run -p corral --example async_stream`

use std::time::Duration;

use corral::exec::Exec;
use futures::{Stream, StreamExt};

/// A generator: yields Fibonacci numbers one at a time, pausing between them, until `limit`.
fn fibonacci(limit: u64) -> impl Stream<Item = u64> {
    futures::stream::unfold((0u64, 1u64), move |(a, b)| async move {
        if a > limit {
            return None; // the generator "returns"
        }
        tokio::time::sleep(Duration::from_millis(1)).await; // it may await between yields
        Some((a, (b, a + b))) // "yield a"
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exec = Exec::builder().limit(4).ordered(true).build()?;
    let described: Vec<String> = exec
        .run(fibonacci(1000), |n| async move {
            format!("{n}{}", if n % 2 == 0 { " (even)" } else { "" })
        })
        .filter_map(|r| async move { r.ok() })
        .collect()
        .await;
    println!("{}", described.join(", "));
    Ok(())
}
