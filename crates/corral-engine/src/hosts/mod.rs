//! What a run knows of each host, behind a seam: the engine asks a [`HostTable`] for the host's
//! [`HostEntry`] once per attempt and goes through its gates (a request slot, a rate token, the
//! breaker); it never sees how they are kept.
//!
//! Why a seam: one process keeps this state in memory ([`Hosts`], the default); a fleet of
//! workers must share it (50 requests a second to a host means 50 across the fleet), through a
//! store all of them see. Such a table replaces [`Hosts`] with [`crate::run::RunBuilder::hosts`]
//! and leaves the engine as it is.
//!
//! The engine calls an entry in a fixed order (see [`crate::engine`]): [`HostEntry::try_slot`],
//! [`HostEntry::try_rate`] and [`HostEntry::try_cost`] first; when one is closed it gives its
//! active slot back and waits with [`HostEntry::slot`], [`HostEntry::rate`] and
//! [`HostEntry::cost`] (each only for what it lacks); then [`HostEntry::admit`] (the
//! breaker; when it is open the job lets its slots go and waits with
//! [`HostEntry::breaker_wait`], then starts over), [`HostEntry::attempted`] and the request;
//! after a 429 or 503 with `Retry-After`, [`HostEntry::pause_until`]. Before all of these, a
//! job's first attempt passes its host's [`HostEntry::suspect`] gate.

pub mod adaptive;
mod local;
mod stats;
pub mod suspect;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::OwnedSemaphorePermit;

pub use corral::breaker::{BreakerOpen, Permit};
pub(crate) use local::cost_cell;
pub use local::{HostState, Hosts};

use crate::error::ConfigError;
pub use stats::HostStat;

/// A host key (`host:port`).
pub type Host = Arc<str>;

/// One of a host's request slots (`--per-host-concurrency`), given back when dropped.
pub type Slot = OwnedSemaphorePermit;

/// Where a run keeps its per-host state. Shared by every engine of the run (all threads).
pub trait HostTable: Send + Sync {
    /// The entry of `host`, made on first use. Called once per attempt, so it should be cheap.
    /// `Err` when the host's settings cannot work.
    fn entry(&self, host: &Host) -> Result<Arc<dyn HostEntry>, ConfigError>;

    /// Every host's counters so far, for the summary.
    fn stats(&self) -> HashMap<String, HostStat>;

    /// Circuit breakers opened so far, all hosts together.
    fn breaker_openings(&self) -> u64;
}

/// One host's gates and counters, as the engine uses them for one attempt.
pub trait HostEntry: Send + Sync {
    /// A request slot, if one is free now.
    fn try_slot(&self) -> Option<Slot>;

    /// Waits for a request slot. Cancel safe: dropped before it is ready, it takes none.
    fn slot(&self) -> BoxFuture<'_, Option<Slot>>;

    /// Takes a rate token if the host may be sent a request now (its rate allows it and it is
    /// not paused by a `Retry-After`).
    fn try_rate(&self) -> bool;

    /// Waits until the host may be sent a request and takes the token. Cancel safe.
    fn rate(&self) -> BoxFuture<'_, ()>;

    /// Takes `cost` from the host's cost rate if it is there now (always, without one).
    fn try_cost(&self, cost: u64) -> bool;

    /// Waits until `cost` can be taken from the host's cost rate and takes it. Cancel safe.
    fn cost(&self, cost: u64) -> BoxFuture<'_, ()>;

    /// The job's real cost is known: `delta` more (or less, when negative) than it took, and
    /// `spent` in all, for the counters.
    fn settle_cost(&self, delta: i64, spent: u64);

    /// Lets the request past the host's breaker (`Ok(None)`: no breaker), or says it is open.
    /// The permit is settled with the outcome: a probe's at once, any other's once the job
    /// ends (see [`crate::engine`]).
    fn admit(&self) -> Result<Option<Permit>, BreakerOpen>;

    /// Waits until the breaker that refused with `open` may let a request through again: its
    /// cool-down is over, or its state changed (a probe settled). Then [`HostEntry::admit`]
    /// is asked again. Cancel safe.
    fn breaker_wait(&self, open: BreakerOpen) -> BoxFuture<'_, ()>;

    /// Counts an attempt that is about to send.
    fn attempted(&self);

    /// Sends the host no request before `until` (a `Retry-After`), and counts the pause.
    fn pause_until(&self, until: tokio::time::Instant);

    /// What an attempt's outcome said of the host's load, and the allowance its response
    /// announced (requests left, time to reset), for a rate found while the run goes
    /// (`auto`; see [`adaptive`]). Without one, nothing to do.
    fn observe(&self, signal: adaptive::Signal, allowance: Option<(u64, std::time::Duration)>);

    /// The host's early signal of an outage, before its breaker can know (see [`suspect`]):
    /// the engine lets a job's first attempt start through it and tells it each outcome.
    /// `None` (the default): no such gate.
    fn suspect(&self) -> Option<&Arc<suspect::Suspect>> {
        None
    }
}
