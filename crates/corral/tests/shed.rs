//! The limit layers' modes: wait, wait at most, reject (paused clock).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::classify::HttpClassifier;
use corral::limit::{
    AtCapacity, ConcurrencyLimitLayer, KeyedConcurrency, NotUntil, OnLimit, Rate, RateLimitLayer,
    RateLimiter,
};
use corral::retry::{RetryLayer, RetryPolicy};
use corral::BoxError;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};

fn echo() -> impl Service<
    &'static str,
    Response = &'static str,
    Error = BoxError,
    Future = std::future::Ready<Result<&'static str, BoxError>>,
> + Clone {
    tower::service_fn(|r: &'static str| std::future::ready(Ok::<_, BoxError>(r)))
}

fn per_second(n: u64) -> RateLimiter {
    RateLimiter::builder()
        .rate(Rate::per_second(n))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_global_limit_waits_in_poll_ready() {
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(per_second(10)))
        .service(echo());
    let start = Instant::now();
    svc.ready().await.unwrap().call("a").await.unwrap();
    // The next cell is 100 ms away: the service says it is not ready.
    let ready = futures::poll!(Box::pin(svc.ready()));
    assert!(ready.is_pending(), "poll_ready reports the limit");
    for _ in 0..10 {
        svc.ready().await.unwrap().call("a").await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn waiting_at_most_sheds_what_would_wait_longer() {
    let limiter = per_second(1);
    let mut short = ServiceBuilder::new()
        .layer(
            RateLimitLayer::new(limiter.clone())
                .on_limit(OnLimit::WaitAtMost(Duration::from_millis(500))),
        )
        .service(echo());
    let mut long = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter).on_limit(OnLimit::WaitAtMost(Duration::from_secs(2))))
        .service(echo());
    let start = Instant::now();
    short.ready().await.unwrap().call("first").await.unwrap();
    let shed = short
        .ready()
        .await
        .unwrap()
        .call("second")
        .await
        .unwrap_err();
    let refused = shed.downcast_ref::<NotUntil>().expect("a typed refusal");
    assert_eq!(
        refused.0,
        start + Duration::from_secs(1),
        "says when it could pass"
    );
    assert_eq!(start.elapsed(), Duration::ZERO, "refused at once");
    // The refusal took nothing: a caller willing to wait 2 s gets the cell at 1 s.
    long.ready().await.unwrap().call("third").await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_keyed_limit_rejects_per_key_and_reports_a_pause() {
    let limiter = RateLimiter::builder()
        .rate(Rate::per_second(1))
        .build_keyed::<&'static str>()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(
            RateLimitLayer::keyed(limiter.clone(), |host: &&'static str| *host)
                .on_limit(OnLimit::Reject),
        )
        .service(echo());
    svc.ready().await.unwrap().call("a").await.unwrap();
    assert!(svc
        .ready()
        .await
        .unwrap()
        .call("a")
        .await
        .unwrap_err()
        .is::<NotUntil>());
    svc.ready().await.unwrap().call("b").await.unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    limiter.pause_until(&"c", until);
    let err = svc.ready().await.unwrap().call("c").await.unwrap_err();
    assert_eq!(err.downcast_ref::<NotUntil>(), Some(&NotUntil(until)));
}

#[tokio::test(start_paused = true)]
async fn a_shed_call_is_retried_when_the_limit_allows() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let counted = tower::service_fn(move |_: ()| {
        c.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, BoxError>(http::Response::new(())))
    });
    let mut svc = ServiceBuilder::new()
        .layer(RetryLayer::with_classifier(
            RetryPolicy::builder().max_attempts(3).build().unwrap(),
            HttpClassifier::new(),
        ))
        .layer(RateLimitLayer::new(per_second(2)).on_limit(OnLimit::Reject))
        .service(counted);
    let start = Instant::now();
    for _ in 0..3 {
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "the 2nd and 3rd waited for their cell"
    );
}

/// A service that takes a second and records the most calls it ever had in flight.
fn slow(
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
) -> impl Service<
    u32,
    Response = (),
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<(), BoxError>> + Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |_: u32| {
        let (in_flight, peak) = (in_flight.clone(), peak.clone());
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(1)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_global_concurrency_limit_waits_and_never_exceeds_its_limit() {
    let peak = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLimitLayer::new(2).unwrap())
        .service(slow(Arc::default(), peak.clone()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move { svc.ready().await.unwrap().call(0).await.unwrap() })
        })
        .collect();
    tokio::task::yield_now().await;
    // Both slots are taken: a fresh clone reports it is not ready.
    let mut probe = svc.clone();
    assert!(futures::poll!(Box::pin(probe.ready())).is_pending());
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "5 calls, 2 at a time, 1 s each"
    );
    assert!(ConcurrencyLimitLayer::<()>::new(0).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_keyed_concurrency_limit_sheds_or_waits_a_bounded_time_per_key() {
    let peak = Arc::new(AtomicUsize::new(0));
    let per_key = KeyedConcurrency::<u32>::new(1).unwrap();
    let layer = |mode| ConcurrencyLimitLayer::keyed(per_key.clone(), |k: &u32| *k).on_limit(mode);
    let mut reject = ServiceBuilder::new()
        .layer(layer(OnLimit::Reject))
        .service(slow(Arc::default(), peak.clone()));
    let mut wait_short = ServiceBuilder::new()
        .layer(layer(OnLimit::WaitAtMost(Duration::from_millis(500))))
        .service(slow(Arc::default(), peak.clone()));
    let mut wait_long = ServiceBuilder::new()
        .layer(layer(OnLimit::WaitAtMost(Duration::from_secs(2))))
        .service(slow(Arc::default(), peak.clone()));
    let start = Instant::now();
    let busy = tokio::spawn(reject.ready().await.unwrap().call(1));
    tokio::task::yield_now().await;
    let err = reject.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err.downcast_ref::<AtCapacity>().map(|e| e.limit()), Some(1));
    let err = wait_short.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<AtCapacity>());
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(500),
        "gave up after its wait"
    );
    let mut other = ServiceBuilder::new()
        .layer(layer(OnLimit::Reject))
        .service(slow(Arc::default(), Arc::default()));
    other.ready().await.unwrap().call(2).await.unwrap(); // another key is free
                                                         // "a" frees up at 1 s; a 2 s wait from 1.5 s gets it then, and runs to 2.5 s.
    wait_long.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(2500));
    busy.await.unwrap().unwrap();
    assert_eq!(peak.load(Ordering::SeqCst), 1);
    assert!(per_key.is_empty(), "idle keys are forgotten");
}
