//! Rate limiting (GCRA) and per-key concurrency limiting.
//!
//! - [`RateLimiter`]: one limiter, `rate` cells per period with a `burst`, exact GCRA semantics
//!   (the Generic Cell Rate Algorithm, equivalent to a leaky bucket), lock-free: one atomic
//!   compare-and-swap per decision.
//! - [`KeyedRateLimiter`]: one independent GCRA state per key (per host, per API key), with idle
//!   keys evicted so memory stays bounded by the number of *active* keys.
//! - [`pause_until`](KeyedRateLimiter::pause_until): hold back one key until an instant — what
//!   to do when a server answers 429 or 503 with `Retry-After`. Other keys are untouched.
//! - [`KeyedConcurrency`]: at most N operations in flight per key.
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

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::ConfigError;

/// A rate: `count` cells per `period`. Parse from `"50/s"`, `"3000/min"`, `"10/100ms"`, `"2/h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u64,
    period: Duration,
}

impl Rate {
    /// `count` per `period`. Validity (non-zero) is checked by the builders that use it.
    pub fn new(count: u64, period: Duration) -> Self {
        Self { count, period }
    }
    /// `count` per second.
    pub fn per_second(count: u64) -> Self {
        Self::new(count, Duration::from_secs(1))
    }
    /// `count` per minute.
    pub fn per_minute(count: u64) -> Self {
        Self::new(count, Duration::from_secs(60))
    }
    /// Cells per period.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
    /// Cells per second, as a float (for display).
    pub fn per_sec_f64(&self) -> f64 {
        self.count as f64 / self.period.as_secs_f64()
    }
    fn validate(&self, component: &'static str) -> Result<u64, ConfigError> {
        if self.count == 0 {
            return Err(ConfigError::new(
                component,
                "rate must allow at least 1 per period (got 0)",
            ));
        }
        if self.period.is_zero() {
            return Err(ConfigError::new(
                component,
                "rate period must be longer than zero",
            ));
        }
        let t = self.period.as_nanos() / u128::from(self.count);
        if t == 0 {
            return Err(ConfigError::new(
                component,
                format!("rate {self} is faster than one per nanosecond"),
            ));
        }
        u64::try_from(t)
            .map_err(|_| ConfigError::new(component, format!("rate {self} is too slow")))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.period;
        match p.as_secs() {
            1 if p.subsec_nanos() == 0 => write!(f, "{}/s", self.count),
            60 if p.subsec_nanos() == 0 => write!(f, "{}/min", self.count),
            3600 if p.subsec_nanos() == 0 => write!(f, "{}/h", self.count),
            _ => write!(f, "{}/{}ms", self.count, p.as_millis()),
        }
    }
}

impl FromStr for Rate {
    type Err = ConfigError;

    /// Parses `N/unit` or `N/<amount><unit>`, unit one of `ms`, `s`, `sec`, `m`, `min`, `h`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            ConfigError::new(
                "rate",
                format!(
                    "cannot read {s:?} as a rate ({why}); write it like 50/s, 3000/min or 10/100ms"
                ),
            )
        };
        let (count, per) = s.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        let per = per.trim();
        let split = per.find(|c: char| !c.is_ascii_digit()).unwrap_or(per.len());
        let (amount, unit) = per.split_at(split);
        let amount: u64 = if amount.is_empty() {
            1
        } else {
            amount
                .parse()
                .map_err(|_| bad("the period amount is not a whole number"))?
        };
        let unit = match unit {
            "ms" => Duration::from_millis(1),
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad("unknown unit")),
        };
        let period = unit
            .checked_mul(u32::try_from(amount).map_err(|_| bad("period too long"))?)
            .ok_or_else(|| bad("period too long"))?;
        let rate = Rate { count, period };
        rate.validate("rate")?;
        Ok(rate)
    }
}

/// A call was refused; the earliest instant at which it could pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUntil(pub Instant);

impl NotUntil {
    /// How long from `now` until the call could pass.
    pub fn wait_from(&self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }
}

impl fmt::Display for NotUntil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited for {:?}", self.wait_from(Instant::now()))
    }
}

impl std::error::Error for NotUntil {}

/// The GCRA state: a theoretical arrival time and a pause, in nanoseconds since `base`.
#[derive(Debug)]
struct Gcra {
    base: Instant,
    /// Emission interval T, in ns (changed by [`RateLimiter::set_rate`]).
    t: AtomicU64,
    /// Burst b: the tolerance is τ = T × (b − 1).
    burst: u64,
    tat: AtomicU64,
    paused_until: AtomicU64,
}

impl Gcra {
    fn new(base: Instant, t: u64, burst: u64) -> Self {
        Self {
            base,
            t: AtomicU64::new(t),
            burst,
            tat: AtomicU64::new(0),
            paused_until: AtomicU64::new(0),
        }
    }

    /// T and τ as they are now.
    fn interval(&self) -> (u64, u64) {
        let t = self.t.load(Ordering::Relaxed);
        (t, t.saturating_mul(self.burst - 1))
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }

    /// Takes `n` cells at once if the last of them is due now.
    fn check_at(&self, now: Instant, n: u64) -> Result<(), NotUntil> {
        let now_ns = self.nanos(now);
        if let Some(until) = self.paused_at(now_ns) {
            return Err(NotUntil(until));
        }
        let (t, tau) = self.interval();
        let cost = t.saturating_mul(n.max(1));
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now_ns);
            // The last of the n cells: due at start + (n - 1) T.
            let last = start.saturating_add(cost - t);
            if last - now_ns > tau {
                return Err(NotUntil(self.instant(last - tau)));
            }
            match self.tat.compare_exchange_weak(
                tat,
                start.saturating_add(cost),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }

    /// The end of the pause in force at `now_ns`, if any.
    fn paused_at(&self, now_ns: u64) -> Option<Instant> {
        let paused = self.paused_until.load(Ordering::Acquire);
        (now_ns < paused).then(|| self.instant(paused))
    }

    /// Takes the next `n` free cells unconditionally: `None` if the last is due now, else the
    /// instant it is due. The cells are the caller's from this moment, whenever it wakes up.
    fn reserve(&self, now: Instant, n: u64) -> Option<Instant> {
        let now_ns = self.nanos(now);
        let (t, tau) = self.interval();
        let cost = t.saturating_mul(n.max(1));
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now_ns);
            match self.tat.compare_exchange_weak(
                tat,
                start.saturating_add(cost),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let last = start.saturating_add(cost - t);
                    return (last - now_ns > tau).then(|| self.instant(last - tau));
                }
                Err(actual) => tat = actual,
            }
        }
    }

    /// Debits (`cells` > 0) or credits (`cells` < 0) cells already taken: a credit gives back
    /// no more than is still scheduled ahead of now.
    fn settle(&self, now: Instant, cells: i64) {
        if cells == 0 {
            return;
        }
        let now_ns = self.nanos(now);
        let (t, _) = self.interval();
        let by = t.saturating_mul(cells.unsigned_abs());
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(if cells > 0 {
                    tat.max(now_ns).saturating_add(by)
                } else {
                    tat.saturating_sub(by).max(now_ns.min(tat))
                })
            });
    }

    fn pause_until(&self, until: Instant) {
        self.paused_until
            .fetch_max(self.nanos(until), Ordering::AcqRel);
    }

    /// True if this state is indistinguishable from a fresh one at `now` (safe to forget).
    fn is_idle(&self, now: Instant) -> bool {
        let now_ns = self.nanos(now);
        self.tat.load(Ordering::Acquire) <= now_ns
            && self.paused_until.load(Ordering::Acquire) <= now_ns
    }
}

/// Waits for a cell by *reserving* it, then sleeping until it is due (the reservation design
/// of Guava's RateLimiter). Waiters are served in order without racing each other, and a
/// waiter woken late by the timer (tokio rounds sleeps up to the next millisecond) loses
/// nothing: its cell was already taken. Were it instead to re-check on waking, a limiter whose
/// interval is near the timer resolution would lose each wake-up's lateness (1000/s with burst
/// 1 would deliver about 500/s). A waiter that is dropped while sleeping wastes its cell, which
/// can only lower the rate, never exceed it. A pause found on waking voids the reservation.
async fn wait_until_ready(gcra: &Gcra, n: u64) {
    loop {
        let now = Instant::now();
        if let Some(until) = gcra.paused_at(gcra.nanos(now)) {
            tokio::time::sleep_until(until).await;
            continue;
        }
        match gcra.reserve(now, n) {
            None => return,
            Some(at) => {
                tokio::time::sleep_until(at).await;
                if gcra.paused_at(gcra.nanos(Instant::now())).is_none() {
                    return;
                }
            }
        }
    }
}

/// Validated GCRA parameters shared by the direct and keyed builders.
#[derive(Debug, Clone, Copy)]
struct Params {
    t: u64,
    burst: u64,
}

fn params(component: &'static str, rate: Option<Rate>, burst: u64) -> Result<Params, ConfigError> {
    let rate = rate.ok_or_else(|| ConfigError::new(component, "a rate is required (e.g. 50/s)"))?;
    let t = rate.validate(component)?;
    if burst == 0 {
        return Err(ConfigError::new(
            component,
            "burst must be at least 1 (a burst of 0 would never let a call through)",
        ));
    }
    t.checked_mul(burst - 1)
        .ok_or_else(|| ConfigError::new(component, "burst × interval overflows"))?;
    Ok(Params { t, burst })
}

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
        Ok(KeyedRateLimiter {
            inner: Arc::new(KeyedInner {
                params: p,
                base: Instant::now(),
                map: RwLock::new(HashMap::new()),
                sweep: Mutex::new(self.sweep_min),
                sweep_min: self.sweep_min,
            }),
        })
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
        wait_until_ready(&self.gcra, 1).await
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
        wait_until_ready(&self.gcra, n).await
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
    pub fn set_rate(&self, rate: Rate) -> Result<(), ConfigError> {
        let t = rate.validate("limit")?;
        t.checked_mul(self.gcra.burst - 1)
            .ok_or_else(|| ConfigError::new("limit", "burst × interval overflows"))?;
        self.gcra.t.store(t, Ordering::Relaxed);
        Ok(())
    }

    /// The rate in force, as cells per second.
    pub fn per_second(&self) -> f64 {
        1e9 / self.gcra.interval().0 as f64
    }

    /// Refuses every call until `until` (e.g. after a 429 with Retry-After).
    pub fn pause_until(&self, until: Instant) {
        self.gcra.pause_until(until)
    }
}

struct KeyedInner<K> {
    params: Params,
    base: Instant,
    map: RwLock<HashMap<K, Arc<Gcra>>>,
    sweep: Mutex<usize>,
    sweep_min: usize,
}

/// A rate limiter with an independent GCRA state per key. Cheap to clone; clones share state.
///
/// Memory: a key whose state has fully recovered (as if never used) is forgotten at the next
/// sweep, which runs when the map reaches twice its size after the previous sweep — so memory
/// follows the number of recently active keys, not every key ever seen.
///
/// ```
/// use corral::limit::{Rate, RateLimiter};
/// use tokio::time::{Duration, Instant};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), corral::ConfigError> {
/// let per_host = RateLimiter::builder().rate(Rate::per_second(5)).build_keyed::<String>()?;
/// per_host.pause_until(&"slow.example".to_string(), Instant::now() + Duration::from_secs(30));
/// assert!(per_host.check(&"slow.example".to_string()).is_err());
/// assert!(per_host.check(&"fast.example".to_string()).is_ok());
/// # Ok(())
/// # }
/// ```
pub struct KeyedRateLimiter<K> {
    inner: Arc<KeyedInner<K>>,
}

impl<K> Clone for KeyedRateLimiter<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedRateLimiter<K> {
    fn state(&self, key: &K) -> Arc<Gcra> {
        if let Some(g) = self
            .inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
        {
            return g.clone();
        }
        let mut map = self
            .inner
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(g) = map.get(key) {
            return g.clone();
        }
        let mut sweep = self
            .inner
            .sweep
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() >= *sweep {
            let now = Instant::now();
            map.retain(|_, g| Arc::strong_count(g) > 1 || !g.is_idle(now));
            *sweep = (map.len() * 2).max(self.inner.sweep_min);
        }
        let g = Arc::new(Gcra::new(
            self.inner.base,
            self.inner.params.t,
            self.inner.params.burst,
        ));
        map.insert(key.clone(), g.clone());
        g
    }

    /// Takes a cell for `key` now if available.
    pub fn check(&self, key: &K) -> Result<(), NotUntil> {
        self.state(key).check_at(Instant::now(), 1)
    }

    /// Waits until a cell for `key` is available and takes it.
    ///
    /// # Cancel safety
    ///
    /// As [`RateLimiter::until_ready`]: safe to drop; a future dropped while waiting wastes
    /// its reserved cell, which lowers that key's rate a little and never raises it.
    pub async fn until_ready(&self, key: &K) {
        let g = self.state(key);
        wait_until_ready(&g, 1).await
    }

    /// Refuses calls for `key` (only) until `until`. Pauses only ever extend.
    pub fn pause_until(&self, key: &K, until: Instant) {
        self.state(key).pause_until(until)
    }

    /// Number of keys currently held.
    pub fn len(&self) -> usize {
        self.inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every idle key now.
    pub fn retain_recent(&self) {
        let now = Instant::now();
        self.inner
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, g| Arc::strong_count(g) > 1 || !g.is_idle(now));
    }
}

/// At most N operations in flight per key. Cheap to clone; clones share state.
///
/// ```
/// use corral::limit::KeyedConcurrency;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), corral::ConfigError> {
/// let per_host = KeyedConcurrency::<&str>::new(2)?;
/// let a = per_host.acquire("h").await;
/// let b = per_host.acquire("h").await;
/// assert!(per_host.try_acquire("h").is_none()); // third one for "h" must wait
/// assert!(per_host.try_acquire("other").is_some());
/// drop((a, b));
/// # Ok(())
/// # }
/// ```
pub struct KeyedConcurrency<K> {
    limit: usize,
    map: Arc<Mutex<HashMap<K, Arc<Semaphore>>>>,
}

impl<K> Clone for KeyedConcurrency<K> {
    fn clone(&self) -> Self {
        Self {
            limit: self.limit,
            map: self.map.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedConcurrency<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedConcurrency")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// Held while an operation for a key is in flight; dropping it frees the slot.
#[derive(Debug)]
pub struct KeyPermit<K: Hash + Eq> {
    permit: Option<OwnedSemaphorePermit>,
    key: Option<K>,
    map: Arc<Mutex<HashMap<K, Arc<Semaphore>>>>,
}

impl<K: Hash + Eq> Drop for KeyPermit<K> {
    fn drop(&mut self) {
        drop(self.permit.take());
        // Forget the key's semaphore when nobody holds or waits on it: bounded memory.
        if let Some(key) = self.key.take() {
            let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
            if map.get(&key).is_some_and(|s| Arc::strong_count(s) == 1) {
                map.remove(&key);
            }
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedConcurrency<K> {
    /// At most `limit` in flight per key; `limit` must be at least 1.
    pub fn new(limit: usize) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::new(
                "limit",
                "per-key concurrency must be at least 1",
            ));
        }
        Ok(Self {
            limit,
            map: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn semaphore(&self, key: &K) -> Arc<Semaphore> {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone()
    }

    fn permit(&self, key: K, permit: Option<OwnedSemaphorePermit>) -> KeyPermit<K> {
        KeyPermit {
            permit,
            key: Some(key),
            map: self.map.clone(),
        }
    }

    /// Waits for a slot for `key`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it waits on a tokio `Semaphore`, so a future dropped while waiting holds
    /// no slot and gives up only its place in the queue (waiters are served in order). A key
    /// with nobody holding or waiting is forgotten when its last [`KeyPermit`] drops.
    pub async fn acquire(&self, key: impl Into<K>) -> KeyPermit<K> {
        let key = key.into();
        // Our semaphores are never closed, so this is always `Ok`.
        let permit = self.semaphore(&key).acquire_owned().await.ok();
        self.permit(key, permit)
    }

    /// Takes a slot for `key` if one is free now.
    pub fn try_acquire(&self, key: impl Into<K>) -> Option<KeyPermit<K>> {
        let key = key.into();
        let permit = self.semaphore(&key).try_acquire_owned().ok()?;
        Some(self.permit(key, Some(permit)))
    }

    /// Operations in flight for `key` right now.
    pub fn in_flight(&self, key: &K) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map_or(0, |s| self.limit - s.available_permits())
    }

    /// Keys currently tracked (those with operations in flight or waiting).
    pub fn len(&self) -> usize {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True if no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

type KeyFn<Req, K> = Arc<dyn Fn(&Req) -> K + Send + Sync>;

/// A `tower::Layer` that waits for a rate-limit cell before each call. With a key function,
/// each key (e.g. the request's host) has its own limit and its own `pause_until`.
pub struct RateLimitLayer<Req, K> {
    limiter: KeyedRateLimiter<K>,
    key: KeyFn<Req, K>,
}

impl<Req, K> Clone for RateLimitLayer<Req, K> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
        }
    }
}

impl<Req, K> fmt::Debug for RateLimitLayer<Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer").finish_non_exhaustive()
    }
}

impl<Req, K: Hash + Eq + Clone> RateLimitLayer<Req, K> {
    /// Limits each call by the limiter's state for `key(&request)`.
    pub fn keyed(
        limiter: KeyedRateLimiter<K>,
        key: impl Fn(&Req) -> K + Send + Sync + 'static,
    ) -> Self {
        Self {
            limiter,
            key: Arc::new(key),
        }
    }
}

impl<Req> RateLimitLayer<Req, ()> {
    /// One limit for every call.
    pub fn new(limiter: KeyedRateLimiter<()>) -> Self {
        Self::keyed(limiter, |_| ())
    }
}

impl<S, Req, K> tower::Layer<S> for RateLimitLayer<Req, K> {
    type Service = RateLimit<S, Req, K>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
pub struct RateLimit<S, Req, K> {
    inner: S,
    layer: RateLimitLayer<Req, K>,
}

impl<S: Clone, Req, K> Clone for RateLimit<S, Req, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, Req, K> fmt::Debug for RateLimit<S, Req, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit").finish_non_exhaustive()
    }
}

impl<S, Req, K> tower::Service<Req> for RateLimit<S, Req, K>
where
    S: tower::Service<Req> + Clone + Send + 'static,
    S::Error: Into<crate::BoxError>,
    S::Future: Send,
    Req: Send + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = crate::BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<S::Response, crate::BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The wait depends on the request's key, which `poll_ready` cannot see, so it happens
        // here; the ready service is taken and a clone left behind (the tower idiom).
        let clone = self.inner.clone();
        let mut svc = std::mem::replace(&mut self.inner, clone);
        let key = (self.layer.key)(&req);
        let limiter = self.layer.limiter.clone();
        Box::pin(async move {
            limiter.until_ready(&key).await;
            svc.call(req).await.map_err(Into::into)
        })
    }
}
