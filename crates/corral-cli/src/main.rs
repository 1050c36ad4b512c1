//! `corral`: run a very large number of HTTP requests under control.
//!
//! See `corral --help`, `corral run --help` and the README.

/// mimalloc instead of the system allocator: every request allocates and frees small buffers
/// on its worker thread, and glibc's malloc spent ~10% of `corral run`'s CPU on it (perf); with
/// mimalloc user time for 100 000 loopback GETs fell from ~1.1 s to ~0.8 s (`bench/http.sh`).
/// The price is a larger, still flat, resident set (~40 MiB instead of ~17 MiB, 10k or 1M jobs,
/// `bench/memory.sh`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod mock;
mod progress;

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use corral::limit::Rate;
use corral::shutdown::Shutdown;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use corral_engine::engine::{self as runner, BodyMode, BreakerSettings, Engine, Settings};
use corral_engine::job::{self, Format};
use corral_engine::sink::{self as output, Existing, InputFacts, OpenMode, Sink, Writer};
use corral_engine::summary::{Stats, Summary};
use corral_engine::{redact, workers, workers::Workers};

use crate::progress::Progress;

/// A command that cannot go on: the exit code and the message for stderr.
struct Fail(u8, String);

/// `map_err(fail(code))`: any displayable error becomes a [`Fail`] with that exit code.
fn fail<E: std::fmt::Display>(code: u8) -> impl Fn(E) -> Fail {
    move |e| Fail(code, e.to_string())
}

/// Exit codes (also in `corral --help`).
mod exit {
    pub const OK: u8 = 0;
    pub const SOME_FAILED: u8 = 1;
    pub const BAD_INPUT: u8 = 2;
    pub const FATAL: u8 = 3;
    pub const INTERRUPTED: u8 = 130;
}

const EXIT_CODES: &str = "\
Exit codes:
  0    every job succeeded
  1    the run finished, some jobs failed (their results say why)
  2    bad usage or input: bad option or config, unreadable jobs file, results file refused
  3    fatal: results could not be written (disk full ...); rerun with --resume
  130  interrupted by Ctrl-C / SIGTERM; rerun with --resume to finish";

const RUN_EXAMPLES: &str = "\
Examples:
  corral run jobs.jsonl -o results.jsonl
  corral run jobs.jsonl -o results.jsonl --resume          # after a crash or Ctrl-C
  corral run urls.txt --urls --per-host-rate 50/s --per-host-concurrency 4 -o out.jsonl
  cat jobs.jsonl | corral run - --rate 3000/min --retries 5 --header 'Authorization: Bearer $T'
  corral run jobs.jsonl --config corral.toml -o out.jsonl --summary-json summary.json

A job line: {\"id\"?, \"method\"?, \"url\", \"headers\"?, \"body\"? | \"json\"?, \"timeout_ms\"?, \"meta\"?}
A result line: {\"line\", \"id\", \"method\", \"url\", \"ok\", \"status\", \"attempts\", \"latency_ms\",
  \"elapsed_ms\", \"error\"?: {\"kind\", \"message\"}, \"body_bytes\"?, \"truncated\"?, \"headers\"?, \"body\"?, \"meta\"?}
Secrets (Authorization, Cookie, *token*, *key* headers; key/token query values) never reach
results or logs. Resume identifies jobs by input line number: resume with the same jobs file.";

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Run a very large number of HTTP requests under control: concurrency and rate limits, retries, circuit breakers, crash-safe resume.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the requests of a JSONL (or URL list) file, writing one result line per job.
    #[command(after_help = format!("{RUN_EXAMPLES}\n\n{EXIT_CODES}"))]
    Run(Box<RunArgs>),
    /// Run a few thousand jobs against an embedded mock server with injected faults (no network).
    Demo(DemoArgs),
    /// Run the mock server alone (for benchmarks and experiments) until Ctrl-C.
    ServeMock(ServeArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The jobs file (JSONL, or one URL per line with --urls); `-` reads standard input.
    jobs: PathBuf,
    /// Results file (JSONL). Without it, results go to standard output.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// The input is one URL per line (GET), `#` starts a comment line.
    #[arg(long)]
    urls: bool,
    /// The results file exists: skip the jobs it already holds, repair a torn last line, run the rest.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// The results file exists: start over, discarding it.
    #[arg(long)]
    overwrite: bool,
    /// With --resume: lines of the results file that are not results of this jobs file (torn,
    /// foreign, or naming a line the input does not have) are moved to RESULTS.rejected and
    /// their jobs run again, instead of refusing to resume.
    #[arg(long, requires = "resume")]
    repair: bool,
    /// A TOML file with any of the options below (names with `_`); command-line options win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Write the final summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    opts: Options,
}

/// Every tunable, from the command line or the config file.
#[derive(Args, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Jobs under way at once (sending, or between retries), all hosts together; jobs waiting
    /// for a busy, rate-limited or paused host do not count [default: 64].
    #[arg(long, short = 'c')]
    concurrency: Option<usize>,
    /// Jobs taken from the input at once, running or waiting for their host (its slots, rate or
    /// Retry-After pause): a slow or paused host holds up the others only when its jobs fill all
    /// of these [default: 4 x --concurrency, at least 256].
    #[arg(long)]
    queue: Option<usize>,
    /// Threads that run requests, each with its share of the jobs [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,
    /// Requests in flight at once to one host (host:port) [default: 8].
    #[arg(long)]
    per_host_concurrency: Option<usize>,
    /// Global request rate, e.g. 200/s, 3000/min, 10/100ms [default: unlimited].
    #[arg(long)]
    rate: Option<String>,
    /// Requests the global rate lets through at once after idling [default: 1].
    #[arg(long)]
    burst: Option<u64>,
    /// Request rate per host, e.g. 50/s [default: unlimited].
    #[arg(long)]
    per_host_rate: Option<String>,
    /// Burst of the per-host rate [default: 1].
    #[arg(long)]
    per_host_burst: Option<u64>,
    /// Retries after the first attempt (0 disables) [default: 3].
    #[arg(long)]
    retries: Option<u32>,
    /// First retry's maximum backoff in ms; doubles each retry, full jitter [default: 200].
    #[arg(long)]
    retry_base_ms: Option<u64>,
    /// Largest backoff in ms [default: 10000].
    #[arg(long)]
    retry_max_ms: Option<u64>,
    /// HTTP statuses that are retried (timeouts and connection errors always are) [default: 429,500,502,503,504].
    #[arg(long, value_delimiter = ',')]
    retry_on: Option<Vec<u16>>,
    /// Cap retries at this fraction of jobs (plus 10), e.g. 0.2, so retries cannot amplify an outage [default: no cap].
    #[arg(long)]
    retry_budget: Option<f64>,
    /// Also retry POST and PATCH requests after a failure that may have reached the server (a
    /// timeout, a reset, a 5xx). Without it they are retried only when they cannot have been
    /// sent (connect failures) or carry an `Idempotency-Key` header.
    #[arg(long)]
    #[serde(default)]
    retry_unsafe: bool,
    /// Longest Retry-After honoured, in seconds; longer ones are cut to this [default: 60].
    #[arg(long)]
    max_retry_after_s: Option<u64>,
    /// Disable the per-host circuit breakers.
    #[arg(long)]
    #[serde(default)]
    no_breaker: bool,
    /// Failure rate over the window that opens a host's breaker [default: 0.5].
    #[arg(long)]
    breaker_failure_rate: Option<f64>,
    /// Attempts in the window before the rate counts [default: 20].
    #[arg(long)]
    breaker_min_calls: Option<u32>,
    /// Rolling window of the breaker, seconds [default: 30].
    #[arg(long)]
    breaker_window_s: Option<u64>,
    /// Seconds an open breaker waits before probing [default: 10].
    #[arg(long)]
    breaker_cool_down_s: Option<u64>,
    /// Probe requests a half-open breaker lets through [default: 1].
    #[arg(long)]
    breaker_probes: Option<u32>,
    /// Per-attempt timeout (send to last body byte), ms; a job's timeout_ms overrides it [default: 30000].
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Connect timeout, ms [default: 10000].
    #[arg(long)]
    connect_timeout_ms: Option<u64>,
    /// Timeout for a whole job including retries and their waits, ms [default: none].
    #[arg(long)]
    total_timeout_ms: Option<u64>,
    /// Largest body read per response, e.g. 1MiB, 512KiB, 100000; the rest is cut and flagged [default: 1MiB].
    #[arg(long)]
    max_body: Option<String>,
    /// Longest input line, e.g. 1MiB; a longer line is not read, its job fails as invalid_input [default: 1MiB].
    #[arg(long)]
    max_line: Option<String>,
    /// Store response bodies (up to --max-body) in the results.
    #[arg(long, conflicts_with = "no_body")]
    #[serde(default)]
    save_body: bool,
    /// Do not read response bodies at all.
    #[arg(long)]
    #[serde(default)]
    no_body: bool,
    /// Store response headers in the results (secret ones redacted).
    #[arg(long)]
    #[serde(default)]
    save_headers: bool,
    /// Extra request header for every job, `Name: value` (repeatable); a job's own headers win.
    #[arg(long = "header", short = 'H')]
    #[serde(default)]
    header: Vec<String>,
    /// After Ctrl-C, how long in-flight requests may finish, seconds [default: 30].
    #[arg(long)]
    drain_timeout_s: Option<u64>,
    /// Sync results to disk at most this often, ms (a power loss costs at most this much, re-run by --resume) [default: 1000].
    #[arg(long)]
    fsync_interval_ms: Option<u64>,
    /// Seconds between progress lines when stderr is not a terminal [default: 5].
    #[arg(long)]
    progress_interval_s: Option<u64>,
    /// User-Agent header [default: corral/VERSION].
    #[arg(long)]
    user_agent: Option<String>,
}

macro_rules! merge {
    ($cli:ident, $cfg:ident, $($f:ident),*) => {
        Options {
            $($f: $cli.$f.clone().or_else(|| $cfg.$f.clone()),)*
            no_breaker: $cli.no_breaker || $cfg.no_breaker,
            save_body: $cli.save_body || $cfg.save_body,
            no_body: $cli.no_body || $cfg.no_body,
            save_headers: $cli.save_headers || $cfg.save_headers,
            retry_unsafe: $cli.retry_unsafe || $cfg.retry_unsafe,
            header: [$cfg.header.clone(), $cli.header.clone()].concat(),
        }
    };
}

impl Options {
    fn merged_with(&self, cfg: &Options) -> Options {
        let cli = self;
        merge!(
            cli,
            cfg,
            concurrency,
            queue,
            threads,
            per_host_concurrency,
            rate,
            burst,
            per_host_rate,
            per_host_burst,
            retries,
            retry_base_ms,
            retry_max_ms,
            retry_on,
            retry_budget,
            max_retry_after_s,
            breaker_failure_rate,
            breaker_min_calls,
            breaker_window_s,
            breaker_cool_down_s,
            breaker_probes,
            timeout_ms,
            connect_timeout_ms,
            total_timeout_ms,
            max_body,
            max_line,
            drain_timeout_s,
            fsync_interval_ms,
            progress_interval_s,
            user_agent
        )
    }
}

fn parse_size(s: &str, what: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("--{what} {s:?}: expected a size like 1MiB, 512KiB or 100000"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        other => return Err(format!("--{what} {s:?}: unknown unit {other:?}")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("--{what} {s:?} is too large"))?;
    if v == 0 {
        return Err(format!("--{what} must be at least 1 byte"));
    }
    Ok(v)
}

fn parse_headers(list: &[String]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (i, h) in list.iter().enumerate() {
        // The value is never quoted back: it may be a secret, even when the name is missing.
        let (name, value) = h.split_once(':').ok_or_else(|| {
            format!(
                "--header number {} (counting the config file's first): expected `Name: value`",
                i + 1
            )
        })?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("--header: invalid header name {:?}", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("--header: invalid value for {name}"))?;
        map.append(name, value);
    }
    Ok(map)
}

/// Everything a run needs, validated.
struct Plan {
    settings: Settings,
    /// Jobs held at once (≥ concurrency).
    queue: usize,
    threads: usize,
    extra_headers: HeaderMap,
    /// Longest input line read (bytes).
    max_line: usize,
    drain_timeout: Duration,
    fsync_interval: Duration,
    progress_every: Duration,
}

fn plan(o: &Options) -> Result<Plan, String> {
    let rate = |s: &Option<String>, what: &str| -> Result<Option<Rate>, String> {
        s.as_deref()
            .map(|r| {
                r.parse::<Rate>()
                    .map_err(|e| format!("--{what}: {}", e.message()))
            })
            .transpose()
    };
    let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
    let positive = |v: Option<usize>, d: usize, what: &str| match v.unwrap_or(d) {
        0 => Err(format!("--{what} must be at least 1")),
        n => Ok(n),
    };
    let timeout = ms(o.timeout_ms, 30_000);
    if timeout.is_zero() {
        return Err("--timeout-ms must be greater than 0".into());
    }
    let mut settings = Settings {
        idle_connections: 0, // below, once the threads are known
        concurrency: positive(o.concurrency, 64, "concurrency")?,
        per_host_concurrency: positive(o.per_host_concurrency, 8, "per-host-concurrency")?,
        rate: rate(&o.rate, "rate")?,
        burst: o.burst.unwrap_or(1),
        per_host_rate: rate(&o.per_host_rate, "per-host-rate")?,
        per_host_burst: o.per_host_burst.unwrap_or(1),
        retries: o.retries.unwrap_or(3),
        retry_base: ms(o.retry_base_ms, 200),
        retry_max: ms(o.retry_max_ms, 10_000),
        retry_statuses: o
            .retry_on
            .clone()
            .unwrap_or_else(|| vec![429, 500, 502, 503, 504]),
        retry_budget: o.retry_budget,
        retry_unsafe: o.retry_unsafe,
        max_retry_after: Duration::from_secs(o.max_retry_after_s.unwrap_or(60)),
        breaker: (!o.no_breaker).then(|| BreakerSettings {
            failure_rate: o.breaker_failure_rate.unwrap_or(0.5),
            min_calls: o.breaker_min_calls.unwrap_or(20),
            window: Duration::from_secs(o.breaker_window_s.unwrap_or(30)),
            cool_down: Duration::from_secs(o.breaker_cool_down_s.unwrap_or(10)),
            probes: o.breaker_probes.unwrap_or(1),
        }),
        timeout,
        connect_timeout: ms(o.connect_timeout_ms, 10_000),
        total_timeout: match o.total_timeout_ms {
            Some(0) => return Err("--total-timeout-ms must be greater than 0".into()),
            t => t.map(Duration::from_millis),
        },
        max_body: parse_size(o.max_body.as_deref().unwrap_or("1MiB"), "max-body")
            .map_err(|e| format!("{e} (use --no-body to skip bodies)"))?,
        body: if o.no_body {
            BodyMode::Skip
        } else if o.save_body {
            BodyMode::Save
        } else {
            BodyMode::Discard
        },
        save_headers: o.save_headers,
        user_agent: o
            .user_agent
            .clone()
            .unwrap_or_else(|| format!("corral/{}", env!("CARGO_PKG_VERSION"))),
    };
    let threads = match o.threads {
        Some(0) => return Err("--threads must be at least 1".into()),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    settings.idle_connections = idle_budget(fd_limit(), settings.concurrency, threads);
    let queue = match o.queue {
        Some(0) => return Err("--queue must be at least 1".into()),
        Some(n) => n,
        None => settings.concurrency.saturating_mul(4).max(256),
    }
    .max(settings.concurrency);
    Ok(Plan {
        settings,
        queue,
        threads,
        extra_headers: parse_headers(&o.header)?,
        max_line: usize::try_from(parse_size(
            o.max_line.as_deref().unwrap_or("1MiB"),
            "max-line",
        )?)
        .unwrap_or(usize::MAX),
        drain_timeout: Duration::from_secs(o.drain_timeout_s.unwrap_or(30)),
        fsync_interval: ms(o.fsync_interval_ms, 1000),
        progress_every: Duration::from_secs(o.progress_interval_s.unwrap_or(5).max(1)),
    })
}

/// The process's open-file limit (after [`raise_fd_limit`]); unlimited when it cannot be read.
fn fd_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(u64::MAX, |(soft, _)| soft)
}

/// Raises the soft open-file limit to the hard one: a run over many hosts needs a socket for
/// each connection, and the usual soft limit (1024) is far below what the system allows.
fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// Idle connections each of `threads` worker threads may keep for reuse: what the open-file
/// limit leaves after the connections in use (one per job under way) and a reserve (standard
/// streams, the jobs and results files, the runtimes' own descriptors), split between the
/// threads, and at most [`MAX_IDLE_PER_THREAD`] (each holds a read buffer).
fn idle_budget(fd_limit: u64, concurrency: usize, threads: usize) -> usize {
    const RESERVE: u64 = 64;
    let left = fd_limit.saturating_sub(RESERVE.saturating_add(concurrency as u64));
    let per_thread = left / threads.max(1) as u64;
    usize::try_from(per_thread).map_or(MAX_IDLE_PER_THREAD, |n| n.min(MAX_IDLE_PER_THREAD))
}

/// See [`idle_budget`].
const MAX_IDLE_PER_THREAD: usize = 512;

fn load_config(path: &Path) -> Result<Options, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    // A parse error quotes the line, which may hold a secret header.
    toml::from_str(&text).map_err(|e| {
        format!(
            "config {}: {}",
            path.display(),
            redact::text(&e.to_string())
        )
    })
}

/// Counts non-blank lines of a file in the background, for the progress bar's length.
fn count_lines(path: PathBuf) -> tokio::task::JoinHandle<Option<u64>> {
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let f = std::fs::File::open(path).ok()?;
        let mut n = 0;
        let mut r = std::io::BufReader::with_capacity(1 << 20, f);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).ok()? > 0 {
            if buf.iter().any(|b| !b.is_ascii_whitespace()) {
                n += 1;
            }
            buf.clear();
        }
        Some(n)
    })
}

/// One run, from opened input to summary. Returns the exit code.
#[allow(clippy::too_many_arguments)]
async fn execute(
    engine: Engine,
    plan: Plan,
    input: Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
    count_path: Option<PathBuf>,
    format: Format,
    sink: Sink,
    resumed: output::Resumed,
    quiet: bool,
    summary_json: Option<PathBuf>,
) -> Result<u8, Fail> {
    // The summary counts what the results file holds: a job is counted once its line is written.
    let stats = Arc::new(Mutex::new(
        Stats::new(resumed.done.len()).map_err(fail(exit::FATAL))?,
    ));
    let counted = stats.clone();
    let writer = Writer::start(
        sink,
        plan.fsync_interval,
        Box::new(move |written: &[runner::Outcome]| {
            let mut stats = counted.lock().unwrap_or_else(|p| p.into_inner());
            for outcome in written {
                stats.record(outcome);
            }
        }),
    )
    .map_err(fail(exit::FATAL))?;
    let stats_now = || stats.lock().unwrap_or_else(|p| p.into_inner());
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.listen_for_signals() {
        eprintln!("corral: cannot install signal handlers: {e}");
    }
    // After the first signal: stop intake, give in-flight jobs the drain deadline, then force.
    {
        let (token, s, drain) = (shutdown.token(), shutdown.clone(), plan.drain_timeout);
        tokio::spawn(async move {
            token.cancelled().await;
            tokio::time::sleep(drain).await;
            s.force();
        });
    }
    let mut notes = Vec::new();
    if !resumed.done.is_empty() {
        notes.push(format!(
            "resumed: {} jobs already in the results were skipped",
            resumed.done.len()
        ));
    }
    if resumed.repaired_bytes > 0 {
        notes.push(format!(
            "repaired a torn last result line ({} bytes cut)",
            resumed.repaired_bytes
        ));
    }
    if resumed.duplicates > 0 {
        notes.push(format!(
            "the results file already held {} duplicate lines",
            resumed.duplicates
        ));
    }
    if let Some((n, side)) = &resumed.set_aside {
        notes.push(format!(
            "--repair moved {n} lines that were not results of this jobs file to {}; their jobs ran again",
            side.display()
        ));
    }
    let mut progress = Progress::new(quiet, plan.progress_every);
    // Only a regular file is counted: any other input can be read once, by the job reader.
    let total = count_path.map(count_lines);

    let done = Arc::new(resumed.done);
    let skip = {
        let done = done.clone();
        move |line: u64| done.contains(line)
    };
    let read_error: Arc<Mutex<Option<String>>> = Arc::default();
    let re = read_error.clone();
    let jobs = job::read_jobs(
        input,
        format,
        plan.extra_headers.clone(),
        plan.max_line,
        skip,
    )
    .scan((), move |_, r| {
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
    let gates = engine.gates_handle();
    let taken = Arc::new(AtomicU64::new(0));
    let mut workers = Workers::start(
        engine,
        jobs,
        plan.threads,
        plan.settings.concurrency,
        plan.queue,
        workers::Stop {
            intake: shutdown.token(),
            force: shutdown.force_token(),
        },
        taken.clone(),
    )
    .map_err(fail(exit::FATAL))?;
    let sender = writer.sender();
    let force = shutdown.force_token();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut total = total;
    let mut fatal: Option<String> = None;
    let mut lost_to_panic = 0u64;
    let mut finished = 0u64;
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
                            // Not started before Ctrl-C: no result, --resume runs it.
                            Ok(None) => {}
                            Ok(Some(outcome)) => {
                                finished += 1;
                                if sender.push(outcome).await.is_err() {
                                    fatal.get_or_insert_with(|| "the results writer stopped".into());
                                }
                            }
                            // Not expected; the job's result is not written, so --resume runs it again.
                            Err(workers::Lost(why)) => {
                                lost_to_panic += 1;
                                first_panic.get_or_insert(why);
                            }
                        }
                    }
                }
            },
            _ = tick.tick() => {
                if let Some(h) = total.as_mut().filter(|h| h.is_finished()) {
                    if let Ok(Some(n)) = h.await {
                        progress.set_total(n);
                    }
                    total = None;
                }
                let stats = stats_now();
                let held = taken.load(Ordering::Relaxed).saturating_sub(stats.done);
                let running = gates.running().min(held);
                progress.update(&stats, running, held - running);
            }
        }
        if let Some(e) = writer.failed() {
            fatal.get_or_insert(e);
        }
        if fatal.is_some() {
            shutdown.force();
            break;
        }
    }
    workers.join().await; // after a forced stop, the threads abandon what is in flight
    drop(sender);
    if let Err(e) = writer.close().await {
        fatal.get_or_insert(e);
    }
    let stats = stats_now();
    progress.update(&stats, 0, 0);
    progress.finish();
    let unwritten = finished.saturating_sub(stats.done);
    if unwritten > 0 {
        notes.push(format!(
            "{unwritten} finished jobs could not be written to the results and are not counted above; --resume runs them"
        ));
    }
    if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        fatal.get_or_insert(e);
    }
    if lost_to_panic > 0 {
        notes.push(format!(
            "{lost_to_panic} jobs hit an internal error and were not recorded; --resume will run them (first error: {})",
            first_panic.as_deref().unwrap_or("unknown")
        ));
    }
    let interrupted = shutdown.is_triggered();
    let (outcome, code) = if let Some(e) = &fatal {
        eprintln!("corral: {}", redact::text(e));
        ("stopped by an error", exit::FATAL)
    } else if interrupted {
        notes.push("interrupted: rerun with --resume to finish the remaining jobs".into());
        ("interrupted", exit::INTERRUPTED)
    } else if stats.failed > 0 || lost_to_panic > 0 {
        ("finished with failures", exit::SOME_FAILED)
    } else {
        ("finished", exit::OK)
    };
    let hosts = gates
        .hosts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let summary = Summary::build(
        &stats,
        &hosts,
        gates.breaker_openings.load(Ordering::Relaxed),
        outcome,
        i32::from(code),
        notes,
    );
    if !quiet {
        eprint!("{}", summary.render());
    }
    if let Some(p) = summary_json {
        let json = serde_json::to_vec_pretty(&summary).unwrap_or_default();
        if let Err(e) = std::fs::write(&p, json) {
            eprintln!("corral: cannot write {}: {e}", p.display());
        }
    }
    Ok(code)
}

async fn run_cmd(args: RunArgs) -> Result<u8, Fail> {
    let opts = match &args.config {
        Some(path) => args
            .opts
            .merged_with(&load_config(path).map_err(fail(exit::BAD_INPUT))?),
        None => args.opts.clone(),
    };
    let plan = plan(&opts).map_err(fail(exit::BAD_INPUT))?;
    let format = if args.urls {
        Format::Urls
    } else {
        Format::Jsonl
    };
    // Every check first: nothing is written before the options and the input are known good.
    let engine = Engine::new(plan.settings.clone()).map_err(fail(exit::BAD_INPUT))?;
    let (input, facts, counted): (
        Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
        InputFacts,
        Option<PathBuf>,
    ) = if args.jobs.as_os_str() == "-" {
        let identity = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| std::fs::File::from(fd).metadata())
            .ok()
            .map(|m| output::identity(&m));
        (
            Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
            InputFacts {
                identity,
                lines: None,
            },
            None,
        )
    } else {
        let shown = args.jobs.display();
        let f = tokio::fs::File::open(&args.jobs).await.map_err(|e| {
            Fail(
                exit::BAD_INPUT,
                format!("cannot read jobs file {shown}: {e}"),
            )
        })?;
        let meta = f.metadata().await.map_err(|e| {
            Fail(
                exit::BAD_INPUT,
                format!("cannot read jobs file {shown}: {e}"),
            )
        })?;
        if meta.is_dir() {
            return Err(Fail(
                exit::BAD_INPUT,
                format!("{shown} is a directory, not a jobs file"),
            ));
        }
        // A pipe, FIFO or device can be read only once: by the job reader, nothing else.
        let regular = meta.is_file();
        let lines = if regular && args.resume {
            let path = args.jobs.clone();
            let n = tokio::task::spawn_blocking(move || output::count_all_lines(&path))
                .await
                .map_err(fail(exit::FATAL))?
                .map_err(|e| {
                    Fail(
                        exit::BAD_INPUT,
                        format!("cannot read jobs file {shown}: {e}"),
                    )
                })?;
            Some(n)
        } else {
            None
        };
        (
            Box::new(tokio::io::BufReader::with_capacity(1 << 16, f)),
            InputFacts {
                identity: Some(output::identity(&meta)),
                lines,
            },
            regular.then(|| args.jobs.clone()),
        )
    };
    let existing = if args.resume {
        Existing::Resume
    } else if args.overwrite {
        Existing::Overwrite
    } else {
        Existing::Refuse
    };
    let mode = OpenMode {
        existing,
        repair: args.repair,
    };
    let (sink, resumed) = match &args.output {
        None => (Sink::Stdout, output::Resumed::default()),
        Some(path) => {
            let opened = output::open(path, mode, facts).map_err(fail(exit::BAD_INPUT))?;
            let sink = Sink::File {
                file: opened.file,
                path: path.clone(),
                sync: opened.regular,
            };
            (sink, opened.resumed)
        }
    };
    execute(
        engine,
        plan,
        input,
        counted,
        format,
        sink,
        resumed,
        args.quiet,
        args.summary_json,
    )
    .await
}

#[derive(Args)]
struct DemoArgs {
    /// How many jobs to generate.
    #[arg(long, default_value_t = 3000)]
    jobs: u64,
    /// Directory for jobs.jsonl, results.jsonl and summary.json [default: a new temporary directory].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// First port; host N listens on PORT+N. 0 picks free ports.
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// Profiles of the hosts, comma-separated: fast, slow, flaky, limited, reset, huge, outage.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fast,slow,flaky,limited,reset,huge,outage"
    )]
    profiles: Vec<String>,
    /// Stop by itself after this many seconds [default: run until Ctrl-C].
    #[arg(long)]
    seconds: Option<u64>,
}

fn profile_named(name: &str) -> Result<mock::Profile, String> {
    let all = mock::demo_profiles();
    all.into_iter()
        .find(|p| p.name() == name.trim())
        .ok_or_else(|| {
            format!(
                "unknown mock profile {name:?} (fast, slow, flaky, limited, reset, huge, outage)"
            )
        })
}

async fn serve_mock(args: ServeArgs) -> Result<u8, Fail> {
    let profiles: Result<Vec<_>, _> = args.profiles.iter().map(|p| profile_named(p)).collect();
    let profiles = profiles.map_err(fail(exit::BAD_INPUT))?;
    let server = mock::start(&profiles, args.port).await.map_err(|e| {
        Fail(
            exit::BAD_INPUT,
            format!("cannot start the mock server: {e}"),
        )
    })?;
    for h in &server.hosts {
        println!(
            "{:<8} {}   (stats: {}/__stats)",
            h.profile.name(),
            h.base_url(),
            h.base_url()
        );
    }
    let stop = async {
        match args.seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    stop.await;
    Ok(exit::OK)
}

async fn demo(args: DemoArgs) -> Result<u8, Fail> {
    let server = mock::start(&mock::demo_profiles(), 0)
        .await
        .map_err(|e| Fail(exit::FATAL, format!("cannot start the mock server: {e}")))?;
    let dir = args.dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("corral-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir)
        .map_err(|e| Fail(exit::FATAL, format!("cannot create {}: {e}", dir.display())))?;
    let jobs_path = dir.join("jobs.jsonl");
    let results_path = dir.join("results.jsonl");
    let summary_path = dir.join("summary.json");
    let mut lines = String::new();
    for i in 0..args.jobs {
        let host = &server.hosts[(i % server.hosts.len() as u64) as usize];
        if i == 17 {
            lines.push_str("{\"url\": \"http://127.0.0.1:1/this line is broken\"\n");
            continue;
        }
        if i == 42 {
            lines.push_str("{\"method\": \"FETCH\", \"url\": \"http://127.0.0.1/\"}\n");
            continue;
        }
        lines.push_str(&format!(
            "{{\"id\":\"job-{i}\",\"url\":\"{}/items/{i}?api_key=demo-secret\",\"headers\":{{\"Authorization\":\"Bearer demo-secret\"}},\"meta\":{{\"profile\":\"{}\"}}}}\n",
            host.base_url(),
            host.profile.name()
        ));
    }
    std::fs::write(&jobs_path, lines).map_err(|e| {
        Fail(
            exit::FATAL,
            format!("cannot write {}: {e}", jobs_path.display()),
        )
    })?;
    eprintln!(
        "corral demo: {} jobs against {} simulated hosts on 127.0.0.1:",
        args.jobs,
        server.hosts.len()
    );
    for h in &server.hosts {
        eprintln!(
            "  {:<8} {}  {}",
            h.profile.name(),
            h.addr,
            describe(&h.profile)
        );
    }
    let opts = Options {
        concurrency: Some(64),
        per_host_concurrency: Some(8),
        per_host_rate: Some("60/s".into()),
        per_host_burst: Some(5),
        retries: Some(3),
        retry_base_ms: Some(50),
        retry_max_ms: Some(1000),
        breaker_min_calls: Some(10),
        breaker_window_s: Some(5),
        breaker_cool_down_s: Some(2),
        timeout_ms: Some(2000),
        max_body: Some("256KiB".into()),
        max_retry_after_s: Some(2),
        progress_interval_s: Some(1),
        ..Options::default()
    };
    eprintln!(
        "  limits: 64 jobs under way, 8 requests per host, 60 req/s per host (burst 5), 3 retries with jittered backoff,\n  \
         per-host breakers (50 % failures over 5 s, min 10 calls, 2 s cool-down), 2 s timeout, 256 KiB body cap\n"
    );
    let plan = plan(&opts).map_err(fail(exit::FATAL))?;
    let engine = Engine::new(plan.settings.clone()).map_err(fail(exit::FATAL))?;
    let input = tokio::fs::File::open(&jobs_path)
        .await
        .map(|f| Box::new(tokio::io::BufReader::new(f)))
        .map_err(fail(exit::FATAL))?;
    let mode = OpenMode {
        existing: Existing::Overwrite,
        repair: false,
    };
    let opened =
        output::open(&results_path, mode, InputFacts::default()).map_err(fail(exit::FATAL))?;
    let code = execute(
        engine,
        plan,
        input,
        Some(jobs_path.clone()),
        Format::Jsonl,
        Sink::File {
            file: opened.file,
            path: results_path.clone(),
            sync: opened.regular,
        },
        opened.resumed,
        args.quiet,
        Some(summary_path.clone()),
    )
    .await?;
    eprintln!("\n  what the servers saw (their own counters):");
    eprintln!("    host                     requests  max-in-flight  max-per-second  statuses");
    for h in &server.hosts {
        let s = h.stats();
        let mut st: Vec<_> = s.statuses.iter().collect();
        st.sort();
        let st: Vec<String> = st
            .iter()
            .map(|(k, v)| {
                if **k == 0 {
                    format!("reset: {v}")
                } else {
                    format!("{k}: {v}")
                }
            })
            .collect();
        eprintln!(
            "    {:<8} {:<15} {:>8}  {:>13}  {:>14}  {}",
            h.profile.name(),
            h.addr,
            s.requests,
            s.max_in_flight,
            s.max_per_second,
            st.join(", ")
        );
    }
    eprintln!(
        "\n  jobs: {}\n  results: {}\n  summary: {}\n  try: corral run {} -o {} --resume   (nothing left to do: every job is there once)",
        jobs_path.display(),
        results_path.display(),
        summary_path.display(),
        jobs_path.display(),
        results_path.display()
    );
    Ok(match code {
        exit::FATAL | exit::INTERRUPTED => code,
        _ => exit::OK, // failures are the point of the demo
    })
}

fn describe(p: &mock::Profile) -> String {
    match p {
        mock::Profile::Fast => "answers at once".into(),
        mock::Profile::Slow => "answers after 20-120 ms".into(),
        mock::Profile::Flaky { percent } => format!("{percent} % of answers are 500/503"),
        mock::Profile::Limited { per_sec } => {
            format!("allows {per_sec} req/s, else 429 + Retry-After")
        }
        mock::Profile::Reset { percent } => format!("resets {percent} % of connections"),
        mock::Profile::Huge { mib } => format!("sends {mib} MiB bodies, slowly"),
        mock::Profile::Outage { from_s, to_s } => {
            format!("fails every request from {from_s} s to {to_s} s")
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    // `run` and `demo` do their requests on worker threads of their own (see `workers`): the
    // main thread only reads jobs and writes results. The mock server alone wants every core.
    let mut builder = match cli.cmd {
        Cmd::ServeMock(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral: cannot start the runtime: {e}");
            return ExitCode::from(exit::FATAL);
        }
    };
    let code = rt
        .block_on(async move {
            match cli.cmd {
                Cmd::Run(args) => run_cmd(*args).await,
                Cmd::Demo(args) => demo(args).await,
                Cmd::ServeMock(args) => serve_mock(args).await,
            }
        })
        .unwrap_or_else(|Fail(code, message)| {
            eprintln!("corral: {}", redact::text(&message));
            code
        });
    // Do not wait for stray blocking reads (stdin) at exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(code)
}
