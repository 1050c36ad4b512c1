//! Idle connections kept for reuse: per host, and all hosts together, the least recently used
//! closed first.
//!
//! Why a cap on all hosts together: a run over thousands of hosts used to keep one idle
//! connection (a file descriptor) for every host it had seen, until the process ran out of
//! descriptors and healthy hosts failed with `connect` errors. The cap is sized from the
//! process's open-file limit (see `idle_budget` in the CLI), so idle connections never crowd out
//! the ones in use.

use std::collections::VecDeque;

use foldhash::HashMap;
use std::sync::Arc;

/// Idle connections of type `C`, by host key.
#[derive(Debug)]
pub struct Pool<C> {
    by_host: HashMap<Arc<str>, VecDeque<(u64, C)>>,
    /// Connections put in the pool, oldest first, by sequence number. Taking a connection does
    /// not look for it here (that would cost a search per request): its entry goes stale, and
    /// is skipped when it comes up for eviction or dropped when stale entries pile up.
    order: VecDeque<(u64, Arc<str>)>,
    /// Idle connections held.
    idle: usize,
    next: u64,
    per_host: usize,
    total: usize,
}

impl<C> Pool<C> {
    /// A pool keeping at most `per_host` idle connections to one host and `total` in all.
    pub fn new(per_host: usize, total: usize) -> Self {
        Self {
            by_host: HashMap::default(),
            order: VecDeque::new(),
            idle: 0,
            next: 0,
            per_host,
            total,
        }
    }

    /// The most recently used idle connection to `key` that `usable` accepts; the ones it
    /// refuses (closed by the server meanwhile) are dropped.
    pub fn take(&mut self, key: &str, mut usable: impl FnMut(&mut C) -> bool) -> Option<C> {
        let list = self.by_host.get_mut(key)?;
        // An emptied list is kept: the host's connection comes back to it in a moment, and
        // dropping and making it again cost an allocation per request.
        while let Some((_, mut c)) = list.pop_back() {
            self.idle -= 1;
            if usable(&mut c) {
                return Some(c);
            }
        }
        None
    }

    /// Keeps `conn` for reuse, closing the least recently used one when the pool is full; a
    /// connection beyond its host's share is closed at once.
    pub fn put(&mut self, key: Arc<str>, conn: C) {
        if self.total == 0 {
            return;
        }
        if self.idle >= self.total {
            self.evict_oldest();
        }
        let list = self.by_host.entry(key.clone()).or_default();
        if list.len() >= self.per_host {
            return;
        }
        let seq = self.next;
        self.next += 1;
        list.push_back((seq, conn));
        self.order.push_back((seq, key));
        self.idle += 1;
        if self.order.len() > 2 * self.idle + 64 {
            self.compact();
        }
    }

    /// Closes every idle connection (when the process runs out of file descriptors); returns
    /// how many.
    pub fn clear(&mut self) -> usize {
        let n = self.idle;
        self.by_host.clear();
        self.order.clear();
        self.idle = 0;
        n
    }

    /// Idle connections held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.idle
    }

    fn evict_oldest(&mut self) {
        while let Some((seq, key)) = self.order.pop_front() {
            if let Some(list) = self.by_host.get_mut(&key) {
                // A host's connections are in age order: if this entry's connection is still
                // idle, it is the host's oldest. Otherwise the entry is stale.
                if list.front().is_some_and(|(s, _)| *s == seq) {
                    list.pop_front();
                    self.idle -= 1;
                    return;
                }
            }
        }
    }

    /// Drops stale order entries, and the lists of hosts with no idle connection.
    fn compact(&mut self) {
        self.by_host.retain(|_, list| !list.is_empty());
        let by_host = &self.by_host;
        self.order.retain(|(seq, key)| {
            by_host
                .get(key)
                .is_some_and(|l| l.binary_search_by_key(seq, |(s, _)| *s).is_ok())
        });
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
        assert_eq!(p.len(), 2);
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
        p.put(key("x"), 7);
        p.put(key("y"), 8);
        assert_eq!(p.clear(), 2);
        assert_eq!(p.take("x", |_| true), None);
        // Hosts come and go: the lists they leave empty do not pile up.
        let mut p = Pool::new(2, 10);
        for i in 0..1000 {
            let k = key(&format!("h{i}"));
            p.put(k.clone(), i);
            assert_eq!(p.take(&k, |_| true), Some(i));
        }
        assert!(p.by_host.len() <= 64 + 1, "{} lists", p.by_host.len());
        assert!(p.order.len() <= 64 + 1, "{} order entries", p.order.len());
        let mut none = Pool::new(8, 0);
        none.put(key("x"), 1);
        assert_eq!(none.len(), 0);
    }
}
