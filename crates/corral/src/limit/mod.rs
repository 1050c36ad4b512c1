//! Rate limiting (GCRA), concurrency limiting (fixed, per key, adaptive), and all of them as
//! tower layers that wait or shed.
//!
//! - [`RateLimiter`]: one limiter, `rate` cells per period with a `burst`, exact GCRA semantics
//!   (the Generic Cell Rate Algorithm, equivalent to a leaky bucket), lock-free: one atomic
//!   compare-and-swap per decision. [`set_rate`](RateLimiter::set_rate) changes it while it
//!   runs.
//! - [`KeyedRateLimiter`]: one independent GCRA state per key (per host, per API key), with idle
//!   keys evicted so memory stays bounded by the number of *active* keys.
//! - [`pause_until`](KeyedRateLimiter::pause_until): hold back one key until an instant — what
//!   to do when a server answers 429 or 503 with `Retry-After`. Other keys are untouched.
//! - [`KeyedConcurrency`]: at most N operations in flight per key.
//! - [`AdaptiveConcurrency`]: a concurrency limit that finds itself from the calls' outcomes
//!   ([`Aimd`], or the latency [`Gradient`]).
//! - Layers: [`RateLimitLayer`], [`ConcurrencyLimitLayer`] (global or keyed) and
//!   [`AdaptiveConcurrencyLayer`]. The first two take an [`OnLimit`] mode: wait, wait at most a
//!   given time, or reject at once with a typed error ([`NotUntil`], [`AtCapacity`]).
//!
//! Which to choose: a rate limit when the other side states one (an API's 50 requests a
//! second); a fixed concurrency limit to bound your own resources (sockets, memory); an
//! adaptive one when the other side's capacity is unknown or moves; shedding rather than
//! waiting when a late answer is worth nothing to your caller.
//!
//! [`until_ready`](RateLimiter::until_ready) sleeps on tokio's timer until the next cell is due;
//! it never spins. A waiter reserves its cell before sleeping, so waiters are served in order
//! and timer lateness never costs throughput: the sustained rate is exact even when the
//! interval is near the timer's resolution.
//!
//! # Why not `governor`?
//!
//! governor is an excellent GCRA implementation, and the benchmark `benches/resilience.rs` compares
//! our check against it directly (see `BENCHMARKS.md`). We keep our own for three reasons a
//! tokio program feels: governor's async waits use `futures-timer` (a separate timer thread)
//! and its own clock, so they ignore tokio's paused test clock and cannot be tested
//! deterministically; it has no way to pause a key for a `Retry-After`; and its keyed state
//! needs an explicit `retain_recent` call to bound memory, where ours sweeps idle keys itself.
//!
//! # Semantics
//!
//! With `rate = r per period p` and `burst = b`, cells are spaced by `T = p / r`, and up to `b`
//! cells may be taken at once after an idle spell. Over any interval of length `t`, at most
//! `b + floor(t / T)` cells pass. The first `b` calls on a fresh limiter pass immediately.
//!
//! ```
//! use corral::limit::{Rate, RateLimiter};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), corral::ConfigError> {
//! let limiter = RateLimiter::builder().rate("10/s".parse()?).burst(2).build()?;
//! assert!(limiter.check().is_ok());
//! assert!(limiter.check().is_ok());
//! assert!(limiter.check().is_err()); // burst spent: next cell in 100 ms
//! limiter.until_ready().await; // sleeps 100 ms (of paused time here)
//! # Ok(())
//! # }
//! ```

mod adaptive;
mod concurrency;
mod concurrency_layer;
mod direct;
mod gcra;
mod keyed;
mod layer;
mod rate;

pub use adaptive::{
    AdaptiveConcurrency, AdaptiveConcurrencyBuilder, AdaptiveConcurrencyLayer, AdaptiveLimit,
    AdaptivePermit, Aimd, Algorithm, Gradient, Sample,
};
pub use concurrency::{KeyPermit, KeyedConcurrency};
pub use concurrency_layer::{AtCapacity, ConcurrencyLimit, ConcurrencyLimitLayer};
pub use direct::{RateLimiter, RateLimiterBuilder};
pub use gcra::{Acquire, Snapshot};
pub use keyed::KeyedRateLimiter;
pub use layer::{OnLimit, RateLimit, RateLimitLayer};
pub use rate::{NotUntil, Rate};

/// The futures of the limit layers' services (named, so they can be stored and boxed by
/// choice, not by force).
pub mod future {
    pub use super::adaptive::ResponseFuture as AdaptiveLimitFuture;
    pub use super::concurrency_layer::ResponseFuture as ConcurrencyLimitFuture;
    pub use super::layer::ResponseFuture as RateLimitFuture;
}
