//! What every engine of a run shares ([`Gates`]: limits, per-host state, retry policies, the
//! result budget), a job's active slot, and the gates an attempt passes, in their order: the
//! host's slot, its rate cell (which carries `Retry-After` pauses), its cost cell, the global
//! rate and cost, its breaker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use corral::limit::RateLimiter;
use corral::retry::{RetryBudget, RetryPolicy};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::attempt::AttemptError;
use super::trace::Trace;
use super::Engine;
use crate::error::{ConfigError, StartError};
use crate::hosts::suspect::Trying;
use crate::hosts::{Host, HostEntry, HostStat, HostTable, Permit, Slot};
use crate::http::client::{ClientOptions, Clients};
use crate::result::RESULT_BYTES;
use crate::settings::{cost_burst, BreakerSettings, RateSetting, Settings};

/// What every engine of a run shares: limits, breakers, retry policy, per-host counters.
pub struct Gates {
    pub(super) settings: Settings,
    /// Every engine's active-job semaphore with its number of permits (for [`Gates::running`]).
    pub(super) active: Mutex<Vec<(usize, Arc<Semaphore>)>>,
    /// Every host's slots, rate cell, breaker and counters (see [`HostTable`]).
    pub(super) hosts: Arc<dyn HostTable>,
    pub(super) global_rate: Option<RateLimiter>,
    /// `--cost-rate`.
    pub(super) global_cost: Option<RateLimiter>,
    /// Some cost rate, `--cost-from-response` or `--max-cost` is set: costs are counted per
    /// host and per job (its result's `cost`).
    pub(super) costs_counted: bool,
    /// `--max-cost`, `--max-requests`.
    pub(super) caps: Option<super::caps::Caps>,
    /// Some host's rate is found while the run goes (`auto`): outcomes are reported to it.
    pub(super) adaptive: bool,
    pub(super) policy: RetryPolicy,
    /// The retry policy of each `[hosts]` rule, in the order of [`Settings::hosts`].
    pub(super) rule_policies: Vec<RetryPolicy>,
    /// See [`RESULT_BYTES`].
    pub(super) result_bytes: Arc<Semaphore>,
    /// What servers asked for and did not get in full.
    pub(super) cut: Cut,
    /// The intents journal, when results go to a file (see [`crate::intents`]).
    pub(crate) intents: std::sync::OnceLock<crate::intents::Intents>,
}

/// What servers asked of the run that it cut to its bounds, counted for the summary: a value
/// from the network may not stall a run, but the user should know it was not obeyed.
#[derive(Debug, Default)]
pub(super) struct Cut {
    /// Pauses asked for (`Retry-After`, an allowance spent until a `RateLimit-Reset`) longer
    /// than `--max-retry-after-s`, cut to it.
    pub(super) pauses: AtomicU64,
    /// Costs a response claimed (`--cost-from-response`) larger than a cost bucket holds,
    /// cut to it.
    pub(super) costs: AtomicU64,
    /// Responses whose cost could not be read (no JSON, the pointer missing or not a number):
    /// the job's own `cost` was counted.
    pub(super) unread_costs: AtomicU64,
}

impl Gates {
    /// The summary's notes on what servers asked for and were refused; none when nothing was.
    pub fn cut_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        if n(&self.cut.pauses) > 0 {
            notes.push(format!(
                "{} pauses asked for by servers (Retry-After, RateLimit-Reset) were longer than --max-retry-after-s ({} s) and were cut to it",
                n(&self.cut.pauses),
                self.settings.max_retry_after.as_secs_f64()
            ));
        }
        if n(&self.cut.costs) > 0 {
            notes.push(format!(
                "{} costs claimed by responses (--cost-from-response) were larger than a cost rate's bucket holds and were cut to it",
                n(&self.cut.costs)
            ));
        }
        if n(&self.cut.unread_costs) > 0 {
            notes.push(format!(
                "{} responses had no number at --cost-from-response's pointer; their jobs' own cost was counted",
                n(&self.cut.unread_costs)
            ));
        }
        notes
    }
}

impl Gates {
    /// Checks `settings` and builds what every engine of a run shares: limits, per-host state
    /// (kept in this process: [`crate::hosts::Hosts`]), the retry policy, the result budget. (A run builds
    /// its gates with its host table: [`Gates::with_hosts`]; this is the tests' shorthand.)
    #[cfg(test)]
    pub fn new(settings: Settings) -> Result<Arc<Self>, StartError> {
        let hosts = Arc::new(crate::hosts::Hosts::new(&settings)?);
        Self::with_hosts(settings, hosts)
    }

    /// [`Gates::new`] with per-host state kept in `hosts` (see [`crate::hosts`]).
    pub fn with_hosts(
        settings: Settings,
        hosts: Arc<dyn HostTable>,
    ) -> Result<Arc<Self>, StartError> {
        settings.check()?;
        // The clients are built per engine; building them here checks the settings once.
        Clients::new(&client_options(&settings))?;
        let global_rate = match settings.rate {
            Some(r) => Some(
                RateLimiter::builder()
                    .rate(r)
                    .burst(settings.burst)
                    .build()
                    .map_err(|e| ConfigError::from_corral("--rate", &e))?,
            ),
            None => None,
        };
        let global_cost = settings
            .cost_rate
            .map(|r| crate::hosts::cost_cell((r, cost_burst(r, settings.cost_burst))))
            .transpose()
            .map_err(|e| ConfigError::from_corral("--cost-rate", &e))?;
        let costs_counted = settings.cost_rate.is_some()
            || settings.max_cost.is_some()
            || settings.per_host_cost_rate.is_some()
            || settings.cost_from_response.is_some()
            || settings
                .hosts
                .iter()
                .any(|r| r.settings.cost_rate.is_some());
        let adaptive = matches!(settings.per_host_rate, Some(RateSetting::Auto(_)))
            || settings
                .hosts
                .iter()
                .any(|r| matches!(r.settings.rate, Some(RateSetting::Auto(_))));
        let budget = match settings.retry_budget {
            Some(ratio) => Some(
                RetryBudget::new(ratio, 10)
                    .map_err(|e| ConfigError::from_corral("--retry-budget", &e))?,
            ),
            None => None,
        };
        // One policy for the run and one for each `[hosts]` rule (its own retries), all
        // drawing on the one budget.
        let policy_for = |retries: u32, option: std::borrow::Cow<'static, str>| {
            let mut p = RetryPolicy::builder()
                .max_attempts(retries.saturating_add(1))
                .base_delay(settings.retry_base)
                .max_delay(settings.retry_max.max(settings.retry_base));
            if let Some(b) = &budget {
                p = p.budget(b.clone());
            }
            p.build().map_err(|e| ConfigError::from_corral(option, &e))
        };
        let policy = policy_for(settings.retries, "--retries".into())?;
        let rule_policies = (0..settings.hosts.len())
            .map(|i| {
                let at = format!("[hosts.\"{}\"] retries", settings.hosts[i].pattern);
                policy_for(settings.for_rule(i).retries(), at.into())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Gates {
            caps: super::caps::Caps::of(&settings),
            active: Mutex::new(Vec::new()),
            settings,
            hosts,
            global_rate,
            costs_counted,
            adaptive,
            global_cost,
            policy,
            rule_policies,
            result_bytes: Arc::new(Semaphore::new(RESULT_BYTES)),
            cut: Cut::default(),
            intents: std::sync::OnceLock::new(),
        }))
    }

    /// What an earlier run of these jobs spent against the caps (`--max-cost`,
    /// `--max-requests`): the results file's `attempts` and `cost`.
    pub(crate) fn spent_before(&self, requests: u64, cost: u64) {
        if let Some(c) = &self.caps {
            c.spent_before(requests, cost);
        }
    }

    /// Why the run stopped taking jobs at a cap, if it did.
    pub(crate) fn capped(&self) -> Option<String> {
        self.caps.as_ref().and_then(|c| c.why()).map(str::to_owned)
    }

    /// The per-host counters so far.
    pub fn host_stats(&self) -> HashMap<String, HostStat> {
        self.hosts.stats()
    }

    /// Circuit breakers opened so far, all hosts together.
    pub fn breaker_openings(&self) -> u64 {
        self.hosts.breaker_openings()
    }

    /// Bytes of [`RESULT_BYTES`] not held by lines waiting to be written.
    #[cfg(test)]
    pub fn result_bytes_free(&self) -> usize {
        self.result_bytes.available_permits()
    }

    /// Jobs under way right now (holding an active slot), all engines together.
    pub fn running(&self) -> u64 {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active
            .iter()
            .map(|(n, s)| n.saturating_sub(s.available_permits()) as u64)
            .sum()
    }
}

/// A job's slot among its engine's active jobs (its share of `--concurrency`): held while the
/// job is under way, given back while it waits for a busy, rate-limited or paused host, so that
/// other hosts' jobs run meanwhile.
pub(super) struct Active {
    pub(super) sem: Arc<Semaphore>,
    pub(super) permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Active {
    pub(super) fn release(&self) {
        self.permit.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    pub(super) async fn reacquire(&self) {
        // Never closed; should it be, the job goes on without a slot rather than fail.
        let p = self.sem.clone().acquire_owned().await.ok();
        *self.permit.lock().unwrap_or_else(|p| p.into_inner()) = p;
    }
}

/// How this run's settings shape its HTTP clients.
pub(super) fn client_options(s: &Settings) -> ClientOptions {
    ClientOptions {
        user_agent: s.user_agent.clone(),
        connect_timeout: s.connect_timeout,
        idle_per_host: s.per_host_concurrency,
        idle_total: s.idle_connections,
        other_connect_timeouts: s
            .hosts
            .iter()
            .filter_map(|r| r.settings.connect_timeout)
            .collect(),
        tls: s.tls.clone(),
        insecure: s.insecure,
        proxy: s.proxy_settings(),
        http2_prior_knowledge: s.http2_prior_knowledge,
    }
}

impl Engine {
    /// The host's gates, in order: its slot and rate (passed at once, holding the job's active
    /// slot, when they are open; otherwise waited for without it, so other hosts' jobs run
    /// meanwhile), the global rate, then its breaker. An open breaker holds the job (without
    /// either slot) until it may let a request through, then the gates are passed again; the
    /// job fails `circuit_open` only after `--breaker-max-hold-s` of holding, or at once with
    /// `--breaker-fail-fast`.
    pub(super) async fn pass_gates(
        &self,
        state: &dyn HostEntry,
        (host, cost, breaker): (&Host, u64, Option<BreakerSettings>),
        first: bool,
        active: &Active,
        trace: &Trace,
    ) -> Result<(Option<Slot>, Option<Permit>, Option<Trying>), AttemptError> {
        // After Ctrl-C, jobs that have not sent a request yet do not start.
        let stopped = || first && self.stop.is_cancelled();
        // A host suspected down lets only a few jobs' first attempts out (see
        // `hosts::suspect`); retries, which tell an outage from a flaky host, are not held.
        // Asked once the host's slot is taken, just before the request: jobs that queued for
        // the slot before the first failure came back are held too.
        let mut trying = None;
        let mut suspect = if first { state.suspect() } else { None };
        loop {
            let mut slot = state.try_slot();
            let rate_taken = slot.is_some() && state.try_rate();
            let cost_taken = rate_taken && state.try_cost(cost);
            if !cost_taken {
                active.release();
                let held = slot.take();
                let wait = async {
                    let s = match held {
                        Some(s) => Some(s),
                        None => state.slot().await,
                    };
                    if !rate_taken {
                        state.rate().await;
                    }
                    state.cost(cost).await;
                    active.reacquire().await;
                    s
                };
                slot = if first {
                    tokio::select! {
                        biased;
                        s = wait => s,
                        _ = self.stop.cancelled() => return Err(AttemptError::NotStarted),
                    }
                } else {
                    wait.await
                };
                if stopped() {
                    return Err(AttemptError::NotStarted);
                }
            }
            if let Some(g) = &self.gates.global_rate {
                g.until_ready().await;
            }
            if let Some(g) = &self.gates.global_cost {
                g.until_ready_n(cost).await;
            }
            if let Some(s) = suspect {
                if trying.is_none() {
                    match s.try_start() {
                        Some(t) => {
                            trying = t;
                            suspect = None;
                        }
                        None => {
                            // Wait without the host's slot or an active slot; the room it
                            // reserves is kept while the slot is taken again.
                            drop(slot);
                            active.release();
                            trying = tokio::select! {
                                biased;
                                t = s.start() => t,
                                _ = self.stop.cancelled() => return Err(AttemptError::NotStarted),
                            };
                            suspect = None;
                            active.reacquire().await;
                            continue;
                        }
                    }
                }
            }
            let open = match state.admit() {
                Ok(permit) => return Ok((slot, permit, trying)),
                Err(open) => open,
            };
            // Held by the open breaker, which protects the host now: its room under
            // suspicion goes to the next job (which will be held here too).
            drop(trying.take());
            let refused = |why: String| {
                AttemptError::BreakerOpen(format!("circuit breaker for {host} is open{why}"))
            };
            // The host's own breaker settings (its `[hosts]` rule's, or the run's).
            let Some(b) = breaker else {
                return Err(refused(format!(": {open}")));
            };
            if b.fail_fast {
                return Err(refused(format!(": {open} (--breaker-fail-fast)")));
            }
            let since = *trace
                .held_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(tokio::time::Instant::now);
            let left = b.max_hold.saturating_sub(since.elapsed());
            if left.is_zero() {
                return Err(refused(format!(
                    "; the job waited {:?} for it (--breaker-max-hold-s)",
                    b.max_hold
                )));
            }
            // Held: neither the host's slot nor an active slot is kept meanwhile.
            drop(slot);
            active.release();
            let hold = async {
                let _ = tokio::time::timeout(left, state.breaker_wait(open)).await;
                active.reacquire().await;
            };
            tokio::select! {
                biased;
                () = hold => {}
                () = self.stop.cancelled() => {
                    if first {
                        return Err(AttemptError::NotStarted);
                    }
                    return Err(refused(": the run stopped while the job waited for it".into()));
                }
            }
        }
    }
}
