//! Per-host state shared by a run's workers: the engine's [`HostTable`] seam, filled from the
//! run's [board](crate::board).
//!
//! What is shared, and how:
//! - **the per-host rate** (`--per-host-rate`, `[hosts]` rates): one GCRA schedule per host in
//!   the board, leased in blocks by compare-and-swap (module `lease`): 50/s is 50/s across the
//!   fleet, not 50 per worker;
//! - **the per-host cost rate** (`--per-host-cost-rate`, tokens per minute): one GCRA schedule
//!   per host too, each job reserving its cost by compare-and-swap, settled costs included;
//! - **`Retry-After` pauses**: the worker that gets one writes its deadline to the board and
//!   moves the host's schedule past it; every worker watches the board, drops the send times
//!   it holds and sends the host nothing until the deadline;
//! - **breaker openings**: a worker whose breaker opens writes until when; every other worker
//!   opens its own breaker until then. After the cool-down exactly one worker of the fleet
//!   probes (it claims `probe.HOST` by create; the others wait), and its outcome closes the
//!   fleet's breakers (the board entry is deleted) or opens them again.
//!
//! What stays per worker: request slots (`--per-host-concurrency` is per worker), the
//! breaker's window of outcomes, and the counters of the summary. Everything a worker keeps
//! itself lives in the engine's in-memory [`Hosts`]; this table wraps it.

pub(crate) mod lease;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::kv;
use corral::breaker::{State, StateChange};
use corral_engine::error::ConfigError;
use corral_engine::hosts::adaptive::Signal;
use corral_engine::hosts::HostStat;
use corral_engine::hosts::{BreakerOpen, Host, HostEntry, HostTable, Hosts, Permit, Slot};
use corral_engine::settings::Settings;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;

use crate::board::{host_token, instant_of, token_host, unix_ns, unix_of, Board, Stamp};
use crate::error::QueueError;
use lease::{SharedCost, SharedRate};

/// How long a probe claim holds at most before another worker may take it over (sooner when
/// its worker's heartbeat stops).
const PROBE_CLAIM: Duration = Duration::from_secs(30);

/// The hosts of a run shared by its workers; see the [module docs](self).
pub struct FleetHosts {
    shared: Arc<Shared>,
    watcher: JoinHandle<()>,
}

/// What the table and its watcher share.
struct Shared {
    local: Hosts,
    /// The run's settings, with the per-host rates the board enforces.
    settings: Settings,
    board: Board,
    limits: Mutex<HashMap<Host, Limits>>,
    /// Probe claims this worker made, by host: won, or lost (and when to try again).
    probes: Mutex<HashMap<Host, Claim>>,
    me: String,
}

/// A host's schedules on the board: its rate and its cost rate, where it has them.
#[derive(Clone)]
struct Limits {
    rate: Option<Arc<SharedRate>>,
    cost: Option<Arc<SharedCost>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    Claiming,
    Won,
    LostUntil(tokio::time::Instant),
}

impl FleetHosts {
    /// The table of worker `me` for a run with `settings`, and the task that watches the board
    /// for pauses and openings (stopped when the table is dropped). Must be called inside a
    /// tokio runtime.
    pub async fn start(settings: &Settings, board: Board, me: &str) -> Result<Self, QueueError> {
        // The worker's own table keeps no per-host rate or cost rate: the board does.
        let mut own = settings.clone();
        own.per_host_rate = None;
        own.per_host_cost_rate = None;
        for rule in &mut own.hosts {
            rule.settings.rate = None;
            rule.settings.cost_rate = None;
        }
        let rt = tokio::runtime::Handle::current();
        let (b, listener_settings, who) = (board.clone(), settings.clone(), me.to_string());
        let local = Hosts::new(&own)
            .map_err(|e| QueueError::new("set up the hosts", e))?
            .on_breaker_change(move |host, change| {
                publish_breaker(&rt, &b, &listener_settings, &who, host, change);
            });
        let shared = Arc::new(Shared {
            local,
            settings: settings.clone(),
            board: board.clone(),
            limits: Mutex::default(),
            probes: Mutex::default(),
            me: me.to_string(),
        });
        let watch = watch(&board)
            .await
            .map_err(|e| QueueError::new("watch the board", e))?;
        let watcher = tokio::spawn(watch_board(shared.clone(), watch));
        Ok(Self { shared, watcher })
    }
}

impl Drop for FleetHosts {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

/// Writes a breaker's own opening (until when) or closing to the board.
fn publish_breaker(
    rt: &tokio::runtime::Handle,
    board: &Board,
    settings: &Settings,
    me: &str,
    host: &Host,
    change: StateChange,
) {
    let key = format!("breaker.{}", host_token(host));
    let probe = format!("probe.{}", host_token(host));
    let kv = board.store().clone();
    match change.to {
        State::Open => {
            let cool = settings
                .for_host(host)
                .breaker()
                .map_or(Duration::ZERO, |b| b.cool_down);
            let value = Stamp::new(unix_of(change.at + cool) / 1_000_000, me).bytes();
            rt.spawn(async move {
                let _ = kv.put(&key, value).await;
                let _ = kv.delete(&probe).await;
            });
        }
        State::Closed => {
            rt.spawn(async move {
                let _ = kv.delete(&key).await;
                let _ = kv.delete(&probe).await;
            });
        }
        State::HalfOpen => {}
    }
}

/// A watch of the board's pauses and breakers (each key's current value first).
async fn watch(board: &Board) -> Result<kv::Watch, kv::WatchError> {
    board.store().watch_many(["pause.>", "breaker.>"]).await
}

/// Applies what other workers write, watching again whenever the watch ends (the server
/// restarted): a new watch starts with every key's current value, so nothing is missed.
async fn watch_board(shared: Arc<Shared>, mut watching: kv::Watch) {
    loop {
        apply_board(&shared, &mut watching).await;
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            match watch(&shared.board).await {
                Ok(w) => {
                    watching = w;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "cannot watch the board; trying again"),
            }
        }
    }
}

/// Applies pauses and breaker openings and closings until the watch ends.
async fn apply_board(shared: &Shared, watch: &mut kv::Watch) {
    while let Some(entry) = watch.next().await {
        let Ok(entry) = entry else { continue };
        let Some((kind, token)) = entry.key.split_once('.') else {
            continue;
        };
        let Some(host) = token_host(token) else {
            continue;
        };
        let host: Host = host.into();
        let Ok(state) = shared.local.get(&host) else {
            continue;
        };
        // Until when, and who wrote it.
        let stamp = Stamp::read(&entry.value);
        let until_ms = stamp.as_ref().map(|s| s.ms);
        let mine = stamp.is_some_and(|s| s.by == shared.me);
        let put = entry.operation == kv::Operation::Put;
        match (kind, until_ms) {
            ("pause", Some(ms)) if put && ms * 1_000_000 > unix_ns() => {
                let until = ms * 1_000_000;
                state.hold_until(instant_of(until));
                match shared.limits(&host).rate {
                    Some(rate) if !mine => rate.void(),
                    _ => {}
                }
            }
            ("breaker", Some(ms)) if put && ms * 1_000_000 > unix_ns() => {
                state.open_breaker_until(instant_of(ms * 1_000_000));
                shared.forget_claim(&host);
            }
            ("breaker", _) if !put => {
                state.close_breaker();
                shared.forget_claim(&host);
            }
            _ => {}
        }
    }
}

impl Shared {
    /// The schedules `host` shares with the fleet (made on first use): one lookup per attempt.
    fn limits(&self, host: &Host) -> Limits {
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        limits
            .entry(host.clone())
            .or_insert_with(|| {
                let view = self.settings.for_host(host);
                let token = host_token(host);
                Limits {
                    rate: view.rate().map(|(rate, burst)| {
                        let key = format!("rate.{token}");
                        Arc::new(SharedRate::new(self.board.clone(), key, rate, burst))
                    }),
                    cost: view.cost_rate().map(|(rate, burst)| {
                        let key = format!("cost.{token}");
                        // The bucket of a run's own cost cell.
                        Arc::new(SharedCost::new(self.board.clone(), key, rate, burst))
                    }),
                }
            })
            .clone()
    }

    fn forget_claim(&self, host: &Host) {
        self.probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(host);
    }

    /// May this worker send the half-open probe of `host`? Starts claiming it when nobody
    /// has; `false` until the claim is won.
    fn may_probe(self: &Arc<Self>, host: &Host) -> bool {
        let now = tokio::time::Instant::now();
        let mut probes = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
        match probes.get(host) {
            Some(Claim::Won) => return true,
            Some(Claim::Claiming) => return false,
            Some(Claim::LostUntil(t)) if *t > now => return false,
            _ => {}
        }
        probes.insert(host.clone(), Claim::Claiming);
        let (shared, host) = (self.clone(), host.clone());
        tokio::spawn(async move {
            let won = shared.claim(&host).await;
            let claim = if won {
                Claim::Won
            } else {
                Claim::LostUntil(tokio::time::Instant::now() + Duration::from_millis(500))
            };
            shared
                .probes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(host, claim);
        });
        false
    }

    /// Claims the probe of `host` on the board: creates `probe.HOST`, or takes over a claim
    /// older than [`PROBE_CLAIM`].
    async fn claim(&self, host: &Host) -> bool {
        let kv = self.board.store();
        let key = format!("probe.{}", host_token(host));
        let value = || Stamp::new(unix_ns() / 1_000_000, &self.me).bytes();
        if kv.create(&key, value()).await.is_ok() {
            return true;
        }
        let Ok(Some(entry)) = kv.entry(&key).await else {
            return false;
        };
        // A claim goes stale when its worker stopped beating (it died with the probe) or when
        // it is older than any probe takes.
        let claim = Stamp::read(&entry.value);
        let claimed_ms = claim.as_ref().map_or(0, |c| c.ms);
        let now_ms = unix_ns() / 1_000_000;
        let alive = match claim.filter(|c| !c.by.is_empty()) {
            Some(c) => kv
                .get(format!("worker.{}", host_token(&c.by)))
                .await
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<crate::status::Heartbeat>(&b).ok())
                .is_some_and(|b| b.alive(now_ms)),
            None => false,
        };
        let stale = !alive || now_ms > claimed_ms + PROBE_CLAIM.as_millis() as u64;
        if entry.operation != kv::Operation::Put || stale {
            return kv.update(&key, value(), entry.revision).await.is_ok();
        }
        false
    }
}

impl HostTable for FleetHosts {
    fn entry(&self, host: &Host) -> Result<Arc<dyn HostEntry>, ConfigError> {
        let Limits { rate, cost } = self.shared.limits(host);
        Ok(Arc::new(FleetEntry {
            local: self.shared.local.get(host)?,
            rate,
            cost,
            shared: self.shared.clone(),
            host: host.clone(),
        }))
    }

    fn stats(&self) -> HashMap<String, HostStat> {
        self.shared.local.stats()
    }

    fn breaker_openings(&self) -> u64 {
        self.shared.local.breaker_openings()
    }
}

/// One host's gates for one attempt: the worker's own, with the rate, pauses and probe of
/// the fleet.
struct FleetEntry {
    local: Arc<corral_engine::hosts::HostState>,
    rate: Option<Arc<SharedRate>>,
    cost: Option<Arc<SharedCost>>,
    shared: Arc<Shared>,
    host: Host,
}

impl HostEntry for FleetEntry {
    fn try_slot(&self) -> Option<Slot> {
        self.local.try_slot()
    }

    fn slot(&self) -> BoxFuture<'_, Option<Slot>> {
        self.local.slot()
    }

    fn try_rate(&self) -> bool {
        // The local cell holds no rate here, only pauses.
        self.local.try_rate() && self.rate.as_ref().is_none_or(|r| r.try_take())
    }

    fn rate(&self) -> BoxFuture<'_, ()> {
        async move {
            self.local.rate().await;
            if let Some(r) = &self.rate {
                r.take().await;
            }
        }
        .boxed()
    }

    fn try_cost(&self, cost: u64) -> bool {
        // A shared cost takes a round trip: always through `cost`.
        self.cost.is_none() && self.local.try_cost(cost)
    }

    fn cost(&self, cost: u64) -> BoxFuture<'_, ()> {
        async move {
            match &self.cost {
                Some(c) => c.take(cost).await,
                None => self.local.cost(cost).await,
            }
        }
        .boxed()
    }

    fn settle_cost(&self, delta: i64, spent: u64) {
        // The worker's own table keeps the count (it has no cost cell here).
        self.local.settle_cost(delta, spent);
        if let (Some(c), true) = (self.cost.clone(), delta != 0) {
            tokio::spawn(async move {
                if let Err(e) = c.settle(delta).await {
                    tracing::warn!(error = %e, "shared cost rate: a settled cost was not recorded");
                }
            });
        }
    }

    fn admit(&self) -> Result<Option<Permit>, BreakerOpen> {
        let permit = self.local.admit()?;
        match permit {
            Some(p) if p.is_probe() && !self.shared.may_probe(&self.host) => {
                // Another worker probes (or the claim is under way): wait for its outcome.
                drop(p);
                Err(BreakerOpen { retry_at: None })
            }
            p => Ok(p),
        }
    }

    fn breaker_wait(&self, open: BreakerOpen) -> BoxFuture<'_, ()> {
        self.local.breaker_wait(open)
    }

    fn attempted(&self) {
        self.local.attempted();
    }

    fn pause_until(&self, until: tokio::time::Instant) {
        self.local.pause_until(until);
        let unix = unix_of(until);
        let rate = self.rate.clone();
        if let Some(r) = &rate {
            r.void();
        }
        let kv = self.shared.board.store().clone();
        let key = format!("pause.{}", host_token(&self.host));
        let me = self.shared.me.clone();
        tokio::spawn(async move {
            // The schedule first: a worker that leases after this gets no time before the
            // deadline, even if it has not heard of the pause yet.
            if let Some(r) = rate {
                let _ = r.publish_pause(unix).await;
            }
            let _ = kv
                .put(&key, Stamp::new(unix / 1_000_000 + 1, &me).bytes())
                .await;
        });
    }

    fn observe(&self, signal: Signal, allowance: Option<(u64, Duration)>) {
        self.local.observe(signal, allowance);
    }
}
