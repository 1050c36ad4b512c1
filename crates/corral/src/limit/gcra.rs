//! The GCRA state one limiter (or one key of a keyed limiter) keeps, and [`Acquire`], the one
//! future every wait on it goes through.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::rate::{NotUntil, Rate};
use crate::error::ConfigError;
use crate::trace::event;

/// The GCRA state: a theoretical arrival time and a pause, in nanoseconds since `base`.
#[derive(Debug)]
pub(super) struct Gcra {
    base: Instant,
    /// Emission interval T, in ns (changed by `set_rate`).
    t: AtomicU64,
    /// Burst b: the tolerance is τ = T × (b − 1).
    burst: u64,
    tat: AtomicU64,
    paused_until: AtomicU64,
}

impl Gcra {
    pub(super) fn new(base: Instant, t: u64, burst: u64) -> Self {
        Self {
            base,
            t: AtomicU64::new(t),
            burst,
            tat: AtomicU64::new(0),
            paused_until: AtomicU64::new(0),
        }
    }

    /// T and τ as they are now.
    pub(super) fn interval(&self) -> (u64, u64) {
        let t = self.t.load(Ordering::Relaxed);
        (t, t.saturating_mul(self.burst - 1))
    }

    /// Spaces the next cells by `t` ns; cells already taken keep their place.
    pub(super) fn set_interval(&self, t: u64) {
        self.t.store(t, Ordering::Relaxed);
    }

    pub(super) fn burst(&self) -> u64 {
        self.burst
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn instant(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }

    /// Takes `n` cells at once if the last of them is due now.
    pub(super) fn check_at(&self, now: Instant, n: u64) -> Result<(), NotUntil> {
        self.reserve_by(now, n, Some(now)).map(|_| ())
    }

    /// Takes the next `n` free cells if the last of them is due by `latest` (`None`: whenever
    /// it is due). `Ok(None)` when they are due now, `Ok(Some(at))` when the last is due at
    /// `at` — they are the caller's from this moment, whenever it wakes up — and
    /// `Err(NotUntil(at))`, taking nothing, when `at` is past `latest`.
    fn reserve_by(
        &self,
        now: Instant,
        n: u64,
        latest: Option<Instant>,
    ) -> Result<Option<Instant>, NotUntil> {
        let now_ns = self.nanos(now);
        if let Some(until) = self.paused_at(now_ns) {
            return Err(NotUntil(until));
        }
        let latest_ns = latest.map(|l| self.nanos(l).max(now_ns));
        let (t, tau) = self.interval();
        let cost = t.saturating_mul(n.max(1));
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let start = tat.max(now_ns);
            // The last of the n cells: due at start + (n - 1) T, less the tolerance.
            let last = start.saturating_add(cost - t);
            let due = (last - now_ns > tau).then(|| last - tau);
            if let (Some(due), Some(latest)) = (due, latest_ns) {
                if due > latest {
                    return Err(NotUntil(self.instant(due)));
                }
            }
            match self.tat.compare_exchange_weak(
                tat,
                start.saturating_add(cost),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Ok(due.map(|d| self.instant(d))),
                Err(actual) => tat = actual,
            }
        }
    }

    /// The end of the pause in force at `now_ns`, if any.
    fn paused_at(&self, now_ns: u64) -> Option<Instant> {
        let paused = self.paused_until.load(Ordering::Acquire);
        (now_ns < paused).then(|| self.instant(paused))
    }

    /// Debits (`cells` > 0) or credits (`cells` < 0) cells already taken: a credit gives back
    /// no more than is still scheduled ahead of now.
    pub(super) fn settle(&self, now: Instant, cells: i64) {
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

    /// What the state allows at `now`, for metrics and status pages.
    pub(super) fn snapshot(&self, now: Instant) -> Snapshot {
        let now_ns = self.nanos(now);
        let (t, tau) = self.interval();
        let paused_until = self.paused_at(now_ns);
        let ahead = self.tat.load(Ordering::Acquire).saturating_sub(now_ns);
        let available = match (paused_until, tau.checked_sub(ahead)) {
            (None, Some(slack)) => (slack / t + 1).min(self.burst),
            _ => 0,
        };
        Snapshot {
            per_second: 1e9 / t as f64,
            burst: self.burst,
            available,
            paused_until,
        }
    }

    pub(super) fn pause_until(&self, until: Instant) {
        self.paused_until
            .fetch_max(self.nanos(until), Ordering::AcqRel);
    }

    /// True if this state is indistinguishable from a fresh one at `now` (safe to forget).
    pub(super) fn is_idle(&self, now: Instant) -> bool {
        let now_ns = self.nanos(now);
        self.tat.load(Ordering::Acquire) <= now_ns
            && self.paused_until.load(Ordering::Acquire) <= now_ns
    }
}

/// A limiter's state at one moment (governor's `StateSnapshot`): for metrics, status pages and
/// logs. From [`RateLimiter::snapshot`](super::RateLimiter::snapshot) and
/// [`KeyedRateLimiter::snapshot`](super::KeyedRateLimiter::snapshot).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// The rate in force, cells per second.
    pub per_second: f64,
    /// The burst.
    pub burst: u64,
    /// Cells that would pass right now, one after the other, without waiting (0 while paused).
    pub available: u64,
    /// The end of a pause in force (a `Retry-After`), if any.
    pub paused_until: Option<Instant>,
}

/// Waits for cells: the future of [`RateLimiter::until_ready`](super::RateLimiter::until_ready),
/// [`RateLimiter::until_ready_within`](super::RateLimiter::until_ready_within), their keyed
/// twins, and of [`RateLimitLayer`](super::RateLimitLayer)'s services.
///
/// It waits by *reserving* its cells, then sleeping until they are due (the reservation design
/// of Guava's RateLimiter). Waiters are served in order without racing each other, and a
/// waiter woken late by the timer (tokio rounds sleeps up to the next millisecond) loses
/// nothing: its cells were already taken. Were it instead to re-check on waking, a limiter
/// whose interval is near the timer resolution would lose each wake-up's lateness (1000/s with
/// burst 1 would deliver about 500/s). A pause found on waking voids the reservation. With a
/// deadline, it takes nothing it would have to wait past the deadline for, and fails at once
/// with [`NotUntil`] instead.
///
/// # Cancel safety
///
/// Safe to drop at any point. Dropped while sleeping on a reservation, it wastes those cells:
/// the rate can only come out lower than configured, never higher.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Acquire {
    gcra: Arc<Gcra>,
    n: u64,
    deadline: Option<Instant>,
    /// Set while sleeping; `reserved` says whether on a reservation or on a pause.
    sleep: Option<Pin<Box<Sleep>>>,
    reserved: bool,
}

impl Acquire {
    pub(super) fn new(gcra: Arc<Gcra>, n: u64, deadline: Option<Instant>) -> Self {
        Self {
            gcra,
            n,
            deadline,
            sleep: None,
            reserved: false,
        }
    }
}

impl Future for Acquire {
    type Output = Result<(), NotUntil>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = &mut this.sleep {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
                let paused = this.gcra.paused_at(this.gcra.nanos(Instant::now()));
                if std::mem::take(&mut this.reserved) && paused.is_none() {
                    return Poll::Ready(Ok(()));
                }
            }
            let now = Instant::now();
            let wake = match this.gcra.reserve_by(now, this.n, this.deadline) {
                Ok(None) => return Poll::Ready(Ok(())),
                Ok(Some(at)) => {
                    event!(trace, wait = ?(at - now), cells = this.n, "rate limit: waiting for a cell");
                    this.reserved = true;
                    at
                }
                // Paused, and the pause ends within the deadline (or there is none): sleep it
                // out and ask again.
                Err(NotUntil(until))
                    if this.gcra.paused_at(this.gcra.nanos(now)).is_some()
                        && this.deadline.is_none_or(|d| until <= d) =>
                {
                    event!(debug, wait = ?(until - now), "rate limit: paused (Retry-After)");
                    until
                }
                Err(refused) => {
                    event!(debug, wait = ?refused.wait_from(now), "rate limit: refused, past the deadline");
                    return Poll::Ready(Err(refused));
                }
            };
            this.sleep = Some(Box::pin(tokio::time::sleep_until(wake)));
        }
    }
}

/// Validated GCRA parameters shared by the direct and keyed builders.
#[derive(Debug, Clone, Copy)]
pub(super) struct Params {
    pub(super) t: u64,
    pub(super) burst: u64,
}

/// Checks a rate against a burst: the interval T in ns.
pub(super) fn interval_for(
    component: &'static str,
    rate: Rate,
    burst: u64,
) -> Result<u64, ConfigError> {
    let t = rate.validate(component)?;
    t.checked_mul(burst - 1)
        .ok_or_else(|| ConfigError::new(component, "burst × interval overflows"))?;
    Ok(t)
}

pub(super) fn params(
    component: &'static str,
    rate: Option<Rate>,
    burst: u64,
) -> Result<Params, ConfigError> {
    let rate = rate.ok_or_else(|| ConfigError::new(component, "a rate is required (e.g. 50/s)"))?;
    if burst == 0 {
        return Err(ConfigError::new(
            component,
            "burst must be at least 1 (a burst of 0 would never let a call through)",
        ));
    }
    let t = interval_for(component, rate, burst)?;
    Ok(Params { t, burst })
}
