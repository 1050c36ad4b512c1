//! Retry with exponential backoff, full jitter, caps, a retry budget and `Retry-After`.
//!
//! A [`RetryPolicy`] runs an operation until it succeeds or one of these stops it
//! ([`GiveUp`]): the classifier calls the error permanent; `max_attempts` is reached; the next
//! wait would pass `max_elapsed`; or the shared [`RetryBudget`] is spent.
//!
//! - **Backoff with full jitter**: before retry `n` (1-based) the wait is uniform in
//!   `[0, min(max_delay, base_delay × 2^(n-1))]` — the "full jitter" schedule, which spreads
//!   retries of many clients that failed together instead of having them return in lockstep.
//! - **Retry-After**: a classifier returning [`Decision::RetryAfter`] makes the next wait exactly
//!   that long (servers know better than our backoff when they will be back).
//! - **Budget**: retries amplify load exactly when a service is struggling. A [`RetryBudget`]
//!   shared by all operations allows retries only up to `reserve + ratio × first attempts`, so a
//!   full outage costs at most `ratio` extra load instead of `max_attempts ×`.
//!
//! Timeouts compose with it: see [`crate::timeout`]. As a tower layer: [`RetryLayer`].
//!
//! ```
//! use corral::retry::{Decision, RetryBudget, RetryPolicy};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), corral::ConfigError> {
//! let policy = RetryPolicy::builder()
//!     .max_attempts(5)
//!     .base_delay(Duration::from_millis(100))
//!     .budget(RetryBudget::new(0.2, 10)?)
//!     .build()?;
//! let result = policy.retry(
//!     |attempt| async move { if attempt < 3 { Err("503") } else { Ok("done") } },
//!     |e: &&str| if *e == "404" { Decision::Stop } else { Decision::Retry },
//! ).await;
//! assert_eq!(result.ok(), Some("done"));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;
use crate::trace::event;

mod layer;

pub use layer::{classify_transient, Classify, OnErrors, ResponseFuture, Retry, RetryLayer};

/// What to do after a failed attempt; returned by the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Retry after the backoff delay.
    Retry,
    /// Retry after exactly this long (the server's `Retry-After`).
    RetryAfter(Duration),
    /// The error is permanent: do not retry.
    Stop,
}

/// Why the policy stopped retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The classifier said the error is permanent.
    Permanent,
    /// `max_attempts` attempts were made.
    MaxAttempts,
    /// The next wait would have passed `max_elapsed`.
    MaxElapsed,
    /// The retry budget was spent.
    Budget,
}

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GiveUp::Permanent => "permanent error",
            GiveUp::MaxAttempts => "attempts exhausted",
            GiveUp::MaxElapsed => "time budget exhausted",
            GiveUp::Budget => "retry budget exhausted",
        })
    }
}

/// The last error, how many attempts were made, and why retrying stopped.
#[derive(Debug)]
pub struct RetryError<E> {
    /// The last attempt's error.
    pub error: E,
    /// Attempts made, including the first.
    pub attempts: u32,
    /// Why no further attempt was made.
    pub reason: GiveUp,
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} after {} attempt(s) ({})",
            self.error, self.attempts, self.reason
        )
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Caps retries at `reserve + ratio × first attempts`, shared by every operation that holds a
/// clone. Lock-free.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    inner: Arc<BudgetInner>,
}

#[derive(Debug)]
struct BudgetInner {
    /// Tokens earned per first attempt, in thousandths.
    deposit: i64,
    /// Most tokens that may be saved up, in thousandths.
    cap: i64,
    balance: AtomicI64,
}

const TOKEN: i64 = 1000;

impl RetryBudget {
    /// Retries may be at most `ratio` (0.0..=1.0, e.g. 0.1 for 10 %) of first attempts, plus a
    /// `reserve` available from the start so low-traffic callers can retry at all.
    pub fn new(ratio: f64, reserve: u32) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&ratio) || ratio.is_nan() {
            return Err(ConfigError::new(
                "retry",
                format!("budget ratio must be between 0.0 and 1.0 (got {ratio})"),
            ));
        }
        if ratio == 0.0 && reserve == 0 {
            return Err(ConfigError::new(
                "retry",
                "a budget with ratio 0 and reserve 0 never allows a retry; omit the budget or disable retries",
            ));
        }
        let reserve = i64::from(reserve) * TOKEN;
        Ok(Self {
            inner: Arc::new(BudgetInner {
                deposit: (ratio * TOKEN as f64).round() as i64,
                cap: reserve.max(TOKEN),
                balance: AtomicI64::new(reserve),
            }),
        })
    }

    /// Records a first attempt (earns `ratio` of a retry).
    pub fn deposit(&self) {
        let b = &self.inner;
        let _ = b
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some((v + b.deposit).min(b.cap))
            });
    }

    /// Takes one retry from the budget, if there is one.
    pub fn withdraw(&self) -> bool {
        self.inner
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v >= TOKEN).then_some(v - TOKEN)
            })
            .is_ok()
    }

    /// Whole retries currently available.
    pub fn available(&self) -> u64 {
        u64::try_from(self.inner.balance.load(Ordering::Acquire) / TOKEN).unwrap_or(0)
    }
}

/// Builder for [`RetryPolicy`].
#[derive(Debug, Clone)]
pub struct RetryPolicyBuilder {
    policy: RetryPolicy,
}

impl RetryPolicyBuilder {
    /// Attempts in all, including the first (default 3). 1 disables retries.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.policy.max_attempts = n;
        self
    }
    /// The first retry's maximum wait (default 100 ms); each further retry doubles it.
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.policy.base_delay = d;
        self
    }
    /// The largest wait between attempts (default 30 s).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.policy.max_delay = d;
        self
    }
    /// Do not start a wait that would end more than this long after the first attempt began.
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.policy.max_elapsed = Some(d);
        self
    }
    /// Share a retry budget with other operations.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.policy.budget = Some(budget);
        self
    }
    /// Called before every wait for a retry (backon's `notify`): for metrics and logs. Keep
    /// it quick; it runs on the retrying task.
    ///
    /// ```
    /// use corral::retry::{Decision, RetryPolicy};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), corral::ConfigError> {
    /// let retries = Arc::new(AtomicU32::new(0));
    /// let counted = retries.clone();
    /// let policy = RetryPolicy::builder()
    ///     .on_retry(move |e| { counted.fetch_add(1, Ordering::Relaxed); println!("retry {} in {:?}", e.attempt, e.delay); })
    ///     .build()?;
    /// let _ = policy.retry(|_| async { Err::<(), _>("down") }, |_| Decision::Retry).await;
    /// assert_eq!(retries.load(Ordering::Relaxed), 2); // 3 attempts, 2 waits
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_retry(mut self, hook: impl Fn(RetryEvent) + Send + Sync + 'static) -> Self {
        self.policy.on_retry = Some(OnRetry(Arc::new(hook)));
        self
    }
    /// Turn jitter off (waits are then exactly the cap); for tests and demos, not production.
    pub fn jitter(mut self, on: bool) -> Self {
        self.policy.jitter = on;
        self
    }
    /// Checks the configuration.
    pub fn build(self) -> Result<RetryPolicy, ConfigError> {
        if self.policy.max_attempts == 0 {
            return Err(ConfigError::new(
                "retry",
                "max_attempts counts the first attempt too, so it must be at least 1",
            ));
        }
        if self.policy.max_delay < self.policy.base_delay {
            return Err(ConfigError::new(
                "retry",
                format!(
                    "max_delay ({:?}) is shorter than base_delay ({:?})",
                    self.policy.max_delay, self.policy.base_delay
                ),
            ));
        }
        if self.policy.max_elapsed.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "retry",
                "max_elapsed must be longer than zero",
            ));
        }
        Ok(self.policy)
    }
}

/// A retry schedule; see the [module docs](self). Cheap to clone.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    max_elapsed: Option<Duration>,
    budget: Option<RetryBudget>,
    jitter: bool,
    on_retry: Option<OnRetry>,
}

/// A retry about to happen, as given to [`on_retry`](RetryPolicyBuilder::on_retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryEvent {
    /// The attempt that failed (1-based); the next is `attempt + 1`.
    pub attempt: u32,
    /// The wait before the next attempt.
    pub delay: Duration,
    /// True when the wait is the server's (`Retry-After`), not the backoff's.
    pub server_asked: bool,
}

#[derive(Clone)]
struct OnRetry(Arc<dyn Fn(RetryEvent) + Send + Sync>);

impl fmt::Debug for OnRetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnRetry")
    }
}

impl RetryPolicy {
    /// Defaults: 3 attempts, 100 ms base, 30 s max delay, full jitter, no elapsed cap, no budget.
    pub fn builder() -> RetryPolicyBuilder {
        RetryPolicyBuilder {
            policy: RetryPolicy {
                max_attempts: 3,
                base_delay: Duration::from_millis(100),
                max_delay: Duration::from_secs(30),
                max_elapsed: None,
                budget: None,
                jitter: true,
                on_retry: None,
            },
        }
    }

    /// Attempts in all, including the first.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The upper bound of the wait before retry `n` (1-based): `min(max, base × 2^(n-1))`.
    pub fn delay_cap(&self, n: u32) -> Duration {
        let shift = n.saturating_sub(1).min(31);
        self.base_delay
            .saturating_mul(1u32 << shift)
            .min(self.max_delay)
    }

    /// The wait before retry `n`: uniform in `[0, delay_cap(n)]` (or the cap without jitter).
    pub fn delay(&self, n: u32) -> Duration {
        let cap = self.delay_cap(n);
        if !self.jitter {
            return cap;
        }
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }

    /// Runs `op(attempt)` (attempt is 1-based) until it succeeds or the policy gives up.
    pub async fn retry<T, E, F, Fut, C>(&self, mut op: F, classify: C) -> Result<T, RetryError<E>>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Fn(&E) -> Decision,
    {
        let started = self.start();
        self.deposit();
        let mut attempt = 1;
        loop {
            let error = match op(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match self.next_wait(classify(&error), attempt, started) {
                Ok(w) => {
                    tokio::time::sleep(w).await;
                    attempt += 1;
                    continue;
                }
                Err(reason) => {
                    return Err(RetryError {
                        error,
                        attempts: attempt,
                        reason,
                    })
                }
            }
        }
    }

    /// The start of an operation, when the policy needs it (only `max_elapsed` does: reading
    /// the clock is the most expensive thing a call that never retries would do).
    pub(crate) fn start(&self) -> Option<Instant> {
        self.max_elapsed.map(|_| Instant::now())
    }

    /// After attempt number `attempt` (1-based) of an operation that began at `started` (from
    /// [`start`](Self::start)) was judged `decision`: how long to wait before the next, or why
    /// there is none. A retry allowed here has been taken from the budget.
    pub(crate) fn next_wait(
        &self,
        decision: Decision,
        attempt: u32,
        started: Option<Instant>,
    ) -> Result<Duration, GiveUp> {
        let wait = match decision {
            Decision::Stop => return Err(GiveUp::Permanent),
            Decision::Retry => self.delay(attempt),
            Decision::RetryAfter(d) => d,
        };
        let out = if attempt >= self.max_attempts {
            Err(GiveUp::MaxAttempts)
        } else if self
            .max_elapsed
            .zip(started)
            .is_some_and(|(max, started)| started.elapsed() + wait > max)
        {
            Err(GiveUp::MaxElapsed)
        } else if self.budget.as_ref().is_some_and(|b| !b.withdraw()) {
            Err(GiveUp::Budget)
        } else {
            Ok(wait)
        };
        match out {
            Ok(delay) => {
                event!(debug, attempt, ?delay, "retrying after a failed attempt");
                if let Some(hook) = &self.on_retry {
                    (hook.0)(RetryEvent {
                        attempt,
                        delay,
                        server_asked: matches!(decision, Decision::RetryAfter(_)),
                    });
                }
            }
            Err(reason) => {
                event!(debug, attempts = attempt, %reason, "giving up retrying");
                let _ = reason;
            }
        }
        out
    }

    /// Records a first attempt with the budget, if there is one.
    pub(crate) fn deposit(&self) {
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }
}
