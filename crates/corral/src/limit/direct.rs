//! [`RateLimiter`]: one GCRA limit, and the builder of both kinds of limiter.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::gcra::{interval_for, params, Acquire, Gcra, Snapshot};
use super::keyed::KeyedRateLimiter;
use super::rate::{NotUntil, Rate};
use crate::error::ConfigError;

/// Builder for [`RateLimiter`] and [`KeyedRateLimiter`].
#[derive(Debug, Clone, Default)]
pub struct RateLimiterBuilder {
    rate: Option<Rate>,
    burst: u64,
    sweep_min: usize,
}

impl RateLimiterBuilder {
    /// The sustained rate (required).
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }
    /// How many calls may pass at once after an idle spell (default 1: perfectly spaced).
    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = burst;
        self
    }
    /// Keyed only: sweep idle keys once the map holds this many (default 1024); the threshold
    /// then follows twice the live key count.
    pub fn sweep_threshold(mut self, n: usize) -> Self {
        self.sweep_min = n.max(1);
        self
    }
    /// A single limiter.
    pub fn build(self) -> Result<RateLimiter, ConfigError> {
        let p = params("limit", self.rate, self.burst)?;
        Ok(RateLimiter {
            gcra: Arc::new(Gcra::new(Instant::now(), p.t, p.burst)),
        })
    }
    /// A limiter with one independent state per key.
    pub fn build_keyed<K: Hash + Eq + Clone>(self) -> Result<KeyedRateLimiter<K>, ConfigError> {
        let p = params("limit", self.rate, self.burst)?;
        Ok(KeyedRateLimiter::new(p, self.sweep_min))
    }
}

/// A GCRA rate limiter. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    gcra: Arc<Gcra>,
}

impl RateLimiter {
    /// Start here: `RateLimiter::builder().rate(...).burst(...).build()`.
    pub fn builder() -> RateLimiterBuilder {
        RateLimiterBuilder {
            rate: None,
            burst: 1,
            sweep_min: 1024,
        }
    }

    /// Takes a cell now if one is available; otherwise says when one will be.
    pub fn check(&self) -> Result<(), NotUntil> {
        self.gcra.check_at(Instant::now(), 1)
    }

    /// Waits (on tokio's timer, never spinning) until a cell is available and takes it.
    ///
    /// # Cancel safety
    ///
    /// Safe to drop at any point, in a `select!` or under a timeout, with one cost: the cell is
    /// reserved before the wait, so a future dropped while waiting wastes its cell. The rate
    /// can only come out lower than configured, never higher, and no other waiter is held up
    /// by it. Waiters are served in the order they first polled.
    pub async fn until_ready(&self) {
        // Without a deadline the wait cannot be refused.
        let _ = self.acquire(1, None).await;
    }

    /// For code that is not async (a plain thread, a script): blocks the calling thread until
    /// a cell is available and takes it, sleeping until the cell is due rather than spinning.
    /// Unlike [`RateLimiter::until_ready`] it reserves nothing while it sleeps, so threads
    /// waiting at once are not served in order (the rate still holds). Do not call it on an
    /// async runtime's thread: it would stall every task there.
    ///
    /// ```
    /// use corral::limit::{Rate, RateLimiter};
    /// let limiter = RateLimiter::builder().rate(Rate::per_second(1000)).build()?;
    /// let started = std::time::Instant::now();
    /// for _ in 0..3 {
    ///     limiter.wait_blocking();
    /// }
    /// // The burst of 1, then a cell every millisecond: never sooner.
    /// assert!(started.elapsed() >= std::time::Duration::from_millis(2));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn wait_blocking(&self) {
        loop {
            match self.check() {
                Ok(()) => return,
                Err(not_until) => {
                    let wait = not_until.wait_from(Instant::now());
                    std::thread::sleep(wait.max(Duration::from_micros(50)));
                }
            }
        }
    }

    /// Waits at most `max_wait` for a cell: takes it (waiting until it is due) when it will
    /// be due within `max_wait`, and otherwise fails at once with [`NotUntil`], taking
    /// nothing — for callers that would rather shed a call than queue it for long.
    ///
    /// Cancel safety as [`RateLimiter::until_ready`].
    ///
    /// ```
    /// use corral::limit::{Rate, RateLimiter};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), corral::ConfigError> {
    /// let limiter = RateLimiter::builder().rate(Rate::per_second(10)).build()?;
    /// limiter.until_ready().await; // the burst of 1
    /// // The next cell is 100 ms away: too long for a 50 ms budget, fine for 200 ms.
    /// assert!(limiter.until_ready_within(Duration::from_millis(50)).await.is_err());
    /// assert!(limiter.until_ready_within(Duration::from_millis(200)).await.is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn until_ready_within(&self, max_wait: Duration) -> Acquire {
        self.acquire(1, Some(Instant::now() + max_wait))
    }

    /// Waits for `n` cells, until `deadline` at most.
    pub(super) fn acquire(&self, n: u64, deadline: Option<Instant>) -> Acquire {
        Acquire::new(self.gcra.clone(), n, deadline)
    }

    /// Takes `n` cells at once (a call that costs `n`: tokens of an LLM request, bytes) if
    /// they are available now, as `n` calls would. More than the burst never are: wait for
    /// them with [`RateLimiter::until_ready_n`]. `n` = 0 counts as 1.
    pub fn check_n(&self, n: u64) -> Result<(), NotUntil> {
        self.gcra.check_at(Instant::now(), n)
    }

    /// Waits until `n` cells are available and takes them (`n` above the burst is waited for
    /// as the rate allows). Cancel safety as [`RateLimiter::until_ready`].
    pub async fn until_ready_n(&self, n: u64) {
        let _ = self.acquire(n, None).await;
    }

    /// Settles cells already taken once the real cost is known: `cells` > 0 takes that many
    /// more (they delay the next calls), `cells` < 0 gives back that many of those still
    /// scheduled ahead of now (an estimate that was too high).
    ///
    /// ```
    /// use corral::limit::{Rate, RateLimiter};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), corral::ConfigError> {
    /// // 1000 tokens a second; a request estimated at 500 turns out to have used 800.
    /// let tokens = RateLimiter::builder().rate(Rate::per_second(1000)).burst(1000).build()?;
    /// tokens.until_ready_n(500).await;
    /// tokens.settle(300);
    /// assert!(tokens.check_n(201).is_err() && tokens.check_n(200).is_ok());
    /// # Ok(())
    /// # }
    /// ```
    pub fn settle(&self, cells: i64) {
        self.gcra.settle(Instant::now(), cells)
    }

    /// Changes the rate from now on (the burst stays): cells already taken keep their place;
    /// the next ones are spaced by the new interval. For limits that adapt while they run.
    ///
    /// Waiters already sleeping on a reservation keep its time: raising the rate while `n`
    /// waiters are queued at the old one takes full effect after `n` old intervals.
    pub fn set_rate(&self, rate: Rate) -> Result<(), ConfigError> {
        let t = interval_for("limit", rate, self.gcra.burst())?;
        self.gcra.set_interval(t);
        Ok(())
    }

    /// The rate in force, as cells per second.
    pub fn per_second(&self) -> f64 {
        1e9 / self.gcra.interval().0 as f64
    }

    /// The limiter's state now: rate, burst, cells available at once, pause.
    ///
    /// ```
    /// use corral::limit::{Rate, RateLimiter};
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), corral::ConfigError> {
    /// let limiter = RateLimiter::builder().rate(Rate::per_second(10)).burst(5).build()?;
    /// limiter.check_n(2).expect("within the burst");
    /// assert_eq!(limiter.snapshot().available, 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn snapshot(&self) -> Snapshot {
        self.gcra.snapshot(Instant::now())
    }

    /// Refuses every call until `until` (e.g. after a 429 with Retry-After).
    pub fn pause_until(&self, until: Instant) {
        self.gcra.pause_until(until)
    }
}
