//! The key result of corral's runtime: start latency of high-priority tasks while a
//! low-priority CPU flood runs, against tokio (no priorities) and async-executor (none either),
//! in one run. A bench binary, not criterion: the figure is a latency distribution.
//!
//! Setup, identical for the three: 2 worker threads; 8 flood tasks, each burning ~0.5 ms of
//! CPU between yields, for the whole measurement; meanwhile the bench thread spawns a probe
//! every 500 µs (2000 probes) that records how long it waited between spawn and first poll.
//! corral: 1 High thread + 1 Low thread, the Low level refusing stealing; probes are High.
//! A second corral row leaves stealing on, to show what the per-level switch buys.
//!
//! Run: `cargo bench -p corral-runtime --bench priority` (prints a table: p50 / p99 / max and the
//! ratio of p99s, ours / theirs).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_runtime::{Priority, Runtime};

const FLOOD: usize = 8;
const PROBES: usize = 2000;
const PROBE_EVERY: Duration = Duration::from_micros(500);

type BoxFut = Pin<Box<dyn Future<Output = ()> + Send>>;

fn burn() {
    let mut x = 0u64;
    for i in 0..400_000u64 {
        x = std::hint::black_box(x.wrapping_mul(31) ^ i);
    }
}

/// A yield point every executor understands (wake self, return Pending once).
async fn yield_now() {
    let mut done = false;
    std::future::poll_fn(|cx| {
        if done {
            std::task::Poll::Ready(())
        } else {
            done = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Runs the flood with `spawn_low`, the probes with `spawn_high`; returns probe waits, sorted.
fn measure(spawn_low: &dyn Fn(BoxFut), spawn_high: &dyn Fn(BoxFut)) -> Vec<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..FLOOD {
        let stop = Arc::clone(&stop);
        spawn_low(Box::pin(async move {
            while !stop.load(Ordering::Relaxed) {
                burn();
                yield_now().await;
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(20)); // let the flood fill the threads
    let waits = Arc::new(Mutex::new(Vec::with_capacity(PROBES)));
    for _ in 0..PROBES {
        let queued = Instant::now();
        let waits = Arc::clone(&waits);
        spawn_high(Box::pin(async move {
            let w = queued.elapsed();
            waits.lock().expect("lock").push(w);
        }));
        std::thread::sleep(PROBE_EVERY);
    }
    // Let late probes finish (bounded), then stop the flood.
    let deadline = Instant::now() + Duration::from_secs(30);
    while waits.lock().expect("lock").len() < PROBES && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(20));
    let mut w = waits.lock().expect("lock").clone();
    w.sort();
    w
}

fn pct(w: &[Duration], p: f64) -> Duration {
    if w.is_empty() {
        return Duration::ZERO;
    }
    w[((w.len() as f64 * p) as usize).min(w.len() - 1)]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing useful: skip.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let rt = Runtime::builder()
        .threads(Priority::High, 1)
        .threads(Priority::Normal, 0)
        .threads(Priority::Low, 1)
        .steal(Priority::Low, false)
        .build()
        .expect("corral runtime");
    let ours = measure(&|f| rt.spawn(Priority::Low, f).detach(), &|f| {
        rt.spawn(Priority::High, f).detach()
    });
    rt.shutdown();

    // The same with stealing left on: the high thread also runs flood tasks when it is idle,
    // so a probe can arrive while it is mid-burn.
    let rt = Runtime::builder()
        .threads(Priority::High, 1)
        .threads(Priority::Normal, 0)
        .threads(Priority::Low, 1)
        .build()
        .expect("corral runtime");
    let stealing = measure(&|f| rt.spawn(Priority::Low, f).detach(), &|f| {
        rt.spawn(Priority::High, f).detach()
    });
    rt.shutdown();

    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    let tokio = measure(
        &|f| {
            tokio_rt.spawn(f);
        },
        &|f| {
            tokio_rt.spawn(f);
        },
    );
    tokio_rt.shutdown_timeout(Duration::from_secs(5));

    let ex = Arc::new(async_executor::Executor::new());
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let ex = Arc::clone(&ex);
            let rx = stop_rx.clone();
            std::thread::spawn(move || {
                let _ = futures::executor::block_on(ex.run(rx.recv()));
            })
        })
        .collect();
    let ae = measure(&|f| ex.spawn(f).detach(), &|f| ex.spawn(f).detach());
    drop(stop_tx);
    for t in threads {
        let _ = t.join();
    }

    println!("high-priority start latency under a low-priority CPU flood ({PROBES} probes)");
    println!("| executor | p50 | p99 | max | probes | p99 ours/theirs |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, w: &[Duration]| {
        println!(
            "| {name} | {:?} | {:?} | {:?} | {} | {:.4} |",
            pct(w, 0.5),
            pct(w, 0.99),
            w.last().copied().unwrap_or_default(),
            w.len(),
            pct(&ours, 0.99).as_secs_f64() / pct(w, 0.99).as_secs_f64().max(1e-9)
        )
    };
    row("corral (High / Low, no steal)", &ours);
    row("corral (High / Low, stealing on)", &stealing);
    row("tokio multi-thread", &tokio);
    row("async-executor", &ae);
}
