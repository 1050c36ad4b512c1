//! # corral
//!
//! Bounded, rate-limited, fault-tolerant concurrent I/O on tokio.
//!
//! corral is for programs that must do "a whole lot of requests at once" without overloading the
//! services they call or their own process. Each concept lives in its own module:
//!
//! | module | what it gives you |
//! |---|---|
//! | [`exec`] | run async jobs over a stream of inputs with at most N in flight: scatter/gather, worker pool, semaphore-gated spawning, buffered stream — one API, ordered or unordered output, real backpressure, contained panics |
//! | [`pipeline`] | typed multi-stage pipelines, each stage with its own concurrency, errors routed to the output instead of killing the pipeline |
//! | [`batch`] | group items into batches flushed on size, on a deadline, or on close — never dropping one |
//! | [`shutdown`] | Ctrl-C / SIGTERM → cancel a token tree → wait for tracked tasks up to a deadline → report stragglers |
//! | [`limit`] | GCRA rate limiting (global and keyed per host, changeable while running), `pause_until` for Retry-After, per-key and adaptive concurrency limits; layers that wait, wait at most, or shed |
//! | [`retry`] | exponential backoff with full jitter, attempt and time caps, a retry budget, a classifier over whole results, an `on_retry` hook |
//! | [`breaker`] | circuit breaker on failure *rate* over a rolling window (slow calls may count as failures), keyed per host, with state-change events |
//! | [`classify`] | judging an HTTP result for the retry and breaker layers: retry 429/5xx and connection errors after `Retry-After`, count 5xx as failures |
//! | [`hedge`] | hedged requests: after a latency percentile, a second call; the first success wins, the other is cancelled, within a budget |
//! | [`timeout`] | per-attempt and whole-operation timeouts |
//! | [`cpu`] | CPU-heavy closures beside async I/O: a bounded `spawn_blocking` gate and a rayon pool that returns futures, so the event loop never stalls |
//! | [`actor`] | actors: typed messages, bounded mailboxes, tell/ask, a registry, one-for-one supervision with heartbeat, restart limits and backoff, monitors |
//! | [`journal`] | durable state: a snapshot plus a checksummed append-only log, torn-tail repair, crash-safe snapshots, an fsync policy and `sync()` |
//! | [`guide`] | docs only: the async pitfalls (`!Send` across `.await`, `'static` and `Arc`, recursion and `Box::pin`, `RefCell` borrows, blocking, a lock with a deadline), each with an example that compiles and one that does not |
//! | [`bus`] | a typed topic event bus: bounded per-subscriber buffers, drop-oldest with reported lag or backpressure |
//!
//! Every resilience piece is also a [`tower::Layer`], so it can wrap any `tower::Service`. With
//! the `tracing` feature, every component reports what it does as `tracing` events.
//!
//! corral's own priority executor, which runs without tokio, is the separate crate
//! `corral-runtime`.
//!
//! ```
//! use corral::exec::Exec;
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), corral::ConfigError> {
//! let exec = Exec::builder().limit(8).ordered(true).build()?;
//! let squares: Vec<u64> = exec
//!     .run(futures::stream::iter(1..=5u64), |n| async move { n * n })
//!     .map(|r| r.expect("no job panics here"))
//!     .collect()
//!     .await;
//! assert_eq!(squares, vec![1, 4, 9, 16, 25]);
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

mod error;
mod trace;
pub use error::ConfigError;

pub mod actor;
pub mod batch;
pub mod breaker;
pub mod bus;
pub mod classify;
pub mod cpu;
pub mod exec;
pub mod guide;
pub mod hedge;
pub mod journal;
pub mod limit;
pub mod pipeline;
pub mod retry;
pub mod shutdown;
pub mod timeout;

/// A boxed error that can cross threads: what stage functions, services and flushes may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
