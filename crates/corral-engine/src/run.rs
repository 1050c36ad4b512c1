//! A whole run: jobs in, one result line each out, through the engine (`engine::Engine`, crate-private) on worker threads,
//! into a [`Sink`]; what the `corral` binary does between opening its files and printing the
//! summary, as one call.
//!
//! ```no_run
//! use corral_engine::job::Parsed;
//! use corral_engine::run::Run;
//! use corral_engine::settings::Settings;
//! use corral_engine::sink::Sink;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let run = Run::new(Settings { // every option of `corral run`, same defaults
//!     per_host_concurrency: 4,
//!     per_host_rate: Some("50/s".parse()?),
//!     retries: 3,
//!     ..Settings::default()
//! })?; // a setting that cannot work: an error naming its option
//! let jobs = (1..=1000u64).map(|n| Ok(Parsed::get(n, &format!("http://127.0.0.1:8080/items/{n}"))));
//! let report = run.run(futures::stream::iter(jobs), Sink::Stdout).await?;
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

use crate::engine::Gates;
use crate::error::StartError;
use crate::hosts::HostStat;
use crate::hosts::{HostTable, Hosts};
use crate::job::Parsed;
use crate::result::Outcome;
use crate::settings::Settings;
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
    /// Stopped taking jobs because too many failed (`--halt-*`): the jobs under way finished,
    /// the others have no result line. Says why.
    Halted(String),
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

pub use crate::settings::{default_queue, HALT_RATE_AFTER};

/// A run being set up: its settings checked, its engine built. See the module docs.
pub struct Run {
    gates: Arc<Gates>,
    concurrency: usize,
    threads: usize,
    queue_size: usize,
    fsync_interval: Duration,
    halt: Halt,
    skipped: u64,
    stop: workers::Stop,
    total: Option<tokio::task::JoinHandle<Option<u64>>>,
}

/// Sets up a [`Run`]: its [`Settings`] (every setting of `corral run`, with the binary's
/// defaults in [`Settings::default`]), checked once by [`RunBuilder::build`], and where its
/// per-host state lives. A setting is a field of [`Settings`], written once there with its
/// doc; the builder holds only what is not a setting.
///
/// ```
/// use std::time::Duration;
/// use corral_engine::run::Run;
/// use corral_engine::settings::Settings;
///
/// let run = Run::builder()
///     .settings(Settings {
///         concurrency: 200,
///         per_host_concurrency: 8,
///         per_host_rate: Some("50/s".parse().unwrap()),
///         retries: 5,
///         timeout: Duration::from_secs(10),
///         ..Settings::default()
///     })
///     .build();
/// assert!(run.is_ok());
///
/// // A setting that cannot work is refused by name.
/// let zero = Settings { concurrency: 0, ..Settings::default() };
/// let err = Run::new(zero).err().unwrap();
/// assert_eq!(err.to_string(), "--concurrency: must be at least 1");
/// ```
#[must_use = "a builder does nothing until it is built"]
#[derive(Default)]
pub struct RunBuilder {
    settings: Settings,
    hosts: Option<Arc<dyn HostTable>>,
}

/// When a run stops taking jobs because too many fail.
#[derive(Debug, Clone, Copy, Default)]
struct Halt {
    after_failures: Option<u64>,
    on_rate: Option<f64>,
}

impl Halt {
    /// Why the run should stop taking jobs, after `failed` of `finished` jobs failed.
    fn reason(&self, failed: u64, finished: u64) -> Option<String> {
        if let Some(n) = self.after_failures.filter(|n| failed >= *n) {
            return Some(format!("{failed} jobs failed (--halt-after-failures {n})"));
        }
        let rate = self.on_rate?;
        let share = failed as f64 / finished.max(1) as f64;
        (finished >= HALT_RATE_AFTER && share >= rate).then(|| {
            format!(
                "{failed} of {finished} jobs failed, {:.0} % (--halt-on-failure-rate {rate})",
                share * 100.0
            )
        })
    }
}

impl RunBuilder {
    /// Every setting at once, replacing those set so far (the binary merges its config file
    /// and flags into a [`Settings`], then hands it over whole).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Keeps per-host state in `hosts` instead of in this process (see [`crate::hosts`]).
    pub fn hosts(mut self, hosts: Arc<dyn HostTable>) -> Self {
        self.hosts = Some(hosts);
        self
    }

    /// Checks every setting and builds the engine's shared state. `Err` names the setting
    /// that cannot work; nothing has started.
    pub fn build(self) -> Result<Run, StartError> {
        let s = &self.settings;
        s.check()?;
        let concurrency = s.concurrency;
        let threads = s
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let queue = s
            .queue_size
            .unwrap_or_else(|| default_queue(concurrency))
            .max(concurrency);
        let fsync_interval = s.fsync_interval;
        let halt = Halt {
            after_failures: s.halt_after_failures,
            on_rate: s.halt_on_failure_rate,
        };
        let hosts: Arc<dyn HostTable> = match self.hosts {
            Some(h) => h,
            None => Arc::new(Hosts::new(&self.settings)?),
        };
        Ok(Run {
            gates: Gates::with_hosts(self.settings, hosts)?,
            concurrency,
            threads,
            queue_size: queue,
            fsync_interval,
            halt,
            skipped: 0,
            stop: workers::Stop {
                intake: CancellationToken::new(),
                force: CancellationToken::new(),
            },
            total: None,
        })
    }
}

impl Run {
    /// A [`RunBuilder`] with every setting at its default.
    pub fn builder() -> RunBuilder {
        RunBuilder::default()
    }

    /// A run with `settings` and the other defaults: `Run::builder().settings(settings).build()`.
    pub fn new(settings: Settings) -> Result<Self, StartError> {
        Self::builder().settings(settings).build()
    }

    /// What the results file this run resumes already spent ([`crate::sink::Resumed::spent`]):
    /// `--max-cost` and `--max-requests` count it.
    pub fn spent_before(self, spent: crate::sink::Spent) -> Self {
        self.gates.spent_before(spent.requests, spent.cost);
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

    /// Journals the requests that may not be repeated before they go, and fails without
    /// sending the jobs an earlier run may have sent (see [`crate::intents`]). Without it (a
    /// run whose results do not go to a file), nothing is journaled.
    pub fn intents(self, intents: crate::intents::Intents) -> Self {
        // Set once, before the run: the engines are not started yet.
        let _ = self.gates.intents.set(intents);
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
            self.queue_size,
            self.stop,
            taken.clone(),
        )?;
        let sender = writer.sender();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut total = self.total;
        let (mut lost, mut finished, mut failed) = (0u64, 0u64, 0u64);
        let mut halted: Option<String> = None;
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
                                    failed += u64::from(!outcome.ok);
                                    if halted.is_none() && !intake.is_cancelled() {
                                        halted = self.halt.reason(failed, finished);
                                        if halted.is_some() {
                                            intake.cancel();
                                        }
                                    }
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
        notes.extend(gates.cut_notes());
        if lost > 0 {
            notes.push(format!(
                "{lost} jobs hit an internal error and were not recorded; --resume will run them (first error: {})",
                first_panic.as_deref().unwrap_or("unknown")
            ));
        }
        let halted = halted.or_else(|| gates.capped());
        let ending = match (fatal, halted) {
            (Some(e), _) => Ending::Fatal(e),
            (None, Some(why)) => Ending::Halted(why),
            (None, None) if intake.is_cancelled() || force.is_cancelled() => Ending::Interrupted,
            (None, None) => Ending::Finished,
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
        let report = Run::new(Settings {
            threads: Some(2),
            ..crate::settings::test_settings(8)
        })
        .unwrap()
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
        let settings = crate::settings::test_settings(8);
        let table = Arc::new(Counting(Hosts::new(&settings).unwrap(), AtomicU64::new(0)));
        let report = Run::builder()
            .settings(settings)
            .hosts(table.clone())
            .build()
            .unwrap()
            .stop_on(intake, force)
            .run(jobs(500), Sink::Lines(Box::new(sink.clone())))
            .await
            .unwrap();
        assert_eq!(report.ending, Ending::Interrupted);
        // Not one job started: none has a result, and no request was counted at any host.
        assert_eq!(report.stats.done, 0, "jobs ran after the stop");
        assert!(sink.0.lock().unwrap().is_empty());
        let sent: u64 = table.stats().values().map(|s| s.attempts).sum();
        assert_eq!(sent, 0, "requests went out after the stop");
    }

    /// The in-memory host table, counting the entries the engine asks it for.
    struct Counting(Hosts, AtomicU64);

    impl HostTable for Counting {
        fn entry(
            &self,
            host: &crate::hosts::Host,
        ) -> Result<Arc<dyn crate::hosts::HostEntry>, crate::error::ConfigError> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.entry(host)
        }
        fn stats(&self) -> HashMap<String, HostStat> {
            self.0.stats()
        }
        fn breaker_openings(&self) -> u64 {
            self.0.breaker_openings()
        }
    }

    #[tokio::test]
    async fn a_run_keeps_its_host_state_in_the_table_it_is_given() {
        let settings = crate::settings::test_settings(8);
        let table = Arc::new(Counting(Hosts::new(&settings).unwrap(), AtomicU64::new(0)));
        // Port 1 refuses at once: each job is one attempt.
        let jobs =
            futures::stream::iter((1..=40u64).map(|l| Ok(Parsed::get(l, "http://127.0.0.1:1/x"))));
        let report = Run::builder()
            .settings(Settings {
                threads: Some(2),
                ..settings
            })
            .hosts(table.clone())
            .build()
            .unwrap()
            .run(jobs, Sink::Lines(Box::new(Memory::default())))
            .await
            .unwrap();
        assert_eq!(report.stats.done, 40);
        assert_eq!(table.1.load(Ordering::Relaxed), 40, "one entry per attempt");
        assert_eq!(report.hosts["127.0.0.1:1"].attempts, 40);
    }

    /// `build` checks the settings (every refusal is a unit test of `Settings::check`), and
    /// holds at least the concurrency's jobs.
    #[test]
    fn the_builder_checks_the_settings_once_built() {
        let zero_body = Settings {
            max_body: 0,
            ..Settings::default()
        };
        let e = Run::new(zero_body).err().unwrap();
        assert!(e.to_string().starts_with("--max-body"), "{e}");
        let small = Settings {
            concurrency: 10,
            queue_size: Some(3),
            ..Settings::default()
        };
        let run = Run::new(small).unwrap();
        assert_eq!(
            run.queue_size, 10,
            "the queue holds at least the concurrency"
        );
        let mut zero = Settings::default();
        zero.hosts.push(crate::settings::HostRule {
            pattern: "api.example.com".parse().unwrap(),
            settings: crate::settings::HostSettings {
                concurrency: Some(0),
                ..Default::default()
            },
        });
        let e = Run::new(zero).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("[hosts.\"api.example.com\"] concurrency"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn too_many_failures_halt_the_intake_and_say_why() {
        let sink = Memory::default();
        let report = Run::new(Settings {
            halt_after_failures: Some(10),
            ..crate::settings::test_settings(8)
        })
        .unwrap()
        .run(jobs(5000), Sink::Lines(Box::new(sink.clone())))
        .await
        .unwrap();
        assert!(
            matches!(&report.ending, Ending::Halted(why) if why.contains("--halt-after-failures 10")),
            "{:?}",
            report.ending
        );
        let done = report.stats.done;
        assert!((10..5000).contains(&done), "{done}");
        assert_eq!(done as usize, sink.0.lock().unwrap().len());

        let report = Run::new(Settings {
            halt_on_failure_rate: Some(0.5),
            ..crate::settings::test_settings(8)
        })
        .unwrap()
        .run(jobs(5000), Sink::Lines(Box::new(Memory::default())))
        .await
        .unwrap();
        assert!(
            matches!(&report.ending, Ending::Halted(why) if why.contains("100 of 100")),
            "{:?}",
            report.ending
        );
        assert!((100..5000).contains(&report.stats.done));
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
        let report = Run::new(crate::settings::test_settings(8))
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
