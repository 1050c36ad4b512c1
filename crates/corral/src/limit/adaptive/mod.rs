//! Adaptive concurrency: a limit on calls in flight that finds itself, from what the calls
//! report.
//!
//! A fixed concurrency limit is a guess: too low wastes a service that could take more, too
//! high queues requests inside it (latency climbs, then timeouts and errors). An
//! [`AdaptiveConcurrency`] limiter moves its limit after every call, by an [`Algorithm`]:
//! [`Aimd`] (cut on errors, creep up on success) or [`Gradient`] (shrink when latency rises
//! above its long-run level, before errors come) — the two workhorses of Netflix's
//! concurrency-limits library, whose defaults these follow. As a tower layer:
//! [`AdaptiveConcurrencyLayer`].
//!
//! The limit is enforced by a tokio `Semaphore` whose permits are added or forgotten as it
//! moves; a permit that comes back while the limit is lower than the calls in flight is
//! forgotten rather than returned, so the number in flight falls to the new limit as calls
//! finish, without cancelling any.
//!
//! ```
//! use corral::limit::{AdaptiveConcurrency, Aimd};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), corral::ConfigError> {
//! let limiter = AdaptiveConcurrency::builder().initial(10).algorithm(Aimd::new()).build()?;
//! let permit = limiter.acquire().await;
//! // ... make the call; it was refused with a 503:
//! permit.dropped();
//! assert_eq!(limiter.limit(), 9); // 10 × 0.9
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::ConfigError;
use crate::trace::event;

mod algorithm;
mod layer;

pub use algorithm::{Aimd, Algorithm, Gradient, Sample};
pub use layer::{AdaptiveConcurrencyLayer, AdaptiveLimit, ResponseFuture};

/// Builder for [`AdaptiveConcurrency`].
#[derive(Debug, Clone)]
pub struct AdaptiveConcurrencyBuilder {
    initial: usize,
    min: usize,
    max: usize,
    algorithm: Algorithm,
}

impl AdaptiveConcurrencyBuilder {
    /// The limit to start from (default 20).
    pub fn initial(mut self, n: usize) -> Self {
        self.initial = n;
        self
    }
    /// The limit never goes below this (default 1).
    pub fn min(mut self, n: usize) -> Self {
        self.min = n;
        self
    }
    /// The limit never goes above this (default 1000).
    pub fn max(mut self, n: usize) -> Self {
        self.max = n;
        self
    }
    /// How the limit moves (default [`Aimd`] with its defaults).
    pub fn algorithm(mut self, algorithm: impl Into<Algorithm>) -> Self {
        self.algorithm = algorithm.into();
        self
    }
    /// Checks the configuration.
    pub fn build(self) -> Result<AdaptiveConcurrency, ConfigError> {
        if self.min == 0 {
            return Err(ConfigError::new(
                "adaptive",
                "min must be at least 1, or the limit could close for good",
            ));
        }
        if !(self.min..=self.max).contains(&self.initial) {
            return Err(ConfigError::new(
                "adaptive",
                format!(
                    "initial ({}) must lie between min ({}) and max ({})",
                    self.initial, self.min, self.max
                ),
            ));
        }
        if self.max > Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "adaptive",
                "max is above what a semaphore can hold",
            ));
        }
        self.algorithm.validate()?;
        Ok(AdaptiveConcurrency {
            inner: Arc::new(Inner {
                sem: Arc::new(Semaphore::new(self.initial)),
                min: self.min,
                max: self.max,
                state: Mutex::new(State {
                    estimate: self.initial as f64,
                    limit: self.initial,
                    debt: 0,
                    in_flight: 0,
                    algorithm: self.algorithm,
                }),
            }),
        })
    }
}

struct State {
    /// The algorithm's limit, unrounded.
    estimate: f64,
    /// The limit in force: permits in the semaphore + permits out − `debt`.
    limit: usize,
    /// Permits out beyond the limit, to be forgotten as they come back.
    debt: usize,
    in_flight: usize,
    algorithm: Algorithm,
}

struct Inner {
    sem: Arc<Semaphore>,
    min: usize,
    max: usize,
    state: Mutex<State>,
}

/// A concurrency limit that adapts: the limit moves by its [`Algorithm`] after each call
/// reported on an [`AdaptivePermit`]. Cheap to clone; clones share
/// the limit.
#[derive(Clone)]
pub struct AdaptiveConcurrency {
    inner: Arc<Inner>,
}

impl fmt::Debug for AdaptiveConcurrency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.lock();
        f.debug_struct("AdaptiveConcurrency")
            .field("limit", &s.limit)
            .field("in_flight", &s.in_flight)
            .field("algorithm", &s.algorithm)
            .finish()
    }
}

impl AdaptiveConcurrency {
    /// Defaults: initial 20, min 1, max 1000, [`Aimd`].
    pub fn builder() -> AdaptiveConcurrencyBuilder {
        AdaptiveConcurrencyBuilder {
            initial: 20,
            min: 1,
            max: 1000,
            algorithm: Algorithm::Aimd(Aimd::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn permit(&self, permit: Option<OwnedSemaphorePermit>) -> AdaptivePermit {
        let in_flight = {
            let mut s = self.lock();
            s.in_flight += 1;
            s.in_flight
        };
        AdaptivePermit {
            permit,
            done: false,
            started: Instant::now(),
            in_flight,
            limiter: self.clone(),
        }
    }

    /// Waits for a slot under the current limit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it waits on a tokio `Semaphore`; dropped while waiting it holds nothing
    /// and gives up only its place in the queue.
    pub async fn acquire(&self) -> AdaptivePermit {
        // Our semaphore is never closed, so this is always `Ok`.
        let permit = self.inner.sem.clone().acquire_owned().await.ok();
        self.permit(permit)
    }

    /// Takes a slot if one is free under the current limit.
    pub fn try_acquire(&self) -> Option<AdaptivePermit> {
        let p = self.inner.sem.clone().try_acquire_owned().ok()?;
        Some(self.permit(Some(p)))
    }

    /// The limit in force.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Calls holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Moves the limit by one sample, and takes back `permit`.
    fn finish(&self, permit: Option<OwnedSemaphorePermit>, sample: Option<Sample>) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        if let Some(sample) = sample {
            let estimate = s.estimate;
            let next = s
                .algorithm
                .next(estimate, &sample)
                .clamp(self.inner.min as f64, self.inner.max as f64);
            s.estimate = next;
            self.resize(&mut s, next.round() as usize);
        }
        if let Some(permit) = permit {
            if s.debt > 0 {
                s.debt -= 1;
                permit.forget();
            }
        }
    }

    fn resize(&self, s: &mut State, limit: usize) {
        let limit = limit.clamp(self.inner.min, self.inner.max);
        if limit > s.limit {
            let grow = limit - s.limit;
            let repaid = grow.min(s.debt);
            s.debt -= repaid;
            self.inner.sem.add_permits(grow - repaid);
        } else if limit < s.limit {
            let shrink = s.limit - limit;
            let forgotten = self.inner.sem.forget_permits(shrink);
            s.debt += shrink - forgotten;
        }
        if limit != s.limit {
            event!(
                debug,
                from = s.limit,
                to = limit,
                "adaptive concurrency limit moved"
            );
        }
        s.limit = limit;
    }
}

/// A slot held for one call. Report how the call went with [`success`](Self::success) or
/// [`dropped`](Self::dropped): that moves the limit. Dropped unreported (the call was
/// cancelled), it frees the slot and moves nothing.
#[derive(Debug)]
pub struct AdaptivePermit {
    permit: Option<OwnedSemaphorePermit>,
    done: bool,
    started: Instant,
    in_flight: usize,
    limiter: AdaptiveConcurrency,
}

impl AdaptivePermit {
    /// The call succeeded.
    pub fn success(mut self) {
        self.report(false)
    }

    /// The call failed in a way that says the service is overloaded (an error, a timeout, a
    /// 429 or 503).
    pub fn dropped(mut self) {
        self.report(true)
    }

    fn report(&mut self, dropped: bool) {
        if !self.done {
            self.done = true;
            let sample = Sample {
                rtt: self.started.elapsed(),
                in_flight: self.in_flight,
                dropped,
            };
            self.limiter.finish(self.permit.take(), Some(sample));
        }
    }
}

impl Drop for AdaptivePermit {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.limiter.finish(self.permit.take(), None);
        }
    }
}
