//! A whole run: jobs in, one result line each out, through the [`Engine`] on worker threads,
//! into a [`Sink`]; what the `corral` binary does between opening its files and printing the
//! summary, as one call.
//!
//! ```no_run
//! use corral_engine::engine::Settings;
//! use corral_engine::job::Parsed;
//! use corral_engine::run::Run;
//! use corral_engine::sink::Sink;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let settings = Settings {
//!     per_host_concurrency: 4,
//!     per_host_rate: Some("50/s".parse()?),
//!     retries: 3,
//!     ..Settings::default()
//! };
//! let jobs = (1..=1000u64).map(|n| Ok(Parsed::get(n, &format!("http://127.0.0.1:8080/items/{n}"))));
//! let report = Run::new(settings)?.run(futures::stream::iter(jobs), Sink::Stdout).await?;
//! println!("{} ok, {} failed", report.stats.ok, report.stats.failed);
//! # Ok(())
//! # }
//! ```
//!
//! Must be called inside a tokio runtime: it reads the jobs and feeds the sink there, while
//! requests run on worker threads of their own (see [`crate::workers`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::engine::{Gates, HostStat, Outcome, Settings};
use crate::error::StartError;
use crate::job::Parsed;
use crate::sink::{Sink, Writer};
use crate::summary::Stats;
use crate::workers::{self, Workers};

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Every job of the input has its result line.
    Finished,
    /// Stopped by [`Run::stop_on`]'s tokens: jobs not started have no result line.
    Interrupted,
    /// Stopped by an error (the results could not be written, the input could not be read).
    Fatal(String),
}

/// What a run did: counters over the lines written, per-host counters, and what to tell the
/// user.
#[derive(Debug)]
pub struct Report {
    /// How it ended.
    pub ending: Ending,
    /// Counters over the result lines written (the summary's figures).
    pub stats: Stats,
    /// Per-host counters.
    pub hosts: HashMap<String, HostStat>,
    /// Circuit breakers opened, all hosts together.
    pub breaker_openings: u64,
    /// Things worth saying (jobs not written, jobs lost to an internal error).
    pub notes: Vec<String>,
    /// Jobs lost to an internal error (a panic): not written, so a resume runs them.
    pub lost: u64,
}

/// Progress while a run goes on: called a few times a second.
pub trait Observer: Send {
    /// The input's job count, once it is known (see [`Run::total`]).
    fn total(&mut self, _jobs: u64) {}
    /// The counters so far, with the jobs under way and the jobs waiting for their host.
    fn tick(&mut self, _stats: &Stats, _running: u64, _waiting: u64) {}
}

/// An [`Observer`] that shows nothing.
pub struct Quiet;

impl Observer for Quiet {}

/// Jobs held at once when not said otherwise: 4 x `concurrency`, at least 256 (a slow host's
/// waiting jobs then rarely fill them all).
pub fn default_queue(concurrency: usize) -> usize {
    concurrency.saturating_mul(4).max(256)
}

/// A run being set up: its settings checked, its engine built. See the module docs.
pub struct Run {
    gates: Arc<Gates>,
    concurrency: usize,
    threads: usize,
    queue: usize,
    fsync_interval: Duration,
    skipped: u64,
    stop: workers::Stop,
    total: Option<tokio::task::JoinHandle<Option<u64>>>,
}

impl Run {
    /// Checks `settings` and builds the engine. Defaults: one worker thread per CPU, a queue
    /// of 4 x concurrency (at least 256), results fsynced at most once a second.
    pub fn new(settings: Settings) -> Result<Self, StartError> {
        let concurrency = settings.concurrency;
        Ok(Self {
            gates: Gates::new(settings)?,
            concurrency,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue: default_queue(concurrency),
            fsync_interval: Duration::from_secs(1),
            skipped: 0,
            stop: workers::Stop {
                intake: CancellationToken::new(),
                force: CancellationToken::new(),
            },
            total: None,
        })
    }

    /// Worker threads that run requests (at least 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Jobs held at once, running or waiting for their host (at least the concurrency).
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(self.concurrency);
        self
    }

    /// How often results are fsynced at most (and at the end).
    pub fn fsync_interval(mut self, every: Duration) -> Self {
        self.fsync_interval = every;
        self
    }

    /// Jobs already done (by a run this one resumes): counted as skipped.
    pub fn skipped(mut self, n: u64) -> Self {
        self.skipped = n;
        self
    }

    /// `intake` cancelled: take no more jobs, let the ones under way finish; `force`
    /// cancelled: abandon them too (their results are not written).
    pub fn stop_on(mut self, intake: CancellationToken, force: CancellationToken) -> Self {
        self.stop = workers::Stop { intake, force };
        self
    }

    /// A count of the input's jobs, computed beside the run, for the observer.
    pub fn total(mut self, count: tokio::task::JoinHandle<Option<u64>>) -> Self {
        self.total = Some(count);
        self
    }

    /// Runs every job of `jobs` into `sink` and reports. An `Err` item ends the input: the
    /// run stops with [`Ending::Fatal`] once the jobs taken are done. `Err`: the run could not
    /// start (no thread, no writer); nothing was written.
    pub async fn run<S>(self, jobs: S, sink: Sink) -> Result<Report, StartError>
    where
        S: Stream<Item = std::io::Result<Parsed>> + Send + 'static,
    {
        self.run_observed(jobs, sink, &mut Quiet).await
    }

    /// [`Run::run`], telling `observer` how it goes.
    pub async fn run_observed<S>(
        self,
        jobs: S,
        sink: Sink,
        observer: &mut dyn Observer,
    ) -> Result<Report, StartError>
    where
        S: Stream<Item = std::io::Result<Parsed>> + Send + 'static,
    {
        let mut fatal: Option<String> = None;
        let mut notes = Vec::new();
        // The summary counts what the results file holds: a job is counted once its line is
        // written.
        let stats = Arc::new(Mutex::new(Stats::new(self.skipped)?));
        let counted = stats.clone();
        let writer = Writer::start(
            sink,
            self.fsync_interval,
            Box::new(move |written: &[Outcome]| {
                let mut stats = counted.lock().unwrap_or_else(|p| p.into_inner());
                for outcome in written {
                    stats.record(outcome);
                }
            }),
        )?;
        let stats_now = || stats.lock().unwrap_or_else(|p| p.into_inner());
        let read_error: Arc<Mutex<Option<String>>> = Arc::default();
        let re = read_error.clone();
        let jobs = jobs.scan((), move |_, r| {
            let out = match r {
                Ok(p) => Some(p),
                Err(e) => {
                    *re.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(format!("cannot read the jobs: {e}"));
                    None
                }
            };
            futures::future::ready(out)
        });
        let gates = self.gates.clone();
        let taken = Arc::new(AtomicU64::new(0));
        let (intake, force) = (self.stop.intake.clone(), self.stop.force.clone());
        let mut workers = Workers::start(
            self.gates,
            jobs,
            self.threads,
            self.concurrency,
            self.queue,
            self.stop,
            taken.clone(),
        )?;
        let sender = writer.sender();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut total = self.total;
        let (mut lost, mut finished) = (0u64, 0u64);
        let mut first_panic: Option<String> = None;
        loop {
            tokio::select! {
                biased;
                _ = force.cancelled() => break,
                r = workers.next() => match r {
                    None => break,
                    Some(batch) => {
                        for r in batch {
                            match r {
                                // Not started before the stop: no result, a resume runs it.
                                Ok(None) => {}
                                Ok(Some(outcome)) => {
                                    finished += 1;
                                    if sender.push(outcome).await.is_err() {
                                        fatal.get_or_insert_with(|| "the results writer stopped".into());
                                    }
                                }
                                // Not expected; not written, so a resume runs it again.
                                Err(workers::Lost(why)) => {
                                    lost += 1;
                                    first_panic.get_or_insert(why);
                                }
                            }
                        }
                    }
                },
                _ = tick.tick() => {
                    if let Some(h) = total.as_mut().filter(|h| h.is_finished()) {
                        if let Ok(Some(n)) = h.await {
                            observer.total(n);
                        }
                        total = None;
                    }
                    let stats = stats_now();
                    let held = taken.load(Ordering::Relaxed).saturating_sub(stats.done);
                    let running = gates.running().min(held);
                    observer.tick(&stats, running, held - running);
                }
            }
            if let Some(e) = writer.failed() {
                fatal.get_or_insert(e);
            }
            if fatal.is_some() {
                force.cancel();
                break;
            }
        }
        workers.join().await; // after a forced stop, the threads abandon what is in flight
        drop(sender);
        if let Err(e) = writer.close().await {
            fatal.get_or_insert(e.to_string());
        }
        let stats = stats_now().clone();
        observer.tick(&stats, 0, 0);
        let unwritten = finished.saturating_sub(stats.done);
        if unwritten > 0 {
            notes.push(format!(
                "{unwritten} finished jobs could not be written to the results and are not counted above; --resume runs them"
            ));
        }
        if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            fatal.get_or_insert(e);
        }
        if lost > 0 {
            notes.push(format!(
                "{lost} jobs hit an internal error and were not recorded; --resume will run them (first error: {})",
                first_panic.as_deref().unwrap_or("unknown")
            ));
        }
        let ending = match fatal {
            Some(e) => Ending::Fatal(e),
            None if intake.is_cancelled() || force.is_cancelled() => Ending::Interrupted,
            None => Ending::Finished,
        };
        Ok(Report {
            ending,
            stats,
            hosts: gates.host_stats(),
            breaker_openings: gates.breaker_openings(),
            notes,
            lost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::LineSink;

    /// Result lines kept in memory, shared with the test.
    #[derive(Clone, Default)]
    struct Memory(Arc<Mutex<Vec<String>>>);

    impl LineSink for Memory {
        fn write_lines(&mut self, lines: &mut dyn Iterator<Item = &str>) -> std::io::Result<()> {
            self.0.lock().unwrap().extend(lines.map(str::to_string));
            Ok(())
        }
    }

    /// Lines that need no request (their URL is no URL): each gets an `invalid_input` result.
    fn jobs(n: u64) -> impl Stream<Item = std::io::Result<Parsed>> + Send + 'static {
        futures::stream::iter((1..=n).map(|l| Ok(Parsed::jsonl(l, r#"{"url":"nowhere"}"#))))
    }

    fn lines_by_number(sink: &Memory) -> Vec<u64> {
        let mut lines: Vec<u64> = sink
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["line"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        lines.sort();
        lines
    }

    #[tokio::test]
    async fn every_job_reaches_a_sink_of_ones_own_once() {
        let sink = Memory::default();
        let report = Run::new(crate::engine::test_settings(8))
            .unwrap()
            .threads(2)
            .run(jobs(500), Sink::Lines(Box::new(sink.clone())))
            .await
            .unwrap();
        assert_eq!(report.ending, Ending::Finished);
        assert_eq!((report.stats.done, report.stats.failed), (500, 500));
        assert_eq!(lines_by_number(&sink), (1..=500).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn after_a_stop_no_job_starts() {
        let sink = Memory::default();
        let (intake, force) = (CancellationToken::new(), CancellationToken::new());
        intake.cancel();
        let report = Run::new(crate::engine::test_settings(8))
            .unwrap()
            .stop_on(intake, force)
            .run(jobs(500), Sink::Lines(Box::new(sink.clone())))
            .await
            .unwrap();
        assert_eq!(report.ending, Ending::Interrupted);
        assert_eq!(report.stats.done as usize, sink.0.lock().unwrap().len());
        assert!(
            report.stats.done < 500,
            "{} jobs ran after the stop",
            report.stats.done
        );
    }

    /// A sink that fails on its second batch.
    struct Failing(u32);

    impl LineSink for Failing {
        fn write_lines(&mut self, lines: &mut dyn Iterator<Item = &str>) -> std::io::Result<()> {
            self.0 += 1;
            if self.0 >= 2 {
                return Err(std::io::Error::other("disk full"));
            }
            lines.for_each(drop);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_sink_that_fails_stops_the_run_and_counts_only_what_it_took() {
        let report = Run::new(crate::engine::test_settings(8))
            .unwrap()
            .run(jobs(5000), Sink::Lines(Box::new(Failing(0))))
            .await
            .unwrap();
        assert!(
            matches!(&report.ending, Ending::Fatal(m) if m.contains("disk full")),
            "{:?}",
            report.ending
        );
        assert!(report.stats.done < 5000, "{}", report.stats.done);
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("could not be written")),
            "{:?}",
            report.notes
        );
    }
}
