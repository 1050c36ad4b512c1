//! corral's runtime against tokio's multi-thread scheduler and `async-executor`, in one run:
//!
//! - `spawn_100k`: spawn 100 000 tiny tasks from outside the runtime and await them all;
//! - `ping_pong`: two tasks bounce a token 10 000 times over bounded(1) channels (wake latency).
//!
//! Every executor gets 2 worker threads (corral: 2 threads on one level, the others empty).
//!
//! Run: `cargo bench -p corral-runtime --bench runtime`

use std::sync::Arc;

use corral_runtime::{Priority, Runtime};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const TASKS: u64 = 100_000;
const ROUNDS: u64 = 10_000;

struct AsyncExecutor {
    ex: Arc<async_executor::Executor<'static>>,
    stop: Option<async_channel::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl AsyncExecutor {
    fn new(n: usize) -> Self {
        let ex = Arc::new(async_executor::Executor::new());
        let (stop, rx) = async_channel::bounded::<()>(1);
        let threads = (0..n)
            .map(|_| {
                let ex = Arc::clone(&ex);
                let rx = rx.clone();
                std::thread::spawn(move || {
                    let _ = futures::executor::block_on(ex.run(rx.recv()));
                })
            })
            .collect();
        Self {
            ex,
            stop: Some(stop),
            threads,
        }
    }
}

impl Drop for AsyncExecutor {
    fn drop(&mut self) {
        self.stop.take(); // closing the channel ends every `run`
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

async fn ping_pong<S>(spawn: S) -> u64
where
    S: Fn(
        std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send>>,
    ) -> Box<dyn std::future::Future<Output = u64> + Unpin>,
{
    let (to_b, from_a) = async_channel::bounded::<u64>(1);
    let (to_a, from_b) = async_channel::bounded::<u64>(1);
    let b = spawn(Box::pin(async move {
        let mut n = 0;
        while let Ok(v) = from_a.recv().await {
            n = v;
            if to_a.send(v + 1).await.is_err() {
                break;
            }
        }
        n
    }));
    let a = spawn(Box::pin(async move {
        let mut v = 0;
        for _ in 0..ROUNDS {
            if to_b.send(v).await.is_err() {
                break;
            }
            v = from_b.recv().await.unwrap_or(v);
        }
        v
    }));
    let v = a.await;
    v + b.await
}

fn bench(c: &mut Criterion) {
    let corral_rt = Runtime::builder()
        .threads(Priority::High, 0)
        .threads(Priority::Normal, 2)
        .threads(Priority::Low, 0)
        .build()
        .expect("corral runtime");
    let tokio_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("tokio runtime");
    let ae = AsyncExecutor::new(2);

    let mut g = c.benchmark_group("runtime_spawn");
    g.throughput(Throughput::Elements(TASKS));
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("corral", TASKS), |b| {
        b.iter(|| {
            let hs: Vec<_> = (0..TASKS)
                .map(|i| corral_rt.spawn(Priority::Normal, async move { i }))
                .collect();
            futures::executor::block_on(async {
                let mut s = 0;
                for h in hs {
                    s += h.await.unwrap_or(0);
                }
                s
            })
        })
    });
    g.bench_function(BenchmarkId::new("tokio", TASKS), |b| {
        b.iter(|| {
            let hs: Vec<_> = (0..TASKS)
                .map(|i| tokio_rt.spawn(async move { i }))
                .collect();
            futures::executor::block_on(async {
                let mut s = 0;
                for h in hs {
                    s += h.await.unwrap_or(0);
                }
                s
            })
        })
    });
    g.bench_function(BenchmarkId::new("async_executor", TASKS), |b| {
        b.iter(|| {
            let hs: Vec<_> = (0..TASKS).map(|i| ae.ex.spawn(async move { i })).collect();
            futures::executor::block_on(async {
                let mut s = 0;
                for h in hs {
                    s += h.await;
                }
                s
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("runtime_ping_pong");
    g.throughput(Throughput::Elements(ROUNDS));
    g.sample_size(20);
    g.bench_function(BenchmarkId::new("corral", ROUNDS), |b| {
        b.iter(|| {
            futures::executor::block_on(ping_pong(|f| {
                let h = corral_rt.spawn(Priority::Normal, f);
                Box::new(Box::pin(async move { h.await.unwrap_or(0) }))
            }))
        })
    });
    g.bench_function(BenchmarkId::new("tokio", ROUNDS), |b| {
        b.iter(|| {
            futures::executor::block_on(ping_pong(|f| {
                let h = tokio_rt.spawn(f);
                Box::new(Box::pin(async move { h.await.unwrap_or(0) }))
            }))
        })
    });
    g.bench_function(BenchmarkId::new("async_executor", ROUNDS), |b| {
        b.iter(|| futures::executor::block_on(ping_pong(|f| Box::new(ae.ex.spawn(f)))))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
