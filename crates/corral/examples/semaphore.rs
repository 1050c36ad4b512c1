//! Pattern: semaphore-gated spawning (seed 000) — a task per item, at most N alive at once.
//!
//! Run: `cargo run -p corral --example semaphore`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::exec::{Exec, Strategy};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (now, max) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let exec = Exec::builder().strategy(Strategy::Spawn).limit(3).build()?;
    let (n, m) = (now.clone(), max.clone());
    let count = exec
        .run(futures::stream::iter(0..30u32), move |i| {
            let (now, max) = (n.clone(), m.clone());
            async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                i
            }
        })
        .count()
        .await;
    println!(
        "{count} tasks ran, never more than {} at once (limit 3)",
        max.load(Ordering::SeqCst)
    );
    Ok(())
}
