//! Behavioural tests of `corral::hedge` (paused clock).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::hedge::HedgeLayer;
use corral::BoxError;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

/// Counts calls started, finished and dropped unfinished.
#[derive(Default)]
struct Counts {
    started: AtomicUsize,
    finished: AtomicUsize,
    cancelled: AtomicUsize,
}

struct Guard(Arc<Counts>, bool);
impl Drop for Guard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A service whose `n`-th call (0-based) takes `plan(n).0`, then succeeds if `plan(n).1`.
fn service(
    counts: Arc<Counts>,
    plan: impl Fn(usize) -> (Duration, bool) + Send + Sync + 'static,
) -> impl Service<
    (),
    Response = usize,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<usize, BoxError>> + Send,
> + Clone
       + Send
       + 'static {
    let plan = Arc::new(plan);
    tower::service_fn(move |()| {
        let n = counts.started.fetch_add(1, Ordering::SeqCst);
        let (counts, plan) = (counts.clone(), plan.clone());
        async move {
            let mut guard = Guard(counts.clone(), false);
            let (took, ok) = plan(n);
            tokio::time::sleep(took).await;
            guard.1 = true;
            counts.finished.fetch_add(1, Ordering::SeqCst);
            if ok {
                Ok(n)
            } else {
                Err(format!("call {n} failed").into())
            }
        }
    })
}

fn layer() -> HedgeLayer {
    HedgeLayer::builder()
        .percentile(0.9)
        .min_samples(20)
        .period(Duration::from_secs(1))
        .build()
        .unwrap()
}

const FAST: Duration = Duration::from_millis(10);

/// 30 calls of 10 ms, then the period turns: the threshold is the p90 of those.
async fn warm_up(svc: &mut (impl Service<(), Response = usize, Error = BoxError> + Clone)) {
    for _ in 0..30 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_is_hedged_after_the_percentile_and_the_loser_is_cancelled() {
    let counts = Arc::new(Counts::default());
    let hedge = layer();
    // Call 30 is the unlucky one (10 s); its hedge, call 31, takes 10 ms.
    let mut svc =
        ServiceBuilder::new()
            .layer(hedge.clone())
            .service(service(counts.clone(), |n| {
                (
                    if n == 30 {
                        Duration::from_secs(10)
                    } else {
                        FAST
                    },
                    true,
                )
            }));
    assert_eq!(hedge.threshold(), None, "nothing known yet");
    warm_up(&mut svc).await;
    let threshold = hedge.threshold().expect("30 samples in the last period");
    assert!(threshold >= FAST && threshold < FAST * 2, "{threshold:?}");
    let start = Instant::now();
    let winner = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(winner, 31, "the hedge answered");
    // The timer fires on the next millisecond after the threshold.
    let took = start.elapsed();
    assert!(
        took >= threshold + FAST && took <= threshold + FAST + Duration::from_millis(1),
        "{took:?}"
    );
    tokio::task::yield_now().await;
    assert_eq!(
        counts.cancelled.load(Ordering::SeqCst),
        1,
        "the slow call was dropped"
    );
    assert_eq!(counts.started.load(Ordering::SeqCst), 32);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_hedged_before_enough_latencies_are_known_or_when_calls_are_fast() {
    let counts = Arc::new(Counts::default());
    let mut svc = ServiceBuilder::new()
        .layer(layer())
        .service(service(counts.clone(), |n| {
            (if n == 5 { Duration::from_secs(1) } else { FAST }, true)
        }));
    for _ in 0..10 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(
        counts.started.load(Ordering::SeqCst),
        10,
        "the slow 6th call was not hedged"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Fewer than min_samples in the last period: still no threshold.
    let start = Instant::now();
    svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(start.elapsed(), FAST);
    assert_eq!(counts.started.load(Ordering::SeqCst), 11);
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_hedges() {
    // Every first call is slow (1 s) and every hedge fast (10 ms): the hedges win, their
    // latency keeps the threshold low, and only the budget stops a hedge per call.
    let started = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let warm = Arc::new(Mutex::new(true));
    let (st, inf, w) = (started.clone(), in_flight.clone(), warm.clone());
    let svc = tower::service_fn(move |()| {
        st.fetch_add(1, Ordering::SeqCst);
        let hedge = inf.fetch_add(1, Ordering::SeqCst) > 0;
        let took = if *w.lock().unwrap() || hedge {
            FAST
        } else {
            Duration::from_secs(1)
        };
        // Leaves the count when the call ends, cancelled or not.
        struct Leave(Arc<AtomicUsize>);
        impl Drop for Leave {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let leave = Leave(inf.clone());
        async move {
            tokio::time::sleep(took).await;
            drop(leave);
            Ok::<_, BoxError>(0usize)
        }
    });
    let mut svc = ServiceBuilder::new()
        .layer(
            HedgeLayer::builder()
                .percentile(0.9)
                .min_samples(20)
                .period(Duration::from_secs(3600))
                .max_ratio(0.1)
                .build()
                .unwrap(),
        )
        .service(svc);
    // A period of an hour: the slow calls the budget refuses to hedge do not move the
    // threshold within this test.
    warm_up(&mut svc).await;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    *warm.lock().unwrap() = false;
    let before = started.load(Ordering::SeqCst);
    for _ in 0..200 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    let hedges = started.load(Ordering::SeqCst) - before - 200;
    // The budget starts full (its reserve of 10, also its cap) and earns 0.1 per call: 10 +
    // 200 × 0.1 = 30 hedges at most, where every call would have been hedged.
    assert!(
        (25..=30).contains(&hedges),
        "{hedges} hedges for 200 slow calls"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_waits_for_its_hedge_and_two_failures_fail() {
    let counts = Arc::new(Counts::default());
    let second = Duration::from_secs(1);
    // Call 30 fails after 1 s, its hedge 31 succeeds after 2 s: the hedge's answer stands.
    // Call 32 fails after 1 s, its hedge 33 fails after 2 s: the last error stands.
    // Call 34 fails after 5 ms, before the threshold: no hedge.
    let mut svc = ServiceBuilder::new()
        .layer(layer())
        .service(service(counts.clone(), move |n| match n {
            30 | 32 => (second, false),
            31 => (second * 2, true),
            33 => (second * 2, false),
            34 => (Duration::from_millis(5), false),
            _ => (FAST, true),
        }));
    warm_up(&mut svc).await;
    assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 31);
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(err.to_string(), "call 33 failed");
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(err.to_string(), "call 34 failed");
    assert_eq!(counts.started.load(Ordering::SeqCst), 35);
    assert_eq!(counts.cancelled.load(Ordering::SeqCst), 0);
}
