//! CPU-heavy work beside async I/O: run it off the event loop, a bounded number at a time.
//!
//! A closure that hashes, parses or compresses for 50 ms, run inside an async task, holds its
//! worker thread for those 50 ms: every other task on that thread — timers, sockets, the
//! accept loop — waits. That is *event-loop lag*, and it shows as timeouts and latency spikes
//! that have nothing to do with the network. Two ways out, each bounded:
//!
//! - [`BlockingGate`]: tokio's `spawn_blocking` behind a semaphore. tokio's blocking pool grows
//!   to 512 threads by default; 10 000 parse jobs spawned at once would get hundreds of threads
//!   fighting over a few cores. The gate lets at most `limit` closures run at once; the rest
//!   wait (asynchronously) for a turn. Right for blocking calls and occasional heavy work.
//! - [`CpuPool`]: a rayon pool with a future on the way back. rayon keeps exactly one thread
//!   per core and balances work by stealing, and a closure may itself use rayon's parallel
//!   iterators. Right for a steady stream of pure computation.
//!
//! Both catch a panicking closure and return it as [`CpuError::Panicked`], and neither can be
//! cancelled once started: dropping the future abandons the result, the closure runs to its
//! end (its slot in the gate is held until then, so the bound stays true).
//!
//! `examples/cpu_bound.rs` measures the lag, with and without them.
//!
//! ```
//! use corral::cpu::{BlockingGate, CpuPool};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gate = BlockingGate::new(4)?;
//! let n = gate.run(|| (1..=20u64).product::<u64>()).await?;
//! let pool = CpuPool::new(2)?;
//! let m = pool.spawn(move || n.count_ones()).await?;
//! assert_eq!(m, (1..=20u64).product::<u64>().count_ones());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{oneshot, Semaphore};

use crate::error::{panic_message, ConfigError};

/// Why CPU work gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpuError {
    /// The closure panicked; the panic's message.
    Panicked(String),
    /// The work was dropped unrun: the runtime or pool shut down first.
    Dropped,
}

impl fmt::Display for CpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuError::Panicked(m) => write!(f, "CPU work panicked: {m}"),
            CpuError::Dropped => f.write_str("CPU work was dropped before it ran"),
        }
    }
}

impl std::error::Error for CpuError {}

/// At most `limit` closures on tokio's blocking pool at once; see the [module docs](self).
/// Cheap to clone; clones share the limit.
#[derive(Debug, Clone)]
pub struct BlockingGate {
    sem: Arc<Semaphore>,
    limit: usize,
}

impl BlockingGate {
    /// At most `limit` (≥ 1) closures running at once. The number of cores is a good start for
    /// pure computation; more for closures that block on I/O.
    pub fn new(limit: usize) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::new(
                "cpu",
                "the gate's limit must be at least 1",
            ));
        }
        Ok(Self {
            sem: Arc::new(Semaphore::new(limit)),
            limit,
        })
    }

    /// The most closures running at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Closures running now.
    pub fn running(&self) -> usize {
        self.limit - self.sem.available_permits()
    }

    /// Waits for a turn, then runs `f` on tokio's blocking pool and returns its result.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting for a turn, nothing runs. Dropped once `f` has started, `f` runs
    /// to its end and its result is thrown away; its turn is given back only then.
    pub async fn run<F, T>(&self, f: F) -> Result<T, CpuError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .sem
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| CpuError::Dropped)?;
        let handle = tokio::task::spawn_blocking(move || {
            let _turn = permit; // held until the closure ends, even if nobody awaits it
            f()
        });
        match handle.await {
            Ok(v) => Ok(v),
            Err(e) if e.is_panic() => Err(CpuError::Panicked(panic_message(&*e.into_panic()))),
            Err(_) => Err(CpuError::Dropped),
        }
    }
}

/// A rayon thread pool that async code hands closures to and awaits; see the
/// [module docs](self). Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct CpuPool {
    pool: Arc<rayon::ThreadPool>,
}

impl fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuPool")
            .field("threads", &self.pool.current_num_threads())
            .finish()
    }
}

impl CpuPool {
    /// A pool of `threads` (≥ 1) threads of its own, named `corral-cpu-N`.
    pub fn new(threads: usize) -> Result<Self, ConfigError> {
        if threads == 0 {
            return Err(ConfigError::new("cpu", "a pool needs at least 1 thread"));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("corral-cpu-{i}"))
            .build()
            .map_err(|e| ConfigError::new("cpu", format!("cannot start the pool: {e}")))?;
        Ok(Self::from_pool(pool))
    }

    /// Hands closures to a pool built elsewhere.
    pub fn from_pool(pool: rayon::ThreadPool) -> Self {
        Self {
            pool: Arc::new(pool),
        }
    }

    /// The pool's threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Queues `f` on the pool; the returned future resolves to its result. Inside `f`, rayon's
    /// parallel iterators use this pool.
    ///
    /// # Cancel safety
    ///
    /// Dropping the [`CpuTask`] abandons the result; `f` still runs (rayon cannot stop it).
    pub fn spawn<F, T>(&self, f: F) -> CpuTask<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.pool.spawn(move || {
            let out = catch_unwind(AssertUnwindSafe(f))
                .map_err(|p| CpuError::Panicked(panic_message(&*p)));
            let _ = tx.send(out);
        });
        CpuTask { rx }
    }
}

/// The result of [`CpuPool::spawn`], to await.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct CpuTask<T> {
    rx: oneshot::Receiver<Result<T, CpuError>>,
}

impl<T> Future for CpuTask<T> {
    type Output = Result<T, CpuError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(CpuError::Dropped)))
    }
}
