//! Behavioural tests of `corral::breaker` (paused clock).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::breaker::{CircuitBreaker, State};

fn breaker(log: &Arc<Mutex<Vec<(State, State)>>>) -> CircuitBreaker {
    let log = log.clone();
    CircuitBreaker::builder()
        .failure_rate(0.5)
        .min_calls(10)
        .window(Duration::from_secs(10))
        .cool_down(Duration::from_secs(5))
        .half_open_probes(2)
        .on_state_change(move |c| log.lock().unwrap().push((c.from, c.to)))
        .build()
        .unwrap()
}

async fn outcome(b: &CircuitBreaker, ok: bool) -> bool {
    let r = b
        .call(async move {
            if ok {
                Ok(())
            } else {
                Err("x")
            }
        })
        .await;
    r.as_ref().is_err_and(|e| e.is_open())
}

#[tokio::test(start_paused = true)]
async fn opens_at_the_failure_rate_and_not_before_min_calls() {
    let log = Arc::default();
    let b = breaker(&log);
    for _ in 0..9 {
        assert!(!outcome(&b, false).await);
    }
    assert_eq!(b.state(), State::Closed, "9 failures < min_calls 10");
    assert!(!outcome(&b, false).await);
    assert_eq!(b.state(), State::Open);

    // A rate below the threshold keeps it closed, whatever the count of failures.
    let b = breaker(&Arc::default());
    for i in 0..100 {
        outcome(&b, i % 3 == 0).await; // ok one time in three: 67 % failures
    }
    assert_eq!(b.state(), State::Open, "67 % failures opens");
    let b = breaker(&Arc::default());
    for i in 0..100 {
        outcome(&b, i % 3 != 0).await; // 34 % failures
    }
    assert_eq!(b.state(), State::Closed, "34 % failures stays closed");
}

#[tokio::test(start_paused = true)]
async fn rejects_while_open_then_lets_only_k_probes_and_closes_on_success() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let b = breaker(&log);
    for _ in 0..10 {
        outcome(&b, false).await;
    }
    let ran = Arc::new(Mutex::new(0));
    let r = ran.clone();
    let rejected = b
        .call(async move {
            *r.lock().unwrap() += 1;
            Ok::<_, ()>(())
        })
        .await
        .unwrap_err();
    assert!(rejected.is_open());
    assert_eq!(*ran.lock().unwrap(), 0, "a rejected call must not run");

    tokio::time::sleep(Duration::from_millis(4999)).await;
    assert!(b.try_acquire().is_err(), "still cooling down");
    tokio::time::sleep(Duration::from_millis(1)).await;
    let p1 = b.try_acquire().expect("probe 1");
    let p2 = b.try_acquire().expect("probe 2");
    assert!(p1.is_probe() && p2.is_probe(), "half-open calls are probes");
    assert!(b.try_acquire().is_err(), "only 2 probes in half-open");
    p1.success();
    assert_eq!(b.state(), State::HalfOpen);
    assert!(
        b.try_acquire().is_err(),
        "1 ok + 1 in flight = all probes used"
    );
    p2.success();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        *log.lock().unwrap(),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    assert_eq!(b.stats().window_failed, 0, "closing starts a fresh window");
    assert!(!b.try_acquire().unwrap().is_probe(), "closed: no probe");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_and_a_dropped_probe_frees_its_slot() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let b = breaker(&log);
    for _ in 0..10 {
        outcome(&b, false).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    drop(p2); // cancelled call: neither success nor failure
    let p3 = b
        .try_acquire()
        .expect("the dropped probe's slot is free again");
    p1.failure();
    assert_eq!(b.state(), State::Open);
    p3.success(); // stale: from the previous half-open period
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.stats().openings, 2);
    assert_eq!(
        log.lock().unwrap().last(),
        Some(&(State::HalfOpen, State::Open))
    );
}

#[tokio::test(start_paused = true)]
async fn old_failures_roll_out_of_the_window() {
    let b = breaker(&Arc::default());
    for _ in 0..9 {
        outcome(&b, false).await;
    }
    tokio::time::sleep(Duration::from_secs(11)).await;
    outcome(&b, false).await;
    assert_eq!(
        b.state(),
        State::Closed,
        "the 9 old failures are outside the 10 s window"
    );
    assert_eq!(b.stats().window_failed, 1);
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_are_independent_and_report_their_key() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let keyed = CircuitBreaker::builder()
        .min_calls(2)
        .build_keyed::<String>()
        .unwrap()
        .on_state_change(move |k, c| l.lock().unwrap().push((k.clone(), c.to)));
    for _ in 0..2 {
        outcome(&keyed.get(&"down".into()), false).await;
    }
    assert_eq!(keyed.get(&"down".into()).state(), State::Open);
    assert_eq!(keyed.get(&"up".into()).state(), State::Closed);
    assert!(!outcome(&keyed.get(&"up".into()), true).await);
    assert_eq!(
        *log.lock().unwrap(),
        vec![("down".to_string(), State::Open)]
    );
}

#[test]
fn bad_configuration_is_refused() {
    let b = || CircuitBreaker::builder();
    for (e, what) in [
        (b().failure_rate(0.0).build().unwrap_err(), "failure_rate"),
        (b().failure_rate(1.5).build().unwrap_err(), "failure_rate"),
        (b().min_calls(0).build().unwrap_err(), "min_calls"),
        (
            b().half_open_probes(0).build().unwrap_err(),
            "half_open_probes",
        ),
        (
            b().window(Duration::from_secs(1))
                .cool_down(Duration::from_secs(5))
                .build()
                .unwrap_err(),
            "shorter than cool_down",
        ),
    ] {
        assert!(e.to_string().contains(what), "{e}");
    }
}

#[tokio::test(start_paused = true)]
async fn failure_says_whether_it_opened_the_breaker() {
    let b = breaker(&Arc::default());
    // Permits taken while closed; the 10th failure reaches min_calls at 100 % and opens.
    let permits: Vec<_> = (0..12).map(|_| b.try_acquire().unwrap()).collect();
    let opened: Vec<bool> = permits.into_iter().map(|p| p.failure()).collect();
    assert_eq!(opened.iter().filter(|o| **o).count(), 1, "{opened:?}");
    assert!(opened[9], "the 10th failure opened it: {opened:?}");
    // A failed probe opens it again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert!(probe.failure());
    assert_eq!(b.stats().openings, 2);
}

/// A breaker that is closed with an empty window, and not held, is forgotten; one with recent
/// failures, one open, or one held by a caller is kept with its state.
#[tokio::test(start_paused = true)]
async fn keyed_breakers_forget_idle_hosts() {
    let keyed = CircuitBreaker::builder()
        .min_calls(2)
        .window(Duration::from_secs(10))
        .cool_down(Duration::from_secs(5))
        .build_keyed::<String>()
        .unwrap();
    for i in 0..5000 {
        outcome(&keyed.get(&format!("host-{i}")), true).await;
    }
    // Their outcomes are still in the window: nothing is idle yet.
    assert_eq!(keyed.len(), 5000);
    for _ in 0..2 {
        outcome(&keyed.get(&"down".into()), false).await;
    }
    outcome(&keyed.get(&"failing".into()), false).await;
    let held = keyed.get(&"held".into());
    tokio::time::sleep(Duration::from_secs(11)).await; // the window has passed
    outcome(&keyed.get(&"failing".into()), false).await;
    keyed.retain_recent();
    let mut kept: Vec<String> = keyed.stats().into_iter().map(|(k, _)| k).collect();
    kept.sort();
    assert_eq!(kept, ["down", "failing", "held"]);
    assert_eq!(keyed.get(&"down".into()).stats().openings, 1);
    assert_eq!(keyed.get(&"failing".into()).stats().window_failed, 1);
    drop(held);

    // Without retain_recent, new keys trigger sweeps: memory follows the keys in use.
    tokio::time::sleep(Duration::from_secs(11)).await;
    for round in 0..10 {
        for i in 0..2000 {
            outcome(&keyed.get(&format!("r{round}-{i}")), true).await;
        }
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    assert!(keyed.len() <= 4096, "idle breakers kept: {}", keyed.len());
}

/// With a slow-call threshold, successes that take too long count as failures and open the
/// breaker; quick ones do not.
#[tokio::test(start_paused = true)]
async fn slow_successes_count_as_failures() {
    let b = CircuitBreaker::builder()
        .min_calls(4)
        .failure_rate(0.5)
        .slow_call(Duration::from_secs(2))
        .build()
        .unwrap();
    let call = |secs: u64| {
        let b = b.clone();
        async move {
            b.call(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                Ok::<_, &str>(())
            })
            .await
        }
    };
    for _ in 0..4 {
        call(1).await.unwrap();
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.stats().window_failed, 0);
    // Two slow ones: 2 of 6 calls. Two more: 4 of 8, the failure rate is reached.
    for _ in 0..3 {
        call(2).await.unwrap();
    }
    assert_eq!(b.state(), State::Closed);
    let permit = b.try_acquire().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(permit.success(), "the 4th slow success opened it");
    assert_eq!(b.state(), State::Open);
    assert!(CircuitBreaker::builder()
        .slow_call(Duration::ZERO)
        .build()
        .unwrap_err()
        .to_string()
        .contains("slow_call"));
}

#[tokio::test(start_paused = true)]
async fn opened_and_closed_from_outside_as_a_shared_breaker_is() {
    let log = Arc::default();
    let b = breaker(&log);
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    b.open_until(until);
    assert!(outcome(&b, true).await, "open: refused");
    // Opening again until earlier changes nothing; until later moves the deadline.
    b.open_until(until - Duration::from_secs(1));
    tokio::time::sleep_until(until).await;
    assert_eq!(b.state(), State::HalfOpen);
    b.open_until(until + Duration::from_secs(2));
    assert!(outcome(&b, true).await, "reopened until later: refused");
    b.close();
    assert_eq!(b.state(), State::Closed);
    assert!(!outcome(&b, true).await, "closed: passes");
    b.close();
    assert_eq!(
        *log.lock().unwrap(),
        // Moving an open breaker's deadline is no change of state.
        [(State::Closed, State::Open), (State::Open, State::Closed)]
    );
}
