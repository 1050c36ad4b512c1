//! Circuit breakers: stop calling a service that is failing, probe it, resume when it is back.
//!
//! States and transitions of a [`CircuitBreaker`]:
//!
//! - **Closed** — calls pass; outcomes are counted in a rolling window (`window`, kept as 10
//!   buckets). When the window holds at least `min_calls` outcomes and the failure *rate*
//!   reaches `failure_rate`, the breaker opens. A few failures among many successes never open
//!   it, and neither does one failure out of one call.
//! - **Open** — calls are rejected at once with [`BreakerOpen`] (no waiting, no load on the
//!   service) until `cool_down` has passed.
//! - **Half-open** — at most `half_open_probes` calls are let through as probes; further calls
//!   are rejected. If a probe fails, the breaker opens again for another cool-down; once
//!   `half_open_probes` probes have succeeded, it closes with an empty window.
//!
//! Every transition is reported to the [`on_state_change`](CircuitBreakerBuilder::on_state_change)
//! callback. [`KeyedBreakers`] keeps one breaker per key (per host), created on first use.
//! [`BreakerLayer`] wraps any `tower::Service`.
//!
//! Outcomes of calls that started before the latest transition are ignored, so a slow call
//! from before the breaker opened cannot close it again.
//!
//! ```
//! use corral::breaker::{CircuitBreaker, State};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), corral::ConfigError> {
//! let breaker = CircuitBreaker::builder()
//!     .failure_rate(0.5)
//!     .min_calls(4)
//!     .window(Duration::from_secs(10))
//!     .cool_down(Duration::from_secs(5))
//!     .build()?;
//! for _ in 0..4 {
//!     let _ = breaker.call(async { Err::<(), _>("down") }).await;
//! }
//! assert_eq!(breaker.state(), State::Open);
//! assert!(breaker.call(async { Ok::<_, &str>(()) }).await.unwrap_err().is_open());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;
use crate::trace::event;

mod keyed;
mod layer;

pub use keyed::KeyedBreakers;
pub use layer::{Breaker, BreakerLayer, Classify, ErrorsFail, ResponseFuture};

const BUCKETS: usize = 10;

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls pass and are counted.
    Closed,
    /// Calls are rejected.
    Open,
    /// A limited number of probe calls pass.
    HalfOpen,
}

/// A transition, as given to the state-change callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// When.
    pub at: Instant,
}

/// A call was rejected because the breaker is open (or half-open with all probes taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOpen {
    /// When the breaker will next let a probe through (`None` if probes are in flight now).
    pub retry_at: Option<Instant>,
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_at {
            Some(at) => write!(
                f,
                "circuit breaker open for another {:?}",
                at.saturating_duration_since(Instant::now())
            ),
            None => f.write_str("circuit breaker half-open, all probes in flight"),
        }
    }
}

impl std::error::Error for BreakerOpen {}

/// The error of [`CircuitBreaker::call`]: rejected, or the call's own error.
#[derive(Debug)]
pub enum BreakerError<E> {
    /// Rejected without calling.
    Open(BreakerOpen),
    /// The call ran and failed.
    Inner(E),
}

impl<E> BreakerError<E> {
    /// True if the call was rejected by the breaker.
    pub fn is_open(&self) -> bool {
        matches!(self, BreakerError::Open(_))
    }
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open(o) => o.fmt(f),
            BreakerError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BreakerError::Open(o) => Some(o),
            BreakerError::Inner(e) => Some(e),
        }
    }
}

type Listener = Arc<dyn Fn(StateChange) + Send + Sync>;

/// Configuration; start with [`CircuitBreaker::builder`].
#[derive(Clone)]
pub struct CircuitBreakerBuilder {
    failure_rate: f64,
    min_calls: u32,
    window: Duration,
    cool_down: Duration,
    probes: u32,
    slow_call: Option<Duration>,
    listener: Option<Listener>,
}

impl fmt::Debug for CircuitBreakerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerBuilder")
            .field("failure_rate", &self.failure_rate)
            .field("min_calls", &self.min_calls)
            .field("window", &self.window)
            .field("cool_down", &self.cool_down)
            .field("probes", &self.probes)
            .field("slow_call", &self.slow_call)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerBuilder {
    /// Open when at least this fraction of calls in the window failed (default 0.5).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = rate;
        self
    }
    /// ... and the window holds at least this many calls (default 20).
    pub fn min_calls(mut self, n: u32) -> Self {
        self.min_calls = n;
        self
    }
    /// The rolling window over which the rate is measured (default 30 s).
    pub fn window(mut self, d: Duration) -> Self {
        self.window = d;
        self
    }
    /// How long to stay open before probing (default 10 s).
    pub fn cool_down(mut self, d: Duration) -> Self {
        self.cool_down = d;
        self
    }
    /// Probes allowed in half-open, and successes needed to close (default 1).
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.probes = n;
        self
    }
    /// Counts a call that succeeds but takes `threshold` or longer as a failure (default: off).
    ///
    /// A service that answers in 20 s where it used to take 200 ms is failing its callers even
    /// when every answer is a 200: their timeouts, threads and connections pile up behind it.
    /// With a threshold, such calls open the breaker like errors do (Resilience4j's slow-call
    /// rate, folded into the one failure rate). The time is measured from
    /// [`try_acquire`](CircuitBreaker::try_acquire) to the report.
    pub fn slow_call(mut self, threshold: Duration) -> Self {
        self.slow_call = Some(threshold);
        self
    }
    /// Called on every state change (keep it quick: it runs inside the breaker's lock).
    pub fn on_state_change(mut self, f: impl Fn(StateChange) + Send + Sync + 'static) -> Self {
        self.listener = Some(Arc::new(f));
        self
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError::new("breaker", m));
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return err(format!(
                "failure_rate must be in (0, 1] (got {}); 0 would open on success",
                self.failure_rate
            ));
        }
        if self.min_calls == 0 {
            return err("min_calls must be at least 1".into());
        }
        if self.probes == 0 {
            return err(
                "half_open_probes must be at least 1, or the breaker could never close".into(),
            );
        }
        if self.window.is_zero() || self.cool_down.is_zero() {
            return err("window and cool_down must be longer than zero".into());
        }
        if self.slow_call.is_some_and(|t| t.is_zero()) {
            return err(
                "slow_call must be longer than zero, or every call would count as a failure".into(),
            );
        }
        if self.window < self.cool_down {
            return err(format!(
                "window ({:?}) is shorter than cool_down ({:?}): the failures that opened the breaker \
                 would be forgotten before it even probes",
                self.window, self.cool_down
            ));
        }
        Ok(())
    }

    /// Checks the configuration and builds the breaker.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.validate()?;
        Ok(CircuitBreaker::from_valid(&self, self.listener.clone()))
    }

    /// Checks the configuration and builds a set of breakers, one per key. The callback gets the
    /// key too.
    pub fn build_keyed<K>(self) -> Result<KeyedBreakers<K>, ConfigError>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        self.validate()?;
        Ok(KeyedBreakers::new(self))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Index of the time slice this bucket holds (slice = window / BUCKETS).
    slice: u64,
    ok: u32,
    failed: u32,
}

#[derive(Debug)]
struct Inner {
    state: State,
    generation: u64,
    opened_until: Instant,
    probes_out: u32,
    probes_ok: u32,
    buckets: [Bucket; BUCKETS],
    openings: u64,
}

/// A circuit breaker. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct CircuitBreaker {
    failure_rate: f64,
    min_calls: u32,
    slice: Duration,
    cool_down: Duration,
    probes: u32,
    slow_call: Option<Duration>,
    base: Instant,
    listener: Option<Listener>,
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Permission to make one call; report its outcome with [`success`](Self::success) or
/// [`failure`](Self::failure). Dropping it unreported (the call was cancelled) counts as
/// neither, but frees a half-open probe slot.
#[derive(Debug)]
pub struct Permit {
    breaker: CircuitBreaker,
    generation: u64,
    probe: bool,
    started: Instant,
    done: bool,
}

impl Permit {
    /// True when this call is a half-open probe: its outcome decides whether the breaker
    /// closes or opens again. (A caller that counts outcomes its own way, for instance once
    /// per job rather than per attempt, still reports probes at once.)
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The call succeeded. It still counts as a failure when it was slow (see
    /// [`slow_call`](CircuitBreakerBuilder::slow_call)); returns true when that opened the
    /// breaker.
    pub fn success(mut self) -> bool {
        self.done = true;
        let slow = self
            .breaker
            .slow_call
            .is_some_and(|t| self.started.elapsed() >= t);
        self.breaker.record(self.generation, self.probe, !slow)
    }
    /// The call failed. Returns true when this failure opened the breaker (from closed, or
    /// a failed half-open probe), so a caller can say which call tripped it.
    pub fn failure(mut self) -> bool {
        self.done = true;
        self.breaker.record(self.generation, self.probe, false)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done && self.probe {
            let mut inner = self.breaker.lock();
            if inner.generation == self.generation && inner.state == State::HalfOpen {
                inner.probes_out = inner.probes_out.saturating_sub(1);
            }
        }
    }
}

/// Counters for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerStats {
    /// The current state.
    pub state: State,
    /// How many times the breaker opened (including re-openings from half-open).
    pub openings: u64,
    /// Successes in the current window.
    pub window_ok: u32,
    /// Failures in the current window.
    pub window_failed: u32,
}

impl CircuitBreaker {
    /// Defaults: failure rate 0.5, min calls 20, window 30 s, cool-down 10 s, 1 probe.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(30),
            cool_down: Duration::from_secs(10),
            probes: 1,
            slow_call: None,
            listener: None,
        }
    }

    fn from_valid(b: &CircuitBreakerBuilder, listener: Option<Listener>) -> Self {
        let now = Instant::now();
        Self {
            failure_rate: b.failure_rate,
            min_calls: b.min_calls,
            slice: b.window / BUCKETS as u32,
            cool_down: b.cool_down,
            probes: b.probes,
            slow_call: b.slow_call,
            base: now,
            listener,
            inner: Arc::new(Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                opened_until: now,
                probes_out: 0,
                probes_ok: 0,
                buckets: [Bucket::default(); BUCKETS],
                openings: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn slice_index(&self, now: Instant) -> u64 {
        let nanos = self.slice.as_nanos().max(1);
        u64::try_from(now.saturating_duration_since(self.base).as_nanos() / nanos)
            .unwrap_or(u64::MAX)
    }

    fn transition(&self, inner: &mut Inner, to: State, now: Instant) {
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.probes_out = 0;
        inner.probes_ok = 0;
        match to {
            State::Open => {
                inner.openings += 1;
                inner.opened_until = now + self.cool_down;
            }
            State::Closed => inner.buckets = [Bucket::default(); BUCKETS],
            State::HalfOpen => {}
        }
        event!(info, ?from, ?to, "circuit breaker state changed");
        if let Some(l) = &self.listener {
            l(StateChange { from, to, at: now });
        }
    }

    /// Asks to make a call: a [`Permit`] to report the outcome on, or [`BreakerOpen`].
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.state == State::Open {
            if now < inner.opened_until {
                return Err(BreakerOpen {
                    retry_at: Some(inner.opened_until),
                });
            }
            self.transition(&mut inner, State::HalfOpen, now);
        }
        let probe = inner.state == State::HalfOpen;
        if probe {
            if inner.probes_out + inner.probes_ok >= self.probes {
                return Err(BreakerOpen { retry_at: None });
            }
            inner.probes_out += 1;
        }
        Ok(Permit {
            breaker: self.clone(),
            generation: inner.generation,
            probe,
            started: now,
            done: false,
        })
    }

    /// Counts an outcome; true when it opened the breaker.
    fn record(&self, generation: u64, probe: bool, ok: bool) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != generation {
            return false; // started under an earlier state: stale
        }
        match inner.state {
            State::HalfOpen if probe => {
                inner.probes_out = inner.probes_out.saturating_sub(1);
                if !ok {
                    self.transition(&mut inner, State::Open, now);
                    return true;
                } else {
                    inner.probes_ok += 1;
                    if inner.probes_ok >= self.probes {
                        self.transition(&mut inner, State::Closed, now);
                    }
                }
            }
            State::Closed => {
                let slice = self.slice_index(now);
                let b = &mut inner.buckets[(slice % BUCKETS as u64) as usize];
                if b.slice != slice {
                    *b = Bucket {
                        slice,
                        ok: 0,
                        failed: 0,
                    };
                }
                if ok {
                    b.ok += 1;
                } else {
                    b.failed += 1;
                    let (total_ok, total_failed) = window_counts(&inner.buckets, slice);
                    let total = total_ok + total_failed;
                    if total >= self.min_calls
                        && f64::from(total_failed) >= self.failure_rate * f64::from(total)
                    {
                        self.transition(&mut inner, State::Open, now);
                        return true;
                    }
                }
            }
            _ => {}
        }
        false
    }

    /// Runs `fut` if the breaker allows, counting an `Err` as a failure.
    pub async fn call<T, E, F>(&self, fut: F) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_with(fut, Result::is_ok).await
    }

    /// Runs `fut` if the breaker allows; `is_success` decides how the outcome counts (e.g. an
    /// HTTP 404 is the service working, a 503 is not).
    pub async fn call_with<T, E, F>(
        &self,
        fut: F,
        is_success: impl FnOnce(&Result<T, E>) -> bool,
    ) -> Result<T, BreakerError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire().map_err(BreakerError::Open)?;
        let out = fut.await;
        if is_success(&out) {
            permit.success();
        } else {
            permit.failure();
        }
        out.map_err(BreakerError::Inner)
    }

    /// For code that is not async: runs `f` if the breaker allows, counting an `Err` as a
    /// failure, as [`CircuitBreaker::call`] does for a future.
    ///
    /// ```
    /// use corral::breaker::{BreakerError, CircuitBreaker};
    /// use std::time::Duration;
    ///
    /// let breaker = CircuitBreaker::builder()
    ///     .failure_rate(0.5)
    ///     .min_calls(2)
    ///     .window(Duration::from_secs(60))
    ///     .cool_down(Duration::from_secs(30))
    ///     .build()?;
    /// for _ in 0..2 {
    ///     let r: Result<(), BreakerError<&str>> = breaker.call_blocking(|| Err("down"));
    ///     assert!(matches!(r, Err(BreakerError::Inner("down"))));
    /// }
    /// // Open: the closure is not run.
    /// let r = breaker.call_blocking(|| -> Result<(), &str> { unreachable!("not called") });
    /// assert!(matches!(r, Err(BreakerError::Open(_))));
    /// # Ok::<(), corral::ConfigError>(())
    /// ```
    pub fn call_blocking<T, E>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, BreakerError<E>> {
        let permit = self.try_acquire().map_err(BreakerError::Open)?;
        let out = f();
        if out.is_ok() {
            permit.success();
        } else {
            permit.failure();
        }
        out.map_err(BreakerError::Inner)
    }

    /// Opens the breaker until `until`, as if it had tripped: for breakers that share a host's
    /// state across processes, where another process saw the failures. Already open until
    /// later, it stays as it is; otherwise the state changes (and the listener hears it) and
    /// the next call after `until` is a half-open probe.
    pub fn open_until(&self, until: Instant) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.state == State::Open && inner.opened_until >= until {
            return;
        }
        if inner.state != State::Open {
            self.transition(&mut inner, State::Open, now);
        }
        inner.opened_until = until;
    }

    /// Closes the breaker with an empty window, as a successful probe would: for breakers
    /// that share a host's state, where another process's probe succeeded. Already closed,
    /// nothing changes.
    pub fn close(&self) {
        let mut inner = self.lock();
        if inner.state != State::Closed {
            self.transition(&mut inner, State::Closed, Instant::now());
        }
    }

    /// The current state (an open breaker whose cool-down is over reads `HalfOpen`).
    pub fn state(&self) -> State {
        let inner = self.lock();
        if inner.state == State::Open && Instant::now() >= inner.opened_until {
            State::HalfOpen
        } else {
            inner.state
        }
    }

    /// Counters for reports.
    pub fn stats(&self) -> BreakerStats {
        let slice = self.slice_index(Instant::now());
        let state = self.state();
        let inner = self.lock();
        let (window_ok, window_failed) = window_counts(&inner.buckets, slice);
        BreakerStats {
            state,
            openings: inner.openings,
            window_ok,
            window_failed,
        }
    }
}

impl CircuitBreaker {
    /// True when forgetting this breaker changes nothing but its count of openings: closed,
    /// no outcome left in the window, and held by nobody else.
    pub(super) fn is_idle(&self, now: Instant) -> bool {
        if Arc::strong_count(&self.inner) > 1 {
            return false;
        }
        let slice = self.slice_index(now);
        let inner = self.lock();
        inner.state == State::Closed && window_counts(&inner.buckets, slice) == (0, 0)
    }
}

fn window_counts(buckets: &[Bucket; BUCKETS], current: u64) -> (u32, u32) {
    buckets
        .iter()
        .filter(|b| b.slice + (BUCKETS as u64) > current && b.slice <= current)
        .fold((0, 0), |(ok, failed), b| (ok + b.ok, failed + b.failed))
}
