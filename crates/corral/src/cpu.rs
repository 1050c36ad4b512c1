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
//! - [`CpuPool`]: a rayon pool with a future on the way back and a bounded queue (rayon's own
//!   has no bound). rayon keeps exactly one thread per core and balances work by stealing, and
//!   a closure may itself use rayon's parallel iterators. Right for a steady stream of pure
//!   computation.
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
    /// [`CpuPool::try_spawn`]: the pool's queue is full; the closure was not queued.
    Full,
}

impl fmt::Display for CpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpuError::Panicked(m) => write!(f, "CPU work panicked: {m}"),
            CpuError::Dropped => f.write_str("CPU work was dropped before it ran"),
            CpuError::Full => f.write_str("the CPU pool's queue is full"),
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

/// A rayon thread pool that async code hands closures to and awaits, with a bounded queue;
/// see the [module docs](self). Cheap to clone; clones share the pool and its queue.
///
/// Why bounded: rayon's own queue has no limit, and a producer faster than the pool (a
/// stream of requests each handing it a parse) grows it without end, each closure holding its
/// input. At most `queue` closures are queued or running at once ([`CpuPool::builder`];
/// 2 × threads by default): [`CpuPool::spawn`] waits for room, [`CpuPool::try_spawn`]
/// refuses when there is none.
#[derive(Clone)]
pub struct CpuPool {
    pool: Arc<rayon::ThreadPool>,
    room: Arc<Semaphore>,
    queue: usize,
}

impl fmt::Debug for CpuPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuPool")
            .field("threads", &self.pool.current_num_threads())
            .field("queue", &self.queue)
            .finish()
    }
}

/// Sets up a [`CpuPool`]: its threads and its queue's bound.
#[derive(Debug, Clone, Default)]
pub struct CpuPoolBuilder {
    threads: Option<usize>,
    queue: Option<usize>,
}

impl CpuPoolBuilder {
    /// Threads of the pool (≥ 1; default: one per core).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Closures queued or running at once (≥ 1; default: 2 × threads).
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = Some(n);
        self
    }

    /// Starts the pool's threads, named `corral-cpu-N`.
    pub fn build(self) -> Result<CpuPool, ConfigError> {
        let threads = match self.threads {
            Some(0) => return Err(ConfigError::new("cpu", "a pool needs at least 1 thread")),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("corral-cpu-{i}"))
            .build()
            .map_err(|e| ConfigError::new("cpu", format!("cannot start the pool: {e}")))?;
        CpuPool::with_queue(pool, self.queue.unwrap_or(threads.saturating_mul(2)))
    }
}

impl CpuPool {
    /// A pool of `threads` (≥ 1) threads of its own, with the default queue (2 × threads).
    pub fn new(threads: usize) -> Result<Self, ConfigError> {
        Self::builder().threads(threads).build()
    }

    /// A [`CpuPoolBuilder`]: threads and the queue's bound.
    pub fn builder() -> CpuPoolBuilder {
        CpuPoolBuilder::default()
    }

    /// Hands closures to a pool built elsewhere, at most 2 × its threads at once.
    pub fn from_pool(pool: rayon::ThreadPool) -> Self {
        let queue = pool.current_num_threads().saturating_mul(2).max(1);
        Self {
            pool: Arc::new(pool),
            room: Arc::new(Semaphore::new(queue)),
            queue,
        }
    }

    fn with_queue(pool: rayon::ThreadPool, queue: usize) -> Result<Self, ConfigError> {
        if queue == 0 {
            return Err(ConfigError::new(
                "cpu",
                "a pool's queue must hold at least 1",
            ));
        }
        Ok(Self {
            pool: Arc::new(pool),
            room: Arc::new(Semaphore::new(queue)),
            queue,
        })
    }

    /// The pool's threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// The most closures queued or running at once.
    pub fn queue(&self) -> usize {
        self.queue
    }

    /// Closures queued or running now.
    pub fn queued(&self) -> usize {
        self.queue - self.room.available_permits()
    }

    /// Waits for room in the queue, queues `f` and resolves to its result. Nothing is queued
    /// until the task is first polled. Inside `f`, rayon's parallel iterators use this pool.
    ///
    /// # Cancel safety
    ///
    /// Dropped while waiting for room, or queued but not yet started, `f` never runs. Dropped
    /// once `f` has started, it runs to its end (rayon cannot stop it) and its result is
    /// thrown away; its place in the queue is given back only then.
    pub fn spawn<F, T>(&self, f: F) -> CpuTask<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (pool, room) = (self.pool.clone(), self.room.clone());
        CpuTask {
            inner: Box::pin(async move {
                let place = room.acquire_owned().await.map_err(|_| CpuError::Dropped)?;
                queue(&pool, place, f)
                    .await
                    .unwrap_or(Err(CpuError::Dropped))
            }),
        }
    }

    /// Queues `f` now if the queue has room; [`CpuError::Full`] (and `f` dropped unrun) if
    /// not. Cancel safety as [`CpuPool::spawn`].
    pub fn try_spawn<F, T>(&self, f: F) -> Result<CpuTask<T>, CpuError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let place = self
            .room
            .clone()
            .try_acquire_owned()
            .map_err(|_| CpuError::Full)?;
        let rx = queue(&self.pool, place, f);
        Ok(CpuTask {
            inner: Box::pin(async move { rx.await.unwrap_or(Err(CpuError::Dropped)) }),
        })
    }
}

/// Queues `f` on `pool`, holding `place` until it ends; skipped if its task is gone first.
fn queue<F, T>(
    pool: &rayon::ThreadPool,
    place: tokio::sync::OwnedSemaphorePermit,
    f: F,
) -> oneshot::Receiver<Result<T, CpuError>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    pool.spawn(move || {
        // Nobody waits for it any more: a task dropped before its turn is never run.
        if tx.is_closed() {
            return;
        }
        let out =
            catch_unwind(AssertUnwindSafe(f)).map_err(|p| CpuError::Panicked(panic_message(&*p)));
        // Its place is free before its result is told: whoever awaits it sees the room.
        drop(place);
        let _ = tx.send(out);
    });
    rx
}

/// The result of [`CpuPool::spawn`] or [`CpuPool::try_spawn`], to await.
#[must_use = "futures do nothing unless polled"]
pub struct CpuTask<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, CpuError>> + Send>>,
}

impl<T> fmt::Debug for CpuTask<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CpuTask").finish_non_exhaustive()
    }
}

impl<T> Future for CpuTask<T> {
    type Output = Result<T, CpuError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    /// A closure that runs until `release` is sent to.
    fn blocker() -> (impl FnOnce() + Send + 'static, mpsc::Sender<()>) {
        let (release, wait) = mpsc::channel::<()>();
        (
            move || {
                let _ = wait.recv();
            },
            release,
        )
    }

    #[tokio::test]
    async fn the_queue_is_bounded_spawn_waits_and_try_spawn_refuses() {
        let pool = CpuPool::builder().threads(1).queue(2).build().unwrap();
        assert_eq!((pool.threads(), pool.queue()), (1, 2));
        let (block, release) = blocker();
        let running = pool.try_spawn(block).unwrap();
        let queued = pool.try_spawn(|| 2).unwrap();
        assert_eq!(pool.queued(), 2);
        assert!(matches!(pool.try_spawn(|| 3), Err(CpuError::Full)));
        // spawn waits for room rather than growing the queue.
        let mut waiting = pool.spawn(|| 4);
        assert!(futures::poll!(&mut waiting).is_pending());
        assert_eq!(pool.queued(), 2);
        release.send(()).unwrap();
        running.await.unwrap();
        assert_eq!(queued.await.unwrap(), 2);
        assert_eq!(waiting.await.unwrap(), 4);
        assert_eq!(pool.queued(), 0);
        assert!(CpuPool::builder().threads(1).queue(0).build().is_err());
    }

    #[tokio::test]
    async fn a_task_dropped_before_it_starts_never_runs() {
        let pool = CpuPool::builder().threads(1).queue(4).build().unwrap();
        let (block, release) = blocker();
        let running = pool.try_spawn(block).unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        // Queued behind the running one, then dropped.
        let queued = pool
            .try_spawn(move || flag.store(true, Ordering::SeqCst))
            .unwrap();
        drop(queued);
        // And one dropped while it waited for nothing yet (never polled: never queued).
        let flag = ran.clone();
        drop(pool.spawn(move || flag.store(true, Ordering::SeqCst)));
        release.send(()).unwrap();
        running.await.unwrap();
        // A last task runs after the dropped one would have: the pool has one thread.
        pool.spawn(|| ()).await.unwrap();
        assert!(!ran.load(Ordering::SeqCst), "a dropped task ran");
        assert_eq!(pool.queued(), 0);
    }
}
