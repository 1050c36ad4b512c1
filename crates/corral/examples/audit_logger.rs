//! Pattern: audit logger (book ch. 2) — many tasks log events without blocking on disk: events
//! go through a batcher, one file per category, written on the blocking pool.
//!
//! Run: `cargo run -p corral --example audit_logger`

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use corral::batch::{Batch, Batcher};
use corral::exec::Exec;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("corral-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let d = dir.clone();
    let logger = Batcher::builder()
        .max_size(64)
        .max_delay(Duration::from_millis(20))
        .build(move |batch: Batch<(String, String)>| {
            let d = d.clone();
            async move {
                // File I/O blocks: do it off the async workers.
                tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                    let mut by_file: BTreeMap<String, Vec<String>> = BTreeMap::new();
                    for (category, line) in batch.into_items() {
                        by_file.entry(category).or_default().push(line);
                    }
                    for (category, lines) in by_file {
                        let mut f = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(d.join(format!("{category}.log")))?;
                        writeln!(f, "{}", lines.join("\n"))?;
                    }
                    Ok(())
                })
                .await
                .map_err(std::io::Error::other)?
            }
        })?;
    let sender = logger.sender();
    Exec::builder()
        .limit(8)
        .build()?
        .gather(0..300u32, move |i| {
            let sender = sender.clone();
            async move {
                let category = ["login", "payment", "admin"][(i % 3) as usize];
                sender
                    .push((category.to_string(), format!("event {i}")))
                    .await
            }
        })
        .await;
    let report = logger.close().await?;
    println!(
        "{} events in {} batches, {} failed writes",
        report.items,
        report.batches,
        report.failures.len()
    );
    for category in ["login", "payment", "admin"] {
        let lines = std::fs::read_to_string(dir.join(format!("{category}.log")))?
            .lines()
            .count();
        println!("{category}.log: {lines} lines");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
