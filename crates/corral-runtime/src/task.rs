//! Task handles: await a task's output, see its panic, cancel it or let it run on.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Why a task produced no output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The task panicked; the worker thread that ran it lives on. Holds the panic message.
    Panicked(String),
    /// The task was dropped before it finished: the runtime shut down, or it was cancelled.
    Cancelled,
    /// There was no runtime to run it: it was spawned on a runtime that had shut down, or the
    /// global runtime could not start its threads (the message says why).
    NoRuntime(String),
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Panicked(m) => write!(f, "task panicked: {m}"),
            JoinError::Cancelled => f.write_str("task was cancelled before it finished"),
            JoinError::NoRuntime(m) => write!(f, "no runtime to run the task: {m}"),
        }
    }
}

impl std::error::Error for JoinError {}

/// The handle of a spawned task: a future of its output.
///
/// **Dropping a `JoinHandle` cancels the task** (the semantics of `async-task`, which this runtime
/// is built on, unlike tokio's). Call [`detach`](JoinHandle::detach) to let a task run on with
/// nobody waiting for it.
#[must_use = "dropping a JoinHandle cancels the task; call .detach() to let it run"]
pub struct JoinHandle<T> {
    inner: Inner<T>,
}

enum Inner<T> {
    Task(async_task::FallibleTask<Result<T, String>>),
    Failed(Option<JoinError>),
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(task: async_task::Task<Result<T, String>>) -> Self {
        Self {
            inner: Inner::Task(task.fallible()),
        }
    }

    pub(crate) fn failed(err: JoinError) -> Self {
        Self {
            inner: Inner::Failed(Some(err)),
        }
    }

    /// Lets the task run to completion with nobody waiting for its output.
    pub fn detach(self) {
        if let Inner::Task(t) = self.inner {
            t.detach();
        }
    }

    /// Cancels the task and waits until it is gone. Returns its output if it had already
    /// finished.
    pub async fn cancel(self) -> Option<Result<T, JoinError>> {
        match self.inner {
            Inner::Task(t) => t.cancel().await.map(|r| r.map_err(JoinError::Panicked)),
            Inner::Failed(_) => None,
        }
    }

    /// True once the task has finished (or can never run).
    pub fn is_finished(&self) -> bool {
        match &self.inner {
            Inner::Task(t) => t.is_finished(),
            Inner::Failed(_) => true,
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            Inner::Task(t) => Pin::new(t).poll(cx).map(|out| match out {
                Some(Ok(v)) => Ok(v),
                Some(Err(msg)) => Err(JoinError::Panicked(msg)),
                None => Err(JoinError::Cancelled),
            }),
            Inner::Failed(e) => Poll::Ready(Err(e.take().unwrap_or(JoinError::Cancelled))),
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
