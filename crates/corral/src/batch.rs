//! Batching: group items and flush them together.
//!
//! A [`Batcher`] owns a background task that collects pushed items and calls your flush function
//! with a [`Batch`] when the first of these happens:
//!
//! - the batch reaches [`max_size`](BatcherBuilder::max_size) items ([`FlushReason::Size`]);
//! - [`max_delay`](BatcherBuilder::max_delay) has passed since the batch's *first* item
//!   ([`FlushReason::Deadline`]), so a trickle of items is never held for long;
//! - the batcher is closed — by [`Batcher::close`], by its cancellation token, or because every
//!   sender is gone ([`FlushReason::Close`]).
//!
//! No item is ever dropped: every item whose push succeeded goes to exactly one flush call, in
//! push order, and flushes run one at a time in order. A push after close hands the item back
//! ([`Closed`]). The flush function's errors (and panics) are reported with the batch they belong
//! to in the [`BatchReport`] that [`Batcher::close`] returns.
//!
//! The queue in front of the batcher is bounded ([`queue_capacity`](BatcherBuilder::queue_capacity)):
//! while a flush is slow, pushers wait — backpressure instead of unbounded memory.
//!
//! ```
//! use corral::batch::Batcher;
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let batcher = Batcher::builder()
//!     .max_size(3)
//!     .max_delay(Duration::from_millis(50))
//!     .build(|batch: corral::batch::Batch<u32>| async move {
//!         println!("{:?} flush of {:?}", batch.reason(), batch.items());
//!         Ok::<(), std::io::Error>(())
//!     })?;
//! for i in 0..7 {
//!     batcher.push(i).await?;
//! }
//! let report = batcher.close().await?;
//! assert_eq!((report.items, report.batches), (7, 3)); // 3 + 3 by size, 1 on close
//! assert!(report.failures.is_empty());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{panic_message, ConfigError};
use crate::trace::in_span;

/// Why a batch was flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// It reached the maximum size.
    Size,
    /// The maximum delay since its first item passed.
    Deadline,
    /// The batcher was closed or cancelled, or every sender was dropped.
    Close,
}

/// A batch handed to the flush function.
#[derive(Debug)]
pub struct Batch<T> {
    seq: u64,
    reason: FlushReason,
    items: Vec<T>,
}

impl<T> Batch<T> {
    /// Sequence number of this batch, from 0.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Why it was flushed.
    pub fn reason(&self) -> FlushReason {
        self.reason
    }
    /// The items, in push order.
    pub fn items(&self) -> &[T] {
        &self.items
    }
    /// Takes the items out.
    pub fn into_items(self) -> Vec<T> {
        self.items
    }
    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// True if there are no items (never the case for a batch given to a flush function).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// How a flush failed.
#[derive(Debug)]
pub enum FlushError<E> {
    /// The flush function returned this error.
    Failed(E),
    /// The flush function panicked with this message.
    Panicked(String),
}

impl<E: fmt::Display> fmt::Display for FlushError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushError::Failed(e) => write!(f, "flush failed: {e}"),
            FlushError::Panicked(m) => write!(f, "flush panicked: {m}"),
        }
    }
}

/// A batch whose flush failed.
#[derive(Debug)]
pub struct FailedBatch<E> {
    /// The batch's sequence number.
    pub seq: u64,
    /// How many items it held.
    pub len: usize,
    /// Why it was flushed.
    pub reason: FlushReason,
    /// What went wrong.
    pub error: FlushError<E>,
}

/// What a batcher did over its life, returned by [`Batcher::close`].
#[derive(Debug)]
pub struct BatchReport<E> {
    /// Items received and handed to the flush function.
    pub items: u64,
    /// Flush calls made.
    pub batches: u64,
    /// The flushes that failed, in order.
    pub failures: Vec<FailedBatch<E>>,
}

/// A push was refused because the batcher is closed; the item is handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed<T>(pub T);

impl<T> fmt::Display for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the batcher is closed")
    }
}

impl<T: fmt::Debug> std::error::Error for Closed<T> {}

/// Configuration for a [`Batcher`]; start with [`Batcher::builder`].
#[derive(Debug, Clone)]
pub struct BatcherBuilder {
    max_size: usize,
    max_delay: Duration,
    queue_capacity: usize,
    cancel: Option<CancellationToken>,
}

impl BatcherBuilder {
    /// Flush when a batch holds this many items (default 100).
    pub fn max_size(mut self, n: usize) -> Self {
        self.max_size = n;
        self
    }
    /// Flush when this long has passed since the batch's first item (default 100 ms).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }
    /// Items that may wait in front of the batcher while it flushes (default: `max_size`).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n;
        self
    }
    /// Close the batcher (flushing what it holds) when this token is cancelled.
    pub fn cancel_token(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Starts the batcher task (call inside a tokio runtime).
    pub fn build<T, E, F, Fut>(self, flush: F) -> Result<Batcher<T, E>, ConfigError>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnMut(Batch<T>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        if self.max_size == 0 {
            return Err(ConfigError::new("batch", "max_size must be at least 1"));
        }
        if self.max_delay.is_zero() {
            return Err(ConfigError::new(
                "batch",
                "max_delay must be greater than zero (use max_size 1 to flush every item)",
            ));
        }
        let capacity = if self.queue_capacity == 0 {
            self.max_size
        } else {
            self.queue_capacity
        };
        let (tx, rx) = mpsc::channel(capacity);
        let close = self.cancel.map(|t| t.child_token()).unwrap_or_default();
        let task = tokio::spawn(in_span!(
            run_batcher(rx, close.clone(), self.max_size, self.max_delay, flush,),
            "batcher"
        ));
        Ok(Batcher {
            sender: BatchSender { tx },
            close,
            task,
        })
    }
}

/// A cloneable handle to push items into a [`Batcher`].
#[derive(Debug)]
pub struct BatchSender<T> {
    tx: mpsc::Sender<T>,
}

impl<T> Clone for BatchSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<T> BatchSender<T> {
    /// Queues an item, waiting while the queue is full. Fails, handing the item back, once the
    /// batcher is closed.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe for the item: if the future is dropped while it waits for room (it lost
    /// a `select!`, a timeout fired), the item was not queued and is dropped with it. To wait
    /// for room in a `select!` without risking the item, wait on [`reserve`](Self::reserve)
    /// there and push through the permit it returns.
    pub async fn push(&self, item: T) -> Result<(), Closed<T>> {
        self.tx.send(item).await.map_err(|e| Closed(e.0))
    }

    /// Waits for room in the queue and holds it: the returned [`BatchPermit`] queues one item
    /// without waiting.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting, it leaves the queue as it was, and no item is at
    /// stake yet. Waiters are served in order (tokio's channel is fair), so dropping it does
    /// give up its place in line.
    ///
    /// ```
    /// use corral::batch::Batcher;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let batcher = Batcher::builder()
    ///     .max_size(2)
    ///     .build(|_batch: corral::batch::Batch<u32>| async move { Ok::<_, std::convert::Infallible>(()) })
    ///     .expect("valid configuration");
    /// let sender = batcher.sender();
    /// let item = 7;
    /// tokio::select! {
    ///     permit = sender.reserve() => permit.expect("open").push(item),
    ///     _ = tokio::time::sleep(Duration::from_secs(1)) => println!("still have {item}"),
    /// }
    /// let report = batcher.close().await.expect("flusher ran");
    /// assert_eq!(report.items, 1);
    /// # }
    /// ```
    pub async fn reserve(&self) -> Result<BatchPermit<'_, T>, Closed<()>> {
        self.tx
            .reserve()
            .await
            .map(|permit| BatchPermit { permit })
            .map_err(|_| Closed(()))
    }
}

/// Room for one item in a batcher's queue, from [`BatchSender::reserve`]. Dropping it unused
/// gives the room back.
#[derive(Debug)]
pub struct BatchPermit<'a, T> {
    permit: mpsc::Permit<'a, T>,
}

impl<T> BatchPermit<'_, T> {
    /// Queues `item` in the room held; never waits, never fails.
    pub fn push(self, item: T) {
        self.permit.send(item)
    }
}

/// Collects items into batches and flushes them; see the [module docs](self).
#[derive(Debug)]
pub struct Batcher<T, E> {
    sender: BatchSender<T>,
    close: CancellationToken,
    task: JoinHandle<BatchReport<E>>,
}

impl Batcher<(), ()> {
    /// Defaults: max size 100, max delay 100 ms, queue capacity = max size.
    pub fn builder() -> BatcherBuilder {
        BatcherBuilder {
            max_size: 100,
            max_delay: Duration::from_millis(100),
            queue_capacity: 0,
            cancel: None,
        }
    }
}

impl<T, E> Batcher<T, E> {
    /// Queues an item; see [`BatchSender::push`].
    pub async fn push(&self, item: T) -> Result<(), Closed<T>> {
        self.sender.push(item).await
    }

    /// Another handle for pushing from other tasks.
    pub fn sender(&self) -> BatchSender<T> {
        self.sender.clone()
    }

    /// Stops intake, flushes every item already queued, waits for the last flush and returns
    /// the report. Items pushed through other senders after this call are handed back to them.
    pub async fn close(self) -> Result<BatchReport<E>, JoinError> {
        self.close.cancel();
        drop(self.sender);
        self.task.await
    }
}

async fn run_batcher<T, E, F, Fut>(
    mut rx: mpsc::Receiver<T>,
    close: CancellationToken,
    max_size: usize,
    max_delay: Duration,
    mut flush: F,
) -> BatchReport<E>
where
    F: FnMut(Batch<T>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut report = BatchReport {
        items: 0,
        batches: 0,
        failures: Vec::new(),
    };
    let mut buf: Vec<T> = Vec::with_capacity(max_size);
    let mut deadline: Option<Instant> = None;
    let mut closing = false;
    loop {
        let reason = tokio::select! {
            biased;
            _ = close.cancelled(), if !closing => {
                // No new pushes; what is already queued is still received below.
                closing = true;
                rx.close();
                continue;
            }
            item = rx.recv() => match item {
                Some(item) => {
                    if buf.is_empty() {
                        deadline = Some(Instant::now() + max_delay);
                    }
                    buf.push(item);
                    report.items += 1;
                    if buf.len() >= max_size {
                        FlushReason::Size
                    } else if deadline.is_some_and(|d| Instant::now() >= d) {
                        FlushReason::Deadline
                    } else {
                        continue;
                    }
                }
                None => break,
            },
            _ = sleep_until_opt(deadline) => FlushReason::Deadline,
        };
        deadline = None;
        let items = std::mem::replace(&mut buf, Vec::with_capacity(max_size));
        flush_one(&mut flush, &mut report, items, reason).await;
    }
    if !buf.is_empty() {
        flush_one(&mut flush, &mut report, buf, FlushReason::Close).await;
    }
    report
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn flush_one<T, E, F, Fut>(
    flush: &mut F,
    report: &mut BatchReport<E>,
    items: Vec<T>,
    reason: FlushReason,
) where
    F: FnMut(Batch<T>) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let seq = report.batches;
    report.batches += 1;
    let len = items.len();
    let batch = Batch { seq, reason, items };
    let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| flush(batch))) {
        Ok(fut) => AssertUnwindSafe(fut).catch_unwind().await,
        Err(p) => Err(p),
    };
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => FlushError::Failed(e),
        Err(p) => FlushError::Panicked(panic_message(p.as_ref())),
    };
    report.failures.push(FailedBatch {
        seq,
        len,
        reason,
        error,
    });
}
