//! `--per-host-rate auto`: each host's rate found while the run goes, for servers whose limit
//! the user does not know (lychee, feroxbuster `--auto-tune` and GNU parallel `--delay auto`
//! adapt the same way).
//!
//! Additive increase, multiplicative decrease, as TCP finds a path's capacity. A 429, a 503
//! or a refused connection cuts the rate, at most once a second (the requests already in
//! flight at the old rate answer 429 too: one overload, one cut), and the rate at which it
//! came is remembered as the host's ceiling: the first cut is to 70 %, later ones, near a
//! known ceiling, to 90 %. A window in which the host answered without pushing back, and in
//! which the rate was used, raises it: doubling each half second until the first push-back;
//! then, each second, half-way up to 95 % of the ceiling; there it stays for ten clean seconds
//! before it probes higher, by a step (2 %) that doubles each clean second (a host whose limit
//! went up is found again fast, one whose did not is probed rarely: each push-back costs a
//! `Retry-After` pause). When a server says what it allows (`RateLimit-Remaining` /
//! `X-RateLimit-Remaining` with `-Reset`), the rate goes no higher than that for now, and an
//! exhausted allowance pauses the host until its reset.

use std::time::Duration;

use tokio::time::Instant;

/// What one response (or failure) said about the host's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered without pushing back.
    Ok,
    /// Pushed back: 429, 503, or a refused connection.
    Overloaded,
    /// Neither (a 404, a timeout: not about the rate).
    Neutral,
}

/// The rate controller of one host.
#[derive(Debug, Clone)]
pub struct Aimd {
    /// Requests per second now.
    rate: f64,
    /// No push-back yet: the rate doubles.
    slow_start: bool,
    window_start: Instant,
    /// Answers without push-back since `window_start`.
    window_ok: u64,
    /// A push-back since `window_start`.
    window_pushed: bool,
    last_cut: Option<Instant>,
    /// The rate at the last push-back.
    ceiling: f64,
    /// The next raise above the ceiling.
    probe: f64,
    /// Clean seconds spent just under the ceiling.
    plateau: u32,
}

/// Rates stay within these, requests per second.
const MIN_RATE: f64 = 0.5;
const MAX_RATE: f64 = 1_000_000.0;
/// One window of observation.
const WINDOW: Duration = Duration::from_secs(1);
/// A cut keeps this share of the rate.
const CUT: f64 = 0.7;
/// A cut near a known ceiling keeps this share.
const NEAR_CUT: f64 = 0.9;
/// Below a known ceiling, the rate settles at this share of it ...
const PLATEAU: f64 = 0.95;
/// ... for this many clean seconds before it probes higher.
const PLATEAU_SECONDS: u32 = 10;

impl Aimd {
    /// A controller starting at `start` requests per second.
    pub fn new(start: f64, now: Instant) -> Self {
        Self {
            rate: start.clamp(MIN_RATE, MAX_RATE),
            slow_start: true,
            window_start: now,
            window_ok: 0,
            window_pushed: false,
            last_cut: None,
            ceiling: MAX_RATE,
            probe: 1.0,
            plateau: 0,
        }
    }

    /// The rate now, requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Takes one observation; `Some(rate)` when the rate changes.
    pub fn observe(&mut self, signal: Signal, now: Instant) -> Option<f64> {
        match signal {
            Signal::Overloaded => {
                self.window_pushed = true;
                if self
                    .last_cut
                    .is_some_and(|at| now.saturating_duration_since(at) < WINDOW)
                {
                    return None;
                }
                self.last_cut = Some(now);
                let near = !self.slow_start && self.rate >= 0.9 * self.ceiling;
                self.slow_start = false;
                self.ceiling = self.rate;
                self.probe = (self.rate / 50.0).max(1.0);
                self.plateau = 0;
                self.rate = (self.rate * if near { NEAR_CUT } else { CUT }).max(MIN_RATE);
                self.restart(now);
                Some(self.rate)
            }
            Signal::Ok => {
                self.window_ok += 1;
                let elapsed = now.saturating_duration_since(self.window_start);
                // Until the first push-back a window is half as long: the rate is far from
                // the host's limit, and every second spent there is lost.
                let window = if self.slow_start { WINDOW / 2 } else { WINDOW };
                if elapsed < window {
                    return None;
                }
                // Raised only when the rate was used: a host with few jobs says nothing of
                // how many more it could take.
                let used = self.window_ok as f64 >= 0.8 * self.rate * elapsed.as_secs_f64();
                let raise = !self.window_pushed && used;
                self.restart(now);
                if !raise {
                    return None;
                }
                let plateau = PLATEAU * self.ceiling;
                let next = if self.slow_start {
                    self.rate * 2.0
                } else if self.rate < plateau * 0.999 {
                    (self.rate + (self.ceiling - self.rate) / 2.0).min(plateau)
                } else if self.plateau < PLATEAU_SECONDS {
                    self.plateau += 1;
                    return None;
                } else {
                    let r = self.rate + self.probe;
                    self.probe *= 2.0;
                    r
                };
                self.rate = next.min(MAX_RATE);
                Some(self.rate)
            }
            Signal::Neutral => None,
        }
    }

    /// The server said it allows `per_second` for now: no higher than that.
    pub fn cap(&mut self, per_second: f64) -> Option<f64> {
        let capped = per_second.clamp(MIN_RATE, MAX_RATE);
        (capped < self.rate).then(|| {
            self.rate = capped;
            self.rate
        })
    }

    fn restart(&mut self, now: Instant) {
        self.window_start = now;
        self.window_ok = 0;
        self.window_pushed = false;
    }
}

/// True when an allowance (from [`allowance`]) is spent and the host must wait for its reset:
/// the host pauses, as for a `Retry-After`.
pub fn pauses(allowance: Option<(u64, Duration)>) -> bool {
    matches!(allowance, Some((0, reset)) if !reset.is_zero())
}

/// What a response's `RateLimit-*` / `X-RateLimit-*` headers say: requests left, and how long
/// until the allowance resets.
pub fn allowance(headers: &http::HeaderMap) -> Option<(u64, Duration)> {
    let num = |names: [&str; 2]| {
        names.iter().find_map(|n| {
            headers
                .get(*n)?
                .to_str()
                .ok()?
                .split(',')
                .next()?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    let remaining = num(["ratelimit-remaining", "x-ratelimit-remaining"])?;
    let reset = num(["ratelimit-reset", "x-ratelimit-reset"])?;
    // Some servers give the reset as a Unix time, others as seconds from now.
    let reset = if reset > 1e9 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        (reset - now).max(0.0)
    } else {
        reset.max(0.0)
    };
    Some((
        remaining.max(0.0) as u64,
        Duration::from_secs_f64(reset.min(86_400.0)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` answers without push-back spread over the next window (a second, half of one in
    /// slow start); the rate change, if any.
    async fn second(a: &mut Aimd, n: u32) -> Option<f64> {
        let window = if a.slow_start { WINDOW / 2 } else { WINDOW };
        let mut changed = None;
        for _ in 0..n {
            // A nanosecond more, so that the n-th answer ends the window.
            tokio::time::advance(window / n + Duration::from_nanos(1)).await;
            changed = a.observe(Signal::Ok, Instant::now()).or(changed);
        }
        changed
    }

    #[tokio::test(start_paused = true)]
    async fn doubles_until_pushed_back_then_cuts_and_climbs_slowly() {
        let mut a = Aimd::new(10.0, Instant::now());
        assert_eq!(
            second(&mut a, 5).await,
            Some(20.0),
            "a used, clean half second doubles it"
        );
        assert_eq!(
            second(&mut a, 5).await,
            None,
            "an unused rate is not raised"
        );
        assert_eq!(
            a.observe(Signal::Overloaded, Instant::now()),
            Some(14.0),
            "a push-back cuts it to 70 %"
        );
        assert_eq!(
            a.observe(Signal::Overloaded, Instant::now()),
            None,
            "once a second"
        );
        assert_eq!(
            second(&mut a, 14).await,
            None,
            "not in a second that saw a push-back"
        );
        assert_eq!(
            second(&mut a, 14).await,
            Some(17.0),
            "then half-way back to where it was pushed back (20)"
        );
        assert_eq!(second(&mut a, 17).await, Some(18.5));
        assert_eq!(second(&mut a, 19).await, Some(19.0), "up to 95 % of it");
        for _ in 0..PLATEAU_SECONDS {
            assert_eq!(second(&mut a, 19).await, None, "where it stays a while");
        }
        assert_eq!(
            second(&mut a, 19).await,
            Some(20.0),
            "then probes: +1 (or 2 %)"
        );
        assert_eq!(
            second(&mut a, 20).await,
            Some(22.0),
            "by a step that doubles"
        );
        assert_eq!(
            a.observe(Signal::Overloaded, Instant::now()),
            Some(22.0 * NEAR_CUT),
            "pushed back near its ceiling: a gentler cut"
        );
        assert_eq!(a.observe(Signal::Neutral, Instant::now()), None);
        assert_eq!(a.cap(5.0), Some(5.0), "a server's allowance caps it");
        assert_eq!(a.cap(50.0), None);
    }

    #[test]
    fn reads_the_allowance_from_either_header_family() {
        let mut h = http::HeaderMap::new();
        assert_eq!(allowance(&h), None);
        h.insert("x-ratelimit-remaining", "30".parse().unwrap());
        h.insert("x-ratelimit-reset", "10".parse().unwrap());
        assert_eq!(allowance(&h), Some((30, Duration::from_secs(10))));
        let mut h = http::HeaderMap::new();
        h.insert("ratelimit-remaining", "0".parse().unwrap());
        h.insert("ratelimit-reset", "2".parse().unwrap());
        assert_eq!(allowance(&h), Some((0, Duration::from_secs(2))));
    }
}
