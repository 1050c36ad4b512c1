//! Idle connections kept for reuse: per host, and all hosts together, the least recently used
//! closed first.
//!
//! Why a cap on all hosts together: a run over thousands of hosts used to keep one idle
//! connection (a file descriptor) for every host it had seen, until the process ran out of
//! descriptors and healthy hosts failed with `connect` errors. The cap is sized from the
//! process's open-file limit (see `fd_budget` in the CLI), so idle connections never crowd out
//! the ones in use.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// Idle connections of type `C`, by host key.
#[derive(Debug)]
pub struct Pool<C> {
    by_host: HashMap<Arc<str>, VecDeque<(u64, C)>>,
    /// Every idle connection by age (its sequence number), oldest first.
    order: BTreeMap<u64, Arc<str>>,
    next: u64,
    per_host: usize,
    total: usize,
}

impl<C> Pool<C> {
    /// A pool keeping at most `per_host` idle connections to one host and `total` in all.
    pub fn new(per_host: usize, total: usize) -> Self {
        Self {
            by_host: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            per_host,
            total,
        }
    }

    /// The most recently used idle connection to `key` that `usable` accepts; the ones it
    /// refuses (closed by the server meanwhile) are dropped.
    pub fn take(&mut self, key: &str, mut usable: impl FnMut(&mut C) -> bool) -> Option<C> {
        let list = self.by_host.get_mut(key)?;
        let mut found = None;
        while let Some((seq, mut c)) = list.pop_back() {
            self.order.remove(&seq);
            if usable(&mut c) {
                found = Some(c);
                break;
            }
        }
        if list.is_empty() {
            self.by_host.remove(key);
        }
        found
    }

    /// Keeps `conn` for reuse, closing the least recently used one when the pool is full; a
    /// connection beyond its host's share is closed at once.
    pub fn put(&mut self, key: Arc<str>, conn: C) {
        if self.total == 0 || self.by_host.get(&key).map_or(0, VecDeque::len) >= self.per_host {
            return;
        }
        while self.order.len() >= self.total {
            self.evict_oldest();
        }
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, key.clone());
        self.by_host.entry(key).or_default().push_back((seq, conn));
    }

    /// Closes every idle connection (when the process runs out of file descriptors); returns
    /// how many.
    pub fn clear(&mut self) -> usize {
        let n = self.order.len();
        self.by_host.clear();
        self.order.clear();
        n
    }

    /// Idle connections held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.order.len()
    }

    fn evict_oldest(&mut self) {
        let Some((seq, key)) = self.order.pop_first() else {
            return;
        };
        if let Some(list) = self.by_host.get_mut(&key) {
            // A host's connections are in age order: its oldest is in front.
            if list.front().is_some_and(|(s, _)| *s == seq) {
                list.pop_front();
            }
            if list.is_empty() {
                self.by_host.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn the_least_recently_used_goes_first_when_full() {
        let mut p = Pool::new(2, 3);
        p.put(key("a"), 1);
        p.put(key("b"), 2);
        p.put(key("a"), 3);
        p.put(key("c"), 4); // full: a's 1 goes
        assert_eq!(p.len(), 3);
        assert_eq!(p.take("a", |_| true), Some(3));
        assert_eq!(p.take("a", |_| true), None);
        p.put(key("d"), 5);
        p.put(key("e"), 6); // b's 2 goes
        assert_eq!(p.take("b", |_| true), None);
        assert_eq!(p.take("c", |_| true), Some(4));
        assert_eq!((p.len(), p.by_host.len()), (2, 2));
    }

    #[test]
    fn per_host_cap_unusable_connections_and_clear() {
        let mut p = Pool::new(2, 100);
        for i in 0..5 {
            p.put(key("a"), i);
        }
        assert_eq!(p.len(), 2);
        // The newest first; a refused one is dropped on the way.
        assert_eq!(p.take("a", |c| *c != 1), Some(0));
        assert_eq!(p.len(), 0);
        assert!(p.by_host.is_empty() && p.order.is_empty());
        p.put(key("x"), 7);
        p.put(key("y"), 8);
        assert_eq!(p.clear(), 2);
        assert_eq!(p.take("x", |_| true), None);
        let mut none = Pool::new(8, 0);
        none.put(key("x"), 1);
        assert_eq!(none.len(), 0);
    }
}
