//! Behavioural tests of `corral::retry` (paused clock).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::retry::{Decision, GiveUp, RetryBudget, RetryPolicy};
use tokio::time::Instant;

/// Runs an always-failing op and returns the instants of its attempts.
async fn attempt_times(policy: &RetryPolicy, decision: Decision) -> (Vec<Duration>, GiveUp) {
    let start = Instant::now();
    let times = Arc::new(Mutex::new(Vec::new()));
    let t = times.clone();
    let err = policy
        .retry(
            move |_| {
                t.lock().unwrap().push(start.elapsed());
                async { Err::<(), _>("fail") }
            },
            move |_| decision,
        )
        .await
        .unwrap_err();
    let times = times.lock().unwrap().clone();
    assert_eq!(err.attempts as usize, times.len());
    (times, err.reason)
}

#[tokio::test(start_paused = true)]
async fn delays_follow_the_exponential_schedule_within_jitter_bounds() {
    let exact = RetryPolicy::builder()
        .max_attempts(6)
        .base_delay(Duration::from_millis(100))
        .max_delay(Duration::from_millis(1000))
        .jitter(false)
        .build()
        .unwrap();
    let (times, reason) = attempt_times(&exact, Decision::Retry).await;
    let ms: Vec<u128> = times.iter().map(|d| d.as_millis()).collect();
    assert_eq!(
        ms,
        vec![0, 100, 300, 700, 1500, 2500],
        "100, 200, 400, 800, then capped at 1000"
    );
    assert_eq!(reason, GiveUp::MaxAttempts);

    let jittered = RetryPolicy::builder()
        .max_attempts(6)
        .base_delay(Duration::from_millis(100))
        .max_delay(Duration::from_millis(1000))
        .build()
        .unwrap();
    let mut spread = std::collections::HashSet::new();
    for _ in 0..50 {
        let (times, _) = attempt_times(&jittered, Decision::Retry).await;
        for (n, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(
                gap <= jittered.delay_cap(n as u32 + 1),
                "retry {} waited {gap:?}",
                n + 1
            );
            spread.insert(gap.as_millis());
        }
    }
    assert!(
        spread.len() > 20,
        "jitter does not spread the waits: {spread:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_exactly() {
    let policy = RetryPolicy::builder().max_attempts(3).build().unwrap();
    let (times, _) = attempt_times(&policy, Decision::RetryAfter(Duration::from_secs(7))).await;
    assert_eq!(
        times,
        vec![
            Duration::ZERO,
            Duration::from_secs(7),
            Duration::from_secs(14)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_and_elapsed_caps_stop_retrying() {
    let policy = RetryPolicy::builder().max_attempts(10).build().unwrap();
    let (times, reason) = attempt_times(&policy, Decision::Stop).await;
    assert_eq!((times.len(), reason), (1, GiveUp::Permanent));

    let policy = RetryPolicy::builder()
        .max_attempts(100)
        .base_delay(Duration::from_secs(1))
        .jitter(false)
        .max_elapsed(Duration::from_secs(10))
        .build()
        .unwrap();
    let (times, reason) = attempt_times(&policy, Decision::Retry).await;
    assert_eq!(reason, GiveUp::MaxElapsed);
    assert_eq!(
        times.last().copied(),
        Some(Duration::from_secs(7)),
        "1+2+4 = 7; +8 would pass 10"
    );
}

#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_across_operations() {
    let budget = RetryBudget::new(0.1, 3).unwrap();
    let policy = RetryPolicy::builder()
        .max_attempts(5)
        .base_delay(Duration::from_millis(1))
        .budget(budget.clone())
        .build()
        .unwrap();
    let mut attempts = 0;
    let mut by_budget = 0;
    for _ in 0..200 {
        let (times, reason) = attempt_times(&policy, Decision::Retry).await;
        attempts += times.len();
        by_budget += usize::from(reason == GiveUp::Budget);
    }
    let retries = attempts - 200;
    assert!(
        retries <= 3 + 20,
        "retries {retries} exceed reserve + 10% of 200"
    );
    assert!(
        retries >= 20,
        "the budget should still allow its share: {retries}"
    );
    assert!(by_budget > 150);
}

#[test]
fn bad_configuration_is_refused() {
    let e = RetryPolicy::builder().max_attempts(0).build().unwrap_err();
    assert!(e.to_string().contains("at least 1"), "{e}");
    let e = RetryPolicy::builder()
        .base_delay(Duration::from_secs(2))
        .max_delay(Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("shorter than base_delay"), "{e}");
    assert!(RetryBudget::new(1.5, 1).is_err());
    assert!(RetryBudget::new(f64::NAN, 1).is_err());
    assert!(RetryBudget::new(0.0, 0).is_err());
}
