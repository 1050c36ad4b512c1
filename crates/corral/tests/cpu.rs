//! Behavioural tests of `corral::cpu`. The closures block real threads, so these synchronise
//! with channels and counters, never with timing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use corral::cpu::{BlockingGate, CpuError, CpuPool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_never_runs_more_than_its_limit() {
    let gate = BlockingGate::new(2).unwrap();
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let (gate, now, peak) = (gate.clone(), now.clone(), peak.clone());
            tokio::spawn(async move {
                gate.run(move || {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(n, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    now.fetch_sub(1, Ordering::SeqCst);
                    i * 2
                })
                .await
            })
        })
        .collect();
    let mut sum = 0;
    for t in tasks {
        sum += t.await.unwrap().unwrap();
    }
    assert_eq!(sum, (0..12).map(|i| i * 2).sum::<i32>());
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(gate.running(), 0);
    assert!(BlockingGate::new(0).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_run_keeps_its_turn_until_the_closure_ends() {
    let gate = BlockingGate::new(1).unwrap();
    let (started_tx, started) = mpsc::channel();
    let (release, wait) = mpsc::channel::<()>();
    let g = gate.clone();
    let first = tokio::spawn(async move {
        g.run(move || {
            started_tx.send(()).unwrap();
            wait.recv().unwrap();
        })
        .await
    });
    tokio::task::spawn_blocking(move || started.recv().unwrap())
        .await
        .unwrap();
    first.abort(); // the awaiting task is gone; the closure is still blocked
    let _ = first.await;
    assert_eq!(gate.running(), 1, "the turn is held while the closure runs");
    let g = gate.clone();
    let second = tokio::spawn(async move { g.run(|| 7).await });
    tokio::task::yield_now().await;
    assert!(
        !second.is_finished(),
        "it waits for the abandoned closure to end"
    );
    release.send(()).unwrap();
    assert_eq!(second.await.unwrap().unwrap(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_come_back_as_errors() {
    let gate = BlockingGate::new(1).unwrap();
    let e = gate.run(|| panic!("bad input")).await.unwrap_err();
    assert_eq!(e, CpuError::Panicked("bad input".into()));
    assert_eq!(gate.running(), 0);
    let pool = CpuPool::new(1).unwrap();
    let e = pool
        .spawn(|| -> u32 { panic!("also bad") })
        .await
        .unwrap_err();
    assert_eq!(e, CpuError::Panicked("also bad".into()));
    assert_eq!(
        pool.spawn(|| 5).await.unwrap(),
        5,
        "the pool survives a panic"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_pool_runs_work_on_its_own_threads_and_parallel_iterators_use_it() {
    use rayon::prelude::*;
    let pool = CpuPool::new(2).unwrap();
    assert_eq!(pool.threads(), 2);
    let (name, sum) = pool
        .spawn(|| {
            let name = std::thread::current().name().map(str::to_string);
            let sum: u64 = (0..10_000u64).into_par_iter().map(|x| x * x).sum();
            (name, sum)
        })
        .await
        .unwrap();
    assert_eq!(
        name.as_deref().map(|n| n.starts_with("corral-cpu-")),
        Some(true)
    );
    assert_eq!(sum, (0..10_000u64).map(|x| x * x).sum::<u64>());
    assert!(CpuPool::new(0).is_err());
}
