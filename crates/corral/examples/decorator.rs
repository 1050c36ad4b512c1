//! Pattern: decorator (book ch. 9) — add timeout, retry and a circuit breaker around a service
//! without touching it, as stacked `tower` layers.
//!
//! Run: `cargo run -p corral --example decorator`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::breaker::{BreakerLayer, CircuitBreaker};
use corral::retry::{classify_transient, RetryLayer, RetryPolicy};
use corral::timeout::TimeoutLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), corral::BoxError> {
    // The plain service: the first two calls hang, then it answers.
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let plain = tower::service_fn(move |name: &'static str| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                std::future::pending::<()>().await;
            }
            Ok::<_, corral::BoxError>(format!("hello, {name}"))
        }
    });
    // Decorated: retry timed-out attempts, each attempt bounded to 50 ms, behind a breaker.
    let mut decorated = ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryPolicy::builder()
                .max_attempts(4)
                .base_delay(Duration::from_millis(5))
                .build()?,
            classify_transient,
        ))
        .layer(BreakerLayer::new(CircuitBreaker::builder().build()?))
        .layer(TimeoutLayer::new(Duration::from_millis(50)))
        .service(plain);
    let answer = decorated.ready().await?.call("decorator").await?;
    println!(
        "{answer} (after {} calls to the plain service)",
        calls.load(Ordering::SeqCst)
    );
    Ok(())
}
