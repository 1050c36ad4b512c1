//! Per-call cost of corral's tower layers next to tower's own, in one run, alternating: each
//! pair wraps the same ready `service_fn` and makes 1000 calls (`ready().await` then `call`)
//! per iteration on a current-thread runtime. Limits are set so that nothing ever waits or
//! retries: this is the overhead every call pays.
//!
//! - `timeout`: corral `TimeoutLayer` vs tower `TimeoutLayer`.
//! - `concurrency`: corral `ConcurrencyLimitLayer::new` (global, Wait) vs tower
//!   `ConcurrencyLimitLayer`.
//! - `rate`: corral `RateLimitLayer::new` (global, Wait) vs tower `RateLimitLayer`.
//! - `retry`: corral `RetryLayer` (HttpClassifier) vs tower `RetryLayer` with a policy that
//!   retries 5xx — both see only 200s.
//! - `stack`: timeout, rate, retry, concurrency (outermost first: tower's retry needs a `Clone`
//!   service below it, and tower's rate limit is not one), ours vs tower's.
//!
//! Run: `cargo bench -p corral --bench layers`

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use corral::classify::HttpClassifier;
use corral::limit::{ConcurrencyLimitLayer, Rate, RateLimitLayer, RateLimiter};
use corral::retry::{RetryLayer, RetryPolicy};
use corral::timeout::TimeoutLayer;
use corral::BoxError;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tower::{Layer, Service, ServiceExt};

const CALLS: u64 = 1000;

type Resp = http::Response<()>;

fn inner() -> impl Service<
    u32,
    Response = Resp,
    Error = BoxError,
    Future = std::future::Ready<Result<Resp, BoxError>>,
> + Clone {
    tower::service_fn(|_: u32| std::future::ready(Ok::<_, BoxError>(http::Response::new(()))))
}

/// A tower retry policy that retries 5xx up to 3 times, like the classifier does.
#[derive(Clone)]
struct Retry5xx(u32);

impl<E> tower::retry::Policy<u32, Resp, E> for Retry5xx {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;
    fn retry(&mut self, _req: &mut u32, result: &mut Result<Resp, E>) -> Option<Self::Future> {
        match result {
            Ok(r) if r.status().is_server_error() && self.0 > 0 => {
                self.0 -= 1;
                Some(Box::pin(async {}))
            }
            _ => None,
        }
    }
    fn clone_request(&mut self, req: &u32) -> Option<u32> {
        Some(*req)
    }
}

fn fast_limiter() -> RateLimiter {
    RateLimiter::builder()
        .rate(Rate::per_second(1_000_000_000))
        .burst(1_000_000)
        .build()
        .expect("config")
}

/// Time for `iters` rounds of CALLS calls through `svc`.
fn run<S>(rt: &tokio::runtime::Runtime, mut svc: S, iters: u64) -> Duration
where
    S: Service<u32, Response = Resp>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters * CALLS {
            let r = svc.ready().await.expect("ready").call(1).await;
            black_box(r.is_ok());
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("layers");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let policy = RetryPolicy::builder()
        .max_attempts(4)
        .build()
        .expect("config");
    let long = Duration::from_secs(60);

    g.bench_function("timeout/corral", |b| {
        b.iter_custom(|n| run(&rt, TimeoutLayer::new(long).layer(inner()), n))
    });
    g.bench_function("timeout/tower", |b| {
        b.iter_custom(|n| {
            run(
                &rt,
                tower::timeout::TimeoutLayer::new(long).layer(inner()),
                n,
            )
        })
    });
    g.bench_function("concurrency/corral", |b| {
        b.iter_custom(|n| {
            let layer = ConcurrencyLimitLayer::new(64).expect("config");
            run(&rt, layer.layer(inner()), n)
        })
    });
    g.bench_function("concurrency/tower", |b| {
        b.iter_custom(|n| {
            run(
                &rt,
                tower::limit::ConcurrencyLimitLayer::new(64).layer(inner()),
                n,
            )
        })
    });
    g.bench_function("rate/corral", |b| {
        b.iter_custom(|n| run(&rt, RateLimitLayer::new(fast_limiter()).layer(inner()), n))
    });
    g.bench_function("rate/tower", |b| {
        b.iter_custom(|n| {
            let layer = tower::limit::RateLimitLayer::new(1_000_000, Duration::from_millis(1));
            rt.block_on(async { run_in(layer.layer(inner()), n).await })
        })
    });
    g.bench_function("retry/corral", |b| {
        b.iter_custom(|n| {
            let layer = RetryLayer::with_classifier(policy.clone(), HttpClassifier::new());
            run(&rt, layer.layer(inner()), n)
        })
    });
    g.bench_function("retry/tower", |b| {
        b.iter_custom(|n| {
            run(
                &rt,
                tower::retry::RetryLayer::new(Retry5xx(3)).layer(inner()),
                n,
            )
        })
    });
    g.bench_function("stack/corral", |b| {
        b.iter_custom(|n| {
            let svc = tower::ServiceBuilder::new()
                .layer(TimeoutLayer::new(long))
                .layer(RateLimitLayer::new(fast_limiter()))
                .layer(RetryLayer::with_classifier(
                    policy.clone(),
                    HttpClassifier::new(),
                ))
                .layer(ConcurrencyLimitLayer::new(64).expect("config"))
                .service(inner());
            run(&rt, svc, n)
        })
    });
    g.bench_function("stack/tower", |b| {
        b.iter_custom(|n| {
            rt.block_on(async {
                let svc = tower::ServiceBuilder::new()
                    .layer(tower::timeout::TimeoutLayer::new(long))
                    .layer(tower::limit::RateLimitLayer::new(
                        1_000_000,
                        Duration::from_millis(1),
                    ))
                    .layer(tower::retry::RetryLayer::new(Retry5xx(3)))
                    .layer(tower::limit::ConcurrencyLimitLayer::new(64))
                    .service(inner());
                run_in(svc, n).await
            })
        })
    });
    g.finish();
}

/// As `run`, inside a runtime already entered (tower's rate limit makes its timer at
/// construction).
async fn run_in<S>(mut svc: S, iters: u64) -> Duration
where
    S: Service<u32, Response = Resp>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for _ in 0..iters * CALLS {
        let r = svc.ready().await.expect("ready").call(1).await;
        black_box(r.is_ok());
    }
    start.elapsed()
}

criterion_group!(benches, bench);
criterion_main!(benches);
