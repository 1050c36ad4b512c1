//! [`KeyedRateLimiter`]: one GCRA state per key, idle keys forgotten.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::gcra::{interval_for, Acquire, Gcra, Params, Snapshot};
use super::rate::{NotUntil, Rate};
use crate::error::ConfigError;

pub(super) struct KeyedInner<K> {
    /// The interval T every key's state is created with (and was last set to).
    t: AtomicU64,
    burst: u64,
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
    pub(super) fn new(p: Params, sweep_min: usize) -> Self {
        Self {
            inner: Arc::new(KeyedInner {
                t: AtomicU64::new(p.t),
                burst: p.burst,
                base: Instant::now(),
                map: RwLock::new(HashMap::new()),
                sweep: Mutex::new(sweep_min),
                sweep_min,
            }),
        }
    }

    /// `key`'s state, if held.
    fn held(&self, key: &K) -> Option<Arc<Gcra>> {
        self.inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    /// A state as a new key gets it, at the rate in force.
    fn fresh(&self) -> Gcra {
        Gcra::new(
            self.inner.base,
            self.inner.t.load(Ordering::Acquire),
            self.inner.burst,
        )
    }

    fn state(&self, key: &K) -> Arc<Gcra> {
        if let Some(g) = self.held(key) {
            return g;
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
        // Read under the map's write lock: a concurrent `set_rate` either sees this key in
        // the map or stored its interval before this read.
        let g = Arc::new(self.fresh());
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
    /// As [`RateLimiter::until_ready`](super::RateLimiter::until_ready): safe to drop; a future
    /// dropped while waiting wastes its reserved cell, which lowers that key's rate a little
    /// and never raises it.
    pub async fn until_ready(&self, key: &K) {
        let _ = self.acquire(key, 1, None).await;
    }

    /// Waits at most `max_wait` for a cell for `key`, or fails at once with [`NotUntil`]
    /// taking nothing; see [`RateLimiter::until_ready_within`](super::RateLimiter::until_ready_within).
    pub fn until_ready_within(&self, key: &K, max_wait: Duration) -> Acquire {
        self.acquire(key, 1, Some(Instant::now() + max_wait))
    }

    /// Waits for `n` of `key`'s cells, until `deadline` at most.
    pub(super) fn acquire(&self, key: &K, n: u64, deadline: Option<Instant>) -> Acquire {
        Acquire::new(self.state(key), n, deadline)
    }

    /// Changes every key's rate from now on, keys seen later included (the burst stays):
    /// cells already taken keep their place; the next ones are spaced by the new interval.
    /// Waiters already sleeping on a reservation keep its time, as with
    /// [`RateLimiter::set_rate`](super::RateLimiter::set_rate).
    ///
    /// ```
    /// use corral::limit::{Rate, RateLimiter};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), corral::ConfigError> {
    /// use std::time::Duration;
    /// let per_host = RateLimiter::builder().rate(Rate::per_second(1)).build_keyed::<&str>()?;
    /// assert!(per_host.check(&"a").is_ok()); // a's next cell is due in 1 s, and stays there
    /// per_host.set_rate("10/s".parse()?)?;
    /// tokio::time::sleep(Duration::from_secs(1)).await;
    /// assert!(per_host.check(&"a").is_ok() && per_host.check(&"a").is_err());
    /// tokio::time::sleep(Duration::from_millis(100)).await; // now 100 ms apart
    /// assert!(per_host.check(&"a").is_ok());
    /// assert_eq!(per_host.per_second(), 10.0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn set_rate(&self, rate: Rate) -> Result<(), ConfigError> {
        let t = interval_for("limit", rate, self.inner.burst)?;
        self.inner.t.store(t, Ordering::Release);
        for g in self
            .inner
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            g.set_interval(t);
        }
        Ok(())
    }

    /// The rate in force, as cells per second per key.
    pub fn per_second(&self) -> f64 {
        1e9 / self.inner.t.load(Ordering::Acquire) as f64
    }

    /// Refuses calls for `key` (only) until `until`. Pauses only ever extend.
    pub fn pause_until(&self, key: &K, until: Instant) {
        self.state(key).pause_until(until)
    }

    /// `key`'s state now (a key not held reads as fresh: the full burst available).
    pub fn snapshot(&self, key: &K) -> Snapshot {
        let now = Instant::now();
        match self.held(key) {
            Some(g) => g.snapshot(now),
            None => self.fresh().snapshot(now),
        }
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
