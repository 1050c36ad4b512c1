//! Pattern: shared state behind `RwLock`, and when it beats a `Mutex` (seed 004).
//!
//! Readers of an `RwLock` proceed together; a `Mutex` lets one at a time. That only matters
//! when readers hold the lock long enough to overlap and there are several threads to run
//! them on: here 8 tasks on 2 worker threads each look up a routing table 2000 times, with
//! a writer replacing one entry now and then. Each read walks part of the table (a few
//! microseconds), long enough for readers to meet. With a short critical section (a single
//! `get`), or one worker thread, the `Mutex` is as fast or faster: it is simpler and cheaper
//! to take. Measure before choosing; and never hold either across an `.await` (see
//! `examples/hazards.rs`). Timings vary by machine; the example prints them and checks only
//! that both saw the same table.
//!
//! Run: `cargo run --release -p corral --example rwlock`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

const READERS: usize = 8;
const READS: usize = 2000;

fn table() -> BTreeMap<u32, String> {
    (0..2000)
        .map(|i| (i, format!("10.0.{}.{}", i / 256, i % 256)))
        .collect()
}

/// Looks up a range of routes: the read critical section.
fn route(t: &BTreeMap<u32, String>, from: u32) -> usize {
    t.range(from..from + 200).map(|(_, v)| v.len()).sum()
}

/// 8 readers and one writer over the table behind `lock`, which `read` and `write` take the
/// way its kind of lock does; the time taken and the bytes read.
async fn measure<L: Send + Sync + 'static>(
    lock: L,
    read: fn(&L, u32) -> usize,
    write: fn(&L, u32),
) -> (Duration, usize) {
    let shared = Arc::new(lock);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..READERS {
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for i in 0..READS {
                n += read(&shared, ((i * 7 + r) % 1800) as u32);
                if i % 256 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            n
        }));
    }
    let w = shared.clone();
    tasks.push(tokio::spawn(async move {
        for i in 0..20u32 {
            write(&w, i);
            tokio::task::yield_now().await;
        }
        0
    }));
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("task");
    }
    (start.elapsed(), total)
}

async fn with_rwlock() -> (Duration, usize) {
    measure(
        RwLock::new(table()),
        |l, from| route(&l.read().expect("not poisoned"), from),
        |l, i| {
            l.write()
                .expect("not poisoned")
                .insert(i, format!("10.9.9.{i}"));
        },
    )
    .await
}

async fn with_mutex() -> (Duration, usize) {
    measure(
        Mutex::new(table()),
        |l, from| route(&l.lock().expect("not poisoned"), from),
        |l, i| {
            l.lock()
                .expect("not poisoned")
                .insert(i, format!("10.9.9.{i}"));
        },
    )
    .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut best = (Duration::MAX, Duration::MAX);
    let mut totals = (0, 0);
    // Alternate, three rounds each: one run proves nothing.
    for _ in 0..3 {
        let (t, n) = with_rwlock().await;
        best.0 = best.0.min(t);
        totals.0 = n;
        let (t, n) = with_mutex().await;
        best.1 = best.1.min(t);
        totals.1 = n;
    }
    println!(
        "RwLock: {:?}   Mutex: {:?}   (best of 3, {READERS} readers × {READS} reads on 2 threads)",
        best.0, best.1
    );
    println!(
        "RwLock / Mutex = {:.2}",
        best.0.as_secs_f64() / best.1.as_secs_f64()
    );
    // The writer's entries ("10.9.9.i") are as long as those they replace ("10.0.0.i"), so
    // both locks must have read the same amount whatever the interleaving.
    if totals.0 != totals.1 {
        return Err(format!(
            "the two runs read different tables: {} vs {}",
            totals.0, totals.1
        )
        .into());
    }
    Ok(())
}
