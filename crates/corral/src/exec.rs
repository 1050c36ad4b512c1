//! Bounded concurrent execution of async jobs over a stream of inputs.
//!
//! One builder, [`Exec`], four strategies ([`Strategy`]), one output type ([`Results`]): a
//! `Stream` of `Result<Output, JobError>`, one per input item, in input order or in completion
//! order as asked.
//!
//! # The promises every strategy keeps
//!
//! - **Streaming input.** The input is any `Stream`; nothing is collected up front, so a
//!   million-item (or endless) input runs in flat memory.
//! - **A real bound.** With `limit(n)`, at most `n` items have been taken from the input and not
//!   yet delivered to the consumer. That bounds the jobs in flight *and* the results waiting to be
//!   read. ([`Strategy::Scatter`] is the one exception, by design: it starts everything at once.)
//! - **Backpressure.** A consumer that stops reading stops the producer: once `n` results wait,
//!   no further input item is pulled.
//! - **Exactly one output per item taken.** A job that panics yields
//!   [`JobErrorKind::Panicked`] for that item; the other jobs and the workers carry on.
//! - **Cancellation.** With [`ExecBuilder::cancel_token`], cancelling the token stops intake;
//!   jobs already taken either finish ([`OnCancel::Finish`], the default) or are aborted and
//!   reported as [`JobErrorKind::Cancelled`] ([`OnCancel::Abort`]). Items never taken stay in the
//!   input stream, untouched.
//! - **Dropping the [`Results`] stream aborts everything it started.** No detached work leaks.
//!
//! # Which strategy to choose
//!
//! | strategy | what runs the jobs | choose it when |
//! |---|---|---|
//! | [`Strategy::Buffered`] (default) | the task polling the results, like `buffer_unordered` | I/O-bound jobs (HTTP calls, DB queries): the cheapest, no spawning, jobs need not be `'static` in spirit, all progress happens where you poll |
//! | [`Strategy::Spawn`] | one tokio task per item, at most `n` alive (semaphore-gated spawning) | jobs do some CPU work between awaits and should use every runtime thread; a slow consumer must not slow the jobs already started |
//! | [`Strategy::WorkerPool`] | `n` long-lived tasks pulling from a multi-consumer channel | per-worker setup is expensive (a connection each), or you want a fixed set of long-lived consumers as in a classic work queue |
//! | [`Strategy::Scatter`] | one task per item, all at once | a *small, known* set (fan out to 5 replicas, gather the answers): no bound at all |
//!
//! Rate-limited APIs: pair any strategy with [`crate::limit`] inside the job; the concurrency
//! bound caps sockets and memory, the rate limiter caps requests per second — you usually want
//! both. CPU-bound work (hashing, parsing large documents, compression) does not belong on the
//! async worker threads at all: call `tokio::task::spawn_blocking` (or hand it to rayon) from
//! inside the job, and keep the `limit` at about the number of cores so the blocking pool is not
//! flooded.
//!
//! # Why not just `buffer_unordered`?
//!
//! [`Strategy::Buffered`] *is* `buffer_unordered` / `buffered` underneath, plus what a bulk
//! runner needs and `futures` leaves to you: a panic in one job does not take down the whole
//! stream, cancellation stops intake cleanly, and the same code switches to spawned tasks or a
//! worker pool by changing one builder call. The benchmark `benches/exec.rs` measures the cost
//! against the raw primitives (see `BENCHMARKS.md`).
//!
//! ```
//! use corral::exec::{Exec, Strategy};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), corral::ConfigError> {
//! let exec = Exec::builder().limit(4).strategy(Strategy::WorkerPool).build()?;
//! let mut total = 0;
//! let mut results = exec.run(futures::stream::iter(0..100u32), |n| async move {
//!     if n == 13 { panic!("unlucky") }
//!     n
//! });
//! let mut failures = 0;
//! while let Some(r) = results.next().await {
//!     match r {
//!         Ok(n) => total += n,
//!         Err(e) => { assert!(e.is_panic()); failures += 1 }
//!     }
//! }
//! assert_eq!((total, failures), ((0..100).sum::<u32>() - 13, 1));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, FutureExt};
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::error::{panic_message, ConfigError};

/// How jobs are run. See the [module docs](self) for when to choose which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Jobs are polled by whoever polls the results (`buffer_unordered` / `buffered`).
    #[default]
    Buffered,
    /// One tokio task per item, at most `limit` alive at once.
    Spawn,
    /// `limit` long-lived worker tasks pulling jobs from a multi-consumer channel.
    WorkerPool,
    /// One tokio task per item, all started as soon as they arrive; `limit` is ignored.
    Scatter,
}

/// What cancellation does to jobs already taken from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCancel {
    /// Let them run to completion (default): their real results are delivered.
    #[default]
    Finish,
    /// Abort them: each yields [`JobErrorKind::Cancelled`].
    Abort,
}

/// Why a job produced no output value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobErrorKind {
    /// The job panicked; the panic message is kept.
    Panicked(String),
    /// The job was aborted by cancellation ([`OnCancel::Abort`]).
    Cancelled,
}

/// A job that did not produce its output. Carries the input item's index (0-based, in input
/// order) so the failure can be matched to its input even in unordered mode.
///
/// Boxed inside, so a `Result<T, JobError>` is only a pointer bigger than `T`: results move
/// through several stream layers per item, and failures are the rare case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError(Box<JobErrorInner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct JobErrorInner {
    index: u64,
    kind: JobErrorKind,
}

impl JobError {
    /// The 0-based position of the input item whose job failed.
    pub fn index(&self) -> u64 {
        self.0.index
    }
    /// What happened.
    pub fn kind(&self) -> &JobErrorKind {
        &self.0.kind
    }
    /// True if the job panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.0.kind, JobErrorKind::Panicked(_))
    }
    /// True if the job was aborted by cancellation.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.0.kind, JobErrorKind::Cancelled)
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.kind {
            JobErrorKind::Panicked(m) => write!(f, "job {} panicked: {m}", self.0.index),
            JobErrorKind::Cancelled => write!(f, "job {} was cancelled", self.0.index),
        }
    }
}

impl std::error::Error for JobError {}

/// A configured executor. Cheap to clone; [`Exec::run`] may be called many times.
#[derive(Debug, Clone)]
pub struct Exec {
    limit: usize,
    strategy: Strategy,
    ordered: bool,
    cancel: Option<CancellationToken>,
    on_cancel: OnCancel,
}

/// Builder for [`Exec`]; start with [`Exec::builder`].
#[derive(Debug, Clone)]
pub struct ExecBuilder {
    exec: Exec,
}

impl Default for ExecBuilder {
    fn default() -> Self {
        Self {
            exec: Exec::unchecked(16, false),
        }
    }
}

impl ExecBuilder {
    /// At most this many items taken from the input and not yet delivered (default 16).
    pub fn limit(mut self, limit: usize) -> Self {
        self.exec.limit = limit;
        self
    }
    /// How jobs are run (default [`Strategy::Buffered`]).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.exec.strategy = strategy;
        self
    }
    /// Deliver results in input order (default: completion order). Ordered output holds
    /// finished results behind a slow head item, which counts against the limit.
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.exec.ordered = ordered;
        self
    }
    /// Stop intake when this token is cancelled.
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.exec.cancel = Some(token);
        self
    }
    /// What cancellation does to jobs already taken (default [`OnCancel::Finish`]).
    pub fn on_cancel(mut self, on_cancel: OnCancel) -> Self {
        self.exec.on_cancel = on_cancel;
        self
    }
    /// Checks the configuration. A limit of 0 is refused (it would never run anything),
    /// except for [`Strategy::Scatter`] which ignores the limit.
    pub fn build(self) -> Result<Exec, ConfigError> {
        if self.exec.limit == 0 && self.exec.strategy != Strategy::Scatter {
            return Err(ConfigError::new(
                "exec",
                "limit must be at least 1 (a limit of 0 would never run a job)",
            ));
        }
        Ok(self.exec)
    }
}

type Indexed<T> = (u64, Result<T, JobError>);

impl Exec {
    /// A builder with the defaults: limit 16, [`Strategy::Buffered`], unordered, no cancellation.
    pub fn builder() -> ExecBuilder {
        ExecBuilder::default()
    }

    /// A plain bounded executor for this crate's own use; `limit` must already be non-zero.
    pub(crate) fn unchecked(limit: usize, ordered: bool) -> Exec {
        Exec {
            limit,
            strategy: Strategy::Buffered,
            ordered,
            cancel: None,
            on_cancel: OnCancel::Finish,
        }
    }

    /// The configured limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Runs `job` on every item of `input`, at most `limit` at a time, and returns the results
    /// as a stream. Nothing starts until the stream is polled; the stream must be polled inside a
    /// tokio runtime for the spawning strategies.
    ///
    /// ```
    /// use corral::exec::{Exec, Strategy};
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), corral::ConfigError> {
    /// let exec = Exec::builder().limit(2).strategy(Strategy::Spawn).ordered(true).build()?;
    /// let out: Vec<_> = exec.run(futures::stream::iter(["a", "bb", "ccc"]), |s| async move { s.len() })
    ///     .collect().await;
    /// assert_eq!(out, vec![Ok(1), Ok(2), Ok(3)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn run<S, F, Fut>(&self, input: S, job: F) -> Results<Fut::Output>
    where
        S: Stream + Send + 'static,
        S::Item: Send + 'static,
        F: FnMut(S::Item) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let input = self.intake(input);
        let abort = match self.on_cancel {
            OnCancel::Abort => self.cancel.clone(),
            OnCancel::Finish => None,
        };
        let jobs = make_jobs(input, job);
        let inner: BoxStream<'static, Indexed<Fut::Output>> = match self.strategy {
            Strategy::Buffered => match abort {
                // Without abort-on-cancel each job needs only panic catching: a much smaller
                // future than the select below, which matters at millions of items.
                None => {
                    let futs = jobs.map(|(i, made)| caught(i, made));
                    buffer(futs, self.limit, self.ordered)
                }
                Some(token) => {
                    let futs = jobs.map(move |(i, made)| guarded(i, made, Some(token.clone())));
                    buffer(futs, self.limit, self.ordered)
                }
            },
            Strategy::Spawn => {
                let futs = jobs.map(move |(i, fut)| spawned(i, fut, abort.clone()));
                buffer(futs, self.limit, self.ordered)
            }
            Strategy::Scatter => Scatter::new(jobs, self.ordered, abort).boxed(),
            Strategy::WorkerPool => {
                WorkerPool::new(jobs.boxed(), self.limit, self.ordered, abort).boxed()
            }
        };
        Results { inner }
    }

    /// Scatter/gather convenience (fan-out/fan-in): runs `job` on every item and collects all
    /// results **in input order**, whatever the strategy.
    ///
    /// ```
    /// use corral::exec::Exec;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), corral::ConfigError> {
    /// let exec = Exec::builder().limit(3).build()?;
    /// let replies = exec.gather(vec![3u64, 1, 2], |n| async move { n * 10 }).await;
    /// assert_eq!(replies, vec![Ok(30), Ok(10), Ok(20)]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn gather<I, F, Fut>(&self, items: I, job: F) -> Vec<Result<Fut::Output, JobError>>
    where
        I: IntoIterator,
        I::IntoIter: Send + 'static,
        I::Item: Send + 'static,
        F: FnMut(I::Item) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        let mut all: Vec<Indexed<Fut::Output>> = self
            .run(futures::stream::iter(items), job)
            .with_index()
            .collect()
            .await;
        all.sort_unstable_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, r)| r).collect()
    }

    /// Runs `job` on every item with a pool of `limit` workers that each own a state, made
    /// once per worker by `init(worker_index)`: a connection, a parser, a buffer — what a job
    /// needs and should not rebuild per item. The worker-pool strategy, whatever the builder
    /// says; ordering, the bound, panics and cancellation behave as for [`Exec::run`]. A job
    /// that panics leaves its worker's state as it was at the panic, and the worker goes on.
    ///
    /// The job borrows the state for the length of its future, so it returns a boxed future
    /// (`Box::pin(async move { ... })`): the one allocation per item this costs is what lets
    /// the future hold `&mut` state across its awaits.
    ///
    /// ```
    /// use corral::exec::Exec;
    /// use futures::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), corral::ConfigError> {
    /// let exec = Exec::builder().limit(3).build()?;
    /// // Each worker counts the items it handled (its "connection" is a counter here).
    /// let seen: Vec<(usize, u64)> = exec
    ///     .run_with_state(
    ///         futures::stream::iter(0..30u64),
    ///         |worker| async move { (worker, 0u64) },
    ///         |state: &mut (usize, u64), _item| Box::pin(async move {
    ///             state.1 += 1;
    ///             (state.0, state.1)
    ///         }),
    ///     )
    ///     .map(|r| r.expect("no panic"))
    ///     .collect()
    ///     .await;
    /// assert_eq!(seen.len(), 30);
    /// # Ok(())
    /// # }
    /// ```
    pub fn run_with_state<S, St, I, IFut, F, T>(&self, input: S, init: I, job: F) -> Results<T>
    where
        S: Stream + Send + 'static,
        S::Item: Send + 'static,
        St: Send + 'static,
        I: Fn(usize) -> IFut + Send + Sync + 'static,
        IFut: Future<Output = St> + Send + 'static,
        F: for<'a> Fn(&'a mut St, S::Item) -> futures::future::BoxFuture<'a, T>
            + Send
            + Sync
            + 'static,
        T: Send + 'static,
    {
        let input = self.intake(input);
        let abort = match self.on_cancel {
            OnCancel::Abort => self.cancel.clone(),
            OnCancel::Finish => None,
        };
        WorkerPool::stateful(
            input.boxed(),
            self.limit.max(1),
            self.ordered,
            abort,
            init,
            job,
        )
        .boxed()
        .pipe_results()
    }

    fn intake<S>(&self, input: S) -> impl Stream<Item = S::Item> + Send + 'static
    where
        S: Stream + Send + 'static,
    {
        match &self.cancel {
            Some(token) => Either::Left(input.take_until(token.clone().cancelled_owned())),
            None => Either::Right(input),
        }
    }
}

/// Runs at most `limit` of the futures at once, yielding outputs in input order or as they finish.
fn buffer<S>(
    futs: S,
    limit: usize,
    ordered: bool,
) -> BoxStream<'static, <S::Item as Future>::Output>
where
    S: Stream + Send + 'static,
    S::Item: Future + Send,
    <S::Item as Future>::Output: Send,
{
    if ordered {
        futs.buffered(limit).boxed()
    } else {
        futs.buffer_unordered(limit).boxed()
    }
}

/// A job as created from its input: either the future to run, or the panic of the job
/// function itself while creating it (boxed: small in the common case).
type Made<Fut> = Result<Fut, JobError>;

fn make_jobs<S, F, Fut>(input: S, mut job: F) -> impl Stream<Item = (u64, Made<Fut>)> + Send
where
    S: Stream + Send,
    F: FnMut(S::Item) -> Fut + Send,
{
    let mut next = 0u64;
    input.map(move |item| {
        let index = next;
        next += 1;
        let made = std::panic::catch_unwind(AssertUnwindSafe(|| job(item)))
            .map_err(|p| panicked(index, panic_message(p.as_ref())));
        (index, made)
    })
}

/// Runs one job in place; a panic becomes an error.
fn caught<Fut>(index: u64, made: Made<Fut>) -> impl Future<Output = Indexed<Fut::Output>> + Send
where
    Fut: Future + Send,
    Fut::Output: Send,
{
    match made {
        Err(e) => Either::Left(futures::future::ready((index, Err(e)))),
        Ok(fut) => Either::Right(AssertUnwindSafe(fut).catch_unwind().map(move |r| {
            (
                index,
                r.map_err(|p| panicked(index, panic_message(p.as_ref()))),
            )
        })),
    }
}

/// Runs one job in place: panics become errors, cancellation (if asked) aborts it.
async fn guarded<Fut>(
    index: u64,
    made: Made<Fut>,
    abort: Option<CancellationToken>,
) -> Indexed<Fut::Output>
where
    Fut: Future + Send,
{
    {
        let fut = match made {
            Ok(fut) => fut,
            Err(e) => return (index, Err(e)),
        };
        let caught = AssertUnwindSafe(fut).catch_unwind();
        let out = match abort {
            None => caught.await,
            Some(token) => {
                if token.is_cancelled() {
                    return (index, Err(cancelled(index)));
                }
                tokio::select! {
                    biased;
                    r = caught => r,
                    _ = token.cancelled() => return (index, Err(cancelled(index))),
                }
            }
        };
        (
            index,
            out.map_err(|p| panicked(index, panic_message(p.as_ref()))),
        )
    }
}

/// Runs one job on its own tokio task; the task is aborted if the future is dropped.
fn spawned<Fut>(
    index: u64,
    made: Made<Fut>,
    abort: Option<CancellationToken>,
) -> impl Future<Output = Indexed<Fut::Output>> + Send
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let task = match made {
        Err(e) => Either::Left(futures::future::ready((index, Err(e)))),
        Ok(fut) => {
            let body = async move {
                match abort {
                    None => Some(fut.await),
                    Some(token) => token.run_until_cancelled(fut).await,
                }
            };
            let handle = AbortOnDropHandle::new(tokio::spawn(body));
            Either::Right(handle.map(move |joined| {
                let r = match joined {
                    Ok(Some(v)) => Ok(v),
                    Ok(None) => Err(cancelled(index)),
                    Err(e) if e.is_panic() => {
                        Err(panicked(index, panic_message(e.into_panic().as_ref())))
                    }
                    Err(_) => Err(cancelled(index)),
                };
                (index, r)
            }))
        }
    };
    task
}

fn panicked(index: u64, msg: String) -> JobError {
    JobError(Box::new(JobErrorInner {
        index,
        kind: JobErrorKind::Panicked(msg),
    }))
}

fn cancelled(index: u64) -> JobError {
    JobError(Box::new(JobErrorInner {
        index,
        kind: JobErrorKind::Cancelled,
    }))
}

/// Wraps an indexed stream as [`Results`].
trait PipeResults<T> {
    fn pipe_results(self) -> Results<T>;
}

impl<T> PipeResults<T> for BoxStream<'static, Indexed<T>> {
    fn pipe_results(self) -> Results<T> {
        Results { inner: self }
    }
}

/// The results of [`Exec::run`]: one `Result` per input item taken.
///
/// Dropping it aborts every job and task it started.
pub struct Results<T> {
    inner: BoxStream<'static, Indexed<T>>,
}

impl<T> Results<T> {
    /// Yields `(input index, result)` pairs instead, so unordered results can be matched to
    /// their inputs.
    pub fn with_index(self) -> impl Stream<Item = (u64, Result<T, JobError>)> + Send {
        self.inner
    }
}

impl<T> fmt::Debug for Results<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Results").finish_non_exhaustive()
    }
}

impl<T> Stream for Results<T> {
    type Item = Result<T, JobError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx).map(|o| o.map(|(_, r)| r))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

type PoolMsg<T> = (u64, Result<T, JobError>, OwnedSemaphorePermit);
type PoolStart<T> = Box<dyn FnOnce() -> (JoinSet<()>, mpsc::Receiver<PoolMsg<T>>) + Send>;

/// The worker-pool strategy: a feeder task takes a permit (one of `limit`), pulls one item and
/// hands its job to `limit` workers through a multi-consumer channel. The permit travels with
/// the job and its result and is released only when the result is delivered, which is what
/// bounds intake to `limit` items ahead of the consumer.
struct WorkerPool<T> {
    start: Option<PoolStart<T>>,
    tasks: JoinSet<()>,
    rx: Option<mpsc::Receiver<PoolMsg<T>>>,
    ordered: bool,
    next: u64,
    /// Ordered mode's reorder buffer; each result keeps its permit until delivered, so a slow
    /// head item stalls intake instead of letting this buffer grow.
    waiting: BTreeMap<u64, (Result<T, JobError>, OwnedSemaphorePermit)>,
}

/// What a pool's worker is handed: an item's index and job input, and the permit that travels
/// with it to the result.
type PoolJob<Item> = (u64, Item, OwnedSemaphorePermit);

impl<T: Send + 'static> WorkerPool<T> {
    /// The strategy's pool: each worker runs the job an item was made into.
    fn new<Fut>(
        jobs: BoxStream<'static, (u64, Made<Fut>)>,
        workers: usize,
        ordered: bool,
        abort: Option<CancellationToken>,
    ) -> Self
    where
        Fut: Future<Output = T> + Send + 'static,
    {
        Self::with_workers(jobs, workers, ordered, move |_, job_rx, res_tx| {
            let abort = abort.clone();
            async move {
                while let Ok((i, made, permit)) = job_rx.recv().await {
                    let (_, r) = guarded(i, made, abort.clone()).await;
                    if res_tx.send((i, r, permit)).await.is_err() {
                        break;
                    }
                }
            }
        })
    }

    /// The pool of [`Exec::run_with_state`]: each worker makes its state at its start and runs
    /// the job against it for every item it is handed.
    fn stateful<Item, St, I, IFut, F>(
        items: BoxStream<'static, Item>,
        workers: usize,
        ordered: bool,
        abort: Option<CancellationToken>,
        init: I,
        job: F,
    ) -> Self
    where
        Item: Send + 'static,
        St: Send + 'static,
        I: Fn(usize) -> IFut + Send + Sync + 'static,
        IFut: Future<Output = St> + Send + 'static,
        F: for<'a> Fn(&'a mut St, Item) -> futures::future::BoxFuture<'a, T>
            + Send
            + Sync
            + 'static,
    {
        let mut next = 0u64;
        let indexed = items
            .map(move |item| {
                let i = next;
                next += 1;
                (i, item)
            })
            .boxed();
        let (init, job) = (Arc::new(init), Arc::new(job));
        Self::with_workers(indexed, workers, ordered, move |w, job_rx, res_tx| {
            let (init, job, abort) = (init.clone(), job.clone(), abort.clone());
            async move {
                let mut state = init(w).await;
                while let Ok((i, item, permit)) = job_rx.recv().await {
                    let made = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut state, item)))
                        .map_err(|p| panicked(i, panic_message(p.as_ref())));
                    let (_, r) = guarded(i, made, abort.clone()).await;
                    if res_tx.send((i, r, permit)).await.is_err() {
                        break;
                    }
                }
            }
        })
    }

    /// The pool itself, started on first poll: a feeder task takes a permit, pulls one item and
    /// hands it to `workers` tasks made by `worker(index, jobs, results)`.
    fn with_workers<Item, W, WFut>(
        items: BoxStream<'static, (u64, Item)>,
        workers: usize,
        ordered: bool,
        worker: W,
    ) -> Self
    where
        Item: Send + 'static,
        W: Fn(usize, async_channel::Receiver<PoolJob<Item>>, mpsc::Sender<PoolMsg<T>>) -> WFut
            + Send
            + 'static,
        WFut: Future<Output = ()> + Send + 'static,
    {
        let start = move || {
            let permits = Arc::new(Semaphore::new(workers));
            let (job_tx, job_rx) = async_channel::bounded::<PoolJob<Item>>(workers);
            let (res_tx, res_rx) = mpsc::channel::<PoolMsg<T>>(workers);
            let mut tasks = JoinSet::new();
            tasks.spawn(async move {
                let mut items = items;
                loop {
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    let Some((i, item)) = items.next().await else {
                        break;
                    };
                    if job_tx.send((i, item, permit)).await.is_err() {
                        break;
                    }
                }
            });
            for w in 0..workers {
                tasks.spawn(worker(w, job_rx.clone(), res_tx.clone()));
            }
            (tasks, res_rx)
        };
        Self {
            start: Some(Box::new(start)),
            tasks: JoinSet::new(),
            rx: None,
            ordered,
            next: 0,
            waiting: BTreeMap::new(),
        }
    }
}

impl<T: Send + 'static> Stream for WorkerPool<T> {
    type Item = Indexed<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(start) = this.start.take() {
            let (tasks, rx) = start();
            this.tasks = tasks;
            this.rx = Some(rx);
        }
        loop {
            if this.ordered {
                if let Some((r, _permit)) = this.waiting.remove(&this.next) {
                    let i = this.next;
                    this.next += 1;
                    return Poll::Ready(Some((i, r)));
                }
            }
            let Some(rx) = this.rx.as_mut() else {
                return Poll::Ready(None);
            };
            match rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.rx = None,
                Poll::Ready(Some((i, r, permit))) => {
                    if !this.ordered {
                        drop(permit);
                        return Poll::Ready(Some((i, r)));
                    }
                    this.waiting.insert(i, (r, permit));
                }
            }
        }
    }
}

/// The scatter strategy: every job spawned as soon as its item arrives, each task sending its
/// result into one unbounded channel; the stream hands results on as they come (or in input
/// order). Cheaper per item than a `FuturesUnordered` of join handles, which is what this
/// strategy used to be (1.74–1.86× spawn-and-join; see BENCHMARKS.md): a task's result takes
/// one channel send instead of a join-handle wake through a ready queue. Dropping the stream
/// aborts the tasks still running.
struct Scatter<T> {
    /// Spawns one item's job (or sends its error at once) per item pulled.
    spawner: Option<BoxStream<'static, Option<AbortHandle>>>,
    rx: mpsc::UnboundedReceiver<Indexed<T>>,
    /// By item index: the task, until its result arrives (holding a task's handle keeps its
    /// memory, so each is let go as soon as the task has reported).
    running: Vec<Option<AbortHandle>>,
    /// Items pulled, and results received.
    pulled: u64,
    received: u64,
    ordered: bool,
    next: u64,
    waiting: BTreeMap<u64, Result<T, JobError>>,
}

impl<T: Send + 'static> Scatter<T> {
    fn new<S, Fut>(jobs: S, ordered: bool, abort: Option<CancellationToken>) -> Self
    where
        S: Stream<Item = (u64, Made<Fut>)> + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let spawner = jobs
            .map(move |(i, made)| match made {
                Err(e) => {
                    let _ = tx.send((i, Err(e)));
                    None
                }
                Ok(fut) => {
                    let (tx, abort) = (tx.clone(), abort.clone());
                    let task = tokio::spawn(async move {
                        let out = guarded(i, Ok(fut), abort).await;
                        let _ = tx.send(out);
                    });
                    Some(task.abort_handle())
                }
            })
            .boxed();
        Self {
            spawner: Some(spawner),
            rx,
            running: Vec::new(),
            pulled: 0,
            received: 0,
            ordered,
            next: 0,
            waiting: BTreeMap::new(),
        }
    }
}

impl<T> Drop for Scatter<T> {
    fn drop(&mut self) {
        for task in self.running.iter().flatten() {
            task.abort();
        }
    }
}

impl<T: Send + 'static> Stream for Scatter<T> {
    type Item = Indexed<T>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        // Start everything the input has ready.
        while let Some(spawner) = this.spawner.as_mut() {
            match spawner.poll_next_unpin(cx) {
                Poll::Ready(Some(task)) => {
                    this.pulled += 1;
                    this.running.push(task);
                }
                Poll::Ready(None) => this.spawner = None,
                Poll::Pending => break,
            }
        }
        loop {
            if this.ordered {
                if let Some(r) = this.waiting.remove(&this.next) {
                    let i = this.next;
                    this.next += 1;
                    return Poll::Ready(Some((i, r)));
                }
            }
            if this.spawner.is_none() && this.received == this.pulled {
                this.running.clear();
                return Poll::Ready(None);
            }
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some((i, r))) => {
                    this.received += 1;
                    if let Some(slot) = usize::try_from(i)
                        .ok()
                        .and_then(|i| this.running.get_mut(i))
                    {
                        *slot = None;
                    }
                    if !this.ordered {
                        return Poll::Ready(Some((i, r)));
                    }
                    this.waiting.insert(i, r);
                }
                // Every task holds a sender, and so does the spawner until the input ends.
                Poll::Ready(None) => {
                    this.running.clear();
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
