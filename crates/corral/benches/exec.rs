//! Per-item overhead of each `corral::exec` strategy against the raw primitives it competes
//! with, on no-op jobs (so the figure is pure scheduling overhead).
//!
//! Peers, measured in the same run:
//! - `raw/buffer_unordered`: `futures::StreamExt::buffer_unordered(64)` — the peer of `Buffered`.
//! - `raw/spawn_join`: `tokio::spawn` per item, then await every handle — the peer of `Spawn`,
//!   `Scatter` and `WorkerPool` (the cheapest raw way to put work on runtime tasks, unbounded).
//! - `raw/spawn_semaphore`: `tokio::spawn` per item gated by a `Semaphore` of 64 permits — the
//!   raw *bounded* equivalent (the seeds' semaphore-gated spawning).
//!
//! Run: `cargo bench -p corral --bench exec`

mod common;

use std::time::Duration;

use common::sum_through;
use corral::exec::Strategy;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::StreamExt;

const LIMIT: usize = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn raw_buffer_unordered(n: u64) -> u64 {
    futures::stream::iter(0..n)
        .map(|i| async move { i })
        .buffer_unordered(LIMIT)
        .fold(0u64, |acc, v| async move { acc + v })
        .await
}

/// The raw equivalent of bounded spawning: a semaphore permit per task, at most LIMIT alive.
async fn raw_spawn_semaphore(n: u64) -> u64 {
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(LIMIT));
    let mut handles = Vec::with_capacity(n as usize);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("open");
        handles.push(tokio::spawn(async move {
            let _permit = permit;
            i
        }));
    }
    let mut acc = 0;
    for h in handles {
        acc += h.await.unwrap_or(0);
    }
    acc
}

async fn raw_spawn_join(n: u64) -> u64 {
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(async move { i })).collect();
    let mut acc = 0;
    for h in handles {
        acc += h.await.unwrap_or(0);
    }
    acc
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("exec");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for n in [10_000u64, 100_000] {
        g.throughput(Throughput::Elements(n));
        let expect = n * (n - 1) / 2;
        g.bench_with_input(BenchmarkId::new("raw/buffer_unordered", n), &n, |b, &n| {
            b.to_async(&rt)
                .iter(|| async move { assert_eq!(raw_buffer_unordered(n).await, expect) })
        });
        g.bench_with_input(BenchmarkId::new("raw/spawn_join", n), &n, |b, &n| {
            b.to_async(&rt)
                .iter(|| async move { assert_eq!(raw_spawn_join(n).await, expect) })
        });
        g.bench_with_input(BenchmarkId::new("raw/spawn_semaphore", n), &n, |b, &n| {
            b.to_async(&rt)
                .iter(|| async move { assert_eq!(raw_spawn_semaphore(n).await, expect) })
        });
        for (name, s) in [
            ("corral/buffered", Strategy::Buffered),
            ("corral/spawn", Strategy::Spawn),
            ("corral/worker_pool", Strategy::WorkerPool),
            ("corral/scatter", Strategy::Scatter),
        ] {
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.to_async(&rt)
                    .iter(|| async move { assert_eq!(sum_through(s, LIMIT, n).await, expect) })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
