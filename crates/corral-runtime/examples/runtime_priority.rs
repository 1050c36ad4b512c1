//! Pattern: priority queues with their own threads (*Async Rust* ch. 3) — corral's runtime.
//!
//! The book's high/low demo, made measurable: a flood of CPU-heavy low-priority tasks saturates
//! the low thread while short high-priority tasks keep arriving. Because the low level refuses
//! stealing and the high level has its own thread, high tasks start within microseconds; on a
//! scheduler without priorities they would wait behind the flood. Each line shows the thread
//! that ran the task.
//!
//! Run: `cargo run --release -p corral-runtime --example runtime_priority`

use std::time::{Duration, Instant};

use corral_runtime::{Priority, Runtime};

fn burn(iterations: u64) -> u64 {
    (0..iterations).fold(0u64, |x, i| std::hint::black_box(x.wrapping_mul(31) ^ i))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = Runtime::builder()
        .threads(Priority::High, 1)
        .threads(Priority::Normal, 0)
        .threads(Priority::Low, 1)
        .steal(Priority::Low, false)
        .build()?;

    rt.block_on(async {
        // 40 low-priority CPU hogs, ~2 ms each, queued at once.
        let flood: Vec<_> = (0..40)
            .map(|i| {
                corral_runtime::spawn!(
                    async move {
                        burn(2_000_000);
                        (i, std::thread::current().name().map(String::from))
                    },
                    Priority::Low
                )
            })
            .collect();
        // 10 high-priority tasks arriving while the flood runs: how long does each wait?
        let mut waits = Vec::new();
        for i in 0..10 {
            let queued = Instant::now();
            let h = corral_runtime::spawn!(
                async move {
                    (
                        queued.elapsed(),
                        std::thread::current().name().map(String::from),
                    )
                },
                Priority::High
            );
            let (waited, thread) = h.await?;
            println!("high task {i}: started after {waited:?} on {thread:?}");
            waits.push(waited);
            corral_runtime::sleep(Duration::from_millis(3)).await;
        }
        let mut low_threads = Vec::new();
        for h in flood {
            let (_, thread) = h.await?;
            low_threads.push(thread);
        }
        let all_low = low_threads
            .iter()
            .all(|t| t.as_deref() == Some("corral-low-0"));
        println!("40 low tasks all ran on the low thread: {all_low}");
        println!("slowest high-task start: {:?}", waits.iter().max());
        assert!(all_low);
        Ok::<_, corral_runtime::JoinError>(())
    })?;
    rt.shutdown();
    Ok(())
}
