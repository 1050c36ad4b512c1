//! Fan-out cost of `corral::bus` against `tokio::sync::broadcast`, in one run.
//!
//! 1000 `u64` messages published to 1 / 16 / 256 subscribers, each reading on its own task;
//! buffers hold all 1000 (no drops), corral with its drop-oldest policy (broadcast's semantics)
//! and with backpressure.
//!
//! Run: `cargo bench -p corral --bench bus`

use std::time::Duration;

use corral::bus::{Bus, Overflow};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const MESSAGES: u64 = 1000;

async fn corral_fanout(subs: usize, overflow: Overflow) -> u64 {
    let bus = Bus::new();
    let topic = bus.topic::<u64>("t").expect("topic");
    let readers: Vec<_> = (0..subs)
        .map(|_| {
            let mut s = topic.subscribe(overflow).expect("subscribe");
            tokio::spawn(async move {
                let mut sum = 0;
                for _ in 0..MESSAGES {
                    sum += s.recv().await.and_then(Result::ok).unwrap_or(0);
                }
                sum
            })
        })
        .collect();
    for i in 0..MESSAGES {
        topic.publish(i).await;
    }
    let mut total = 0;
    for r in readers {
        total += r.await.unwrap_or(0);
    }
    total
}

async fn broadcast_fanout(subs: usize) -> u64 {
    let (tx, _) = tokio::sync::broadcast::channel::<u64>(MESSAGES as usize);
    let readers: Vec<_> = (0..subs)
        .map(|_| {
            let mut rx = tx.subscribe();
            tokio::spawn(async move {
                let mut sum = 0;
                for _ in 0..MESSAGES {
                    sum += rx.recv().await.unwrap_or(0);
                }
                sum
            })
        })
        .collect();
    for i in 0..MESSAGES {
        let _ = tx.send(i);
    }
    let mut total = 0;
    for r in readers {
        total += r.await.unwrap_or(0);
    }
    total
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("bus");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for subs in [1usize, 16, 256] {
        let expect = subs as u64 * MESSAGES * (MESSAGES - 1) / 2;
        g.throughput(Throughput::Elements(MESSAGES * subs as u64));
        g.bench_with_input(BenchmarkId::new("broadcast", subs), &subs, |b, &s| {
            b.to_async(&rt)
                .iter(|| async move { assert_eq!(broadcast_fanout(s).await, expect) })
        });
        g.bench_with_input(
            BenchmarkId::new("corral_drop_oldest", subs),
            &subs,
            |b, &s| {
                b.to_async(&rt).iter(|| async move {
                    assert_eq!(
                        corral_fanout(s, Overflow::DropOldest(MESSAGES as usize)).await,
                        expect
                    )
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("corral_backpressure", subs),
            &subs,
            |b, &s| {
                b.to_async(&rt).iter(|| async move {
                    assert_eq!(
                        corral_fanout(s, Overflow::Backpressure(MESSAGES as usize)).await,
                        expect
                    )
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
