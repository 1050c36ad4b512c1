//! corral's own multi-threaded executor: priority levels with their own worker threads,
//! stealing between levels, parking, panic isolation — and I/O without tokio (via `async-io`).
//!
//! # Why another executor
//!
//! tokio's scheduler has no notion of priority: a flood of CPU-heavy tasks delays a
//! latency-critical one by however long the flood takes to drain. Here each [`Priority`] level
//! has its **own queue and its own threads**. A level's threads take from their own queue first
//! and, when it is empty, *steal* from the other levels that allow it
//! ([`Builder::steal`]: on by default; turn it off for a CPU-heavy level so its tasks can never
//! occupy the threads reserved for latency-sensitive work). Idle workers **park** (no sleep
//! polling) and are unparked by a spawn they may run. A woken task goes back onto **its own
//! level's** queue. A panic is caught per task and returned through its [`JoinHandle`]; the
//! worker thread lives on. [`Runtime::shutdown`] (or dropping the runtime) stops the workers,
//! joins every thread and cancels the tasks still queued.
//!
//! The pieces are well-kept crates: `async-task` (task allocation, wakers, cancellation),
//! `crossbeam-deque`'s `Injector` (lock-free MPMC queues), `async-io` (timers and sockets with
//! its own reactor thread, so TCP servers and hyper run here without tokio). What is ours is the
//! scheduling policy (levels, stealing rules, who to wake) — see `scheduler.rs`, which contains
//! no `unsafe`.
//!
//! Use it for programs that need priorities; everything else in corral runs on tokio. It is a
//! crate of its own so that nothing that runs on tokio pulls `async-io`, `async-task` or
//! `smol-hyper`.
//!
//! ```
//! use corral_runtime::{Priority, Runtime};
//!
//! let rt = Runtime::builder()
//!     .threads(Priority::High, 1)
//!     .threads(Priority::Normal, 1)
//!     .threads(Priority::Low, 1)
//!     .steal(Priority::Low, false) // low-priority work never runs on the other threads
//!     .build()?;
//! let answer = rt.block_on(async {
//!     let fast = corral_runtime::spawn!(async { 40 }, Priority::High);
//!     let slow = corral_runtime::spawn!(async { 2 }); // default priority: Normal
//!     let (a, b) = corral_runtime::try_join!(fast, slow)?;
//!     Ok::<_, corral_runtime::JoinError>(a + b)
//! })?;
//! assert_eq!(answer, 42);
//! rt.shutdown(); // joins every worker thread
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Dropping a [`JoinHandle`] cancels its task**; call [`JoinHandle::detach`] to let it run.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

mod error;
mod hyper_io;
mod scheduler;
mod task;

pub use error::ConfigError;

pub use self::hyper_io::{connect, HyperIo, HyperTimer};
pub use async_io::{Async, Timer};
pub use task::{JoinError, JoinHandle};

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock, Weak};
use std::task::Poll;
use std::time::Duration;

use futures::{FutureExt, StreamExt};

use crate::error::panic_message;
use scheduler::{Shared, LEVELS};

/// A task's priority: which queue it waits in, and so which threads run it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Latency-sensitive work.
    High,
    /// The default.
    #[default]
    Normal,
    /// Background and CPU-heavy work.
    Low,
}

impl Priority {
    /// Every level, highest first.
    pub const ALL: [Priority; LEVELS] = [Priority::High, Priority::Normal, Priority::Low];

    fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// Why [`Builder::build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The operating system refused to start a worker thread.
    #[error("could not start a runtime worker thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// Configures a [`Runtime`]: threads per level, stealing per level, thread names.
#[derive(Debug, Clone)]
pub struct Builder {
    threads: [usize; LEVELS],
    stealable: [bool; LEVELS],
    name: String,
}

impl Default for Builder {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            threads: [1, cpus, 1],
            stealable: [true; LEVELS],
            name: "corral".to_string(),
        }
    }
}

impl Builder {
    /// Number of worker threads dedicated to `level` (defaults: High 1, Normal one per CPU,
    /// Low 1). Zero is allowed for a level whose tasks other levels may steal.
    pub fn threads(mut self, level: Priority, n: usize) -> Self {
        self.threads[level.index()] = n;
        self
    }

    /// Whether threads of *other* levels may run `level`'s tasks when their own queue is empty
    /// (default: true for every level). Turn it off for a level of CPU-heavy tasks, so that they
    /// never occupy threads kept for other levels.
    pub fn steal(mut self, level: Priority, allowed: bool) -> Self {
        self.stealable[level.index()] = allowed;
        self
    }

    /// Prefix of the worker threads' names: `{prefix}-{level}-{i}` (default `corral`).
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.name = prefix.into();
        self
    }

    /// Starts the worker threads.
    pub fn build(self) -> Result<Runtime, BuildError> {
        if self.threads.iter().sum::<usize>() == 0 {
            return Err(ConfigError::new("at least one worker thread is needed").into());
        }
        for level in Priority::ALL {
            let i = level.index();
            if self.threads[i] == 0 && !self.stealable[i] {
                return Err(ConfigError::new(
                    format!(
                        "{} priority has no threads and does not allow stealing: its tasks would never run",
                        level.name()
                    ),
                )
                .into());
            }
        }
        let shared = Arc::new(Shared::new(self.stealable));
        let mut rt = Runtime {
            handle: Handle {
                shared: Arc::downgrade(&shared),
                priority: Priority::Normal,
            },
            shared,
            threads: Vec::new(),
        };
        for level in Priority::ALL {
            for n in 0..self.threads[level.index()] {
                let shared = Arc::clone(&rt.shared);
                let handle = rt.handle.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("{}-{}-{n}", self.name, level.name()))
                    .spawn(move || {
                        CURRENT.with(|c| *c.borrow_mut() = Some(handle));
                        shared.run_worker(level.index());
                    });
                match spawned {
                    Ok(t) => rt.threads.push(t),
                    // Dropping `rt` stops and joins the threads already started.
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(rt)
    }
}

/// A running executor. Dropping it is the same as [`shutdown`](Runtime::shutdown).
pub struct Runtime {
    shared: Arc<Shared>,
    handle: Handle,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// A builder with the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A handle for spawning onto this runtime from anywhere (cheap to clone).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Spawns a task at `priority`.
    pub fn spawn<F>(&self, priority: Priority, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(priority, future)
    }

    /// Runs `future` on the calling thread until it completes, driving `async-io`'s reactor
    /// while it waits. Inside it, [`spawn!`](crate::spawn) and [`spawn`] use this runtime. Do
    /// not call it from inside a task: it blocks the thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(self.handle.clone()));
        struct Restore(Option<Handle>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = previous);
            }
        }
        let _restore = Restore(previous);
        async_io::block_on(future)
    }

    /// Stops the workers (each finishes the task it is running), joins every thread, and
    /// cancels the tasks still queued. Returns how many queued tasks were cancelled.
    ///
    /// A task that is not queued at that moment — waiting on a socket, a timer or a channel —
    /// is not reachable from the runtime: it is cancelled (its future dropped, its
    /// `JoinHandle` resolving to [`JoinError::Cancelled`]) when it is next woken, or when
    /// whatever holds its waker drops it.
    pub fn shutdown(mut self) -> usize {
        self.stop()
    }

    fn stop(&mut self) -> usize {
        self.shared.begin_shutdown();
        for t in &self.threads {
            t.thread().unpark();
        }
        let me = std::thread::current().id();
        for t in self.threads.drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        self.shared.drain()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns onto a [`Runtime`] from anywhere. Cheap to clone; it does not keep the runtime alive
/// (spawning after shutdown gives a handle that resolves to [`JoinError::NoRuntime`]).
///
/// A handle carries a default priority, used by [`hyper::rt::Executor`]
/// (see [`with_priority`](Handle::with_priority)).
#[derive(Clone)]
pub struct Handle {
    shared: Weak<Shared>,
    priority: Priority,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

impl Handle {
    /// The runtime of the calling thread: a worker's own runtime, or the one whose
    /// [`block_on`](Runtime::block_on) is running. `None` elsewhere.
    pub fn current() -> Option<Handle> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// True once the runtime has begun shutting down (or is gone).
    pub fn is_shut_down(&self) -> bool {
        self.shared.upgrade().is_none_or(|s| s.is_shut_down())
    }

    /// The same runtime, with `priority` as the default for [`hyper::rt::Executor`].
    pub fn with_priority(&self, priority: Priority) -> Handle {
        Handle {
            shared: self.shared.clone(),
            priority,
        }
    }

    /// Spawns a task at `priority`.
    pub fn spawn<F>(&self, priority: Priority, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.shared.upgrade() {
            Some(shared) if !shared.is_shut_down() => {}
            _ => {
                return JoinHandle::failed(JoinError::NoRuntime("the runtime has shut down".into()))
            }
        }
        let level = priority.index();
        let weak = self.shared.clone();
        // The schedule function holds the runtime weakly: a task parked on a socket does not
        // keep a shut-down runtime alive, and a wake after shutdown just cancels the task.
        let schedule = move |task: async_task::Runnable| match weak.upgrade() {
            Some(shared) => shared.push(level, task),
            None => drop(task),
        };
        let future = std::panic::AssertUnwindSafe(future)
            .catch_unwind()
            .map(|r| r.map_err(|p| panic_message(p.as_ref())));
        let (runnable, task) = async_task::spawn(future, schedule);
        runnable.schedule();
        JoinHandle::new(task)
    }

    /// Spawns a detached task at [`Priority::Low`]: background work nobody waits for. It runs
    /// until it finishes or the runtime shuts down.
    pub fn background<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(Priority::Low, future).detach();
    }

    /// Runs `job` every `period` (first run after one period) at `priority`, until the returned
    /// handle is dropped or cancelled (or, once [`detach`](JoinHandle::detach)ed, until the
    /// runtime shuts down). A run that takes longer than `period` delays the next one instead of
    /// overlapping it. A zero period is refused.
    pub fn every<F, Fut>(
        &self,
        priority: Priority,
        period: Duration,
        mut job: F,
    ) -> Result<JoinHandle<()>, ConfigError>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if period.is_zero() {
            return Err(ConfigError::new(
                "a periodic task needs a period above zero",
            ));
        }
        Ok(self.spawn(priority, async move {
            let mut ticks = Timer::interval(period);
            while ticks.next().await.is_some() {
                job().await;
            }
        }))
    }
}

/// Spawns onto the current runtime ([`Handle::current`]), or, outside any runtime, onto a
/// process-wide default runtime started on first use. What [`spawn!`](crate::spawn) calls.
pub fn spawn<F>(priority: Priority, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if let Some(h) = Handle::current() {
        return h.spawn(priority, future);
    }
    match global() {
        Ok(h) => h.spawn(priority, future),
        Err(msg) => JoinHandle::failed(JoinError::NoRuntime(msg.clone())),
    }
}

fn global() -> &'static Result<Handle, String> {
    static GLOBAL: OnceLock<Result<Handle, String>> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let rt = Runtime::builder()
            .thread_name("corral-global")
            .build()
            .map_err(|e| e.to_string())?;
        let handle = rt.handle().clone();
        // The global runtime lives as long as the process.
        std::mem::forget(rt);
        Ok(handle)
    })
}

/// A future that completes after `duration` (an `async-io` timer).
pub fn sleep(duration: Duration) -> Timer {
    Timer::after(duration)
}

/// Gives other tasks a turn: the task goes to the back of its level's queue.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

#[doc(hidden)]
pub mod __private {
    pub use futures::{join, try_join};
}

/// Spawns a future on the current runtime (or the global one) and returns its
/// [`JoinHandle`]: `spawn!(fut)` at the default [`Priority::Normal`], `spawn!(fut, priority)`
/// at another.
#[macro_export]
macro_rules! spawn {
    ($future:expr $(,)?) => {
        $crate::spawn($crate::Priority::Normal, $future)
    };
    ($future:expr, $priority:expr $(,)?) => {
        $crate::spawn($priority, $future)
    };
}

/// Awaits several futures (typically [`JoinHandle`]s from [`spawn!`](crate::spawn))
/// concurrently and returns all their outputs as a tuple.
#[macro_export]
macro_rules! join {
    ($($future:expr),+ $(,)?) => {
        $crate::__private::join!($($future),+)
    };
}

/// Like [`join!`](crate::join) for futures returning `Result` (such as [`JoinHandle`]s):
/// returns `Ok` of all outputs, or the first error as soon as it happens (a panicked task gives
/// [`JoinError::Panicked`]).
#[macro_export]
macro_rules! try_join {
    ($($future:expr),+ $(,)?) => {
        $crate::__private::try_join!($($future),+)
    };
}
