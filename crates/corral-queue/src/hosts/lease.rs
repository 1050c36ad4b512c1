//! One host's rate, shared by every worker of a run: a GCRA schedule kept in the board, from
//! which each worker leases blocks of send times by compare-and-swap.
//!
//! The board holds one number per host: the next free send time `V` (unix ns). A worker that
//! needs `k` sends reads `V` and its revision, takes the times `s, s+T, ..., s+(k-1)T` with
//! `s = max(V, now - τ)` (`T` the spacing, `τ = (burst - 1)·T`, the GCRA's tolerance), and
//! writes `s + kT` back only if the revision is unchanged; on a conflict it reads again. Every
//! send time is handed out once across the fleet, and a worker sends no earlier than its time,
//! so any window of `W` sees at most `W/T + burst` requests, as from one process: never more
//! than the target. A worker leases only as many times as it has jobs waiting (at most
//! [`MAX_BLOCK`], and at most a tenth of a second's worth), so a block costs one round trip
//! for many requests at high rates and wastes little when a worker dies or goes idle: times it
//! leased and did not use lower the rate; they never raise it.
//!
//! A pause (`Retry-After`) moves `V` past its deadline, and every worker watching drops the
//! times it holds (see [`super`]), so no one sends to the host before the deadline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use corral::limit::Rate;

use crate::board::{instant_of, unix_ns, Board};
use crate::error::QueueError;

/// Most send times leased at once.
pub const MAX_BLOCK: usize = 256;

/// A leased send time unused for this long after it came due is dropped: sent late, it could
/// bunch up with later ones.
const GRACE_NS: u64 = 20_000_000;

/// One host's shared rate, in one worker.
pub(crate) struct SharedRate {
    board: Board,
    key: String,
    /// Nanoseconds between sends (`T`).
    spacing: u64,
    /// The burst tolerance (`τ`).
    tolerance: u64,
    /// Most times leased at once: a tenth of a second's worth, at least 1.
    block: usize,
    /// Send times leased and not yet taken, earliest first, with their pause epoch.
    times: Mutex<VecDeque<Leased>>,
    /// Jobs waiting for a send time, to size the next lease.
    waiting: AtomicUsize,
    /// One lease at a time per worker and host.
    leasing: tokio::sync::Mutex<()>,
    /// Bumped by each pause: times leased before it are void.
    epoch: AtomicU64,
}

#[derive(Clone, Copy)]
struct Leased {
    /// When it may be sent (unix ns).
    at: u64,
    /// When it was leased (unix ns).
    leased: u64,
    epoch: u64,
}

impl Leased {
    fn stale(&self, now: u64, epoch: u64) -> bool {
        self.epoch != epoch || now > self.at.max(self.leased) + GRACE_NS
    }
}

impl SharedRate {
    /// The shared schedule `key` of a host limited to `rate` with `burst`.
    pub(crate) fn new(board: Board, key: String, rate: Rate, burst: u64) -> Self {
        let spacing = spacing(rate);
        let per_tenth = 100_000_000 / spacing;
        Self {
            board,
            key,
            spacing,
            tolerance: spacing.saturating_mul(burst.max(1) - 1),
            block: usize::try_from(per_tenth)
                .unwrap_or(MAX_BLOCK)
                .clamp(1, MAX_BLOCK),
            times: Mutex::new(VecDeque::new()),
            waiting: AtomicUsize::new(0),
            leasing: tokio::sync::Mutex::new(()),
            epoch: AtomicU64::new(0),
        }
    }

    /// Takes a leased time that is due now, if this worker holds one.
    pub(crate) fn try_take(&self) -> bool {
        let now = unix_ns();
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(t) = times.front() {
            if t.stale(now, epoch) {
                times.pop_front();
            } else if t.at <= now {
                times.pop_front();
                return true;
            } else {
                return false;
            }
        }
        false
    }

    /// Waits for a send time of this worker's (leasing more when it holds none) and takes it.
    ///
    /// Cancel safe in the sense that matters: dropped while it waits, at most the one time it
    /// took goes unused, which lowers the rate and never raises it.
    pub(crate) async fn take(&self) {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Decrement(&self.waiting);
        loop {
            let epoch = self.epoch.load(Ordering::Acquire);
            let next = {
                let now = unix_ns();
                let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
                while times.front().is_some_and(|t| t.stale(now, epoch)) {
                    times.pop_front();
                }
                times.pop_front()
            };
            if let Some(t) = next {
                tokio::time::sleep_until(instant_of(t.at)).await;
                if self.epoch.load(Ordering::Acquire) == epoch {
                    return;
                }
                continue; // a pause came while it waited: that time is void
            }
            let _one = self.leasing.lock().await;
            if !self
                .times
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
            {
                continue;
            }
            let want = self.waiting.load(Ordering::Acquire).clamp(1, self.block);
            if let Err(e) = self.lease(want, epoch).await {
                // The board is out of reach: send nothing rather than more than the target.
                tracing::warn!(key = %self.key, error = %e, "shared rate: the board is out of reach; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    /// Leases `n` send times from the board and keeps them.
    async fn lease(&self, n: usize, epoch: u64) -> Result<(), QueueError> {
        let n64 = n as u64;
        let span = self.spacing.saturating_mul(n64);
        // The schedule's next free time moves past the block; the block starts where it was
        // (or, after idling, up to a burst's worth in the past).
        let end = self
            .board
            .change(&self.key, |next| {
                next.max(unix_ns().saturating_sub(self.tolerance))
                    .saturating_add(span)
            })
            .await?;
        let start = end - span;
        let leased = unix_ns();
        let mut times = self.times.lock().unwrap_or_else(PoisonError::into_inner);
        times.extend((0..n64).map(|i| Leased {
            at: start + i * self.spacing,
            leased,
            epoch,
        }));
        Ok(())
    }

    /// A pause began: the times this worker holds are void (a waiter that took one before
    /// takes another once the pause is over).
    pub(crate) fn void(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.times
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Moves the board's schedule past a pause's deadline `until` (unix ns), so that no worker
    /// leases a time before it.
    pub(crate) async fn publish_pause(&self, until: u64) -> Result<(), QueueError> {
        self.board
            .change(&self.key, |next| next.max(until))
            .await
            .map(drop)
    }
}

/// Nanoseconds between two cells of `rate` (`T`), at least 1.
fn spacing(rate: Rate) -> u64 {
    let per = u64::try_from(rate.period().as_nanos()).unwrap_or(u64::MAX);
    (per / rate.count().max(1)).max(1)
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One host's cost rate (`--per-host-cost-rate`, tokens per minute and the like), shared by
/// every worker: a GCRA schedule in the board (`cost.HOST`, its theoretical arrival time in
/// unix ns) from which each job reserves its cost by compare-and-swap, as the library's
/// limiter reserves `n` cells: the job goes when the last of its cells is due, less the
/// tolerance (the bucket of `settings::cost_burst`). One round trip per job: cost rates are for
/// slow, expensive calls. A settled cost (`--cost-from-response`) moves the schedule by the
/// difference, as the library's `settle` does.
pub(crate) struct SharedCost {
    board: Board,
    key: String,
    /// Nanoseconds per unit of cost (`T`).
    spacing: u64,
    /// The tolerance (`τ = (burst - 1)·T`).
    tolerance: u64,
}

impl SharedCost {
    /// The shared schedule `key` of a host's cost rate, with a bucket of `burst` units.
    pub(crate) fn new(board: Board, key: String, rate: Rate, burst: u64) -> Self {
        let spacing = spacing(rate);
        Self {
            board,
            key,
            spacing,
            tolerance: spacing.saturating_mul(burst.max(1) - 1),
        }
    }

    /// Reserves `cost` units and waits until they are due. Cancel safe in the sense that
    /// matters: dropped while it waits, the reserved units go unused (less is sent, never
    /// more). The board out of reach: it waits and tries again.
    pub(crate) async fn take(&self, cost: u64) {
        let span = self.spacing.saturating_mul(cost.max(1));
        loop {
            let now = unix_ns();
            match self
                .board
                .change(&self.key, |tat| tat.max(unix_ns()).saturating_add(span))
                .await
            {
                Ok(end) => {
                    // The last unit is due at end - T; it may go `tolerance` early.
                    let due = end
                        .saturating_sub(self.spacing)
                        .saturating_sub(self.tolerance);
                    if due > now {
                        tokio::time::sleep_until(instant_of(due)).await;
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(key = %self.key, error = %e, "shared cost rate: the board is out of reach; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// A job's real cost was `delta` more (or less) than it reserved: moves the schedule by
    /// as much (a credit gives back no more than is scheduled ahead of now).
    pub(crate) async fn settle(&self, delta: i64) -> Result<(), QueueError> {
        if delta == 0 {
            return Ok(());
        }
        let by = self.spacing.saturating_mul(delta.unsigned_abs());
        self.board
            .change(&self.key, |tat| {
                let now = unix_ns();
                if delta > 0 {
                    tat.max(now).saturating_add(by)
                } else {
                    tat.saturating_sub(by).max(now.min(tat))
                }
            })
            .await
            .map(drop)
    }
}
