//! The breaker's early signal: a host suspected down before its breaker can know.
//!
//! Why: the breaker counts a job's first failure only once its retry has failed too (so a
//! host where every first try fails and every retry succeeds is never cut off), and retries
//! wait out their backoff. Until the first retries come back failing, every new job's first
//! attempt went out: a host down for 3 s took 276 requests in 0.6 s before its breaker opened.
//!
//! The second signal: while the host's latest outcome is a failed first attempt and no attempt
//! has succeeded since, it is *suspected*. Then a new job's first attempt starts only while the
//! jobs in trouble there (first attempt failed, job not ended) and the first attempts under way
//! under suspicion are fewer than the breaker's `min_calls`; the others wait, as a half-open
//! breaker's callers do. Any success ends the suspicion at once (a flaky host whose retries
//! succeed is slowed for one backoff at most, never cut off); a host that is really down has
//! its breaker opened by the retries of those few jobs, and holds the rest there.
//!
//! Its cost on the request path: one atomic load per first attempt while the host is not
//! suspected.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// A host's suspicion state.
#[derive(Debug)]
pub struct Suspect {
    /// The latest outcome was a failed first attempt, and no attempt succeeded since.
    suspected: AtomicBool,
    /// Jobs whose first attempt failed and that have not ended ([`Failing`] guards).
    failing: AtomicU32,
    /// First attempts let through under suspicion and not yet settled ([`Trying`] guards).
    trying: AtomicU32,
    /// Jobs in trouble that ran out of retries and wait for the breaker ([`Waiting`] guards).
    waiting: AtomicU32,
    /// At most this many jobs in trouble and trying together while suspected.
    limit: u32,
    /// Woken when a job may start again.
    changed: Notify,
}

/// Longest wait for a wake-up nobody sent (none should be lost; this bounds it if one is).
const POLL: Duration = Duration::from_secs(1);

impl Suspect {
    /// Suspicion that lets `limit` jobs be in trouble at once (the breaker's `min_calls`).
    pub fn new(limit: u32) -> Arc<Self> {
        Arc::new(Self {
            suspected: AtomicBool::new(false),
            failing: AtomicU32::new(0),
            trying: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            limit: limit.max(1),
            changed: Notify::new(),
        })
    }

    /// Whether the host is suspected down now.
    pub fn suspected(&self) -> bool {
        self.suspected.load(Ordering::Acquire)
    }

    /// Lets a job's first attempt start now: `Some(None)` when the host is not suspected,
    /// `Some(Some(trying))` when it is and there is room, `None` when it must wait.
    pub fn try_start(self: &Arc<Self>) -> Option<Option<Trying>> {
        if !self.suspected() {
            return Some(None);
        }
        let failing = self.failing.load(Ordering::Acquire);
        let room = self.limit.saturating_sub(failing);
        self.trying
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < room).then_some(t + 1)
            })
            .ok()
            .map(|_| Some(Trying(self.clone())))
    }

    /// Waits until a first attempt may start, and lets it start. Cancel safe: dropped while
    /// waiting, it takes nothing (a wake-up it took is passed on, as tokio's `Notify` does).
    pub async fn start(self: &Arc<Self>) -> Option<Trying> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(started) = self.try_start() {
                return started;
            }
            let _ = tokio::time::timeout(POLL, notified).await;
        }
    }

    /// An attempt to the host succeeded: the suspicion ends and every waiting job may go.
    pub fn succeeded(&self) {
        // A load first: the common case (not suspected) writes nothing shared.
        if self.suspected() && self.suspected.swap(false, Ordering::AcqRel) {
            self.changed.notify_waiters();
        }
    }

    /// A job's first attempt failed and a retry may follow: the host is suspected, and the
    /// job counts as in trouble until the guard is dropped (when the job ends).
    pub fn first_failed(self: &Arc<Self>) -> Failing {
        self.failing.fetch_add(1, Ordering::AcqRel);
        self.suspected.store(true, Ordering::Release);
        Failing(self.clone())
    }

    /// A job in trouble ran out of retries and waits for the breaker to open or the host to
    /// answer; [`Suspect::others_active`] then does not count it.
    pub fn wait_for_breaker(self: &Arc<Self>) -> Waiting {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(self.clone())
    }

    /// Whether some job other than the waiting ones may still fail and so open the breaker: a
    /// first attempt under way, or a job in trouble still retrying. When none is, waiting for
    /// the breaker is waiting for nothing (a lone job's four failures never reach
    /// `min_calls`).
    pub fn others_active(&self) -> bool {
        let failing = self.failing.load(Ordering::Acquire);
        let waiting = self.waiting.load(Ordering::Acquire);
        self.trying.load(Ordering::Acquire) > 0 || failing > waiting
    }

    fn room_freed(&self) {
        if self.suspected() {
            self.changed.notify_one();
        } else {
            self.changed.notify_waiters();
        }
    }
}

/// A first attempt let through under suspicion; dropped once its outcome is settled (after
/// [`Suspect::first_failed`] or [`Suspect::succeeded`], so the room it held is never free
/// twice).
#[derive(Debug)]
pub struct Trying(Arc<Suspect>);

impl Drop for Trying {
    fn drop(&mut self) {
        self.0.trying.fetch_sub(1, Ordering::AcqRel);
        self.0.room_freed();
    }
}

/// A job waiting for its host's breaker after its retries ran out; dropped when it stops.
#[derive(Debug)]
pub struct Waiting(Arc<Suspect>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A job in trouble with its host (its first attempt failed); dropped when the job ends.
#[derive(Debug)]
pub struct Failing(Arc<Suspect>);

impl Drop for Failing {
    fn drop(&mut self) {
        self.0.failing.fetch_sub(1, Ordering::AcqRel);
        self.0.room_freed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suspected_host_lets_only_min_calls_jobs_be_in_trouble() {
        let s = Suspect::new(3);
        // Not suspected: every job starts, nothing is counted.
        assert!(matches!(s.try_start(), Some(None)));
        let f1 = s.first_failed();
        assert!(s.suspected());
        let t1 = s.try_start().unwrap().unwrap();
        let t2 = s.try_start().unwrap().unwrap();
        assert!(s.try_start().is_none(), "1 failing + 2 trying = 3");
        // A trying attempt that fails becomes a failing job: still no room.
        let f2 = s.first_failed();
        drop(t1);
        assert!(s.try_start().is_none());
        // A job in trouble ends: room for one.
        drop(f1);
        let t3 = s.try_start().unwrap().unwrap();
        assert!(s.try_start().is_none());
        // Any success ends the suspicion.
        s.succeeded();
        assert!(!s.suspected());
        assert!(matches!(s.try_start(), Some(None)));
        drop((t2, t3, f2));
        assert_eq!(s.failing.load(Ordering::Relaxed), 0);
        assert_eq!(s.trying.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_job_waits_for_the_breaker_only_while_another_may_still_fail() {
        let s = Suspect::new(20);
        let me = s.first_failed();
        // Alone in trouble: nothing else can open the breaker.
        let waiting = s.wait_for_breaker();
        assert!(!s.others_active());
        // Another job still retrying, or a first attempt under way: worth waiting.
        let other = s.first_failed();
        assert!(s.others_active());
        let other_waits = s.wait_for_breaker();
        assert!(!s.others_active(), "both wait: nobody left to fail");
        let t = s.try_start().unwrap().unwrap();
        assert!(s.others_active());
        drop((t, other_waits, other, waiting, me));
        assert!(!s.others_active());
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_jobs_start_when_room_is_freed_or_the_host_succeeds() {
        let s = Suspect::new(1);
        let f = s.first_failed();
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.start().await.is_some() })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(f);
        assert!(waiter.await.unwrap(), "let through under suspicion");

        let _f = s.first_failed();
        let many: Vec<_> = (0..5)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.start().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(many.iter().all(|w| !w.is_finished()));
        s.succeeded();
        for w in many {
            assert!(w.await.unwrap().is_none(), "not suspected any more");
        }
    }
}
