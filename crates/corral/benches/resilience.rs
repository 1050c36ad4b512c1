//! Cost of the resilience primitives on their fast path, next to their peers in one run.
//!
//! - `limit/corral_check` vs `limit/governor_check`: one GCRA decision on a direct limiter whose
//!   rate is high enough that every call passes (the hot path of a busy client).
//! - `limit/corral_keyed_check` vs `limit/governor_keyed_check`: the same, keyed by a `u32`
//!   among 64 keys.
//! - `breaker/call` vs `breaker/bare`: awaiting a ready future through a closed breaker vs
//!   awaiting it directly (the breaker's whole overhead per call).
//!
//! Run: `cargo bench -p corral --bench resilience`
//!
//! The wall-clock accuracy check (1000/s over 5 s) is `examples/limiter_accuracy.rs`.

use std::num::NonZeroU32;
use std::time::Duration;

use corral::breaker::CircuitBreaker;
use corral::limit::{Rate, RateLimiter};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use governor::{Quota, RateLimiter as Governor};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut g = c.benchmark_group("limit");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));

    let ours = RateLimiter::builder()
        .rate(Rate::per_second(1_000_000_000))
        .burst(1_000_000)
        .build()
        .expect("config");
    let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"))
        .allow_burst(NonZeroU32::new(1_000_000).expect("non-zero"));
    let theirs = Governor::direct(quota);
    g.bench_function("corral_check", |b| {
        b.iter(|| black_box(ours.check().is_ok()))
    });
    // One clock read in this build (tokio's test-util clock, which dev-dependencies enable):
    // how much of `corral_check` is reading the time.
    g.bench_function("tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    g.bench_function("std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    g.bench_function("governor_check", |b| {
        b.iter(|| black_box(theirs.check().is_ok()))
    });

    let ours_keyed = RateLimiter::builder()
        .rate(Rate::per_second(1_000_000_000))
        .burst(1_000_000)
        .build_keyed::<u32>()
        .expect("config");
    let theirs_keyed = Governor::keyed(quota);
    let mut k = 0u32;
    g.bench_function("corral_keyed_check", |b| {
        b.iter(|| {
            k = (k + 1) % 64;
            black_box(ours_keyed.check(&k).is_ok())
        })
    });
    g.bench_function("governor_keyed_check", |b| {
        b.iter(|| {
            k = (k + 1) % 64;
            black_box(theirs_keyed.check_key(&k).is_ok())
        })
    });
    g.finish();

    let mut g = c.benchmark_group("breaker");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let breaker = CircuitBreaker::builder().build().expect("config");
    g.bench_function("call", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(breaker.call(async { Ok::<u32, ()>(1) }).await.is_ok()) })
    });
    g.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(async { Ok::<u32, ()>(1) }.await.is_ok()) })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
