//! [`KeyedConcurrency`]: at most N operations in flight per key.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ConfigError;

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

    /// The most operations in flight per key.
    pub fn limit(&self) -> usize {
        self.limit
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
