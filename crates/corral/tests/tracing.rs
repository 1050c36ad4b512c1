//! The `tracing` feature: components report what they do as events. (`cargo test --workspace`
//! builds corral with the feature, because the CLI turns it on.)
#![cfg(feature = "tracing")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::breaker::CircuitBreaker;
use corral::limit::{Rate, RateLimiter};
use corral::retry::{Decision, RetryPolicy};
use corral::shutdown::Shutdown;

/// A writer into a shared buffer, for the subscriber.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn components_report_retries_waits_transitions_and_stragglers() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let policy = RetryPolicy::builder()
        .max_attempts(2)
        .jitter(false)
        .build()
        .unwrap();
    let _ = policy
        .retry(|_| async { Err::<(), _>("down") }, |_| Decision::Retry)
        .await;

    let limiter = RateLimiter::builder()
        .rate(Rate::per_second(10))
        .build()
        .unwrap();
    limiter.until_ready().await;
    limiter.until_ready().await;

    let breaker = CircuitBreaker::builder().min_calls(1).build().unwrap();
    let _ = breaker.call(async { Err::<(), _>("x") }).await;

    let shutdown = Shutdown::new();
    // A tracked task runs in a span named after it: its events say where they came from.
    let p = policy.clone();
    shutdown
        .spawn("fetcher", async move {
            let _ = p
                .retry(|_| async { Err::<(), _>("down") }, |_| Decision::Retry)
                .await;
        })
        .await
        .unwrap();
    shutdown.spawn("stubborn", tokio::time::sleep(Duration::from_secs(3600)));
    shutdown.shutdown(Duration::from_secs(1)).await;

    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "corral::retry: retrying after a failed attempt attempt=1 delay=100ms",
        "giving up retrying attempts=2 reason=attempts exhausted",
        "corral::limit::gcra: rate limit: waiting for a cell wait=100ms",
        "corral::breaker: circuit breaker state changed from=Closed to=Open",
        "shutdown: task did not finish in time; aborted task=stubborn",
        "task{name=fetcher}: corral::retry: retrying after a failed attempt",
    ] {
        assert!(log.contains(expected), "missing {expected:?} in:\n{log}");
    }
}
