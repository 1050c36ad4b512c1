//! `Strategy::Scatter` against spawn-and-join, and against what scatter was before (the spawn
//! strategy with no limit: a `FuturesUnordered` of join handles), alternating rounds in one
//! run, medians of 15. Two places the gathering runs: on the caller's thread (`block_on`, as
//! criterion's `to_async` does) and inside a task on the runtime (where programs call it).
//!
//! Run: `cargo bench -p corral --bench scatter`

mod common;

use std::time::Instant;

use common::sum_through;
use corral::exec::Strategy;

async fn spawn_join(n: u64) -> u64 {
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(async move { i })).collect();
    let mut acc = 0;
    for h in handles {
        acc += h.await.unwrap_or(0);
    }
    acc
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let in_task = |f: std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send>>| {
        rt.block_on(async { tokio::spawn(f).await.expect("task") })
    };
    for n in [10_000u64, 100_000] {
        for (place, task) in [("caller thread", false), ("inside a task", true)] {
            let mut t: [Vec<f64>; 3] = Default::default();
            for _ in 0..15 {
                let runs: [std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send>>; 3] = [
                    Box::pin(spawn_join(n)),
                    Box::pin(sum_through(Strategy::Scatter, 64, n)),
                    Box::pin(sum_through(Strategy::Spawn, usize::MAX >> 4, n)),
                ];
                for (k, f) in runs.into_iter().enumerate() {
                    let s = Instant::now();
                    let sum = if task { in_task(f) } else { rt.block_on(f) };
                    t[k].push(s.elapsed().as_secs_f64() * 1e3);
                    assert_eq!(sum, n * (n - 1) / 2);
                }
            }
            for v in t.iter_mut() {
                v.sort_by(|a, b| a.total_cmp(b));
            }
            let med = |v: &Vec<f64>| v[v.len() / 2];
            println!(
                "n={n:>6} {place}: spawn_join {:7.2} ms | scatter {:7.2} ms ({:.2}x) | before (unbounded spawn) {:8.2} ms ({:.2}x)",
                med(&t[0]),
                med(&t[1]),
                med(&t[1]) / med(&t[0]),
                med(&t[2]),
                med(&t[2]) / med(&t[0])
            );
        }
    }
}
