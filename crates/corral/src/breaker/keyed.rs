//! [`KeyedBreakers`]: one breaker per key (per host), created on first use, idle ones forgotten.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::{BreakerStats, CircuitBreaker, CircuitBreakerBuilder, Listener, StateChange};

type KeyedListener<K> = Arc<dyn Fn(&K, StateChange) + Send + Sync>;

/// The least number of keys at which [`KeyedBreakers`] sweeps idle ones.
const SWEEP_MIN: usize = 1024;

struct KeyedMap<K> {
    breakers: std::collections::HashMap<K, CircuitBreaker>,
    /// Sweep idle breakers when the map reaches this many (twice the live count after a sweep).
    sweep_at: usize,
}

/// One [`CircuitBreaker`] per key, created on first use from one configuration.
///
/// Memory follows the keys in use, not every key ever seen: a breaker that is closed, has no
/// outcome left in its window and is not held elsewhere (no [`Permit`](super::Permit) out, no clone from
/// [`get`](Self::get) alive) is indistinguishable from a fresh one, and is forgotten at the next
/// sweep. Sweeps run when the map reaches twice its size after the previous one (at least
/// 1024 keys), or on [`retain_recent`](Self::retain_recent). Only its count of openings is lost,
/// so [`stats`](Self::stats) covers the keys still held.
pub struct KeyedBreakers<K> {
    template: CircuitBreakerBuilder,
    map: Arc<Mutex<KeyedMap<K>>>,
    keyed_listener: Option<KeyedListener<K>>,
}

impl<K> Clone for KeyedBreakers<K> {
    fn clone(&self) -> Self {
        Self {
            template: self.template.clone(),
            map: self.map.clone(),
            keyed_listener: self.keyed_listener.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedBreakers<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakers")
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

impl<K> KeyedBreakers<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Called with the key on every state change of any breaker (replaces the builder's
    /// key-less callback for breakers created from now on).
    pub fn on_state_change(mut self, f: impl Fn(&K, StateChange) + Send + Sync + 'static) -> Self {
        self.keyed_listener = Some(Arc::new(f));
        self
    }

    pub(super) fn new(template: CircuitBreakerBuilder) -> Self {
        Self {
            template,
            map: Arc::new(Mutex::new(KeyedMap {
                breakers: std::collections::HashMap::new(),
                sweep_at: SWEEP_MIN,
            })),
            keyed_listener: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, KeyedMap<K>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The breaker for `key`.
    pub fn get(&self, key: &K) -> CircuitBreaker {
        let mut map = self.lock();
        if let Some(b) = map.breakers.get(key) {
            return b.clone();
        }
        if map.breakers.len() >= map.sweep_at {
            let now = Instant::now();
            map.breakers.retain(|_, b| !b.is_idle(now));
            map.sweep_at = (map.breakers.len() * 2).max(SWEEP_MIN);
        }
        let listener: Option<Listener> = match &self.keyed_listener {
            Some(l) => {
                let (l, k) = (l.clone(), key.clone());
                Some(Arc::new(move |c| l(&k, c)))
            }
            None => self.template.listener.clone(),
        };
        let b = CircuitBreaker::from_valid(&self.template, listener);
        map.breakers.insert(key.clone(), b.clone());
        b
    }

    /// Every key held with its breaker's stats.
    pub fn stats(&self) -> Vec<(K, BreakerStats)> {
        let map = self.lock();
        map.breakers
            .iter()
            .map(|(k, b)| (k.clone(), b.stats()))
            .collect()
    }

    /// Forgets every idle breaker now (see the type's docs for what idle means).
    pub fn retain_recent(&self) {
        let now = Instant::now();
        self.lock().breakers.retain(|_, b| !b.is_idle(now));
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.lock().breakers.len()
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
