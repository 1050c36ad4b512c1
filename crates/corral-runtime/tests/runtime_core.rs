//! The scheduling core alone (no async-io reactor), small enough to run under Miri:
//! `cargo +nightly miri test -p corral --test runtime_core`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use corral_runtime::{JoinError, Priority, Runtime};
use futures::executor::block_on;

const N: usize = if cfg!(miri) { 40 } else { 2_000 };

#[test]
fn tasks_run_once_across_levels_with_cross_thread_wakes() {
    let rt = Runtime::builder()
        .threads(Priority::High, 1)
        .threads(Priority::Normal, 1)
        .threads(Priority::Low, 1)
        .steal(Priority::Low, false)
        .build()
        .expect("runtime");
    let runs = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let runs = Arc::clone(&runs);
            let (tx, rx) = futures::channel::oneshot::channel::<usize>();
            senders.push(tx);
            rt.spawn(Priority::ALL[i % 3], async move {
                let v = rx.await.unwrap_or(0);
                runs.fetch_add(1, Ordering::SeqCst);
                v
            })
        })
        .collect();
    // Wake every task from this (non-worker) thread.
    for (i, tx) in senders.into_iter().enumerate() {
        tx.send(i).expect("task alive");
    }
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(block_on(h), Ok(i));
    }
    assert_eq!(runs.load(Ordering::SeqCst), N);
}

#[test]
fn panic_is_contained_and_shutdown_cancels_the_rest() {
    let rt = Runtime::builder()
        .threads(Priority::High, 0)
        .threads(Priority::Normal, 1)
        .threads(Priority::Low, 0)
        .build()
        .expect("runtime");
    let h = rt.spawn(Priority::High, async { panic!("contained") });
    assert_eq!(block_on(h), Err(JoinError::Panicked("contained".into())));
    let (_keep, rx) = futures::channel::oneshot::channel::<()>();
    let parked = rt.spawn(Priority::Normal, async move { rx.await.is_ok() });
    assert_eq!(block_on(rt.spawn(Priority::Low, async { 7 })), Ok(7));
    rt.shutdown();
    // The parked task's waker holds the runtime weakly: it is dropped, not run, later.
    drop(_keep);
    assert_eq!(block_on(parked), Err(JoinError::Cancelled));
}
