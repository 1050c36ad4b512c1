//! Pattern: fan-out/fan-in (seed 003) — split work across concurrent jobs, merge the results.
//!
//! Run: `cargo run -p corral --example fan_out_fan_in`

use corral::exec::Exec;
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = "the quick brown fox jumps over the lazy dog and the cat sat on the mat";
    let chunks: Vec<String> = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .chunks(4)
        .map(|c| c.join(" "))
        .collect();
    // Fan out: each chunk counted by its own job, at most 3 at a time.
    let exec = Exec::builder().limit(3).build()?;
    let counts = exec.run(futures::stream::iter(chunks), |chunk| async move {
        chunk.split_whitespace().filter(|w| *w == "the").count()
    });
    // Fan in: add the partial counts. A job that failed (it panicked) fails the total: counted
    // as 0 it would give a wrong answer that looks right.
    let mut total = 0;
    let mut counts = std::pin::pin!(counts);
    while let Some(part) = counts.next().await {
        total += part?;
    }
    println!("\"the\" appears {total} times");
    assert_eq!(total, 4);
    Ok(())
}
