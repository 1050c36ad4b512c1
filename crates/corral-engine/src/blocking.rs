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
}
