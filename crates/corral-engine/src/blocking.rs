//! A synchronous front to the engine, for programs that are not async: a script's `main`, a
//! CLI tool, a test harness, a thread of a larger synchronous program.
//!
//! reqwest's `blocking` module is the model: the async machinery is still there, but the
//! caller never sees it. [`Runner`] owns a small tokio runtime of its own (one thread, which
//! reads jobs and collects results; requests run on the engine's worker threads as in
//! `corral run`), and [`Runner::run`] blocks until every job has its result. A program that
//! *is* async calls [`crate::run::Run`] directly: blocking inside a runtime would stall its
//! worker, so [`Runner::run`] refuses to, with [`BlockingError::InsideRuntime`], instead of
//! panicking as a nested `block_on` would.
//!
//! The book's first step for a program that is not async is smaller than a batch: hand a job
//! over, get a handle, wait for it when its answer is needed. [`Runner::submit`] does that: the
//! first call starts one run on a thread of the runner's own, every job submitted joins it (the
//! submitter waits when `2 × --concurrency` jobs are queued), and [`Ticket::wait`] blocks until
//! that job's result line is written; [`Runner::close`] ends the run and returns its report.
//!
//! ```no_run
//! use corral_engine::blocking::Runner;
//! use corral_engine::settings::Settings;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runner = Runner::new(Settings { retries: 3, ..Settings::default() })?;
//! let jobs = (1..=100).map(|n| format!(r#"{{"url":"http://127.0.0.1:8080/items/{n}"}}"#));
//! let done = runner.run(jobs)?;
//! println!("{} ok, {} failed", done.report.stats.ok, done.report.stats.failed);
//! for line in &done.lines {
//!     println!("{line}"); // one JSON result line per job, in the order they finished
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::StartError;
use crate::job::{parse_line, Input};
use crate::run::{Report, Run};
use crate::settings::Settings;
use crate::sink::{LineSink, Sink};

/// Why a blocking run did not happen.
#[derive(Debug, thiserror::Error)]
pub enum BlockingError {
    /// Called from inside a tokio runtime, where blocking would stall it: use
    /// [`crate::run::Run`] there instead.
    #[error("corral's blocking runner was called inside an async runtime; await corral_engine::run::Run there instead")]
    InsideRuntime,
    /// The runtime for the run could not start.
    #[error("cannot start the runner's runtime: {0}")]
    Runtime(std::io::Error),
    /// The run could not start (a setting, a worker thread).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The submitted job got no result: the run ended first (it was closed, or stopped on a
    /// fatal error), or the job never started.
    #[error("the run ended before this job had a result")]
    NoResult,
}

/// A run's results: every job's result line, and the run's report.
#[derive(Debug)]
pub struct Completed {
    /// One JSON result line per job (the lines `corral run` writes), in the order the jobs
    /// finished; each carries its input `line` number.
    pub lines: Vec<String>,
    /// Counters, per-host figures and how the run ended.
    pub report: Report,
}

/// Runs jobs through the engine and blocks until they are done; see the [module docs](self).
#[derive(Debug)]
pub struct Runner {
    settings: Settings,
    input: Input,
    rt: tokio::runtime::Runtime,
    /// The run [`Runner::submit`] feeds, once started.
    session: Mutex<Option<Session>>,
}

/// A run fed one job at a time, on a thread of its own.
#[derive(Debug)]
struct Session {
    jobs: tokio::sync::mpsc::Sender<std::io::Result<crate::job::Parsed>>,
    /// The tickets waiting, by the job's line number.
    tickets: Arc<Mutex<HashMap<u64, std::sync::mpsc::SyncSender<String>>>>,
    next_line: u64,
    thread: std::thread::JoinHandle<Result<Report, BlockingError>>,
}

/// A job handed to [`Runner::submit`]: wait for its result line.
#[derive(Debug)]
pub struct Ticket {
    line: u64,
    result: std::sync::mpsc::Receiver<String>,
}

impl Ticket {
    /// The job's number in the run (1 for the first submitted), the `line` of its result.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Blocks until the job's result line is written, and returns it (the JSON line `corral
    /// run` writes). [`BlockingError::NoResult`] if the run ended without one.
    pub fn wait(self) -> Result<String, BlockingError> {
        self.result.recv().map_err(|_| BlockingError::NoResult)
    }
}

/// Hands each result line to its job's ticket, if it has one.
struct Deliver(Arc<Mutex<HashMap<u64, std::sync::mpsc::SyncSender<String>>>>);

impl LineSink for Deliver {
    fn write_lines(&mut self, lines: &mut dyn Iterator<Item = &str>) -> std::io::Result<()> {
        let mut tickets = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for line in lines {
            if let Some(ticket) = line_number(line).and_then(|n| tickets.remove(&n)) {
                let _ = ticket.send(line.to_string());
            }
        }
        Ok(())
    }
}

/// The `line` of a result line (always its first field).
fn line_number(result: &str) -> Option<u64> {
    let digits = result.strip_prefix("{\"line\":")?;
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Collects result lines in memory.
struct Collect(Arc<Mutex<Vec<String>>>);

impl LineSink for Collect {
    fn write_lines(&mut self, lines: &mut dyn Iterator<Item = &str>) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(lines.map(str::to_string));
        Ok(())
    }
}

impl Runner {
    /// A runner with these settings (checked here, so a bad one fails before any job).
    pub fn new(settings: Settings) -> Result<Self, BlockingError> {
        Run::new(settings.clone())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BlockingError::Runtime)?;
        Ok(Self {
            settings,
            input: Input::default(),
            rt,
            session: Mutex::new(None),
        })
    }

    /// How input lines are read (JSONL by default; URLs, CSV through a template, default
    /// headers, a base URL): see [`Input`].
    pub fn input(mut self, input: Input) -> Self {
        self.input = input;
        self
    }

    /// Runs one job per line of `jobs` (numbered from 1, as the lines of a file) and returns
    /// when every one has its result. A line that is not a valid job gets a result line saying
    /// why, as in `corral run`.
    pub fn run<I, L>(&self, jobs: I) -> Result<Completed, BlockingError>
    where
        I: IntoIterator<Item = L>,
        L: AsRef<str>,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(BlockingError::InsideRuntime);
        }
        let parsed: Vec<_> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, text)| Ok(parse_line(i as u64 + 1, text.as_ref(), &self.input)))
            .collect();
        let lines = Arc::new(Mutex::new(Vec::with_capacity(parsed.len())));
        let sink = Sink::Lines(Box::new(Collect(lines.clone())));
        let run = Run::new(self.settings.clone())?;
        let report = self
            .rt
            .block_on(run.run(futures::stream::iter(parsed), sink))?;
        let lines = std::mem::take(&mut *lines.lock().unwrap_or_else(PoisonError::into_inner));
        Ok(Completed { lines, report })
    }

    /// Hands one job (a line, as of a jobs file) to the runner's run, starting that run on
    /// first use, and returns its [`Ticket`]. Waits while `2 × --concurrency` submitted jobs
    /// have not started (the run's backpressure). A line that is not a valid job gets a
    /// result line saying why, as in `corral run`.
    pub fn submit(&self, job: impl AsRef<str>) -> Result<Ticket, BlockingError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(BlockingError::InsideRuntime);
        }
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let s = match &mut *session {
            Some(s) => s,
            none => none.insert(self.start()?),
        };
        s.next_line += 1;
        let line = s.next_line;
        let (tx, result) = std::sync::mpsc::sync_channel(1);
        s.tickets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(line, tx);
        let parsed = parse_line(line, job.as_ref(), &self.input);
        if s.jobs.blocking_send(Ok(parsed)).is_err() {
            s.tickets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&line);
            return Err(BlockingError::NoResult);
        }
        Ok(Ticket { line, result })
    }

    /// Ends the run [`Runner::submit`] fed, once every job submitted has its result, and
    /// returns its report; `None` if nothing was submitted. The next `submit` starts a new
    /// run (its lines numbered from 1 again).
    pub fn close(&self) -> Result<Option<Report>, BlockingError> {
        let session = self
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(Session { jobs, thread, .. }) = session else {
            return Ok(None);
        };
        drop(jobs); // the input ends: the run finishes what it has
        thread
            .join()
            .unwrap_or(Err(BlockingError::NoResult))
            .map(Some)
    }

    /// Starts the run that submitted jobs join, on a thread with a runtime of its own.
    fn start(&self) -> Result<Session, BlockingError> {
        let mut settings = self.settings.clone();
        // Tickets are matched to JSON result lines.
        settings.results_format = crate::settings::ResultsFormat::Jsonl;
        let run = Run::new(settings)?;
        let (jobs, rx) =
            tokio::sync::mpsc::channel(self.settings.concurrency.saturating_mul(2).max(1));
        let tickets = Arc::new(Mutex::new(HashMap::new()));
        let sink = Sink::Lines(Box::new(Deliver(tickets.clone())));
        let thread = std::thread::Builder::new()
            .name("corral-runner".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(BlockingError::Runtime)?;
                let input = tokio_stream_of(rx);
                Ok(rt.block_on(run.run(input, sink))?)
            })
            .map_err(BlockingError::Runtime)?;
        Ok(Session {
            jobs,
            tickets,
            next_line: 0,
            thread,
        })
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// A tokio channel's receiver as a stream.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
