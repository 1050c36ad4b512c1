//! Behavioural tests of `corral::exec`, all on tokio's paused clock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use corral::exec::{Exec, OnCancel, Strategy};
use futures::StreamExt;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

const BOUNDED: [Strategy; 3] = [Strategy::Buffered, Strategy::Spawn, Strategy::WorkerPool];

/// Counts jobs in flight and remembers the maximum.
#[derive(Clone, Default)]
struct InFlight {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

impl InFlight {
    async fn run<T>(&self, delay: Duration, value: T) -> T {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        value
    }
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// A pseudo-random but deterministic delay per item, 1..=50 ms.
fn delay(i: u64) -> Duration {
    Duration::from_millis(1 + (i.wrapping_mul(2654435761) % 50))
}

fn exec(limit: usize, strategy: Strategy, ordered: bool) -> Exec {
    Exec::builder()
        .limit(limit)
        .strategy(strategy)
        .ordered(ordered)
        .build()
        .expect("valid config")
}

#[tokio::test(start_paused = true)]
async fn bound_is_never_exceeded_and_every_item_yields_once() {
    for strategy in BOUNDED {
        for ordered in [false, true] {
            for limit in [1, 3, 8] {
                let flight = InFlight::default();
                let f = flight.clone();
                let mut got: Vec<(u64, u64)> = exec(limit, strategy, ordered)
                    .run(futures::stream::iter(0..200u64), move |i| {
                        let f = f.clone();
                        async move { f.run(delay(i), i).await }
                    })
                    .with_index()
                    .map(|(idx, r)| (idx, r.expect("no panic")))
                    .collect()
                    .await;
                assert!(
                    flight.max() <= limit,
                    "{strategy:?} ordered={ordered} limit={limit}: max in flight {}",
                    flight.max()
                );
                assert_eq!(
                    flight.max(),
                    limit,
                    "{strategy:?} should use its whole limit"
                );
                if ordered {
                    let order: Vec<u64> = got.iter().map(|(i, _)| *i).collect();
                    assert_eq!(
                        order,
                        (0..200).collect::<Vec<_>>(),
                        "{strategy:?} lost order"
                    );
                }
                got.sort_unstable();
                assert_eq!(got, (0..200).map(|i| (i, i)).collect::<Vec<_>>());
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn unordered_output_follows_completion_order() {
    for strategy in BOUNDED {
        // Item 0 is slow, so in unordered mode it must not hold back the others.
        let out: Vec<u64> = exec(4, strategy, false)
            .run(futures::stream::iter(0..4u64), |i| async move {
                let ms = if i == 0 { 100 } else { 10 * i };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                i
            })
            .map(|r| r.expect("no panic"))
            .collect()
            .await;
        assert_eq!(out, vec![1, 2, 3, 0], "{strategy:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn scatter_starts_everything_at_once() {
    let flight = InFlight::default();
    let f = flight.clone();
    let out = Exec::builder()
        .strategy(Strategy::Scatter)
        .limit(0)
        .build()
        .expect("scatter ignores the limit")
        .gather(0..50u64, move |i| {
            let f = f.clone();
            async move { f.run(Duration::from_millis(10), i * 2).await }
        })
        .await;
    assert_eq!(flight.max(), 50);
    assert_eq!(out, (0..50).map(|i| Ok(i * 2)).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn slow_consumer_stops_the_producer() {
    for strategy in BOUNDED {
        for ordered in [false, true] {
            let limit = 4;
            let pulled = Arc::new(AtomicU64::new(0));
            let p = pulled.clone();
            // An endless input: anything that collects up front would hang here.
            let input = futures::stream::iter(0u64..).inspect(move |_| {
                p.fetch_add(1, Ordering::SeqCst);
            });
            let mut results = exec(limit, strategy, ordered).run(input, |i| async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                i
            });
            let mut delivered = 0u64;
            for _ in 0..20 {
                results.next().await.expect("endless").expect("no panic");
                delivered += 1;
            }
            // Stall for an hour of (paused) time: without backpressure the producer would
            // race ahead by hundreds of thousands of items.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            let during_stall = pulled.load(Ordering::SeqCst);
            assert!(
                during_stall <= delivered + limit as u64,
                "{strategy:?} ordered={ordered}: pulled {during_stall} with {delivered} delivered"
            );
            tokio::time::sleep(Duration::from_secs(3600)).await;
            assert_eq!(
                pulled.load(Ordering::SeqCst),
                during_stall,
                "producer kept running"
            );
            // And it resumes when the consumer does.
            results.next().await.expect("endless").expect("no panic");
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(pulled.load(Ordering::SeqCst) > during_stall);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn panics_become_errors_for_that_item_only() {
    for strategy in [
        Strategy::Buffered,
        Strategy::Spawn,
        Strategy::WorkerPool,
        Strategy::Scatter,
    ] {
        for ordered in [false, true] {
            let results: Vec<_> = exec(3, strategy, ordered)
                .run(futures::stream::iter(0..60u64), |i| async move {
                    tokio::time::sleep(delay(i)).await;
                    if i % 7 == 3 {
                        panic!("boom {i}");
                    }
                    i
                })
                .with_index()
                .collect()
                .await;
            assert_eq!(results.len(), 60, "{strategy:?}");
            for (idx, r) in results {
                match r {
                    Ok(v) => assert_eq!(v, idx),
                    Err(e) => {
                        assert_eq!(idx % 7, 3, "{strategy:?}: unexpected failure {e}");
                        assert_eq!(e.index(), idx);
                        assert!(e.is_panic());
                        assert!(e.to_string().contains(&format!("boom {idx}")), "{e}");
                    }
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_function_is_contained_too() {
    for strategy in BOUNDED {
        let out: Vec<_> = exec(2, strategy, true)
            .run(futures::stream::iter(0..4u64), |i| {
                assert!(i != 2, "refusing {i}");
                async move { i }
            })
            .collect()
            .await;
        assert_eq!(out.len(), 4);
        assert!(out[2].as_ref().is_err_and(|e| e.is_panic()), "{strategy:?}");
        assert_eq!(out[3], Ok(3));
    }
}

#[tokio::test(start_paused = true)]
async fn cancellation_stops_intake_and_lets_jobs_finish() {
    for strategy in BOUNDED {
        let token = CancellationToken::new();
        let pulled = Arc::new(AtomicU64::new(0));
        let p = pulled.clone();
        let input = futures::stream::iter(0u64..).inspect(move |_| {
            p.fetch_add(1, Ordering::SeqCst);
        });
        let mut results = Exec::builder()
            .limit(4)
            .strategy(strategy)
            .cancel_token(token.clone())
            .build()
            .expect("valid")
            .run(input, |i| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                i
            });
        let mut outputs = 0;
        for _ in 0..10 {
            results.next().await.expect("running").expect("ok");
            outputs += 1;
        }
        token.cancel();
        while let Some(r) = results.next().await {
            r.expect("Finish lets in-flight jobs complete");
            outputs += 1;
        }
        let pulled = pulled.load(Ordering::SeqCst);
        assert_eq!(
            outputs, pulled,
            "{strategy:?}: every item taken yields one output"
        );
        assert!(
            pulled <= 10 + 4 + 1,
            "{strategy:?}: intake went on after cancel: {pulled}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn cancellation_with_abort_reports_in_flight_jobs_as_cancelled() {
    for strategy in BOUNDED {
        let token = CancellationToken::new();
        let mut results = Exec::builder()
            .limit(4)
            .strategy(strategy)
            .cancel_token(token.clone())
            .on_cancel(OnCancel::Abort)
            .build()
            .expect("valid")
            .run(futures::stream::iter(0u64..), |i| async move {
                let ms = if i < 2 { 1 } else { 3_600_000 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                i
            });
        assert_eq!(results.next().await, Some(Ok(0)));
        assert_eq!(results.next().await, Some(Ok(1)));
        token.cancel();
        let rest: Vec<_> = results.collect().await;
        assert!(
            !rest.is_empty() && rest.len() <= 4,
            "{strategy:?}: {rest:?}"
        );
        assert!(
            rest.iter()
                .all(|r| r.as_ref().is_err_and(|e| e.is_cancelled())),
            "{strategy:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_results_aborts_spawned_work() {
    for strategy in [Strategy::Spawn, Strategy::WorkerPool, Strategy::Scatter] {
        let finished = Arc::new(AtomicBool::new(false));
        let f = finished.clone();
        let mut results = exec(2, strategy, false).run(futures::stream::iter(0..3u64), move |i| {
            let f = f.clone();
            async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    f.store(true, Ordering::SeqCst);
                }
                i
            }
        });
        assert_eq!(results.next().await, Some(Ok(0)));
        drop(results);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !finished.load(Ordering::SeqCst),
            "{strategy:?} leaked a job"
        );
    }
}

#[test]
fn a_zero_limit_is_refused() {
    for strategy in BOUNDED {
        let err = Exec::builder()
            .limit(0)
            .strategy(strategy)
            .build()
            .unwrap_err();
        assert_eq!(err.component(), "exec");
        assert!(err.to_string().contains("at least 1"), "{err}");
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn exactly_one_output_per_input(
        strategy in prop::sample::select(vec![Strategy::Buffered, Strategy::Spawn, Strategy::WorkerPool, Strategy::Scatter]),
        limit in 1usize..12,
        ordered in any::<bool>(),
        delays in prop::collection::vec(0u64..30, 0..120),
        panic_every in 2u64..20,
    ) {
        let n = delays.len() as u64;
        let (mut indexed, max) = paused_runtime().block_on(async move {
            let flight = InFlight::default();
            let f = flight.clone();
            let out: Vec<_> = exec(limit, strategy, ordered)
                .run(futures::stream::iter(delays.into_iter().enumerate()), move |(i, d)| {
                    let f = f.clone();
                    async move {
                        let v = f.run(Duration::from_millis(d), i as u64).await;
                        if v % panic_every == 1 { panic!("p{v}") }
                        v
                    }
                })
                .with_index()
                .collect()
                .await;
            (out, flight.max())
        });
        if strategy != Strategy::Scatter {
            prop_assert!(max <= limit);
        }
        if ordered {
            prop_assert!(indexed.windows(2).all(|w| w[0].0 < w[1].0));
        }
        indexed.sort_by_key(|(i, _)| *i);
        prop_assert_eq!(indexed.len() as u64, n);
        for (pos, (i, r)) in indexed.into_iter().enumerate() {
            prop_assert_eq!(i, pos as u64);
            match r {
                Ok(v) => prop_assert_eq!(v, i),
                Err(e) => prop_assert!(e.is_panic() && i % panic_every == 1),
            }
        }
    }
}

/// Each worker makes its state once and keeps it across items and across a panicking job;
/// results still come one per item, in order when asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_pool_state_is_made_once_per_worker_and_kept() {
    let inits = Arc::new(AtomicUsize::new(0));
    let i2 = inits.clone();
    let exec = Exec::builder().limit(4).ordered(true).build().unwrap();
    let out: Vec<_> = exec
        .run_with_state(
            futures::stream::iter(0..200u64),
            move |worker| {
                i2.fetch_add(1, Ordering::SeqCst);
                async move { (worker, Vec::<u64>::new()) }
            },
            |state: &mut (usize, Vec<u64>), item: u64| {
                Box::pin(async move {
                    if item == 50 {
                        panic!("item 50 is bad");
                    }
                    tokio::task::yield_now().await; // the borrow lives across an await
                    state.1.push(item);
                    (item, state.0, state.1.len())
                })
            },
        )
        .collect()
        .await;
    assert_eq!(inits.load(Ordering::SeqCst), 4, "one state per worker");
    assert_eq!(out.len(), 200);
    let mut per_worker: std::collections::HashMap<usize, Vec<usize>> = Default::default();
    for (i, r) in out.iter().enumerate() {
        match r {
            Ok((item, worker, seen)) => {
                assert_eq!(*item, i as u64, "in input order");
                per_worker.entry(*worker).or_default().push(*seen);
            }
            Err(e) => {
                assert_eq!(i, 50);
                assert!(e.is_panic(), "{e}");
            }
        }
    }
    // A worker's count grows by one per item it handled: its state was kept, never rebuilt,
    // even by the worker whose job panicked.
    let mut total = 0;
    for counts in per_worker.values() {
        let mut sorted = counts.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=counts.len()).collect::<Vec<_>>());
        total += counts.len();
    }
    assert_eq!(total, 199);
}
