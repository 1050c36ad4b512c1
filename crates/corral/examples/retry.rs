//! Pattern: retry (book ch. 9) — exponential backoff with full jitter, a classifier for
//! permanent errors, Retry-After honoured, and a budget shared by all operations.
//!
//! Run: `cargo run -p corral --example retry`

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use corral::retry::{Decision, RetryBudget, RetryPolicy};

#[derive(Debug)]
enum Error {
    Unavailable,
    RetryAfter(Duration),
    NotFound,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let policy = RetryPolicy::builder()
        .max_attempts(5)
        .base_delay(Duration::from_millis(20))
        .budget(RetryBudget::new(0.2, 5)?)
        .build()?;
    let classify = |e: &Error| match e {
        Error::Unavailable => Decision::Retry,
        Error::RetryAfter(d) => Decision::RetryAfter(*d),
        Error::NotFound => Decision::Stop,
    };
    let calls = AtomicU32::new(0);
    let flaky = policy
        .retry(
            |attempt| {
                calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    match attempt {
                        1 => Err(Error::Unavailable),
                        2 => Err(Error::RetryAfter(Duration::from_millis(50))),
                        _ => Ok("finally"),
                    }
                }
            },
            classify,
        )
        .await;
    println!(
        "flaky service: {flaky:?} after {} calls",
        calls.load(Ordering::Relaxed)
    );
    let missing = policy
        .retry(|_| async { Err::<(), _>(Error::NotFound) }, classify)
        .await;
    match missing {
        Err(e) => println!(
            "missing resource: gave up after {} attempt(s): {} ({:?})",
            e.attempts, e.reason, e.error
        ),
        Ok(()) => println!("unexpected success"),
    }
    Ok(())
}
