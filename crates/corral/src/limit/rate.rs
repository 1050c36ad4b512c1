//! [`Rate`], how a limit is written, and [`NotUntil`], how a refusal is told.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;

/// A rate: `count` cells per `period`. Parse from `"50/s"`, `"3000/min"`, `"10/100ms"`, `"2/h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u64,
    period: Duration,
}

impl Rate {
    /// `count` per `period`. Validity (non-zero) is checked by the builders that use it.
    pub const fn new(count: u64, period: Duration) -> Self {
        Self { count, period }
    }
    /// `count` per second.
    pub const fn per_second(count: u64) -> Self {
        Self::new(count, Duration::from_secs(1))
    }
    /// `count` per minute.
    pub const fn per_minute(count: u64) -> Self {
        Self::new(count, Duration::from_secs(60))
    }
    /// Cells per period.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }
    /// Cells per second, as a float (for display).
    pub fn per_sec_f64(&self) -> f64 {
        self.count as f64 / self.period.as_secs_f64()
    }
    pub(super) fn validate(&self, component: &'static str) -> Result<u64, ConfigError> {
        if self.count == 0 {
            return Err(ConfigError::new(
                component,
                "rate must allow at least 1 per period (got 0)",
            ));
        }
        if self.period.is_zero() {
            return Err(ConfigError::new(
                component,
                "rate period must be longer than zero",
            ));
        }
        let t = self.period.as_nanos() / u128::from(self.count);
        if t == 0 {
            return Err(ConfigError::new(
                component,
                format!("rate {self} is faster than one per nanosecond"),
            ));
        }
        u64::try_from(t)
            .map_err(|_| ConfigError::new(component, format!("rate {self} is too slow")))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.period;
        match p.as_secs() {
            1 if p.subsec_nanos() == 0 => write!(f, "{}/s", self.count),
            60 if p.subsec_nanos() == 0 => write!(f, "{}/min", self.count),
            3600 if p.subsec_nanos() == 0 => write!(f, "{}/h", self.count),
            _ => write!(f, "{}/{}ms", self.count, p.as_millis()),
        }
    }
}

impl FromStr for Rate {
    type Err = ConfigError;

    /// Parses `N/unit` or `N/<amount><unit>`, unit one of `ms`, `s`, `sec`, `m`, `min`, `h`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            ConfigError::new(
                "rate",
                format!(
                    "cannot read {s:?} as a rate ({why}); write it like 50/s, 3000/min or 10/100ms"
                ),
            )
        };
        let (count, per) = s.trim().split_once('/').ok_or_else(|| bad("no '/'"))?;
        let count: u64 = count
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        let per = per.trim();
        let split = per.find(|c: char| !c.is_ascii_digit()).unwrap_or(per.len());
        let (amount, unit) = per.split_at(split);
        let amount: u64 = if amount.is_empty() {
            1
        } else {
            amount
                .parse()
                .map_err(|_| bad("the period amount is not a whole number"))?
        };
        let unit = match unit {
            "ms" => Duration::from_millis(1),
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad("unknown unit")),
        };
        let period = unit
            .checked_mul(u32::try_from(amount).map_err(|_| bad("period too long"))?)
            .ok_or_else(|| bad("period too long"))?;
        let rate = Rate { count, period };
        rate.validate("rate")?;
        Ok(rate)
    }
}

/// A call was refused; the earliest instant at which it could pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUntil(pub Instant);

impl NotUntil {
    /// How long from `now` until the call could pass.
    pub fn wait_from(&self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }
}

impl fmt::Display for NotUntil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited for {:?}", self.wait_from(Instant::now()))
    }
}

impl std::error::Error for NotUntil {}
