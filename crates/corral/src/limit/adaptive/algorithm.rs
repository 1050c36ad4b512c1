//! The algorithms that move an adaptive limit: [`Aimd`] and [`Gradient`].
//!
//! Each is a small state machine over a number — the limit — fed one [`Sample`] per call. They
//! know nothing of semaphores, so the same arithmetic can steer a concurrency limit (what
//! [`AdaptiveConcurrency`](super::AdaptiveConcurrency) does) or anything else measured per call.

use std::time::Duration;

use crate::error::ConfigError;

fn bad(what: String) -> Result<(), ConfigError> {
    Err(ConfigError::new("adaptive", what))
}

/// One finished call, as an algorithm sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// How long the call took.
    pub rtt: Duration,
    /// Calls in flight when it started, itself included.
    pub in_flight: usize,
    /// True when the call failed in a way that says the service is overloaded: an error, a
    /// timeout, a 429 or 503 — whatever the caller reports as dropped.
    pub dropped: bool,
}

/// Additive increase, multiplicative decrease — TCP's congestion control, and the
/// concurrency-limits `AIMDLimit`.
///
/// A dropped call (or one slower than [`slow_call`](Self::slow_call)) multiplies the limit by
/// [`backoff`](Self::backoff) (default 0.9); a successful call adds
/// [`increase`](Self::increase) ÷ limit (default 1: about one more slot per limit's worth of
/// calls, i.e. per round trip), but only when the limit was being used (at least half of it
/// in flight), so an idle client does not talk itself into a limit it never tested.
///
/// Choose it when the service signals overload plainly (errors, 429/503, timeouts).
#[derive(Debug, Clone, PartialEq)]
pub struct Aimd {
    backoff: f64,
    increase: f64,
    slow_call: Option<Duration>,
}

impl Default for Aimd {
    fn default() -> Self {
        Self {
            backoff: 0.9,
            increase: 1.0,
            slow_call: None,
        }
    }
}

impl Aimd {
    /// Backoff 0.9, increase 1, no slow-call threshold.
    pub fn new() -> Self {
        Self::default()
    }
    /// The factor a drop multiplies the limit by, in (0, 1) (default 0.9).
    pub fn backoff(mut self, factor: f64) -> Self {
        self.backoff = factor;
        self
    }
    /// Slots added per limit's worth of successful calls (default 1).
    pub fn increase(mut self, slots: f64) -> Self {
        self.increase = slots;
        self
    }
    /// Successful calls that take this long or longer count as drops (default: off).
    pub fn slow_call(mut self, threshold: Duration) -> Self {
        self.slow_call = Some(threshold);
        self
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.backoff > 0.0 && self.backoff < 1.0) {
            return bad(format!(
                "aimd backoff must be in (0, 1) (got {})",
                self.backoff
            ));
        }
        if !(self.increase > 0.0 && self.increase.is_finite()) {
            return bad(format!(
                "aimd increase must be above 0 (got {})",
                self.increase
            ));
        }
        Ok(())
    }

    /// The limit after `sample`, from `limit`.
    pub fn next(&mut self, limit: f64, sample: &Sample) -> f64 {
        let slow = self.slow_call.is_some_and(|t| sample.rtt >= t);
        if sample.dropped || slow {
            limit * self.backoff
        } else if sample.in_flight as f64 * 2.0 >= limit {
            limit + self.increase / limit.max(1.0)
        } else {
            limit
        }
    }
}

/// A latency gradient, after Netflix's concurrency-limits `GradientLimit`: the limit follows
/// the ratio of the no-load latency to the latest one.
///
/// Samples are taken in windows of one limit's worth (at least 10): about one round trip, as
/// Netflix's `WindowedLimit` does and TCP reacts once per round trip. Moving the limit per
/// sample instead makes it overreact: the calls still queued behind a cut all report the old
/// queue, and each would cut again.
///
/// The no-load latency is the least window average seen since the last probe. While latency
/// stays near it, the limit grows by a queue allowance (√limit) per window; when latency
/// rises — requests are queueing somewhere — the gradient `tolerance × no-load ÷ latest`
/// (clamped to [0.5, 1]) falls below 1 and shrinks the limit before any error is seen.
/// Changes are smoothed ([`smoothing`](Self::smoothing)). Every
/// [`probe_every`](Self::probe_every) windows it halves the limit and forgets the no-load
/// latency, so the queue drains and a service whose no-load latency really changed is
/// measured again (without this, a standing queue would become the new "no load"). A window
/// with a dropped call cuts the limit by 10 %, as [`Aimd`] does.
///
/// Choose it when overload shows as latency first (queues in front of a database, a service
/// that slows down rather than refusing).
#[derive(Debug, Clone, PartialEq)]
pub struct Gradient {
    tolerance: f64,
    smoothing: f64,
    probe_every: u32,
    /// The least window average since the last probe, in seconds.
    no_load: Option<f64>,
    /// Windows left until the next probe.
    to_probe: u32,
    window: Window,
}

/// Samples gathered since the last move.
#[derive(Debug, Clone, Default, PartialEq)]
struct Window {
    samples: u32,
    rtt_sum: f64,
    max_in_flight: usize,
    dropped: bool,
}

impl Default for Gradient {
    fn default() -> Self {
        Self {
            tolerance: 1.5,
            smoothing: 0.2,
            probe_every: 30,
            no_load: None,
            to_probe: 30,
            window: Window::default(),
        }
    }
}

impl Gradient {
    /// Tolerance 1.5, smoothing 0.2, a probe every 30 windows.
    pub fn new() -> Self {
        Self::default()
    }
    /// How much slower than the no-load latency the latest may be before the limit shrinks,
    /// ≥ 1 (default 1.5: 50 % slower).
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }
    /// How much of each computed change is applied, in (0, 1] (default 0.2).
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }
    /// Probe (halve the limit, measure the no-load latency again) every this many windows
    /// (default 30).
    pub fn probe_every(mut self, windows: u32) -> Self {
        self.probe_every = windows.max(1);
        self.to_probe = self.probe_every;
        self
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return bad(format!(
                "gradient tolerance must be at least 1 (got {})",
                self.tolerance
            ));
        }
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return bad(format!(
                "gradient smoothing must be in (0, 1] (got {})",
                self.smoothing
            ));
        }
        Ok(())
    }

    /// The no-load latency measured since the last probe.
    pub fn no_load_rtt(&self) -> Option<Duration> {
        self.no_load.map(Duration::from_secs_f64)
    }

    /// The limit after `sample`, from `limit`: unchanged until a window is complete.
    pub fn next(&mut self, limit: f64, sample: &Sample) -> f64 {
        let w = &mut self.window;
        w.samples += 1;
        w.rtt_sum += sample.rtt.as_secs_f64();
        w.max_in_flight = w.max_in_flight.max(sample.in_flight);
        w.dropped |= sample.dropped;
        if f64::from(w.samples) < limit.max(10.0) {
            return limit;
        }
        let w = std::mem::take(&mut self.window);
        if w.dropped {
            return limit * 0.9;
        }
        self.to_probe = self.to_probe.saturating_sub(1);
        if self.to_probe == 0 {
            self.to_probe = self.probe_every;
            self.no_load = None;
            return limit / 2.0;
        }
        let rtt = (w.rtt_sum / f64::from(w.samples)).max(1e-9);
        let no_load = self.no_load.map_or(rtt, |n| n.min(rtt));
        self.no_load = Some(no_load);
        // An application that does not use its limit tells us nothing about it.
        if (w.max_in_flight as f64) < limit / 2.0 {
            return limit;
        }
        let gradient = (self.tolerance * no_load / rtt).clamp(0.5, 1.0);
        let target = limit * gradient + limit.sqrt();
        limit * (1.0 - self.smoothing) + target * self.smoothing
    }
}

/// Which algorithm an [`AdaptiveConcurrency`](super::AdaptiveConcurrency) runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Algorithm {
    /// Additive increase, multiplicative decrease on drops.
    Aimd(Aimd),
    /// Latency gradient.
    Gradient(Gradient),
}

impl Algorithm {
    pub(super) fn next(&mut self, limit: f64, sample: &Sample) -> f64 {
        match self {
            Algorithm::Aimd(a) => a.next(limit, sample),
            Algorithm::Gradient(g) => g.next(limit, sample),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Algorithm::Aimd(a) => a.validate(),
            Algorithm::Gradient(g) => g.validate(),
        }
    }
}

impl From<Aimd> for Algorithm {
    fn from(a: Aimd) -> Self {
        Algorithm::Aimd(a)
    }
}

impl From<Gradient> for Algorithm {
    fn from(g: Gradient) -> Self {
        Algorithm::Gradient(g)
    }
}
