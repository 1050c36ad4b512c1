//! Pattern: thread-affine pools for `!Send` tasks, and tuning the runtime (seed 004; *Async
//! Rust* ch. 7, customizing tokio).
//!
//! Some state cannot cross threads: an `Rc<RefCell<_>>` cache, a non-thread-safe parser or
//! FFI handle. tokio-util's `LocalPoolHandle` runs such tasks pinned to one of N threads,
//! each with its own `LocalSet`; here every thread keeps a thread-local `Rc` cache of parsed
//! keys, and work for the same key is sent to the same thread, so each cache sees each key
//! once. Next to it, a multi-thread runtime built with the knobs worth knowing, each explained.
//!
//! Run: `cargo run -p corral --example local_pool`

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use tokio_util::task::LocalPoolHandle;

thread_local! {
    /// A per-thread cache: `Rc`, so it could never be shared across threads anyway.
    static CACHE: Rc<RefCell<HashMap<u64, u64>>> = Rc::new(RefCell::new(HashMap::new()));
}

/// "Parses" a key the expensive way once per thread, then answers from the thread's cache.
async fn lookup(key: u64) -> (u64, bool) {
    let cache = CACHE.with(Rc::clone); // !Send: this future must stay on its thread
    if let Some(v) = cache.borrow().get(&key) {
        return (*v, true);
    }
    tokio::task::yield_now().await; // the future holds the Rc across an await
    let v = key * key;
    cache.borrow_mut().insert(key, v);
    (v, false)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A runtime built on purpose rather than by `#[tokio::main]`:
    let rt = tokio::runtime::Builder::new_multi_thread()
        // Workers: the default is one per core; a process sharing its machine takes fewer.
        .worker_threads(2)
        // The blocking pool (spawn_blocking, file I/O): 512 by default, which a flood of
        // blocking calls will actually create. Cap it; see also corral::cpu::BlockingGate.
        .max_blocking_threads(16)
        // Idle blocking threads are kept this long (default 10 s).
        .thread_keep_alive(Duration::from_secs(5))
        // Names show in `top -H`, perf and panic messages.
        .thread_name("app-worker")
        // How many tasks a worker polls between checks of the I/O driver and of the shared
        // queue (defaults 61 and 31): lower favours latency of I/O, higher throughput.
        .event_interval(61)
        .global_queue_interval(31)
        .enable_all()
        .build()?;
    let (hits, misses) = rt.block_on(async {
        let pool = LocalPoolHandle::new(3);
        let (mut hits, mut misses) = (0, 0);
        // Four rounds over 30 keys; within a round, each key's lookup runs on its thread.
        for _round in 0..4 {
            let tasks: Vec<_> = (0..30u64)
                .map(|key| {
                    // The same key always goes to the same thread: its cache is that thread's.
                    pool.spawn_pinned_by_idx(move || lookup(key), (key % 3) as usize)
                })
                .collect();
            for t in tasks {
                let (_, hit) = t.await.expect("pinned task");
                if hit {
                    hits += 1;
                } else {
                    misses += 1;
                }
            }
        }
        (hits, misses)
    });
    println!("{misses} keys parsed once each, on their thread; {hits} lookups served from a thread-local cache");
    if misses != 30 {
        return Err(format!("expected each of 30 keys parsed once, got {misses}").into());
    }
    Ok(())
}
