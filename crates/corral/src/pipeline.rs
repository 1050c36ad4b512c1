//! Typed multi-stage pipelines.
//!
//! A [`Pipeline`] is a chain of async stages, `T -> U -> V ...`, each with its own concurrency
//! limit. Stages run on their own tokio tasks and are joined by bounded channels, so a slow
//! stage fills the channel before it and the whole pipeline slows down to its pace — memory stays
//! flat whatever the input size.
//!
//! A stage returns `Result<U, E>`. An `Err` (or a panic) does not kill the pipeline: the item
//! becomes a [`StageError`] naming the stage and the input's index, skips the remaining stages
//! and comes out of the pipeline's output in its place. Every input item therefore yields exactly
//! one output item, and in [ordered](PipelineBuilder::ordered) mode the outputs come in input
//! order, errors included.
//!
//! Why not just chain `buffer_unordered` calls? A chain of stream adapters is driven entirely by
//! the final consumer's `poll`, so every stage shares one task: stage 1 cannot parse the next
//! batch while stage 2 waits on the network. Here each stage has its own task.
//!
//! ```
//! use corral::pipeline::Pipeline;
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), corral::ConfigError> {
//! let input = futures::stream::iter(vec!["1", "2", "x", "4"]);
//! let out: Vec<_> = Pipeline::builder()
//!     .ordered(true)
//!     .input(input)
//!     .stage("parse", 2, |s: &str| async move { s.parse::<u32>() })
//!     .stage("double", 4, |n: u32| async move { Ok::<_, std::io::Error>(n * 2) })
//!     .run()?
//!     .collect()
//!     .await;
//! assert_eq!(out[0].as_ref().ok(), Some(&2));
//! let err = out[2].as_ref().unwrap_err();
//! assert_eq!((err.stage(), err.index()), ("parse", 2));
//! assert_eq!(out[3].as_ref().ok(), Some(&8));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::FutureExt;
use futures::stream::{BoxStream, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::trace::in_span;

use crate::error::{panic_message, ConfigError};
use crate::exec::Exec;
use crate::BoxError;

/// Why an item left the pipeline without a value.
#[derive(Debug)]
#[non_exhaustive]
pub enum StageErrorKind {
    /// The stage function returned an error.
    Failed(BoxError),
    /// The stage function panicked.
    Panicked(String),
}

/// An item that failed in a stage: which stage, which input item, and why.
#[derive(Debug)]
pub struct StageError {
    stage: &'static str,
    index: u64,
    kind: StageErrorKind,
}

impl StageError {
    /// The name given to the failing stage.
    pub fn stage(&self) -> &'static str {
        self.stage
    }
    /// The 0-based index of the input item, in pipeline input order.
    pub fn index(&self) -> u64 {
        self.index
    }
    /// The error or panic.
    pub fn kind(&self) -> &StageErrorKind {
        &self.kind
    }
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StageErrorKind::Failed(e) => {
                write!(
                    f,
                    "item {} failed in stage {:?}: {e}",
                    self.index, self.stage
                )
            }
            StageErrorKind::Panicked(m) => {
                write!(
                    f,
                    "item {} panicked in stage {:?}: {m}",
                    self.index, self.stage
                )
            }
        }
    }
}

impl std::error::Error for StageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            StageErrorKind::Failed(e) => Some(e.as_ref()),
            StageErrorKind::Panicked(_) => None,
        }
    }
}

type Item<T> = (u64, Result<T, StageError>);
type Starter = Box<dyn FnOnce(&mut JoinSet<()>) + Send>;

/// Options shared by all stages; start with [`Pipeline::builder`].
#[derive(Debug, Clone)]
pub struct PipelineBuilder {
    ordered: bool,
    capacity: usize,
}

impl PipelineBuilder {
    /// Keep input order end to end (default: completion order).
    pub fn ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }
    /// Capacity of the bounded channel after each stage (default 64).
    pub fn channel_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }
    /// Starts the pipeline from a stream of inputs.
    pub fn input<S>(self, input: S) -> Pipeline<S::Item>
    where
        S: Stream + Send + 'static,
        S::Item: Send + 'static,
    {
        let mut next = 0u64;
        let stream = input
            .map(move |x| {
                let i = next;
                next += 1;
                (i, Ok(x))
            })
            .boxed();
        Pipeline {
            stream,
            starters: Vec::new(),
            ordered: self.ordered,
            capacity: self.capacity,
            config_error: None,
        }
    }
}

/// A pipeline under construction whose current output type is `T`.
pub struct Pipeline<T> {
    stream: BoxStream<'static, Item<T>>,
    starters: Vec<Starter>,
    ordered: bool,
    capacity: usize,
    config_error: Option<ConfigError>,
}

impl<T> fmt::Debug for Pipeline<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("stages", &self.starters.len())
            .field("ordered", &self.ordered)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Pipeline<()> {
    /// Pipeline options: ordered or not, channel capacity.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder {
            ordered: false,
            capacity: 64,
        }
    }
}

impl<T: Send + 'static> Pipeline<T> {
    /// Adds a stage named `name` running `f` on at most `concurrency` items at once.
    ///
    /// A zero `concurrency` (or channel capacity) is reported by [`Pipeline::run`].
    pub fn stage<U, E, F, Fut>(
        mut self,
        name: &'static str,
        concurrency: usize,
        mut f: F,
    ) -> Pipeline<U>
    where
        U: Send + 'static,
        E: Into<BoxError>,
        F: FnMut(T) -> Fut + Send + 'static,
        Fut: Future<Output = Result<U, E>> + Send + 'static,
    {
        if self.config_error.is_none() {
            if concurrency == 0 {
                self.config_error = Some(ConfigError::new(
                    "pipeline",
                    format!("stage {name:?}: concurrency must be at least 1"),
                ));
            } else if self.capacity == 0 {
                self.config_error = Some(ConfigError::new(
                    "pipeline",
                    "channel capacity must be at least 1",
                ));
            }
        }
        let config_error = self.config_error;
        let exec = Exec::unchecked(concurrency.max(1), self.ordered);
        let (tx, rx) = mpsc::channel::<Item<U>>(self.capacity.max(1));
        let prev = self.stream;
        let starter: Starter = Box::new(move |tasks: &mut JoinSet<()>| {
            let mut results = exec.run(prev, move |(index, item): Item<T>| {
                let made = match item {
                    Err(e) => Err(e),
                    Ok(x) => std::panic::catch_unwind(AssertUnwindSafe(|| f(x)))
                        .map_err(|p| stage_panic(name, index, p.as_ref())),
                };
                async move {
                    let r = match made {
                        Err(e) => Err(e),
                        Ok(fut) => match AssertUnwindSafe(fut).catch_unwind().await {
                            Ok(Ok(v)) => Ok(v),
                            Ok(Err(e)) => Err(StageError {
                                stage: name,
                                index,
                                kind: StageErrorKind::Failed(e.into()),
                            }),
                            Err(p) => Err(stage_panic(name, index, p.as_ref())),
                        },
                    };
                    (index, r)
                }
            });
            tasks.spawn(in_span!(
                async move {
                    while let Some(r) = results.next().await {
                        // Panics are caught inside the job above, so `r` is never an exec error
                        // (no cancellation is configured); skip defensively rather than panic.
                        let Ok(item) = r else { continue };
                        if tx.send(item).await.is_err() {
                            break;
                        }
                    }
                },
                "pipeline_stage",
                stage = name
            ));
        });
        self.starters.push(starter);
        Pipeline {
            stream: tokio_stream_from(rx),
            starters: self.starters,
            ordered: self.ordered,
            capacity: self.capacity,
            config_error,
        }
    }

    /// Starts every stage (must be called inside a tokio runtime) and returns the output: one
    /// `Result` per input item. Dropping the output stops the pipeline.
    pub fn run(self) -> Result<PipelineOutput<T>, ConfigError> {
        if let Some(e) = self.config_error {
            return Err(e);
        }
        let mut tasks = JoinSet::new();
        for start in self.starters {
            start(&mut tasks);
        }
        Ok(PipelineOutput {
            stream: self.stream,
            _tasks: tasks,
        })
    }
}

fn stage_panic(
    stage: &'static str,
    index: u64,
    payload: &(dyn std::any::Any + Send),
) -> StageError {
    StageError {
        stage,
        index,
        kind: StageErrorKind::Panicked(panic_message(payload)),
    }
}

fn tokio_stream_from<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// The output of a running pipeline: one `Result` per input item.
pub struct PipelineOutput<T> {
    stream: BoxStream<'static, Item<T>>,
    _tasks: JoinSet<()>,
}

impl<T> PipelineOutput<T> {
    /// Yields `(input index, result)` pairs instead.
    pub fn with_index(self) -> impl Stream<Item = (u64, Result<T, StageError>)> {
        let PipelineOutput { stream, _tasks } = self;
        stream.map(move |x| {
            let _keep_alive = &_tasks;
            x
        })
    }
}

impl<T> fmt::Debug for PipelineOutput<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineOutput").finish_non_exhaustive()
    }
}

impl<T> Stream for PipelineOutput<T> {
    type Item = Result<T, StageError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.poll_next_unpin(cx).map(|o| o.map(|(_, r)| r))
    }
}
