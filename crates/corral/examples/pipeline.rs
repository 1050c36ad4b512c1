//! Pattern: pipeline (seed 003) — typed stages with their own concurrency, errors routed to the
//! output instead of killing the pipeline.
//!
//! Run: `cargo run -p corral --example pipeline`

use std::time::Duration;

use corral::pipeline::Pipeline;
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let lines = vec!["3", "14", "x", "15", "92", "-6"];
    let mut out = Pipeline::builder()
        .ordered(true)
        .input(futures::stream::iter(lines))
        .stage("parse", 2, |s: &str| async move { s.parse::<i64>() })
        .stage("check", 2, |n: i64| async move {
            if n < 0 {
                Err(format!("{n} is negative"))
            } else {
                Ok(n)
            }
        })
        .stage("slow square", 4, |n: i64| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, std::io::Error>(n * n)
        })
        .run()?;
    while let Some(r) = out.next().await {
        match r {
            Ok(v) => println!("ok    {v}"),
            Err(e) => println!("error {e}"),
        }
    }
    Ok(())
}
