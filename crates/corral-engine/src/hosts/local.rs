//! The in-memory [`HostTable`]: everything one process keeps about a host, in one entry: its
//! request slots, its rate cell (which also carries Retry-After pauses), its circuit breaker and
//! its counters.
//!
//! Why one entry: an attempt used to look its host up in five maps (slots, rate, breaker, two
//! counter updates), each behind its own lock; now it takes the entry once and holds it for the
//! attempt. And why eviction: a run over millions of hosts would otherwise keep every host's
//! state to the end. An entry no attempt holds, untouched for longer than any state it keeps
//! can last (the breaker's window and cool-down, the longest Retry-After, the rate's refill),
//! is as good as a new one and is dropped; only its counters are kept, for the summary.

use std::collections::HashMap;

use foldhash::HashMap as FastMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral::breaker::{CircuitBreaker, CircuitBreakerBuilder, State, StateChange};
use corral::limit::{Rate, RateLimiter};
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant as Clock;

use super::adaptive::{Aimd, Signal};
use super::HostStat;
use super::{BreakerOpen, Host, HostEntry, HostTable, Permit, Slot};
use crate::error::ConfigError;
use crate::settings::{BreakerSettings, ForHost, Settings};

/// One host's state. Taken with [`Hosts::get`] once per attempt.
pub struct HostState {
    /// Requests in flight to the host (`--per-host-concurrency`).
    slots: Arc<Semaphore>,
    /// The host's rate cell; also paused by Retry-After.
    rate: RateLimiter,
    /// The host's cost rate cell, if it has a cost rate.
    cost: Option<RateLimiter>,
    /// The controller of a rate found while the run goes (`auto`).
    adaptive: Option<Mutex<Aimd>>,
    /// The host's breaker, unless breakers are off.
    breaker: Option<CircuitBreaker>,
    /// The breaker's early signal (with the breaker).
    suspect: Option<Arc<super::suspect::Suspect>>,
    /// Woken when the breaker changes state (a probe settled).
    breaker_changed: Arc<Notify>,
    /// Longest wait for a state change nobody announces (a probe dropped unsettled).
    breaker_poll: Duration,
    stat: Mutex<HostStat>,
    /// Breaker openings (counted by the breaker's own callback).
    openings: Arc<AtomicU64>,
    /// When an attempt last took this entry.
    touched: Mutex<Clock>,
    /// Set while a change from elsewhere is applied to the breaker, which the breaker
    /// listener then does not report.
    remote: Arc<AtomicBool>,
}

impl HostEntry for HostState {
    fn try_slot(&self) -> Option<Slot> {
        self.slots.clone().try_acquire_owned().ok()
    }

    fn slot(&self) -> BoxFuture<'_, Option<Slot>> {
        // Never closed: `None` does not happen.
        self.slots.clone().acquire_owned().map(Result::ok).boxed()
    }

    fn try_rate(&self) -> bool {
        self.rate.check().is_ok()
    }

    fn rate(&self) -> BoxFuture<'_, ()> {
        self.rate.until_ready().boxed()
    }

    fn try_cost(&self, cost: u64) -> bool {
        self.cost.as_ref().is_none_or(|c| c.check_n(cost).is_ok())
    }

    fn cost(&self, cost: u64) -> BoxFuture<'_, ()> {
        async move {
            if let Some(c) = &self.cost {
                c.until_ready_n(cost).await;
            }
        }
        .boxed()
    }

    fn settle_cost(&self, delta: i64, spent: u64) {
        if let Some(c) = &self.cost {
            c.settle(delta);
        }
        self.stat.lock().unwrap_or_else(|p| p.into_inner()).cost += spent;
    }

    fn admit(&self) -> Result<Option<Permit>, BreakerOpen> {
        self.breaker
            .as_ref()
            .map(CircuitBreaker::try_acquire)
            .transpose()
    }

    fn breaker_wait(&self, open: BreakerOpen) -> BoxFuture<'_, ()> {
        async move {
            match open.retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => {
                    let _ =
                        tokio::time::timeout(self.breaker_poll, self.breaker_changed.notified())
                            .await;
                }
            }
        }
        .boxed()
    }

    fn attempted(&self) {
        let now = Instant::now();
        let mut s = self.stat.lock().unwrap_or_else(|p| p.into_inner());
        s.attempts += 1;
        s.first.get_or_insert(now);
        s.last = Some(now);
    }

    fn observe(&self, signal: Signal, allowance: Option<(u64, Duration)>) {
        let Some(aimd) = &self.adaptive else { return };
        let now = Clock::now();
        let changed = {
            let mut aimd = aimd.lock().unwrap_or_else(|p| p.into_inner());
            let changed = aimd.observe(signal, now);
            match allowance {
                Some((left, reset)) if left > 0 && !reset.is_zero() => {
                    aimd.cap(left as f64 / reset.as_secs_f64()).or(changed)
                }
                _ => changed,
            }
        };
        if let Some(per_s) = changed {
            // Nanosecond spacing: any rate of the controller's (0.5/s up) is representable.
            let _ = self.rate.set_rate(Rate::new(
                1,
                Duration::from_secs_f64(1.0 / per_s).max(Duration::from_nanos(1)),
            ));
        }
        // Nothing left until the reset: the host waits for it, as for a Retry-After.
        if let Some((_, reset)) = allowance.filter(|_| super::adaptive::pauses(allowance)) {
            self.pause_until(now + reset.min(Duration::from_secs(3600)));
        }
    }

    fn suspect(&self) -> Option<&Arc<super::suspect::Suspect>> {
        self.suspect.as_ref()
    }

    fn pause_until(&self, until: Clock) {
        self.rate.pause_until(until);
        self.stat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .paused_by_retry_after += 1;
    }
}

impl HostState {
    /// Sends the host no request before `until`, as [`HostEntry::pause_until`] does, without
    /// counting a pause: for a pause another process got (a fleet's shared state).
    pub fn hold_until(&self, until: Clock) {
        self.rate.pause_until(until);
    }

    /// Opens the host's breaker until `until` (if it has one): its failures were seen
    /// elsewhere. The [`Hosts::on_breaker_change`] listener does not hear it.
    pub fn open_breaker_until(&self, until: Clock) {
        if let Some(b) = &self.breaker {
            self.remote.store(true, Ordering::Release);
            b.open_until(until);
            self.remote.store(false, Ordering::Release);
        }
    }

    /// Closes the host's breaker (a probe elsewhere succeeded), unheard by the listener.
    pub fn close_breaker(&self) {
        if let Some(b) = &self.breaker {
            self.remote.store(true, Ordering::Release);
            b.close();
            self.remote.store(false, Ordering::Release);
        }
    }

    fn snapshot(&self) -> HostStat {
        let mut s = self.stat.lock().unwrap_or_else(|p| p.into_inner()).clone();
        s.breaker_openings = self.openings.load(Ordering::Relaxed);
        s.breaker_open = self
            .breaker
            .as_ref()
            .is_some_and(|b| b.state() == State::Open);
        s.rate_found = self
            .adaptive
            .as_ref()
            .map(|a| a.lock().unwrap_or_else(|p| p.into_inner()).rate());
        s
    }
}

/// The hosts of a run, kept in this process: the default [`HostTable`].
pub struct Hosts {
    live: Mutex<FastMap<Host, Arc<HostState>>>,
    /// Counters of evicted hosts, for the summary.
    retired: Mutex<FastMap<Host, HostStat>>,
    /// The run's settings, with the `[hosts]` rules a new entry is made from.
    settings: Settings,
    /// Breaker openings, all hosts together.
    openings: Arc<AtomicU64>,
    /// An entry untouched this long holds no state that matters any more.
    idle_after: Duration,
    /// Entries at which a sweep for idle ones runs (doubles when a sweep frees too few).
    sweep_at: Mutex<usize>,
    /// Told of each breaker's own state changes.
    breaker_listener: Option<BreakerListener>,
}

/// A listener of breaker state changes, with the host.
type BreakerListener = Arc<dyn Fn(&Host, StateChange) + Send + Sync>;

/// A host's rate cell: its rate, or (so that Retry-After can pause one host even with no rate
/// set) one that never holds anything back.
fn cell(view: &ForHost<'_>) -> (Rate, u64) {
    view.rate()
        .unwrap_or((Rate::per_second(1_000_000_000), 1_000_000))
}

/// A cost rate's cell: a bucket of `burst` (see [`crate::settings::cost_burst`]), refilled
/// continuously.
pub(crate) fn cost_cell((rate, burst): (Rate, u64)) -> Result<RateLimiter, corral::ConfigError> {
    RateLimiter::builder().rate(rate).burst(burst).build()
}

fn breaker_builder(b: &BreakerSettings) -> CircuitBreakerBuilder {
    CircuitBreaker::builder()
        .failure_rate(b.failure_rate)
        .min_calls(b.min_calls)
        .window(b.window)
        .cool_down(b.cool_down)
        .half_open_probes(b.probes)
}

/// Entries before the first sweep.
const FIRST_SWEEP: usize = 1024;

impl Hosts {
    /// Hosts for a run with `settings`; checks the per-host rate and breaker settings, the
    /// run's and each `[hosts]` rule's.
    pub fn new(settings: &Settings) -> Result<Self, ConfigError> {
        let mut idle_after = settings.max_retry_after;
        let views = std::iter::once(settings.for_other_hosts())
            .chain((0..settings.hosts.len()).map(|i| settings.for_rule(i)));
        for (i, view) in views.enumerate() {
            // The run's option, or the config file's key in this rule's table.
            let option = |o: &'static str, key: &str| -> std::borrow::Cow<'static, str> {
                match i.checked_sub(1).and_then(|r| settings.hosts.get(r)) {
                    None => o.into(),
                    Some(rule) => format!("[hosts.\"{}\"] {key}", rule.pattern).into(),
                }
            };
            let (rate, burst) = cell(&view);
            RateLimiter::builder()
                .rate(rate)
                .burst(burst)
                .build()
                .map_err(|e| ConfigError::from_corral(option("--per-host-rate", "rate"), &e))?;
            if let Some(b) = view.breaker() {
                breaker_builder(&b).build().map_err(|e| {
                    ConfigError::from_corral(option("--breaker-*", "breaker_*"), &e)
                })?;
                idle_after = idle_after.max(b.window.max(b.cool_down));
            }
            let refill = rate
                .period()
                .checked_div(u32::try_from(rate.count()).unwrap_or(u32::MAX).max(1))
                .unwrap_or_default()
                .saturating_mul(u32::try_from(burst).unwrap_or(u32::MAX));
            idle_after = idle_after.max(refill);
            if let Some(c) = view.cost_rate() {
                cost_cell(c).map_err(|e| {
                    ConfigError::from_corral(option("--per-host-cost-rate", "cost_rate"), &e)
                })?;
                idle_after = idle_after.max(c.0.period());
            }
        }
        Ok(Self {
            live: Mutex::new(FastMap::default()),
            retired: Mutex::new(FastMap::default()),
            settings: settings.clone(),
            openings: Arc::new(AtomicU64::new(0)),
            idle_after: idle_after.saturating_add(Duration::from_secs(1)),
            sweep_at: Mutex::new(FIRST_SWEEP),
            breaker_listener: None,
        })
    }

    /// Calls `f` whenever a host's breaker changes state by its own outcomes (not by
    /// [`HostState::open_breaker_until`] or [`HostState::close_breaker`]): how a fleet
    /// publishes its workers' openings.
    pub fn on_breaker_change(
        mut self,
        f: impl Fn(&Host, StateChange) + Send + Sync + 'static,
    ) -> Self {
        self.breaker_listener = Some(Arc::new(f));
        self
    }

    /// The entry of `host`, made on first use: one lookup per attempt. `Err` only if the
    /// settings [`Hosts::new`] checked would not build after all.
    pub fn get(&self, host: &Host) -> Result<Arc<HostState>, ConfigError> {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = live.get(host) {
            *h.touched.lock().unwrap_or_else(|p| p.into_inner()) = Clock::now();
            return Ok(h.clone());
        }
        let mut sweep_at = self.sweep_at.lock().unwrap_or_else(|p| p.into_inner());
        if live.len() >= *sweep_at {
            self.sweep(&mut live);
            // Sweep again only once as many entries have come as are left.
            *sweep_at = (live.len() * 2).max(FIRST_SWEEP);
        }
        let entry = Arc::new(self.new_entry(host)?);
        live.insert(host.clone(), entry.clone());
        Ok(entry)
    }

    fn new_entry(&self, host: &Host) -> Result<HostState, ConfigError> {
        let refused = |e: corral::ConfigError| ConfigError::from_corral("--per-host-*", &e);
        let view = self.settings.for_host(host);
        let openings = Arc::new(AtomicU64::new(0));
        let breaker_changed = Arc::new(Notify::new());
        let remote = Arc::new(AtomicBool::new(false));
        let settings = view.breaker();
        let breaker = match settings {
            None => None,
            Some(b) => {
                let (mine, all) = (openings.clone(), self.openings.clone());
                let changed = breaker_changed.clone();
                let (listener, from_elsewhere, host) =
                    (self.breaker_listener.clone(), remote.clone(), host.clone());
                let b = breaker_builder(&b).on_state_change(move |change| {
                    if change.to == State::Open {
                        mine.fetch_add(1, Ordering::Relaxed);
                        all.fetch_add(1, Ordering::Relaxed);
                    }
                    changed.notify_waiters();
                    if let Some(l) = listener.as_ref() {
                        if !from_elsewhere.load(Ordering::Acquire) {
                            l(&host, change);
                        }
                    }
                });
                Some(b.build().map_err(refused)?)
            }
        };
        let (rate, burst) = cell(&view);
        let cost = view
            .cost_rate()
            .map(cost_cell)
            .transpose()
            .map_err(refused)?;
        let adaptive = view
            .rate_auto()
            .map(|start| Mutex::new(Aimd::new(start.per_sec_f64(), Clock::now())));
        Ok(HostState {
            cost,
            adaptive,
            slots: Arc::new(Semaphore::new(view.concurrency())),
            rate: RateLimiter::builder()
                .rate(rate)
                .burst(burst)
                .build()
                .map_err(refused)?,
            suspect: settings.map(|b| super::suspect::Suspect::new(b.min_calls)),
            breaker,
            breaker_changed,
            // Longest wait for a state change nobody announces: the cool-down, at most 1 s.
            breaker_poll: settings
                .map_or(Duration::from_secs(1), |b| b.cool_down)
                .clamp(Duration::from_millis(10), Duration::from_secs(1)),
            stat: Mutex::new(HostStat::default()),
            openings,
            touched: Mutex::new(Clock::now()),
            remote,
        })
    }

    /// Drops the entries no attempt holds that have been idle for long enough.
    fn sweep(&self, live: &mut FastMap<Host, Arc<HostState>>) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|host, h| {
            let idle = Arc::strong_count(h) == 1
                && h.touched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed()
                    >= self.idle_after;
            if idle {
                retired.insert(host.clone(), h.snapshot());
            }
            !idle
        });
    }

    /// Every host's counters so far, the evicted ones too.
    fn all_stats(&self) -> HashMap<String, HostStat> {
        let mut all: HashMap<String, HostStat> = self
            .retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        for (k, h) in live.iter() {
            let s = h.snapshot();
            match all.get_mut(&**k) {
                // A host evicted, then seen again: both lives count.
                Some(old) => {
                    old.attempts += s.attempts;
                    old.breaker_openings += s.breaker_openings;
                    old.paused_by_retry_after += s.paused_by_retry_after;
                    old.cost += s.cost;
                    old.rate_found = s.rate_found.or(old.rate_found);
                    old.last = s.last.or(old.last);
                }
                None => {
                    all.insert(k.to_string(), s);
                }
            }
        }
        all
    }

    /// Hosts with live state.
    pub fn live(&self) -> usize {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl HostTable for Hosts {
    fn entry(&self, host: &Host) -> Result<Arc<dyn HostEntry>, ConfigError> {
        Ok(self.get(host)?)
    }

    fn stats(&self) -> HashMap<String, HostStat> {
        self.all_stats()
    }

    fn breaker_openings(&self) -> u64 {
        self.openings.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> Host {
        format!("h{i}:80").into()
    }

    #[tokio::test(start_paused = true)]
    async fn one_entry_per_host_idle_ones_evicted_their_counters_kept() {
        let settings = Settings {
            no_breaker: true,
            max_retry_after: Duration::ZERO,
            ..Settings::default()
        };
        let hosts = Hosts::new(&settings).unwrap();
        let (a, b) = (hosts.get(&key(0)).unwrap(), hosts.get(&key(0)).unwrap());
        assert!(Arc::ptr_eq(&a, &b), "one entry per host");
        drop(b);
        for i in 1..FIRST_SWEEP {
            hosts.get(&key(i)).unwrap().attempted();
        }
        a.attempted(); // still held: never evicted
        tokio::time::advance(Duration::from_secs(2)).await;
        hosts.get(&key(FIRST_SWEEP)).unwrap().attempted(); // the sweep runs here
        assert_eq!(
            hosts.live(),
            2,
            "only the held host and the new one are left"
        );
        let stats = hosts.stats();
        assert_eq!(stats.len(), FIRST_SWEEP + 1);
        assert!(
            stats.values().all(|s| s.attempts == 1),
            "counters outlive eviction"
        );
        // A host seen again after eviction starts afresh, and both lives count.
        hosts.get(&key(5)).unwrap().attempted();
        assert_eq!(hosts.stats()[&*key(5)].attempts, 2);
    }

    /// Jobs of cost 10 under a per-minute cost rate of 12000: about one second's worth (200,
    /// 20 jobs) at once, then 200 a second — not the minute's 12000 in one burst, unless
    /// `cost_burst` says the provider allows it.
    #[tokio::test(start_paused = true)]
    async fn a_per_minute_cost_rate_is_not_spent_in_one_burst() {
        for (burst, fewest, most) in [(None, 35, 45), (Some(12_000), 60, 60)] {
            let settings = Settings {
                per_host_cost_rate: Some("12000/min".parse().unwrap()),
                cost_burst: burst,
                ..Settings::default()
            };
            let h = Hosts::new(&settings).unwrap().get(&key(0)).unwrap();
            let start = tokio::time::Instant::now();
            let mut in_first_second = 0;
            for _ in 0..60 {
                h.cost(10).await;
                in_first_second += u32::from(start.elapsed() < Duration::from_secs(1));
            }
            assert!(
                (fewest..=most).contains(&in_first_second),
                "cost_burst {burst:?}: {in_first_second} jobs in the first second"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn state_that_still_matters_is_not_evicted() {
        // With breakers on and Retry-After up to 60 s, a host idle for 2 s may still be paused
        // or have an open breaker: it stays.
        let hosts = Hosts::new(&Settings::default()).unwrap();
        for i in 0..FIRST_SWEEP {
            hosts.get(&key(i)).unwrap();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        hosts.get(&key(FIRST_SWEEP)).unwrap();
        assert_eq!(hosts.live(), FIRST_SWEEP + 1);
        tokio::time::advance(Duration::from_secs(62)).await;
        for i in FIRST_SWEEP + 1..2 * FIRST_SWEEP + 2 {
            hosts.get(&key(i)).unwrap();
        }
        assert!(hosts.live() < 2 * FIRST_SWEEP, "{} live", hosts.live());
    }

    #[tokio::test(start_paused = true)]
    async fn an_auto_host_cut_with_its_allowance_spent_is_cut_and_paused() {
        let settings = Settings {
            per_host_rate: Some(crate::settings::RateSetting::Auto(Rate::per_second(20))),
            ..Settings::default()
        };
        let hosts = Hosts::new(&settings).unwrap();
        let h = hosts.get(&key(0)).unwrap();
        assert!((h.rate.per_second() - 20.0).abs() < 1e-6);
        // A 429 that also says nothing is left for 2 s: the rate is cut, and the host waits.
        h.observe(Signal::Overloaded, Some((0, Duration::from_secs(2))));
        assert!(
            (h.rate.per_second() - 14.0).abs() < 1e-3,
            "{}",
            h.rate.per_second()
        );
        assert!(!h.try_rate(), "paused until the reset");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(h.try_rate());
        assert_eq!(h.snapshot().rate_found, Some(14.0));
    }
}
