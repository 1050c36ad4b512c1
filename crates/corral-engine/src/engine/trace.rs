//! What a job's attempts leave besides their result, for its result line: how many, whether
//! a request may have gone out, the last head's status, and the breaker openings and host
//! pauses the job caused (so a report from the file alone counts them as the run did).

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::hosts::Permit;

/// What a job's attempts leave besides their result, for its result line.
#[derive(Default)]
pub(super) struct Trace {
    pub(super) attempts: AtomicU32,
    /// Some attempt started to send the request: the server may have seen it.
    pub(super) maybe_sent: AtomicBool,
    /// The status of the last attempt's response head, 0 before one arrived: kept when the
    /// body then fails or times out.
    pub(super) head: AtomicU16,
    /// When the job was first held by its host's open breaker.
    pub(super) held_since: Mutex<Option<tokio::time::Instant>>,
    /// The breaker permit of a failed first attempt, not counted yet (see
    /// [`Trace::breaker_outcome`]).
    pub(super) pending: Mutex<Option<Permit>>,
    /// The job is in trouble with its host (its first attempt failed): counted by the host's
    /// suspicion until the job ends (see [`crate::hosts::suspect`]).
    pub(super) in_trouble: Mutex<Option<crate::hosts::suspect::Failing>>,
    /// Times this job's failures opened its host's breaker (for its result line).
    pub(super) openings: AtomicU32,
    /// Times this job's responses paused its host (for its result line).
    pub(super) pauses: AtomicU32,
    /// Redirects followed.
    pub(super) redirects: AtomicU32,
    /// What the job's requests cost, settled (counted only where costs are).
    pub(super) cost: AtomicU64,
    /// Where the last redirect went.
    pub(super) final_url: Mutex<Option<url::Url>>,
}

impl Trace {
    /// What a host's breaker counts. A job's first failure is not counted while a retry may
    /// still make it good: a flaky host whose requests succeed on their second try is healthy
    /// from the user's side, and cutting it off spent none of the retries the user asked for
    /// (all of a 1000-job run came back `circuit_open` that way). Every success counts, and
    /// every failure of a retry: during an outage retries fail too, and the breaker opens
    /// about as fast as if it counted every attempt. A half-open probe counts at once, as it
    /// decides whether the breaker closes. A first attempt's failure that a retry may follow
    /// (`retry_may_follow`) waits here; the next attempt drops it uncounted, or
    /// [`Trace::settle`] counts it when the job ends there. One no retry can follow (no
    /// retries are allowed) counts at once, before the attempt gives its host slot back: the
    /// next job's request must not slip out ahead of it.
    pub(super) fn breaker_outcome(
        &self,
        permit: Option<Permit>,
        healthy: bool,
        retry_may_follow: bool,
    ) {
        let Some(permit) = permit else { return };
        if healthy {
            permit.success();
        } else if permit.is_probe() || !retry_may_follow {
            self.failed(permit);
        } else {
            *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
        }
    }

    /// The job has ended: a first failure no retry followed is counted now.
    pub(super) fn settle(&self) {
        if let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            self.failed(p);
        }
    }

    /// Counts a failure on the breaker, and on this job if it opened the breaker.
    pub(super) fn failed(&self, permit: Permit) {
        if permit.failure() {
            self.openings.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A retry is about to be sent: the first failure is not counted (see
    /// [`Trace::breaker_outcome`]).
    pub(super) fn forgive(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}
