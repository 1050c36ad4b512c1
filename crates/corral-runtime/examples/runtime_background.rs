//! Pattern: background and periodic tasks (*Async Rust* ch. 3) — a detached background task
//! and a periodic job on corral's runtime, stopped by shutdown rather than by anyone awaiting
//! them.
//!
//! Run: `cargo run -p corral-runtime --example runtime_background`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral_runtime::{Priority, Runtime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder().build()?;
    let beats = Arc::new(AtomicU32::new(0));

    // A periodic health check every 20 ms, detached: it runs until the runtime shuts down.
    let b = Arc::clone(&beats);
    rt.handle()
        .every(Priority::Low, Duration::from_millis(20), move || {
            let n = b.fetch_add(1, Ordering::SeqCst) + 1;
            async move { println!("heartbeat {n}") }
        })?
        .detach();

    // A one-off background job nobody waits for.
    let (tx, rx) = futures::channel::oneshot::channel();
    rt.handle().background(async move {
        corral_runtime::sleep(Duration::from_millis(50)).await;
        println!("background cleanup done");
        let _ = tx.send(());
    });

    // Foreground work meanwhile.
    let total = rt.block_on(async {
        let parts: Vec<_> = (1..=10u64)
            .map(|n| corral_runtime::spawn!(async move { n * n }))
            .collect();
        let mut total = 0;
        for p in parts {
            total += p.await?;
        }
        let _ = rx.await;
        corral_runtime::sleep(Duration::from_millis(60)).await;
        Ok::<_, corral_runtime::JoinError>(total)
    })?;
    println!("foreground result: {total}");
    rt.shutdown(); // stops the periodic task with the workers
    let n = beats.load(Ordering::SeqCst);
    println!("{n} heartbeats before shutdown");
    if n == 0 {
        return Err("the periodic task never ran".into());
    }
    Ok(())
}
