//! Behavioural tests of `corral::limit::AdaptiveConcurrency` and its layer (paused clock).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::classify::HttpClassifier;
use corral::limit::{AdaptiveConcurrency, AdaptiveConcurrencyLayer, Aimd, Gradient, Sample};
use corral::BoxError;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn aimd_cuts_on_drops_and_creeps_up_when_the_limit_is_used() {
    let limit = AdaptiveConcurrency::builder()
        .initial(10)
        .algorithm(Aimd::new())
        .build()
        .unwrap();
    for _ in 0..5 {
        limit.acquire().await.dropped();
    }
    assert_eq!(limit.limit(), 6, "10 × 0.9⁵ = 5.9");
    // Successes one at a time use 1 of 6 slots: nothing is learned.
    for _ in 0..50 {
        limit.acquire().await.success();
    }
    assert_eq!(limit.limit(), 6);
    // With the limit in use (6 in flight), each success adds 1/limit: one slot per round.
    let permits: Vec<_> = (0..6).map(|_| limit.try_acquire().unwrap()).collect();
    assert!(limit.try_acquire().is_none(), "6 in flight is the limit");
    for p in permits {
        p.success();
    }
    assert_eq!(limit.limit(), 7);
    assert!(limit.try_acquire().is_some());
}

#[tokio::test(start_paused = true)]
async fn a_lower_limit_takes_effect_as_calls_finish_without_cancelling_any() {
    let limit = AdaptiveConcurrency::builder()
        .initial(4)
        .algorithm(Aimd::new().backoff(0.5))
        .build()
        .unwrap();
    let mut permits: Vec<_> = (0..4).map(|_| limit.try_acquire().unwrap()).collect();
    permits.pop().unwrap().dropped();
    assert_eq!(limit.limit(), 2);
    assert_eq!(limit.in_flight(), 3, "the calls already running go on");
    assert!(limit.try_acquire().is_none());
    drop(permits.pop()); // a cancelled call: frees its slot, moves nothing
    assert!(limit.try_acquire().is_none(), "2 in flight, limit 2");
    drop(permits.pop());
    let p = limit.try_acquire().expect("1 in flight: one slot is free");
    assert!(limit.try_acquire().is_none());
    drop((p, permits));
    assert_eq!(limit.limit(), 2);
    assert_eq!(limit.in_flight(), 0);
    // Growing again pays back nothing twice: exactly `limit` slots.
    let all: Vec<_> = std::iter::from_fn(|| limit.try_acquire())
        .take(10)
        .collect();
    assert_eq!(all.len(), 2);
}

/// Latency summed over the calls in the last 5 s, and their count.
type Latency = Arc<std::sync::Mutex<(Duration, u32)>>;

/// A simulated service with room for `capacity` calls: each takes 10 ms, and past capacity
/// calls queue, so latency grows with the excess; with `refuse`, calls past capacity fail at
/// once instead (a 503).
fn service(
    capacity: usize,
    refuse: bool,
    in_flight: Arc<AtomicUsize>,
    late: Latency,
) -> impl Service<
    (),
    Response = http::Response<()>,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<http::Response<()>, BoxError>> + Send,
> + Clone
       + Send
       + 'static {
    let start = Instant::now();
    tower::service_fn(move |()| {
        let (in_flight, late) = (in_flight.clone(), late.clone());
        async move {
            let t = Instant::now();
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            let status = if refuse && now > capacity {
                503
            } else {
                let queued = now.saturating_sub(capacity) as u32;
                tokio::time::sleep(Duration::from_millis(10) * (1 + queued)).await;
                200
            };
            in_flight.fetch_sub(1, Ordering::SeqCst);
            if start.elapsed() > Duration::from_secs(15) {
                let mut l = late.lock().unwrap();
                l.0 += t.elapsed();
                l.1 += 1;
            }
            Ok(http::Response::builder().status(status).body(())?)
        }
    })
}

/// 200 clients call in a loop for 20 s of paused time.
async fn drive(
    limit: &AdaptiveConcurrency,
    svc: impl Service<(), Response = http::Response<()>, Error = BoxError, Future = impl Send>
        + Clone
        + Send
        + 'static,
) {
    let layered = ServiceBuilder::new()
        .layer(AdaptiveConcurrencyLayer::with_classifier(
            limit.clone(),
            HttpClassifier::new(),
        ))
        .service(svc);
    let start = Instant::now();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let mut svc = layered.clone();
            tokio::spawn(async move {
                // Bounded by calls too: a refused call takes no time on the paused clock, so
                // a limit that never cut would otherwise spin here.
                for _ in 0..20_000 {
                    if start.elapsed() >= Duration::from_secs(20) {
                        break;
                    }
                    let _ = svc.ready().await.unwrap().call(()).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn mean(late: &Latency) -> Duration {
    let (sum, n) = *late.lock().unwrap();
    sum / n.max(1)
}

#[tokio::test(start_paused = true)]
async fn aimd_finds_a_service_that_refuses_past_its_capacity() {
    let limit = AdaptiveConcurrency::builder()
        .initial(5)
        .algorithm(Aimd::new())
        .build()
        .unwrap();
    drive(&limit, service(40, true, Arc::default(), Arc::default())).await;
    let found = limit.limit();
    assert!(
        (28..=48).contains(&found),
        "limit {found} for a capacity of 40"
    );
}

#[tokio::test(start_paused = true)]
async fn gradient_finds_a_service_that_queues_past_its_capacity() {
    let limit = AdaptiveConcurrency::builder()
        .initial(5)
        .algorithm(Gradient::new())
        .build()
        .unwrap();
    let late = Latency::default();
    drive(&limit, service(40, false, Arc::default(), late.clone())).await;
    let found = limit.limit();
    assert!(
        (20..=60).contains(&found),
        "limit {found} for a capacity of 40"
    );
    // Unlimited, 200 callers would queue 160 deep in the service: 1.61 s a call. The limit
    // keeps its queue short.
    let latency = mean(&late);
    assert!(latency < Duration::from_millis(50), "{latency:?}");
}

#[test]
fn the_gradient_moves_once_per_window_shrinks_when_latency_rises_and_ignores_an_idle_client() {
    let mut g = Gradient::new().smoothing(1.0).probe_every(1000);
    let s = |ms, in_flight| Sample {
        rtt: Duration::from_millis(ms),
        in_flight,
        dropped: false,
    };
    // One window is one limit's worth of samples: 99 samples move nothing, the 100th does.
    let mut limit = 100.0;
    for _ in 0..99 {
        assert_eq!(g.next(limit, &s(10, 100)), limit);
    }
    limit = g.next(limit, &s(10, 100));
    assert_eq!(
        limit, 110.0,
        "steady latency: the queue allowance √100 is added"
    );
    assert_eq!(g.no_load_rtt(), Some(Duration::from_millis(10)));
    // A window at 4× the no-load latency: the gradient 1.5 × 10 / 40 is clamped to 0.5.
    let mut next = limit;
    for _ in 0..110 {
        next = g.next(limit, &s(40, 110));
    }
    assert!((next - (55.0 + 110f64.sqrt())).abs() < 1e-9, "{next}");
    // A window whose calls never used half the limit says nothing.
    let mut idle = next;
    for _ in 0..(next.ceil() as usize) {
        idle = g.next(next, &s(40, 1));
    }
    assert_eq!(idle, next);
    assert!(AdaptiveConcurrency::builder()
        .algorithm(Gradient::new().tolerance(0.5))
        .build()
        .is_err());
    assert!(AdaptiveConcurrency::builder().initial(0).build().is_err());
    assert!(AdaptiveConcurrency::builder()
        .algorithm(Aimd::new().backoff(1.5))
        .build()
        .is_err());
}

#[test]
fn the_gradient_probes_by_halving_and_measuring_again() {
    let mut g = Gradient::new().probe_every(3);
    let window = |g: &mut Gradient, limit: f64, ms: u64| {
        let mut out = limit;
        for _ in 0..(limit.max(10.0).ceil() as usize) {
            out = g.next(
                limit,
                &Sample {
                    rtt: Duration::from_millis(ms),
                    in_flight: limit as usize,
                    dropped: false,
                },
            );
        }
        out
    };
    let a = window(&mut g, 20.0, 10);
    let b = window(&mut g, a, 30);
    assert!(b < a, "30 ms against a no-load of 10 ms shrinks it");
    let probed = window(&mut g, b, 30);
    assert_eq!(probed, b / 2.0, "the third window is a probe");
    assert_eq!(
        g.no_load_rtt(),
        None,
        "the no-load latency is measured anew"
    );
    window(&mut g, probed, 30);
    assert_eq!(g.no_load_rtt(), Some(Duration::from_millis(30)));
}
