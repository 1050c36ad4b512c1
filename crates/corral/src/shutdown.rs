//! Coordinated shutdown: signal → cancel a token tree → drain tracked tasks up to a deadline →
//! report the stragglers.
//!
//! Built on tokio-util's [`CancellationToken`] (the tree: hand each component a
//! [`child_token`](CancellationToken::child_token) so it can be cancelled alone or with everything)
//! and [`TaskTracker`] (waiting for tasks without collecting their handles). What [`Shutdown`]
//! adds is what an operator needs at 3 a.m.: tasks have *names*, the drain has a *deadline*, and
//! the [`ShutdownReport`] says which tasks did not finish in time (they are then aborted).
//!
//! Two levels of urgency: [`Shutdown::token`] asks for a graceful stop (stop intake, finish what
//! is in flight); [`Shutdown::force_token`] means "stop now". [`Shutdown::listen_for_signals`]
//! cancels the first on the first Ctrl-C / SIGTERM and the second on the second one.
//!
//! ```
//! use corral::shutdown::Shutdown;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let shutdown = Shutdown::new();
//! let token = shutdown.token().child_token();
//! shutdown.spawn("polite", async move { token.cancelled().await });
//! shutdown.spawn("stubborn", tokio::time::sleep(Duration::from_secs(3600)));
//!
//! let report = shutdown.shutdown(Duration::from_secs(5)).await;
//! assert_eq!(report.finished, 1);
//! assert_eq!(report.stragglers, vec!["stubborn".to_string()]);
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::trace::{event, in_span};

/// Which signal asked for shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM (Unix only).
    Terminate,
}

/// The outcome of [`Shutdown::shutdown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Tracked tasks that ended (by themselves or during the drain).
    pub finished: u64,
    /// Names of the tasks still running at the deadline; they have been aborted.
    pub stragglers: Vec<String>,
    /// How long the drain took.
    pub elapsed: Duration,
}

impl ShutdownReport {
    /// True if every tracked task finished before the deadline.
    pub fn is_clean(&self) -> bool {
        self.stragglers.is_empty()
    }
}

#[derive(Default)]
struct Live {
    tasks: HashMap<u64, (String, Option<AbortHandle>)>,
    finished: u64,
}

/// Owner of a cancellation tree and a set of named, tracked tasks. Cheap to clone.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    force: CancellationToken,
    tracker: TaskTracker,
    live: Arc<Mutex<Live>>,
    next_id: Arc<AtomicU64>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("cancelled", &self.token.is_cancelled())
            .field("forced", &self.force.is_cancelled())
            .field("tasks", &self.tracker.len())
            .finish()
    }
}

struct Guard {
    id: u64,
    live: Arc<Mutex<Live>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.tasks.remove(&self.id);
        live.finished += 1;
    }
}

impl Shutdown {
    /// A fresh shutdown coordinator.
    pub fn new() -> Self {
        Self::default()
    }

    /// The root of the graceful-stop tree. Give components `token().child_token()`.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Cancelled when shutdown must happen *now* (second signal, or [`Shutdown::force`]).
    pub fn force_token(&self) -> CancellationToken {
        self.force.clone()
    }

    /// Starts a graceful shutdown: cancels [`token`](Self::token).
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Demands an immediate stop: cancels both tokens.
    pub fn force(&self) {
        self.token.cancel();
        self.force.cancel();
    }

    /// True once a graceful shutdown has been requested.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Spawns a tracked task with a name used in the report. Must be called in a tokio runtime.
    pub fn spawn<F>(&self, name: impl Into<String>, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name: String = name.into();
        #[cfg(feature = "tracing")]
        let span_name = name.clone();
        self.lock().tasks.insert(id, (name, None));
        let guard = Guard {
            id,
            live: self.live.clone(),
        };
        let handle = self.tracker.spawn(in_span!(
            async move {
                let _guard = guard;
                fut.await
            },
            "task",
            name = %span_name
        ));
        if let Some(entry) = self.lock().tasks.get_mut(&id) {
            entry.1 = Some(handle.abort_handle());
        }
        handle
    }

    /// Spawns a task that waits for signals: the first Ctrl-C / SIGTERM triggers a graceful
    /// shutdown, the second forces it. Returns an error if signal handlers cannot be installed.
    pub fn listen_for_signals(&self) -> std::io::Result<JoinHandle<()>> {
        let mut signals = Signals::new()?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            if signals.recv().await.is_none() {
                return;
            }
            me.trigger();
            if signals.recv().await.is_none() {
                return;
            }
            me.force();
        }))
    }

    /// Cancels the tree, waits up to `deadline` for every tracked task, aborts the stragglers and
    /// reports them by name.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let started = Instant::now();
        event!(
            info,
            ?deadline,
            tasks = self.tracker.len(),
            "shutdown: cancelling and draining"
        );
        self.trigger();
        self.tracker.close();
        let drained = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok();
        let mut stragglers = Vec::new();
        // Count before aborting: an aborted straggler's guard would otherwise count it as
        // finished (on a multi-thread runtime the abort can complete at once).
        let finished = {
            let live = self.lock();
            if !drained {
                let mut remaining: Vec<_> = live.tasks.iter().collect();
                remaining.sort_by_key(|(id, _)| **id);
                for (_, (name, abort)) in remaining {
                    event!(warn, task = %name, ?deadline, "shutdown: task did not finish in time; aborted");
                    stragglers.push(name.clone());
                    if let Some(abort) = abort {
                        abort.abort();
                    }
                }
            }
            live.finished
        };
        ShutdownReport {
            finished,
            stragglers,
            elapsed: started.elapsed(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Ctrl-C and (on Unix) SIGTERM as one stream of [`Signal`]s.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Must be called in a tokio runtime.
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// Waits for the next signal. `None` if the handlers were dropped by the runtime.
    pub async fn recv(&mut self) -> Option<Signal> {
        #[cfg(unix)]
        {
            tokio::select! {
                s = self.int.recv() => s.map(|()| Signal::Interrupt),
                s = self.term.recv() => s.map(|()| Signal::Terminate),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c()
                .await
                .ok()
                .map(|()| Signal::Interrupt)
        }
    }
}
