//! A host's counters, for the summary, `corral status` and the metrics.

use std::time::Instant;

use serde::Serialize;

/// Per-host counters for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostStat {
    /// Requests sent to the host (attempts, and re-sends on a new connection).
    pub attempts: u64,
    /// When the first was sent.
    #[serde(skip)]
    pub first: Option<Instant>,
    /// When the last was sent.
    #[serde(skip)]
    pub last: Option<Instant>,
    /// Times its breaker opened.
    pub breaker_openings: u64,
    /// Times a `Retry-After` paused it.
    pub paused_by_retry_after: u64,
    /// Costs spent (jobs' `cost`, settled by `--cost-from-response`).
    pub cost: u64,
    /// The rate found for the host (requests per second), when it is `auto`.
    pub rate_found: Option<f64>,
    /// Its breaker is open now (for metrics; a summary at the end does not show it).
    #[serde(skip)]
    pub breaker_open: bool,
}
