//! Everything that shapes a run, as plain data with the defaults of `corral run`, written here
//! once: the binary's options fall back to these, and its `--help` and the README quote them.
//! Set them one by one with [`crate::run::RunBuilder`], or fill a [`Settings`] whole (as the
//! binary does when it merges its config file and flags) and hand it to
//! [`crate::run::RunBuilder::settings`]. They are checked once, when the run is built, and a
//! setting that cannot work is a [`ConfigError`] naming its option.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use corral::limit::Rate;

use crate::error::ConfigError;

/// What to do with response bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// Read (up to the cap) and count, do not store.
    Discard,
    /// Read up to the cap and store in the result.
    Save,
    /// Do not read at all.
    Skip,
}

/// A host's circuit breaker (see [`corral::breaker`]).
#[derive(Debug, Clone, Copy)]
pub struct BreakerSettings {
    /// Share of failed calls in the window that opens it (`--breaker-failure-rate`).
    pub failure_rate: f64,
    /// Calls in the window before it may open (`--breaker-min-calls`).
    pub min_calls: u32,
    /// How far back calls are counted (`--breaker-window-s`).
    pub window: Duration,
    /// How long it stays open before probes go through (`--breaker-cool-down-s`).
    pub cool_down: Duration,
    /// Probes let through half-open (`--breaker-probes`).
    pub probes: u32,
    /// How long a job may wait for its host's open breaker before it fails `circuit_open`
    /// (`--breaker-max-hold-s`).
    pub max_hold: Duration,
    /// Fail a job at once when its host's breaker is open, instead of holding it
    /// (`--breaker-fail-fast`).
    pub fail_fast: bool,
}

/// Everything that shapes a run. Each field names the `corral run` option it comes from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Jobs under way at once, all hosts together (`--concurrency`).
    pub concurrency: usize,
    /// Requests in flight to one host (`--per-host-concurrency`).
    pub per_host_concurrency: usize,
    /// Requests per period, all hosts together (`--rate`); `None`: no limit.
    pub rate: Option<Rate>,
    /// Requests the global rate lets through at once (`--burst`).
    pub burst: u64,
    /// Requests per period to one host (`--per-host-rate`); `None`: no limit.
    pub per_host_rate: Option<Rate>,
    /// Requests the per-host rate lets through at once (`--per-host-burst`).
    pub per_host_burst: u64,
    /// Attempts after the first (`--retries`).
    pub retries: u32,
    /// First backoff delay, doubled per retry with full jitter (`--retry-base-ms`).
    pub retry_base: Duration,
    /// Longest backoff delay (`--retry-max-ms`).
    pub retry_max: Duration,
    /// Response statuses retried (`--retry-on`).
    pub retry_statuses: Vec<u16>,
    /// Retries allowed as a share of first attempts (`--retry-budget`); `None`: no budget.
    pub retry_budget: Option<f64>,
    /// Retry requests that are not idempotent even when they may have reached the server
    /// (`--retry-unsafe`).
    pub retry_unsafe: bool,
    /// Longest `Retry-After` honoured (`--max-retry-after-s`).
    pub max_retry_after: Duration,
    /// Idle connections each worker thread keeps for reuse, all hosts together (sized from the
    /// open-file limit).
    pub idle_connections: usize,
    /// Each host's circuit breaker; `None`: no breakers (`--no-breaker`).
    pub breaker: Option<BreakerSettings>,
    /// One attempt, connect to last body byte (`--timeout-ms`).
    pub timeout: Duration,
    /// Connecting, TLS included (`--connect-timeout-ms`).
    pub connect_timeout: Duration,
    /// One job, all its attempts and waits (`--total-timeout-ms`); `None`: no bound.
    pub total_timeout: Option<Duration>,
    /// Body bytes read per response (`--max-body`).
    pub max_body: u64,
    /// What to do with bodies (`--save-body`, `--no-body`).
    pub body: BodyMode,
    /// Keep response headers in results (`--save-headers`).
    pub save_headers: bool,
    /// The `User-Agent` sent unless a job sets its own (`--user-agent`).
    pub user_agent: String,
    /// Response statuses that make a job ok (`--accept`); any other is a failure
    /// (`http_status`), retried when it is in `retry_statuses`.
    pub accept: StatusSet,
}

/// A set of HTTP statuses, written as `--accept` takes it: single statuses and ranges,
/// comma-separated (`200-299,404`).
///
/// ```
/// use corral_engine::settings::StatusSet;
///
/// let ok: StatusSet = "200-299,404".parse().unwrap();
/// assert!(ok.contains(204) && ok.contains(404) && !ok.contains(301));
/// assert_eq!(ok.to_string(), "200-299,404");
/// assert!("200-99".parse::<StatusSet>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    /// `from..=to`, one range.
    pub fn range(from: u16, to: u16) -> Self {
        Self(vec![(from, to)])
    }

    /// True when `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&status))
    }
}

impl FromStr for StatusSet {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |part: &str| {
            ConfigError::new(
                "--accept",
                format!(
                    "{part:?} is not a status or a range of statuses (100-599), as in 200-299,404"
                ),
            )
        };
        let status = |t: &str, part: &str| -> Result<u16, ConfigError> {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| (100..=599).contains(n))
                .ok_or_else(|| bad(part))
        };
        let mut set = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (status(a, part)?, status(b, part)?),
                None => {
                    let n = status(part, part)?;
                    (n, n)
                }
            };
            if a > b {
                return Err(bad(part));
            }
            set.push((a, b));
        }
        Ok(Self(set))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

impl Settings {
    /// Refuses settings that cannot work (a zero that would stop every job, or hang the run),
    /// naming the option they come from.
    pub fn check(&self) -> Result<(), ConfigError> {
        let at_least_one = |v: usize, option| {
            if v == 0 {
                Err(ConfigError::new(option, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        at_least_one(self.concurrency, "--concurrency")?;
        at_least_one(self.per_host_concurrency, "--per-host-concurrency")?;
        if self.timeout.is_zero() {
            return Err(ConfigError::new("--timeout-ms", "must be greater than 0"));
        }
        if self.total_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "--total-timeout-ms",
                "must be greater than 0",
            ));
        }
        if self.max_body == 0 {
            return Err(ConfigError::new(
                "--max-body",
                "must be at least 1 byte (use --no-body to skip bodies)",
            ));
        }
        Ok(())
    }
}

/// The defaults of `corral run`, written here once: the binary's options fall back to these.
impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            per_host_concurrency: 8,
            rate: None,
            burst: 1,
            per_host_rate: None,
            per_host_burst: 1,
            retries: 3,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_millis(10_000),
            retry_statuses: vec![429, 500, 502, 503, 504],
            retry_budget: None,
            retry_unsafe: false,
            max_retry_after: Duration::from_secs(60),
            idle_connections: 256,
            breaker: Some(BreakerSettings::default()),
            timeout: Duration::from_millis(30_000),
            connect_timeout: Duration::from_millis(10_000),
            total_timeout: None,
            max_body: 1 << 20,
            body: BodyMode::Discard,
            save_headers: false,
            user_agent: format!("corral/{}", env!("CARGO_PKG_VERSION")),
            accept: StatusSet::range(200, 399),
        }
    }
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(30),
            cool_down: Duration::from_secs(10),
            probes: 1,
            max_hold: Duration::from_secs(300),
            fail_fast: false,
        }
    }
}

/// Settings for in-process tests: `concurrency` jobs, short timeouts, no limits.
#[cfg(test)]
pub(crate) fn test_settings(concurrency: usize) -> Settings {
    Settings {
        concurrency,
        per_host_concurrency: 8,
        rate: None,
        burst: 1,
        per_host_rate: None,
        per_host_burst: 1,
        retries: 0,
        retry_base: Duration::from_millis(1),
        retry_max: Duration::from_millis(1),
        retry_statuses: vec![503],
        retry_budget: None,
        retry_unsafe: false,
        max_retry_after: Duration::from_secs(1),
        idle_connections: 8,
        breaker: None,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        total_timeout: None,
        max_body: 1 << 20,
        body: BodyMode::Discard,
        save_headers: false,
        user_agent: "corral-test".into(),
        accept: StatusSet::range(200, 399),
    }
}
