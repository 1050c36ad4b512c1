//! Pattern: CPU-bound work beside async I/O (seed 004, "rayon vs async") — and the event-loop
//! lag it causes when it runs on the loop itself.
//!
//! 32 jobs each "download" (a 20 ms sleep, standing in for a network call) and then "parse"
//! what they got (10 ms of pure computation: hashing a buffer). A ticker on the same runtime
//! asks to wake every 5 ms and records how late it woke: that lateness is the lag every
//! socket and timer of the program would suffer. The parse runs three ways:
//!
//! 1. inline, inside the async task: the worker thread is held, the ticker starves;
//! 2. through `corral::cpu::BlockingGate` (tokio's blocking pool, 2 at a time);
//! 3. through `corral::cpu::CpuPool` (a rayon pool of 2 threads).
//!
//! The runtime has one worker thread, like a busy server's share of one. Figures from a
//! release build are in BENCHMARKS.md.
//!
//! Run: `cargo run --release -p corral --example cpu_bound`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corral::cpu::{BlockingGate, CpuPool};

/// Hashes a 64 KiB buffer over and over for `busy` (FNV-1a): pure computation, no waiting.
fn parse(seed: u64, busy: Duration) -> u64 {
    let buf: Vec<u8> = (0..65_536u32).map(|i| (i as u64 ^ seed) as u8).collect();
    let start = Instant::now();
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    while start.elapsed() < busy {
        for b in &buf {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Inline,
    Gate,
    Rayon,
}

/// Runs the 32 jobs one way; returns the ticker's worst and mean lateness and the wall time.
async fn run(mode: Mode, gate: &BlockingGate, pool: &CpuPool) -> (Duration, Duration, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let ticker = tokio::spawn(async move {
        let (mut worst, mut sum, mut n) = (Duration::ZERO, Duration::ZERO, 0u32);
        while !s.load(Ordering::Relaxed) {
            let asked = Instant::now();
            tokio::time::sleep(Duration::from_millis(5)).await;
            let late = asked.elapsed().saturating_sub(Duration::from_millis(5));
            worst = worst.max(late);
            sum += late;
            n += 1;
        }
        (worst, sum / n.max(1))
    });
    let start = Instant::now();
    let jobs: Vec<_> = (0..32u64)
        .map(|i| {
            let (gate, pool) = (gate.clone(), pool.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await; // the download
                let busy = Duration::from_millis(10);
                match mode {
                    Mode::Inline => parse(i, busy),
                    Mode::Gate => gate.run(move || parse(i, busy)).await.expect("no panic"),
                    Mode::Rayon => pool.spawn(move || parse(i, busy)).await.expect("no panic"),
                }
            })
        })
        .collect();
    for j in jobs {
        std::hint::black_box(j.await.expect("job"));
    }
    let wall = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (worst, mean) = ticker.await.expect("ticker");
    (worst, mean, wall)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let gate = BlockingGate::new(2)?;
        let pool = CpuPool::new(2)?;
        println!(
            "{:<8} {:>12} {:>12} {:>10}",
            "parse", "worst lag", "mean lag", "wall"
        );
        let mut worst = Vec::new();
        for mode in [Mode::Inline, Mode::Gate, Mode::Rayon] {
            let (w, m, wall) = run(mode, &gate, &pool).await;
            println!(
                "{:<8} {:>9.1} ms {:>9.2} ms {:>7.0} ms",
                format!("{mode:?}").to_lowercase(),
                w.as_secs_f64() * 1e3,
                m.as_secs_f64() * 1e3,
                wall.as_secs_f64() * 1e3
            );
            worst.push(w);
        }
        // Inline, the ticker waits behind whole parses; off the loop it does not.
        if worst[1] >= worst[0] || worst[2] >= worst[0] {
            return Err("moving the parse off the event loop did not lower its lag".into());
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
