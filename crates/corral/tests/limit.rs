//! Behavioural tests of `corral::limit` (paused clock).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::limit::{KeyedConcurrency, Rate, RateLimiter};
use tokio::time::Instant;

/// Largest number of passes inside any half-open window `[a, a + w)`.
fn max_in_window(times: &[Duration], w: Duration) -> usize {
    let mut best = 0;
    for (i, start) in times.iter().enumerate() {
        let n = times[i..].iter().take_while(|t| **t < *start + w).count();
        best = best.max(n);
    }
    best
}

#[tokio::test(start_paused = true)]
async fn lets_exactly_rate_times_time_plus_burst_through_over_60_seconds() {
    let limiter = RateLimiter::builder()
        .rate(Rate::per_second(10))
        .burst(5)
        .build()
        .unwrap();
    let start = Instant::now();
    let passes = Arc::new(Mutex::new(Vec::new()));
    // 20 competing tasks hammering the limiter for a simulated minute.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (limiter, passes) = (limiter.clone(), passes.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                limiter.until_ready().await;
                let t = start.elapsed();
                if t > Duration::from_secs(60) {
                    return;
                }
                passes.lock().unwrap().push(t);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut times = passes.lock().unwrap().clone();
    times.sort();
    assert_eq!(times.len(), 5 + 600, "burst + rate × 60 s");
    assert_eq!(
        times.iter().filter(|t| t.is_zero()).count(),
        5,
        "the burst passes at once"
    );
    // Never more than burst + rate × w in any window of length w.
    assert!(max_in_window(&times, Duration::from_secs(1)) <= 5 + 10);
    // After the burst, cells are exactly T = 100 ms apart.
    for pair in times[5..].windows(2) {
        assert_eq!(pair[1] - pair[0], Duration::from_millis(100));
    }
}

#[tokio::test(start_paused = true)]
async fn check_says_when_the_next_cell_is_due() {
    let limiter = RateLimiter::builder()
        .rate("4/s".parse().unwrap())
        .build()
        .unwrap();
    let now = Instant::now();
    assert!(limiter.check().is_ok());
    let not_until = limiter.check().unwrap_err();
    assert_eq!(not_until.wait_from(now), Duration::from_millis(250));
    tokio::time::sleep(Duration::from_millis(249)).await;
    assert!(limiter.check().is_err());
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(limiter.check().is_ok());
}

#[tokio::test(start_paused = true)]
async fn keyed_limiters_are_independent_and_pause_only_their_key() {
    let limiter = RateLimiter::builder()
        .rate(Rate::per_second(1))
        .burst(2)
        .build_keyed::<&str>()
        .unwrap();
    assert!(limiter.check(&"a").is_ok());
    assert!(limiter.check(&"a").is_ok());
    assert!(limiter.check(&"a").is_err());
    assert!(limiter.check(&"b").is_ok(), "b must not share a's state");

    let start = Instant::now();
    limiter.pause_until(&"c", start + Duration::from_secs(30));
    // A shorter pause never shortens a longer one.
    limiter.pause_until(&"c", start + Duration::from_secs(5));
    limiter.until_ready(&"b").await;
    assert_eq!(start.elapsed(), Duration::ZERO, "b is not paused");
    limiter.until_ready(&"c").await;
    assert_eq!(start.elapsed(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted() {
    let limiter = RateLimiter::builder()
        .rate(Rate::per_second(10))
        .sweep_threshold(8)
        .build_keyed::<u32>()
        .unwrap();
    for k in 0..1000 {
        limiter.check(&k).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await; // each key recovers
    }
    assert!(
        limiter.len() <= 16,
        "memory grew with keys ever seen: {}",
        limiter.len()
    );
    // A key that is not idle survives a sweep with its state intact.
    limiter.check(&5000).unwrap();
    limiter.retain_recent();
    assert!(limiter.check(&5000).is_err());
}

#[test]
fn bad_configuration_is_refused() {
    let e = RateLimiter::builder()
        .rate(Rate::per_second(0))
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("at least 1 per period"), "{e}");
    let e = RateLimiter::builder()
        .rate(Rate::per_second(5))
        .burst(0)
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("burst"), "{e}");
    let e = RateLimiter::builder().build().unwrap_err();
    assert!(e.to_string().contains("rate is required"), "{e}");
    for bad in ["", "5", "x/s", "5/fortnight", "0/s", "5/0s"] {
        assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
    }
    assert_eq!("3000/min".parse::<Rate>().unwrap(), Rate::per_minute(3000));
    assert_eq!(
        "10/100ms".parse::<Rate>().unwrap(),
        Rate::new(10, Duration::from_millis(100))
    );
    assert_eq!(
        KeyedConcurrency::<u8>::new(0).unwrap_err().component(),
        "limit"
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_concurrency_caps_each_key_and_forgets_idle_ones() {
    let limit = KeyedConcurrency::<u8>::new(3).unwrap();
    let now = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let max = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let mut tasks = Vec::new();
    for i in 0..60u64 {
        let key = (i % 2) as u8;
        let (limit, now, max) = (
            limit.clone(),
            now[key as usize].clone(),
            max[key as usize].clone(),
        );
        tasks.push(tokio::spawn(async move {
            let _p = limit.acquire(key).await;
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1 + i % 7)).await;
            now.fetch_sub(1, Ordering::SeqCst);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(max[0].load(Ordering::SeqCst), 3);
    assert_eq!(max[1].load(Ordering::SeqCst), 3);
    assert!(limit.is_empty(), "idle keys kept: {}", limit.len());
}

#[tokio::test(start_paused = true)]
async fn weighted_calls_take_their_cost_and_the_sum_holds_the_rate() {
    // 100 tokens a second, burst 100; calls of 30 tokens each for a simulated 10 s.
    let tokens = RateLimiter::builder()
        .rate(Rate::per_second(100))
        .burst(100)
        .build()
        .unwrap();
    let start = Instant::now();
    let mut spent = 0u64;
    while start.elapsed() < Duration::from_secs(10) {
        tokens.until_ready_n(30).await;
        spent += 30;
    }
    // 10 s at 100/s plus the burst, within one call's cost.
    assert!((1080..=1110).contains(&spent), "{spent} tokens in 10 s");
    // More than the burst at once is never there now, but is waited for.
    assert!(tokens.check_n(101).is_err());
    let before = Instant::now();
    tokens.until_ready_n(150).await;
    assert!(
        before.elapsed() >= Duration::from_millis(500),
        "{:?}",
        before.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn settling_debits_and_credits_cells_already_taken() {
    let tokens = RateLimiter::builder()
        .rate(Rate::per_second(10))
        .burst(10)
        .build()
        .unwrap();
    tokens.check_n(5).unwrap();
    tokens.settle(5); // used 10, not 5
    assert!(tokens.check_n(1).is_err(), "the burst is spent");
    tokens.settle(-3); // 7 after all
    assert!(tokens.check_n(3).is_ok() && tokens.check_n(1).is_err());
    // A credit never gives back more than is scheduled ahead: no hoarding of idle time.
    tokio::time::advance(Duration::from_secs(5)).await;
    tokens.settle(-100);
    assert!(tokens.check_n(10).is_ok() && tokens.check_n(1).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_rate_changed_while_running_spaces_the_next_calls_anew() {
    let limiter = RateLimiter::builder()
        .rate(Rate::per_second(10))
        .build()
        .unwrap();
    let start = Instant::now();
    for _ in 0..10 {
        limiter.until_ready().await;
    }
    let at_10 = start.elapsed();
    assert!(at_10 >= Duration::from_millis(900) && at_10 < Duration::from_secs(1));
    limiter.set_rate(Rate::per_second(100)).unwrap();
    assert!((limiter.per_second() - 100.0).abs() < 1e-6);
    let mid = Instant::now();
    for _ in 0..100 {
        limiter.until_ready().await;
    }
    let took = mid.elapsed();
    assert!(
        took >= Duration::from_millis(980) && took <= Duration::from_millis(1100),
        "{took:?} for 100 calls at 100/s"
    );
    assert!(limiter
        .set_rate(Rate::new(0, Duration::from_secs(1)))
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn a_keyed_rate_changed_while_running_reaches_old_and_new_keys() {
    let limiter = RateLimiter::builder()
        .rate(Rate::per_second(10))
        .build_keyed::<&str>()
        .unwrap();
    limiter.until_ready(&"old").await;
    limiter.set_rate(Rate::per_second(100)).unwrap();
    assert!((limiter.per_second() - 100.0).abs() < 1e-6);
    // "old"'s next cell keeps its place (100 ms); after it, cells are 10 ms apart. "new" is
    // spaced at the new rate from the start.
    for key in ["old", "new"] {
        limiter.until_ready(&key).await;
        let start = Instant::now();
        for _ in 0..100 {
            limiter.until_ready(&key).await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(1000), "{key}");
    }
    assert!(limiter
        .set_rate(Rate::new(0, Duration::from_secs(1)))
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn waiting_within_a_budget_takes_a_cell_or_refuses_at_once_taking_nothing() {
    let limiter = RateLimiter::builder()
        .rate(Rate::per_second(10))
        .burst(2)
        .build()
        .unwrap();
    let start = Instant::now();
    let budget = Duration::from_millis(150);
    assert!(limiter.until_ready_within(budget).await.is_ok());
    assert!(limiter.until_ready_within(budget).await.is_ok());
    assert_eq!(start.elapsed(), Duration::ZERO, "the burst passes at once");
    // Next cell in 100 ms: within the budget, so it waits for it.
    assert!(limiter.until_ready_within(budget).await.is_ok());
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    // The one after is 100 ms away too; with a 50 ms budget it is refused without waiting,
    // and nothing is taken: the cell is still there 100 ms later.
    let refused = limiter
        .until_ready_within(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(refused.0, start + Duration::from_millis(200));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(limiter.check().is_ok());
    // A pause longer than the budget refuses; one within it is waited out.
    limiter.pause_until(Instant::now() + Duration::from_secs(2));
    let refused = limiter.until_ready_within(budget).await.unwrap_err();
    assert_eq!(refused.0, start + Duration::from_millis(2200));
    assert!(limiter
        .until_ready_within(Duration::from_secs(3))
        .await
        .is_ok());
    assert_eq!(start.elapsed(), Duration::from_millis(2200));
}
