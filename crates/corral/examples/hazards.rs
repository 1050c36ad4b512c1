//! Pattern: six ways an async program hangs or stalls, each shown going wrong under a
//! timeout, then fixed (seed 004; *Async Rust* ch. 9 and ch. 11 on testing for deadlocks).
//!
//! 1. A `std::sync::Mutex` guard held across `.await`: another future on the same thread
//!    blocks the thread on the lock, so the holder can never resume. Deadlock (or a panic:
//!    std leaves relocking by the same thread unspecified) — and a tokio timeout on that
//!    thread cannot even fire, so it runs on a thread of its own and is watched from outside.
//!    Fix: drop the guard before awaiting (or use `tokio::sync::Mutex`).
//! 2. Lock-order inversion: two tasks take two async locks in opposite orders. Fix: one order.
//! 3. A bounded channel nobody reads yet: the producer fills it and waits forever, because
//!    the consumer only starts after the producer is done. Fix: run them together.
//! 4. Blocking inside async (`std::thread::sleep`, a heavy loop): every task on the thread
//!    waits; a heartbeat misses its beat. Fix: `spawn_blocking` (or `corral::cpu`).
//! 5. Locking twice in one task: async mutexes are not reentrant, so a second `lock()` while
//!    the first guard lives (often in a helper the caller did not read) waits for itself.
//!    Fix: drop the first guard, or pass it down instead of locking again.
//! 6. A read → write upgrade on an `RwLock`: the writer waits for every reader to go, its own
//!    read guard included. Fix: drop the read guard before writing, or take the write lock
//!    first and `downgrade()` it to read.
//!
//! Each hazard's thread is left stuck (as in real life); the process exits anyway.
//!
//! Run: `cargo run -p corral --example hazards`

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_millis(300);

/// Runs `f` on a current-thread runtime on a thread of its own; true if it finished within
/// PATIENCE (the thread is abandoned otherwise).
fn finishes<F, Fut>(f: F) -> bool
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f());
        let _ = done.send(());
    });
    wait.recv_timeout(PATIENCE).is_ok()
}

fn report(name: &str, wrong: bool, fixed: bool) -> Result<(), String> {
    println!("{name:<40} hazard hangs: {wrong:<5}  fixed finishes: {fixed}");
    if wrong && fixed {
        Ok(())
    } else {
        Err(format!(
            "{name}: expected the hazard to hang and the fix to finish"
        ))
    }
}

// clippy's `await_holding_lock` lint flags exactly this hazard; it is allowed here only to
// show it.
#[allow(clippy::await_holding_lock)]
fn std_mutex_across_await() -> Result<(), String> {
    // `tokio::spawn` would refuse this at compile time (a std guard is not `Send`), which is
    // one good reason to spawn; the hazard bites where futures share a task: `join!`,
    // `select!`, `spawn_local`.
    let wrong = !finishes(|| async {
        let m = std::sync::Mutex::new(0);
        let holder = async {
            let mut g = m.lock().expect("lock");
            tokio::time::sleep(Duration::from_millis(10)).await; // guard held across .await
            *g += 1;
        };
        let other = async {
            tokio::task::yield_now().await; // the holder has the lock and is parked
            *m.lock().expect("lock") += 1; // blocks the thread: the holder never resumes
        };
        tokio::join!(holder, other);
    });
    let fixed = finishes(|| async {
        let m = std::sync::Mutex::new(0);
        let holder = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            *m.lock().expect("lock") += 1; // locked only where nothing awaits
        };
        let other = async {
            tokio::task::yield_now().await;
            *m.lock().expect("lock") += 1;
        };
        tokio::join!(holder, other);
    });
    report("1. std Mutex held across .await", wrong, fixed)
}

async fn two_locks(inverted: bool) {
    let (a, b) = (
        Arc::new(tokio::sync::Mutex::new(())),
        Arc::new(tokio::sync::Mutex::new(())),
    );
    let (a2, b2) = (a.clone(), b.clone());
    let t1 = tokio::spawn(async move {
        let _a = a2.lock().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let _b = b2.lock().await;
    });
    let t2 = tokio::spawn(async move {
        let (first, second) = if inverted { (b, a) } else { (a, b) };
        let _x = first.lock().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let _y = second.lock().await;
    });
    let _ = tokio::join!(t1, t2);
}

fn lock_order_inversion() -> Result<(), String> {
    let wrong = !finishes(|| two_locks(true));
    let fixed = finishes(|| two_locks(false));
    report("2. lock-order inversion", wrong, fixed)
}

fn unread_bounded_channel() -> Result<(), String> {
    let wrong = !finishes(|| async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(4);
        for i in 0..10 {
            tx.send(i).await.expect("open"); // the 5th send waits for a reader that never comes
        }
        drop(tx);
        while rx.recv().await.is_some() {}
    });
    let fixed = finishes(|| async {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(4);
        let consumer = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        for i in 0..10 {
            tx.send(i).await.expect("open");
        }
        drop(tx);
        let _ = consumer.await;
    });
    report("3. bounded channel nobody reads", wrong, fixed)
}

/// A heartbeat that must beat every 10 ms while a task does 200 ms of work; true if it never
/// missed a beat by more than 50 ms.
async fn heartbeat_survives(blocking_in_async: bool) -> bool {
    let beat = tokio::spawn(async {
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let t = Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            worst = worst.max(t.elapsed().saturating_sub(Duration::from_millis(10)));
        }
        worst
    });
    tokio::task::yield_now().await;
    if blocking_in_async {
        std::thread::sleep(Duration::from_millis(200)); // holds the runtime's only thread
    } else {
        tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(200)))
            .await
            .expect("blocking task");
    }
    beat.await.expect("heartbeat") < Duration::from_millis(50)
}

fn blocking_in_async() -> Result<(), String> {
    let run = |blocking| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let _ = tx.send(rt.block_on(heartbeat_survives(blocking)));
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap_or(false)
    };
    report("4. blocking inside async", !run(true), run(false))
}

fn locking_twice_in_one_task() -> Result<(), String> {
    let wrong = !finishes(|| async {
        let m = tokio::sync::Mutex::new(0);
        let mut first = m.lock().await;
        *first += 1;
        let mut again = m.lock().await; // waits for `first`, which this task holds
        *again += 1;
    });
    let fixed = finishes(|| async {
        let m = tokio::sync::Mutex::new(0);
        let mut first = m.lock().await;
        *first += 1;
        drop(first); // done with it before locking again
        *m.lock().await += 1;
    });
    report("5. locking twice in one task", wrong, fixed)
}

fn read_then_write_upgrade() -> Result<(), String> {
    let wrong = !finishes(|| async {
        let rw = tokio::sync::RwLock::new(0);
        let seen = rw.read().await;
        let mut w = rw.write().await; // waits for every reader, `seen` included
        *w = *seen + 1;
    });
    let fixed = finishes(|| async {
        let rw = tokio::sync::RwLock::new(0);
        // Write first, then keep reading through the downgraded guard.
        let mut w = rw.write().await;
        *w += 1;
        let r = w.downgrade();
        assert_eq!(*r, 1);
    });
    report("6. read -> write upgrade on an RwLock", wrong, fixed)
}

fn main() -> Result<(), String> {
    std_mutex_across_await()?;
    lock_order_inversion()?;
    unread_bounded_channel()?;
    blocking_in_async()?;
    locking_twice_in_one_task()?;
    read_then_write_upgrade()?;
    Ok(())
}
