//! What a run did: counters over the results written, and the summary built from them.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::error::{ConfigError, ErrorKind};
use crate::hosts::HostStat;
use crate::result::Outcome;

/// Counters over finished jobs.
#[derive(Debug, Clone)]
pub struct Stats {
    started: Instant,
    latency_us: Histogram<u64>,
    /// Result lines written.
    pub done: u64,
    /// Of them ok.
    pub ok: u64,
    /// Of them failed.
    pub failed: u64,
    /// Attempts after the first, all jobs together.
    pub retries: u64,
    /// Jobs by the status of their last response.
    pub by_status: BTreeMap<u16, u64>,
    /// Failed jobs by kind (`error.kind`: the names of [`ErrorKind`], or any other a results
    /// file holds).
    pub by_error: BTreeMap<String, u64>,
    /// Jobs skipped as done by an earlier run (`--resume`).
    pub skipped: u64,
}

/// Kinds a count keeps by name besides corral's own: a results file read back may name any
/// (a hostile one named 200k distinct kinds: 2 GB and a 410 MB page); the others are counted
/// under [`OTHER_KINDS`], and a name is cut to [`KIND_CHARS`] characters.
pub const MAX_OTHER_KINDS: usize = 32;

/// The name under which kinds past [`MAX_OTHER_KINDS`] are counted together.
pub const OTHER_KINDS: &str = "(other kinds)";

/// Characters of a kind that is not corral's own kept as its name.
pub const KIND_CHARS: usize = 64;

/// Counts one failure of `kind` in `map`, within [`MAX_OTHER_KINDS`].
pub fn count_kind(map: &mut BTreeMap<String, u64>, kind: &str) {
    if let Some(n) = map.get_mut(kind) {
        *n += 1;
        return;
    }
    let key = if crate::error::ErrorKind::named(kind).is_some() {
        kind.to_string()
    } else {
        let others = map
            .keys()
            .filter(|k| crate::error::ErrorKind::named(k).is_none() && *k != OTHER_KINDS)
            .count();
        match kind.char_indices().nth(KIND_CHARS) {
            _ if others >= MAX_OTHER_KINDS => OTHER_KINDS.to_string(),
            Some((i, _)) => format!("{}…", &kind[..i]),
            None => kind.to_string(),
        }
    };
    *map.entry(key).or_insert(0) += 1;
}

impl Stats {
    /// Counters from now, `skipped` jobs already done.
    pub fn new(skipped: u64) -> Result<Self, ConfigError> {
        Ok(Self {
            started: Instant::now(),
            // 1 µs .. 1 hour, 3 significant figures: a fixed ~200 KB whatever the job count.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .map_err(|e| ConfigError::new("latency histogram", e.to_string()))?,
            done: 0,
            ok: 0,
            failed: 0,
            retries: 0,
            by_status: BTreeMap::new(),
            by_error: BTreeMap::new(),
            skipped,
        })
    }

    /// Counts one result line written.
    pub fn record(&mut self, o: &Outcome) {
        self.count(
            o.ok,
            o.status,
            o.error_kind.map(ErrorKind::as_str),
            o.attempts,
            o.latency,
        );
    }

    /// Counts one result: ok or not, the status of its last response, how it failed, its
    /// attempts, the latency of its last response (a run's [`Outcome`], or a line read back
    /// from a results file by a report).
    pub fn count(
        &mut self,
        ok: bool,
        status: Option<u16>,
        kind: Option<&str>,
        attempts: u32,
        latency: Option<Duration>,
    ) {
        self.done += 1;
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        self.retries += u64::from(attempts.saturating_sub(1));
        if let Some(s) = status {
            *self.by_status.entry(s).or_insert(0) += 1;
        }
        if let Some(k) = kind {
            count_kind(&mut self.by_error, k);
        }
        if let Some(l) = latency {
            let us = u64::try_from(l.as_micros()).unwrap_or(u64::MAX).max(1);
            let _ = self.latency_us.record(us.min(self.latency_us.high()));
        }
    }

    /// The latency of every result with a response, in microseconds.
    pub fn latency_us(&self) -> &Histogram<u64> {
        &self.latency_us
    }

    /// Time since the counters started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Result lines written per second so far.
    pub fn rate(&self) -> f64 {
        self.done as f64 / self.elapsed().as_secs_f64().max(1e-9)
    }

    /// `running`: jobs under way; `waiting`: jobs held that wait for their host.
    pub fn progress_line(&self, running: u64, waiting: u64) -> String {
        format!(
            "[{:>6.1}s] {} done ({} ok, {} failed), {} retries, {} running, {} waiting, {:.1} jobs/s",
            self.elapsed().as_secs_f64(),
            self.done,
            self.ok,
            self.failed,
            self.retries,
            running,
            waiting,
            self.rate()
        )
    }
}

/// Hosts listed in the printed summary, the busiest first; `--summary-json` has them all.
const HOSTS_SHOWN: usize = 20;

/// The machine-readable summary (`--summary-json`), also the source of the printed one.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// How the run ended, in words (`finished`, `interrupted` ...).
    pub outcome: &'static str,
    /// The exit code the binary returns.
    pub exit_code: i32,
    /// Result lines written by this run.
    pub jobs_done: u64,
    /// Of them ok.
    pub ok: u64,
    /// Of them failed.
    pub failed: u64,
    /// Jobs skipped as done by an earlier run (`--resume`).
    pub skipped_already_done: u64,
    /// Attempts after the first, all jobs together.
    pub retries: u64,
    /// Circuit breakers opened, all hosts together.
    pub breaker_openings: u64,
    /// Seconds the run took.
    pub elapsed_s: f64,
    /// Result lines written per second.
    pub jobs_per_s: f64,
    /// Jobs by the status of their last response.
    pub by_status: BTreeMap<u16, u64>,
    /// Failed jobs by kind (`error.kind`: the names of [`ErrorKind`], or any other a results
    /// file holds).
    pub by_error: BTreeMap<String, u64>,
    /// Latency of the last attempt of each job with a response.
    pub latency_ms: Latency,
    /// Per host (`host:port`).
    pub hosts: BTreeMap<String, HostSummary>,
    /// Things worth saying (jobs not written, resume repairs ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What costs are counted in (`--cost-unit`, e.g. `tokens`): a label only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_unit: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
/// Latency percentiles, in milliseconds.
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    /// The percentiles of a histogram of microseconds (all zero when it is empty).
    pub fn of<T: hdrhistogram::Counter>(us: &Histogram<T>) -> Self {
        if us.is_empty() {
            return Self::default();
        }
        let q = |p: f64| us.value_at_quantile(p) as f64 / 1000.0;
        Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            max: us.max() as f64 / 1000.0,
        }
    }
}

#[derive(Debug, Serialize)]
/// One host's line of the summary.
pub struct HostSummary {
    /// Requests sent to it.
    pub attempts: u64,
    /// Requests per second, between its first and last.
    pub attempts_per_s: f64,
    /// Times its breaker opened.
    pub breaker_openings: u64,
    /// Times a `Retry-After` (or an exhausted allowance) paused it.
    pub paused_by_retry_after: u64,
    /// Costs spent on the host (jobs' `cost`, settled by `--cost-from-response`); shown when
    /// a cost rate is in use.
    #[serde(skip_serializing_if = "is_zero")]
    pub cost: u64,
    /// The rate found for the host, requests per second (`--per-host-rate auto`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_found_per_s: Option<f64>,
    /// Its jobs' outcomes, when the summary is read from a results file (`corral report`);
    /// a run counts these for all hosts together only.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<HostJobs>,
}

#[derive(Debug, Clone, Default, Serialize)]
/// What a host's jobs came to, from their result lines.
pub struct HostJobs {
    /// Result lines.
    pub jobs: u64,
    /// Of them ok.
    pub ok: u64,
    /// Of them failed.
    pub failed: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Mean latency of the last attempt of the jobs with a response, in milliseconds.
    pub latency_mean_ms: f64,
    /// Jobs by the status of their last response.
    pub by_status: BTreeMap<u16, u64>,
    /// Failed jobs by kind.
    pub by_error: BTreeMap<String, u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Summary {
    /// The summary of a run from its counters.
    pub fn build(
        stats: &Stats,
        hosts: &HashMap<String, HostStat>,
        breaker_openings: u64,
        outcome: &'static str,
        exit_code: i32,
        notes: Vec<String>,
    ) -> Self {
        let hosts: BTreeMap<String, HostSummary> = hosts
            .iter()
            .map(|(k, h)| {
                let span = match (h.first, h.last) {
                    (Some(a), Some(b)) => (b - a).as_secs_f64(),
                    _ => 0.0,
                };
                let rate = if span > 0.0 {
                    h.attempts.saturating_sub(1) as f64 / span
                } else {
                    0.0
                };
                (
                    k.clone(),
                    HostSummary {
                        attempts: h.attempts,
                        attempts_per_s: (rate * 10.0).round() / 10.0,
                        breaker_openings: h.breaker_openings,
                        paused_by_retry_after: h.paused_by_retry_after,
                        cost: h.cost,
                        rate_found_per_s: h.rate_found.map(|r| (r * 10.0).round() / 10.0),
                        jobs: None,
                    },
                )
            })
            .collect();
        Summary {
            outcome,
            exit_code,
            jobs_done: stats.done,
            ok: stats.ok,
            failed: stats.failed,
            skipped_already_done: stats.skipped,
            retries: stats.retries,
            breaker_openings,
            elapsed_s: stats.elapsed().as_secs_f64(),
            jobs_per_s: stats.rate(),
            by_status: stats.by_status.clone(),
            by_error: stats.by_error.clone(),
            latency_ms: Latency::of(&stats.latency_us),
            hosts,
            // A note may quote an error (a panic's message): nothing secret leaves in it.
            notes: notes
                .iter()
                .map(|n| crate::redact::text(n).into_owned())
                .collect(),
            cost_unit: None,
        }
    }

    /// The summary as printed at the end of a run.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "\ncorral: {} — {} jobs in {:.2}s ({:.1} jobs/s): {} ok, {} failed",
            self.outcome, self.jobs_done, self.elapsed_s, self.jobs_per_s, self.ok, self.failed
        ));
        if self.skipped_already_done > 0 {
            out.push_str(&format!(
                ", {} already done (resumed)",
                self.skipped_already_done
            ));
        }
        out.push_str(&format!(
            "\n  retries: {}   breaker openings: {}\n",
            self.retries, self.breaker_openings
        ));
        let statuses: Vec<String> = self
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        if !statuses.is_empty() {
            out.push_str(&format!("  by status: {}\n", statuses.join(", ")));
        }
        let errors: Vec<String> = self
            .by_error
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        if !errors.is_empty() {
            out.push_str(&format!("  failures by kind: {}\n", errors.join(", ")));
        }
        let l = &self.latency_ms;
        out.push_str(&format!(
            "  latency ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}\n",
            l.p50, l.p90, l.p99, l.max
        ));
        if !self.hosts.is_empty() {
            // Columns for costs and rates found only when some host has them.
            let costs = self.hosts.values().any(|h| h.cost > 0);
            let rates = self.hosts.values().any(|h| h.rate_found_per_s.is_some());
            let jobs = self.hosts.values().any(|h| h.jobs.is_some());
            out.push_str(&format!(
                "  per host:                 attempts   attempts/s  breaker-opened  retry-after-pauses{}{}{}\n",
                if costs {
                    format!(
                        "  {:>12}",
                        self.cost_unit.as_deref().map_or("cost".into(), |u| format!("cost ({u})"))
                    )
                } else {
                    String::new()
                },
                if rates { "  rate found/s" } else { "" },
                if jobs { "        ok    failed" } else { "" }
            ));
            // The busiest hosts only: a run over thousands of hosts would bury the rest.
            let mut busiest: Vec<_> = self.hosts.iter().collect();
            busiest.sort_by(|a, b| b.1.attempts.cmp(&a.1.attempts).then(a.0.cmp(b.0)));
            for (h, s) in busiest.iter().take(HOSTS_SHOWN) {
                let cost = if costs {
                    format!("  {:>12}", s.cost)
                } else {
                    String::new()
                };
                let found = match (rates, s.rate_found_per_s) {
                    (true, Some(r)) => format!("  {r:>12.1}"),
                    (true, None) => format!("  {:>12}", "-"),
                    _ => String::new(),
                };
                let outcomes = match &s.jobs {
                    Some(j) => format!("  {:>8}  {:>8}", j.ok, j.failed),
                    None if jobs => format!("  {:>8}  {:>8}", "-", "-"),
                    None => String::new(),
                };
                out.push_str(&format!(
                    "    {:<24} {:>8}   {:>10.1}  {:>14}  {:>18}{cost}{found}{outcomes}\n",
                    h, s.attempts, s.attempts_per_s, s.breaker_openings, s.paused_by_retry_after
                ));
            }
            if busiest.len() > HOSTS_SHOWN {
                out.push_str(&format!(
                    "    ... and {} more hosts with fewer attempts (all of them: --summary-json)\n",
                    busiest.len() - HOSTS_SHOWN
                ));
            }
        }
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out
    }
}
