//! The request engine: one job in, one result line out, through every control of the run.
//!
//! Order of the gates for each attempt: per-host concurrency slot → per-host rate cell (which
//! also carries `Retry-After` pauses) → per-host cost cell → global rate and cost cells →
//! per-host circuit breaker (an open one holds the job: `Engine::pass_gates`) → the
//! request, bounded by the attempt timeout, with the body read up to `--max-body`. The retry
//! loop around attempts is [`corral::retry`]; the whole job may be bounded by a total timeout.
//!
//! `--concurrency` counts jobs under way. A job gets its active slot when it is taken from the
//! input; when its host's gates are closed (slots busy, rate spent, paused by `Retry-After`) it
//! gives the slot back while it waits and takes one again once they open. So a slow or paused
//! host holds no global slot, and the other hosts' jobs run meanwhile; how many jobs may wait
//! like that is bounded by `--queue-size`, which keeps memory flat.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use corral::limit::RateLimiter;
use corral::retry::{Decision, GiveUp, RetryBudget, RetryError, RetryPolicy};
use http::HeaderMap;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::{ConfigError, ErrorKind, StartError};
use crate::hosts::adaptive::{self, Signal};
use crate::hosts::{Host, HostEntry, HostTable, Hosts, Permit, Slot};
use crate::http::client::{ClientOptions, Clients, Exchange, HttpError};
use crate::http::decode::{DecodeError, Decoder};
use crate::http::direct::Request;
use crate::http::error::Cause;
use crate::http::redirect;
use crate::job::{Invalid, Job, Parsed};
use crate::redact;
#[cfg(test)]
use crate::settings::test_settings;
use crate::settings::{BodyMode, BreakerSettings, ForHost, ResultsFormat, Settings};

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

/// What the summary needs from one finished job.
#[derive(Debug)]
pub struct Outcome {
    /// The job succeeded.
    pub ok: bool,
    /// The status of its last response, if one came.
    pub status: Option<u16>,
    /// How it failed, if it did.
    pub error_kind: Option<ErrorKind>,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's latency, if a response came.
    pub latency: Option<Duration>,
    /// Its result line, without the newline.
    pub json: String,
    /// Its share of [`RESULT_BYTES`], held until the line is written (dropped with it).
    held: Option<OwnedSemaphorePermit>,
}

/// Bytes of result lines that may wait in memory to be written, all threads together. Lines
/// with saved bodies are large (up to `--max-body` each), and thousands of them queued between
/// the jobs and the writer grew to gigabytes; past this budget a finished job waits for the
/// writer before it hands its line over (and its place takes no new job).
pub const RESULT_BYTES: usize = 64 << 20;

impl crate::sink::Line for Outcome {
    fn text(&self) -> &str {
        &self.json
    }
}

/// Runs jobs. One engine per runtime thread: the HTTP clients (and their connections) belong
/// to the thread's runtime, the [`Gates`] are shared by all engines of a run.
pub struct Engine {
    gates: Arc<Gates>,
    /// This engine's active jobs (its share of `--concurrency`).
    active: Arc<Semaphore>,
    /// Cancelled when the run stops taking jobs.
    stop: CancellationToken,
    /// This thread's HTTP clients.
    clients: Clients,
}

/// What every engine of a run shares: limits, breakers, retry policy, per-host counters.
pub struct Gates {
    settings: Settings,
    /// Every engine's active-job semaphore with its number of permits (for [`Gates::running`]).
    active: Mutex<Vec<(usize, Arc<Semaphore>)>>,
    /// Every host's slots, rate cell, breaker and counters (see [`HostTable`]).
    hosts: Arc<dyn HostTable>,
    global_rate: Option<RateLimiter>,
    /// `--cost-rate`.
    global_cost: Option<RateLimiter>,
    /// Some cost rate or `--cost-from-response` is set: costs are counted per host.
    costs_counted: bool,
    /// Some host's rate is found while the run goes (`auto`): outcomes are reported to it.
    adaptive: bool,
    policy: RetryPolicy,
    /// The retry policy of each `[hosts]` rule, in the order of [`Settings::hosts`].
    rule_policies: Vec<RetryPolicy>,
    /// See [`RESULT_BYTES`].
    result_bytes: Arc<Semaphore>,
}

impl Gates {
    /// Checks `settings` and builds what every engine of a run shares: limits, per-host state
    /// (kept in this process: [`Hosts`]), the retry policy, the result budget.
    pub fn new(settings: Settings) -> Result<Arc<Self>, StartError> {
        let hosts = Arc::new(Hosts::new(&settings)?);
        Self::with_hosts(settings, hosts)
    }

    /// [`Gates::new`] with per-host state kept in `hosts` (see [`crate::hosts`]).
    pub fn with_hosts(
        settings: Settings,
        hosts: Arc<dyn HostTable>,
    ) -> Result<Arc<Self>, StartError> {
        settings.check()?;
        // The clients are built per engine; building them here checks the settings once.
        Clients::new(&client_options(&settings))?;
        let global_rate = match settings.rate {
            Some(r) => Some(
                RateLimiter::builder()
                    .rate(r)
                    .burst(settings.burst)
                    .build()
                    .map_err(|e| ConfigError::from_corral("--rate", &e))?,
            ),
            None => None,
        };
        let global_cost = settings
            .cost_rate
            .map(crate::hosts::cost_cell)
            .transpose()
            .map_err(|e| ConfigError::from_corral("--cost-rate", &e))?;
        let costs_counted = settings.cost_rate.is_some()
            || settings.per_host_cost_rate.is_some()
            || settings.cost_from_response.is_some()
            || settings
                .hosts
                .iter()
                .any(|r| r.settings.cost_rate.is_some());
        let adaptive = settings.per_host_rate_auto.is_some()
            || settings
                .hosts
                .iter()
                .any(|r| r.settings.rate_auto.is_some());
        let budget = match settings.retry_budget {
            Some(ratio) => Some(
                RetryBudget::new(ratio, 10)
                    .map_err(|e| ConfigError::from_corral("--retry-budget", &e))?,
            ),
            None => None,
        };
        // One policy for the run and one for each `[hosts]` rule (its own retries), all
        // drawing on the one budget.
        let policy_for = |retries: u32, option: &'static str| {
            let mut p = RetryPolicy::builder()
                .max_attempts(retries.saturating_add(1))
                .base_delay(settings.retry_base)
                .max_delay(settings.retry_max.max(settings.retry_base));
            if let Some(b) = &budget {
                p = p.budget(b.clone());
            }
            p.build().map_err(|e| ConfigError::from_corral(option, &e))
        };
        let policy = policy_for(settings.retries, "--retries")?;
        let rule_policies = (0..settings.hosts.len())
            .map(|i| policy_for(settings.for_rule(i).retries(), "[hosts] retries"))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(Gates {
            active: Mutex::new(Vec::new()),
            settings,
            hosts,
            global_rate,
            costs_counted,
            adaptive,
            global_cost,
            policy,
            rule_policies,
            result_bytes: Arc::new(Semaphore::new(RESULT_BYTES)),
        }))
    }

    /// The per-host counters so far.
    pub fn host_stats(&self) -> HashMap<String, HostStat> {
        self.hosts.stats()
    }

    /// Circuit breakers opened so far, all hosts together.
    pub fn breaker_openings(&self) -> u64 {
        self.hosts.breaker_openings()
    }

    /// Bytes of [`RESULT_BYTES`] not held by lines waiting to be written.
    #[cfg(test)]
    pub fn result_bytes_free(&self) -> usize {
        self.result_bytes.available_permits()
    }

    /// Jobs under way right now (holding an active slot), all engines together.
    pub fn running(&self) -> u64 {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active
            .iter()
            .map(|(n, s)| n.saturating_sub(s.available_permits()) as u64)
            .sum()
    }
}

/// A job's slot among its engine's active jobs (its share of `--concurrency`): held while the
/// job is under way, given back while it waits for a busy, rate-limited or paused host, so that
/// other hosts' jobs run meanwhile.
struct Active {
    sem: Arc<Semaphore>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Active {
    fn release(&self) {
        self.permit.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    async fn reacquire(&self) {
        // Never closed; should it be, the job goes on without a slot rather than fail.
        let p = self.sem.clone().acquire_owned().await.ok();
        *self.permit.lock().unwrap_or_else(|p| p.into_inner()) = p;
    }
}

#[derive(Serialize)]
struct ErrorOut {
    kind: ErrorKind,
    message: String,
    /// No response arrived, but the request may have reached the server (it started to go
    /// out): a job that is not idempotent may have taken effect.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    maybe_sent: bool,
}

impl ErrorOut {
    /// The message is redacted here, once for every result: it may quote a URL, a header or
    /// an input line.
    fn new(kind: ErrorKind, message: &str, maybe_sent: bool) -> Self {
        Self {
            kind,
            message: redact::text(message).into_owned(),
            maybe_sent,
        }
    }
}

#[derive(Serialize)]
struct ResultLine<'a> {
    line: u64,
    id: &'a str,
    method: &'a str,
    url: Cow<'a, str>,
    ok: bool,
    status: Option<u16>,
    attempts: u32,
    latency_ms: Option<f64>,
    elapsed_ms: f64,
    started_at: Rfc3339,
    /// Redirects followed.
    #[serde(skip_serializing_if = "is_zero")]
    redirects: u32,
    /// Where the last redirect went (redacted), when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    final_url: Option<String>,
    /// Times this job's failures opened its host's breaker.
    #[serde(skip_serializing_if = "is_zero")]
    opened_breaker: u32,
    /// Times this job's responses paused its host (`Retry-After`, or an allowance spent).
    #[serde(skip_serializing_if = "is_zero")]
    paused_host: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_bytes: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    /// A saved body that is not UTF-8, in base64 (standard alphabet, padded).
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    /// Where `--save-body-dir` wrote the body.
    #[serde(skip_serializing_if = "Option::is_none")]
    body_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meta: Option<&'a Value>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A wall-clock time written as RFC 3339 in UTC with milliseconds
/// (`2026-11-26T01:02:03.456Z`): the `started_at` of results, which reports plot over time.
///
/// Formatting a date (`humantime`) cost ~800 instructions a result, 2.5 % of a request
/// (callgrind); its seconds change once a second, so each thread keeps the last ones written
/// and adds only the milliseconds.
struct Rfc3339(SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        thread_local! {
            /// The last whole second formatted, and its `YYYY-MM-DDTHH:MM:SS`.
            static LAST: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
        }
        let Ok(d) = self.0.duration_since(std::time::UNIX_EPOCH) else {
            return s.collect_str(&humantime::format_rfc3339_millis(self.0));
        };
        let secs = d.as_secs();
        let (mut last, mut prefix) = LAST.get();
        if last != secs {
            let whole = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_secs(secs),
            )
            .to_string();
            // Years past 9999 do not fit the fixed width: written whole.
            let Some(head) = whole.as_bytes().get(..19).filter(|_| whole.len() == 20) else {
                return s.collect_str(&humantime::format_rfc3339_millis(self.0));
            };
            prefix.copy_from_slice(head);
            last = secs;
            LAST.set((last, prefix));
        }
        let ms = d.subsec_millis();
        let mut out = [0u8; 24];
        out[..19].copy_from_slice(&prefix);
        out[19] = b'.';
        out[20] = b'0' + (ms / 100) as u8;
        out[21] = b'0' + (ms / 10 % 10) as u8;
        out[22] = b'0' + (ms % 10) as u8;
        out[23] = b'Z';
        match std::str::from_utf8(&out) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_str(&humantime::format_rfc3339_millis(self.0)),
        }
    }
}

/// The part of a body's `chunk` (decoded first, with `decoder`) that fits in `room` bytes,
/// and whether some did not fit. `end`: the body ended (`chunk` is empty): the decoder's last
/// output.
fn within<'c>(
    decoder: Option<&mut Decoder>,
    chunk: &'c [u8],
    room: u64,
    end: bool,
) -> Result<(Cow<'c, [u8]>, bool), DecodeError> {
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    let Some(d) = decoder else {
        let take = chunk.len().min(room);
        return Ok((Cow::Borrowed(&chunk[..take]), take < chunk.len()));
    };
    let mut piece = Vec::new();
    let mut cut = false;
    let mut out = |p: &[u8]| {
        let take = p.len().min(room - piece.len());
        piece.extend_from_slice(&p[..take]);
        cut |= take < p.len();
        !cut
    };
    if end {
        d.finish(&mut out)?;
    } else {
        d.feed(chunk, &mut out)?;
    }
    Ok((Cow::Owned(piece), cut))
}

/// A body written to its own file in `--save-body-dir`, named by the job's line, and by its
/// id too when the id is a safe file name (`17.body`, `17-invoice-42.body`). Another attempt
/// of the job starts it over.
struct BodyFile {
    path: std::path::PathBuf,
    file: tokio::fs::File,
}

impl BodyFile {
    async fn create(dir: &std::path::Path, job: &Job) -> Result<Self, AttemptError> {
        let safe = !job.id.is_empty()
            && job.id.len() <= 64
            && !job.id.starts_with('.')
            && job.id != job.line.to_string()
            && job
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let name = if safe {
            format!("{}-{}.body", job.line, job.id)
        } else {
            format!("{}.body", job.line)
        };
        let path = dir.join(name);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| Self::failed(&path, e))?;
        Ok(Self { path, file })
    }

    async fn write(&mut self, piece: &[u8]) -> Result<(), AttemptError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .write_all(piece)
            .await
            .map_err(|e| Self::failed(&self.path, e))
    }

    async fn close(mut self) -> Result<std::path::PathBuf, AttemptError> {
        use tokio::io::AsyncWriteExt;
        self.file
            .flush()
            .await
            .map_err(|e| Self::failed(&self.path, e))?;
        Ok(self.path)
    }

    /// A body file that cannot be written: not the host's fault, and not retried.
    fn failed(path: &std::path::Path, e: std::io::Error) -> AttemptError {
        AttemptError::Transport {
            cause: Cause::Request,
            message: format!("cannot write the body to {}: {e}", path.display()),
            sent: true,
            resend: false,
        }
    }
}

/// A response as far as we read it.
struct Response {
    status: u16,
    headers: HeaderMap,
    body_bytes: u64,
    body: Option<Vec<u8>>,
    /// Where `--save-body-dir` wrote the body.
    body_file: Option<std::path::PathBuf>,
    truncated: bool,
    latency: Duration,
    /// The share of [`RESULT_BYTES`] reserved for a saved body, handed on to the result line.
    held: Option<OwnedSemaphorePermit>,
    /// What the response says the job cost (`--cost-from-response`).
    cost: Option<u64>,
}

/// How this run's settings shape its HTTP clients.
fn client_options(s: &Settings) -> ClientOptions {
    ClientOptions {
        user_agent: s.user_agent.clone(),
        connect_timeout: s.connect_timeout,
        idle_per_host: s.per_host_concurrency,
        idle_total: s.idle_connections,
        other_connect_timeouts: s
            .hosts
            .iter()
            .filter_map(|r| r.settings.connect_timeout)
            .collect(),
        tls: s.tls.clone(),
        proxy: s.proxy.clone(),
        http2_prior_knowledge: s.http2_prior_knowledge,
    }
}

impl From<HttpError> for AttemptError {
    fn from(e: HttpError) -> Self {
        AttemptError::Transport {
            cause: e.cause,
            message: e.message,
            sent: e.sent,
            resend: e.resend,
        }
    }
}

/// What a job's attempts leave besides their result, for its result line.
#[derive(Default)]
struct Trace {
    attempts: AtomicU32,
    /// Some attempt started to send the request: the server may have seen it.
    maybe_sent: AtomicBool,
    /// The status of the last attempt's response head, 0 before one arrived: kept when the
    /// body then fails or times out.
    head: AtomicU16,
    /// When the job was first held by its host's open breaker.
    held_since: Mutex<Option<tokio::time::Instant>>,
    /// The breaker permit of a failed first attempt, not counted yet (see
    /// [`Trace::breaker_outcome`]).
    pending: Mutex<Option<Permit>>,
    /// Times this job's failures opened its host's breaker (for its result line).
    openings: AtomicU32,
    /// Times this job's responses paused its host (for its result line).
    pauses: AtomicU32,
    /// Redirects followed.
    redirects: AtomicU32,
    /// Where the last redirect went.
    final_url: Mutex<Option<url::Url>>,
}

impl Trace {
    /// What a host's breaker counts. A job's first failure is not counted while a retry may
    /// still make it good: a flaky host whose requests succeed on their second try is healthy
    /// from the user's side, and cutting it off spent none of the retries the user asked for
    /// (all of a 1000-job run came back `circuit_open` that way). Every success counts, and
    /// every failure of a retry: during an outage retries fail too, and the breaker opens
    /// about as fast as if it counted every attempt. A half-open probe counts at once, as it
    /// decides whether the breaker closes. A first attempt's failure that a retry may follow
    /// (`retry_may_follow`) waits here; the next attempt drops it uncounted, or
    /// [`Trace::settle`] counts it when the job ends there. One no retry can follow (no
    /// retries are allowed) counts at once, before the attempt gives its host slot back: the
    /// next job's request must not slip out ahead of it.
    fn breaker_outcome(&self, permit: Option<Permit>, healthy: bool, retry_may_follow: bool) {
        let Some(permit) = permit else { return };
        if healthy {
            permit.success();
        } else if permit.is_probe() || !retry_may_follow {
            self.failed(permit);
        } else {
            *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
        }
    }

    /// The job has ended: a first failure no retry followed is counted now.
    fn settle(&self) {
        if let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            self.failed(p);
        }
    }

    /// Counts a failure on the breaker, and on this job if it opened the breaker.
    fn failed(&self, permit: Permit) {
        if permit.failure() {
            self.openings.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A retry is about to be sent: the first failure is not counted (see
    /// [`Trace::breaker_outcome`]).
    fn forgive(&self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }
}

/// Why an attempt did not produce a final response.
enum AttemptError {
    /// A response whose status is retryable (429, 5xx ...).
    Status(Response, Option<Duration>),
    /// A transport failure.
    Transport {
        /// What failed, typed where it failed.
        cause: Cause,
        message: String,
        /// The request may have reached the server (it started to go out).
        sent: bool,
        /// It may go once more at once on a new connection (see [`HttpError::resend`]).
        resend: bool,
    },
    /// The host's breaker is open.
    BreakerOpen(String),
    /// The run stopped taking jobs (Ctrl-C) before this job's first request started.
    NotStarted,
}

/// How a job ended without a response to record: it failed, or it never started (the run
/// stopped taking jobs first; it gets no result, so `--resume` runs it).
enum Ended {
    Failed(Box<Failure>),
    NotStarted,
}

/// A job that failed: why, in words, and the last response when the failure is its status.
struct Failure {
    kind: ErrorKind,
    message: String,
    response: Option<Response>,
}

/// The columns of a CSV result row (`--format csv`), in order: the keys of a JSONL result
/// whose values are scalars, with `error`'s as `error_kind`, `error_message`, `maybe_sent`.
pub const CSV_COLUMNS: [&str; 22] = [
    "line",
    "id",
    "method",
    "url",
    "ok",
    "status",
    "attempts",
    "latency_ms",
    "elapsed_ms",
    "started_at",
    "redirects",
    "final_url",
    "error_kind",
    "error_message",
    "maybe_sent",
    "body_bytes",
    "truncated",
    "body",
    "body_base64",
    "body_file",
    "opened_breaker",
    "paused_host",
];

/// A result as a CSV row (without its line end), the fields of [`CSV_COLUMNS`]; an absent
/// value is an empty field.
fn to_csv(line: &ResultLine<'_>) -> String {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let error = line.error.as_ref();
    let started = serde_json::to_value(&line.started_at)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let fields: [String; 22] = [
        line.line.to_string(),
        line.id.to_string(),
        line.method.to_string(),
        line.url.to_string(),
        line.ok.to_string(),
        opt(line.status.map(|s| s.to_string())),
        line.attempts.to_string(),
        opt(line.latency_ms.map(|l| l.to_string())),
        line.elapsed_ms.to_string(),
        started,
        line.redirects.to_string(),
        opt(line.final_url.clone()),
        opt(error.map(|e| e.kind.as_str().to_string())),
        opt(error.map(|e| e.message.clone())),
        error.is_some_and(|e| e.maybe_sent).to_string(),
        opt(line.body_bytes.map(|b| b.to_string())),
        line.truncated.to_string(),
        opt(line.body.clone()),
        opt(line.body_base64.clone()),
        opt(line.body_file.clone()),
        line.opened_breaker.to_string(),
        line.paused_host.to_string(),
    ];
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    if w.write_record(&fields).is_err() {
        return String::new();
    }
    let mut row = w
        .into_inner()
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    row.pop(); // the sink ends the line
    row
}

/// The header row of CSV results.
pub fn csv_header() -> String {
    CSV_COLUMNS.join(",")
}

/// A result line as JSON, its buffer sized for a saved body up front (growing by doubling, a
/// 1 MiB body's line would hold 2 MiB).
fn to_json(line: &ResultLine<'_>) -> String {
    let size = 512 + line.body.as_ref().map_or(0, |b| b.len() + b.len() / 16);
    let mut out = Vec::with_capacity(size);
    match serde_json::to_writer(&mut out, line) {
        // serde_json writes UTF-8 only.
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A status by which a server says it has too much (429, 503): its `Retry-After` pauses the
/// host, and an `auto` rate is cut.
fn pushes_back(status: u16) -> bool {
    status == 429 || status == 503
}

/// True when a name-resolution failure is the resolver's, not the name's: worth a retry.
/// Whether a transport failure is worth another attempt: not when the same request will fail
/// the same way (a name that does not exist, a certificate refused, a request that cannot be
/// built); a resolver that could not answer (`EAI_AGAIN`), a refused connection or a reset may
/// do better next time.
fn transport_decision(cause: Cause) -> Decision {
    if cause.is_permanent() {
        Decision::Stop
    } else {
        Decision::Retry
    }
}

impl Engine {
    /// An engine for one worker thread, in one step: the run's shared `gates`, the thread's
    /// share of `--concurrency` (`active`), and `stop`, cancelled when the run stops taking
    /// jobs (jobs whose first request has not started then are given up: [`Engine::process`]
    /// returns `None` for them). It has HTTP clients of its own: a connection is driven only
    /// from the thread that made it.
    pub fn new(
        gates: Arc<Gates>,
        active: usize,
        stop: CancellationToken,
    ) -> Result<Self, StartError> {
        let clients = Clients::new(&client_options(&gates.settings))?;
        let active = Arc::new(Semaphore::new(active));
        gates
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((active.available_permits(), active.clone()));
        Ok(Self {
            gates,
            active,
            stop,
            clients,
        })
    }

    /// The semaphore of this engine's active jobs: a job's first slot is taken from it and
    /// handed to [`Engine::process`].
    pub fn active_slots(&self) -> Arc<Semaphore> {
        self.active.clone()
    }

    /// Runs one parsed input line to its result; `None` when the run stopped taking jobs
    /// before this one started (it gets no result, so `--resume` runs it).
    /// `slot`: the job's active slot, taken from [`Engine::active_slots`]. The
    /// job gives it up while it waits for its host; it is back in `slot` when the job ends, so
    /// the caller can go on to its next job without taking another.
    pub async fn process(
        &self,
        parsed: Parsed,
        slot: &mut Option<OwnedSemaphorePermit>,
    ) -> Option<Outcome> {
        let mut outcome = match parsed {
            Parsed::Invalid(inv) => self.invalid(&inv),
            Parsed::Job(job) => {
                let started = Instant::now();
                let started_at = SystemTime::now();
                let trace = Trace::default();
                let active = Active {
                    sem: self.active.clone(),
                    permit: Mutex::new(slot.take()),
                };
                let run = self.run_job(&job, &trace, &active);
                let result = match self.gates.settings.total_timeout {
                    Some(t) => match tokio::time::timeout(t, run).await {
                        Ok(r) => r,
                        Err(_) => Err(Ended::Failed(Box::new(Failure {
                            kind: ErrorKind::TotalTimeout,
                            message: format!("gave up after the total timeout of {t:?}"),
                            response: None,
                        }))),
                    },
                    None => run.await,
                };
                trace.settle();
                *slot = active
                    .permit
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner());
                let result = match result {
                    Ok(r) => Ok(r),
                    Err(Ended::NotStarted) => return None,
                    Err(Ended::Failed(f)) => Err(*f),
                };
                self.finish(&job, result, &trace, (started_at, started.elapsed()))
            }
        };
        // The line holds its size of the budget until it is written: a saved body's reserve is
        // cut to it, anything else takes it now. A line larger than the whole budget waits for
        // all of it: it is then alone.
        let need = outcome.json.len().clamp(1, RESULT_BYTES);
        let have = outcome.held.as_ref().map_or(0, |p| p.num_permits());
        if let (Some(held), true) = (outcome.held.as_mut(), have > need) {
            drop(held.split(have - need));
        } else if need > have {
            let more = u32::try_from(need - have).unwrap_or(u32::MAX);
            let more = self
                .gates
                .result_bytes
                .clone()
                .acquire_many_owned(more)
                .await
                .ok();
            match (&mut outcome.held, more) {
                (Some(held), Some(more)) => held.merge(more),
                (held, more) => *held = more,
            }
        }
        Some(outcome)
    }

    /// Runs a job: its request, and then each redirect the run follows (`--max-redirects`),
    /// every hop a request of its own through the gates of the host it goes to, under the
    /// job's total timeout. A hop takes no cost: the job's cost was taken once, by its first
    /// request, and `--cost-from-response` settles it from the last.
    async fn run_job(&self, job: &Job, trace: &Trace, active: &Active) -> Result<Response, Ended> {
        let max = self.gates.settings.max_redirects;
        let mut hop = Cow::Borrowed(job);
        loop {
            let r = self.run_hop(&hop, trace, active).await;
            if max == 0 {
                return r;
            }
            let resp = match &r {
                Ok(resp) => resp,
                Err(Ended::Failed(f)) => match &f.response {
                    Some(resp) => resp,
                    None => return r,
                },
                Err(Ended::NotStarted) => return r,
            };
            // Most responses are not redirects: their headers are not looked at.
            if !(300..400).contains(&resp.status) {
                return r;
            }
            let location = resp.headers.get(http::header::LOCATION);
            let failed = |message| {
                Err(Ended::Failed(Box::new(Failure {
                    kind: ErrorKind::Redirect,
                    message,
                    response: None,
                })))
            };
            match redirect::next(
                &hop.url,
                &hop.method,
                resp.status,
                location.map(|l| l.as_bytes()),
            ) {
                redirect::Next::Stop => return r,
                redirect::Next::Refuse(why) => return failed(why),
                redirect::Next::Follow {
                    url,
                    method,
                    keep_body,
                } => {
                    let done = trace.redirects.load(Ordering::Relaxed);
                    if done >= max {
                        return failed(format!(
                            "more than {max} redirects (--max-redirects), the last to {}",
                            redact::url(&url)
                        ));
                    }
                    trace.redirects.store(done + 1, Ordering::Relaxed);
                    let mut next = hop.into_owned();
                    redirect::prepare(&mut next.headers, &next.url, &url, keep_body);
                    if !keep_body {
                        next.body = None;
                    }
                    next.url = url;
                    next.method = method;
                    next.cost = 0;
                    *trace.final_url.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(next.url.clone());
                    hop = Cow::Owned(next);
                }
            }
        }
    }

    /// One request of a job (its first, or a redirect's), retried by its host's policy.
    async fn run_hop(&self, job: &Job, trace: &Trace, active: &Active) -> Result<Response, Ended> {
        let host: Host = job.host_key().into();
        // A result's attempts are its tries over all hops: a redirect's first request is not
        // a try of its own (`attempts - 1` is the job's retries).
        let before = match trace.redirects.load(Ordering::Relaxed) {
            0 => 0,
            _ => trace.attempts.load(Ordering::Relaxed).saturating_sub(1),
        };
        // The host's settings (its `[hosts]` rule over the run's), found once for the job.
        let view = self.gates.settings.for_host(&host);
        let retry_statuses = view.retry_statuses();
        let policy = view
            .index
            .and_then(|i| self.gates.rule_policies.get(i))
            .unwrap_or(&self.gates.policy);
        let max_ra = self.gates.settings.max_retry_after;
        // A request that is not idempotent (POST, PATCH) is sent again only when it cannot have
        // reached the server, unless the job makes a repeat harmless or the user says so.
        let unsafe_to_repeat = !job.method.is_idempotent()
            && !self.gates.settings.retry_unsafe
            && !job.headers.contains_key("idempotency-key");
        let held_back = AtomicBool::new(false);
        let r = policy
            .retry(
                |n| {
                    trace.attempts.store(before + n, Ordering::Relaxed);
                    self.attempt(job, (&host, &view), n <= 1, active, trace)
                },
                |e: &AttemptError| {
                    let d = match e {
                        AttemptError::BreakerOpen(_) | AttemptError::NotStarted => Decision::Stop,
                        AttemptError::Transport { cause, .. } => transport_decision(*cause),
                        AttemptError::Status(resp, ra) if retry_statuses.contains(&resp.status) => {
                            match ra {
                                Some(d) => Decision::RetryAfter((*d).min(max_ra)),
                                None => Decision::Retry,
                            }
                        }
                        AttemptError::Status(..) => Decision::Stop,
                    };
                    let reached = match e {
                        AttemptError::Transport { sent, .. } => *sent,
                        AttemptError::Status(..) => true,
                        _ => false,
                    };
                    if unsafe_to_repeat && reached && !matches!(d, Decision::Stop) {
                        held_back.store(true, Ordering::Relaxed);
                        return Decision::Stop;
                    }
                    d
                },
            )
            .await;
        let r = self
            .after_the_outage(job, (&host, &view), r, active, trace)
            .await;
        match r {
            Ok(resp) => Ok(resp),
            Err(e) => {
                let why = match e.reason {
                    GiveUp::Permanent if held_back.load(Ordering::Relaxed) => format!(
                        " (not retried: a {} may have reached the server, and sending it again \
                         could repeat its effect; give the job an Idempotency-Key header or pass \
                         --retry-unsafe)",
                        job.method
                    ),
                    GiveUp::Permanent => String::new(),
                    other => format!(" ({other} after {} attempt(s))", e.attempts),
                };
                let failed = |kind, message, response| {
                    Ended::Failed(Box::new(Failure {
                        kind,
                        message,
                        response,
                    }))
                };
                Err(match e.error {
                    AttemptError::Status(resp, _) => failed(
                        ErrorKind::HttpStatus,
                        format!("HTTP {}{why}", resp.status),
                        Some(resp),
                    ),
                    AttemptError::Transport { cause, message, .. } => {
                        failed(cause.kind(), format!("{message}{why}"), None)
                    }
                    AttemptError::BreakerOpen(m) => failed(ErrorKind::CircuitOpen, m, None),
                    AttemptError::NotStarted => Ended::NotStarted,
                })
            }
        }
    }

    async fn attempt(
        &self,
        job: &Job,
        (host, view): (&Host, &ForHost<'_>),
        first: bool,
        active: &Active,
        trace: &Trace,
    ) -> Result<Response, AttemptError> {
        let key = host;
        // The host's whole state, looked up once for the attempt.
        let state = self
            .gates
            .hosts
            .entry(key)
            .map_err(|e| AttemptError::Transport {
                cause: Cause::Request,
                message: e.to_string(),
                sent: false,
                resend: false,
            })?;
        // After Ctrl-C, jobs that have not sent a request yet do not start: only requests
        // already under way are drained. (Retries of a started job go on, within the drain
        // deadline.)
        // (A redirect's first attempt is not a job's first: it has sent already.)
        if first && self.stop.is_cancelled() && !trace.maybe_sent.load(Ordering::Relaxed) {
            return Err(AttemptError::NotStarted);
        }
        let (_slot, permit) = self
            .pass_gates(
                &*state,
                (host, job.cost, view.breaker()),
                first,
                active,
                trace,
            )
            .await?;
        if !first {
            trace.forgive();
        }
        state.attempted();
        let limit = job.timeout.unwrap_or(view.timeout());
        let started = Instant::now();
        let sending = AtomicBool::new(false);
        trace.head.store(0, Ordering::Relaxed);
        // A body to be saved has its room reserved before the request (and its timeout)
        // starts: jobs wait for memory here, never half-way through a body.
        let mut held = match self.gates.settings.body {
            BodyMode::Save => {
                let room = (self.gates.settings.max_body as usize)
                    .saturating_add(4096)
                    .min(RESULT_BYTES);
                let room = u32::try_from(room).unwrap_or(u32::MAX);
                self.gates
                    .result_bytes
                    .clone()
                    .acquire_many_owned(room)
                    .await
                    .ok()
            }
            _ => None,
        };
        let send = async {
            let mut fresh = false;
            loop {
                let r = self
                    .send(
                        job,
                        (key, view),
                        (started, &sending),
                        &trace.head,
                        &mut held,
                        fresh,
                    )
                    .await;
                match r {
                    // A reused connection closed under an idempotent request, unanswered: it
                    // goes once more on a new connection. Not a retry, but a request that
                    // leaves the process: it passes the rate gates again.
                    Err(AttemptError::Transport { resend: true, .. }) if !fresh => {
                        fresh = true;
                        if !state.try_rate() {
                            state.rate().await;
                        }
                        if let Some(g) = &self.gates.global_rate {
                            g.until_ready().await;
                        }
                        state.attempted();
                    }
                    r => return r,
                }
            }
        };
        let out = match tokio::time::timeout(limit, send).await {
            Ok(r) => r,
            Err(_) => Err(AttemptError::Transport {
                cause: Cause::Timeout,
                message: format!("no complete response within {limit:?}"),
                sent: sending.load(Ordering::Relaxed),
                resend: false,
            }),
        };
        if sending.load(Ordering::Relaxed) {
            trace.maybe_sent.store(true, Ordering::Relaxed);
        }
        // What the job really cost, when the response says so: the difference is settled.
        let spent = match &out {
            Ok(r) => r.cost.unwrap_or(job.cost),
            _ => job.cost,
        };
        let delta =
            i64::try_from(spent).unwrap_or(i64::MAX) - i64::try_from(job.cost).unwrap_or(i64::MAX);
        // Costs are counted only where they are limited or measured.
        if self.gates.costs_counted {
            state.settle_cost(delta, spent);
        }
        if let (Some(g), true) = (&self.gates.global_cost, delta != 0) {
            g.settle(delta);
        }
        let healthy = match &out {
            Ok(_) => true,
            Err(AttemptError::Status(r, _)) => r.status < 500,
            Err(_) => false,
        };
        // A certificate refused says nothing of the host's health: a setting to fix, and
        // counting it would open the breaker and hold every job for --breaker-max-hold-s.
        let tls = matches!(
            &out,
            Err(AttemptError::Transport {
                cause: Cause::Tls,
                ..
            })
        );
        if tls {
            drop(permit);
        } else {
            trace.breaker_outcome(permit, healthy, first && view.retries() > 0);
        }
        if self.gates.adaptive {
            let (signal, headers) = match &out {
                Ok(r) => (Signal::Ok, Some(&r.headers)),
                Err(AttemptError::Status(r, _)) if pushes_back(r.status) => {
                    (Signal::Overloaded, Some(&r.headers))
                }
                Err(AttemptError::Status(r, _)) => (Signal::Neutral, Some(&r.headers)),
                Err(AttemptError::Transport {
                    cause: Cause::Connect,
                    ..
                }) => (Signal::Overloaded, None),
                Err(_) => (Signal::Neutral, None),
            };
            let allowance = headers.and_then(adaptive::allowance);
            if adaptive::pauses(allowance) {
                trace.pauses.fetch_add(1, Ordering::Relaxed);
            }
            state.observe(signal, allowance);
        }
        if let Err(AttemptError::Status(r, Some(ra))) = &out {
            if pushes_back(r.status) {
                let until =
                    tokio::time::Instant::now() + (*ra).min(self.gates.settings.max_retry_after);
                trace.pauses.fetch_add(1, Ordering::Relaxed);
                state.pause_until(until);
            }
        }
        out
    }

    /// A job whose retries (one or more) ran out as its host's breaker opened failed by the
    /// outage the breaker now handles: it is held with the host's other jobs and tried once more when
    /// the host is back (within `--breaker-max-hold-s`), rather than failed with the others
    /// left to succeed.
    async fn after_the_outage(
        &self,
        job: &Job,
        (host, view): (&Host, &ForHost<'_>),
        mut r: Result<Response, RetryError<AttemptError>>,
        active: &Active,
        trace: &Trace,
    ) -> Result<Response, RetryError<AttemptError>> {
        // Only for a job that had retries to run out: with `--retries 0` nothing is sent twice.
        let holds = view.retries() > 0 && view.breaker().is_some_and(|b| !b.fail_fast);
        loop {
            let attempts = match &r {
                Err(e) if holds && e.reason == GiveUp::MaxAttempts => e.attempts,
                _ => return r,
            };
            // Open now? (A permit taken to ask is dropped unsettled: it counts as nothing.)
            let open = match self.gates.hosts.entry(host) {
                Ok(state) => state.admit().is_err(),
                Err(_) => false,
            };
            if !open {
                return r;
            }
            match self.attempt(job, (host, view), false, active, trace).await {
                Ok(resp) => {
                    trace.attempts.store(attempts + 1, Ordering::Relaxed);
                    return Ok(resp);
                }
                // Held as long as it may be: it fails as the breaker says.
                Err(error @ AttemptError::BreakerOpen(_)) => {
                    return Err(RetryError {
                        error,
                        attempts,
                        reason: GiveUp::MaxAttempts,
                    })
                }
                Err(error) => {
                    trace.attempts.store(attempts + 1, Ordering::Relaxed);
                    r = Err(RetryError {
                        error,
                        attempts: attempts + 1,
                        reason: GiveUp::MaxAttempts,
                    });
                }
            }
        }
    }

    /// The host's gates, in order: its slot and rate (passed at once, holding the job's active
    /// slot, when they are open; otherwise waited for without it, so other hosts' jobs run
    /// meanwhile), the global rate, then its breaker. An open breaker holds the job (without
    /// either slot) until it may let a request through, then the gates are passed again; the
    /// job fails `circuit_open` only after `--breaker-max-hold-s` of holding, or at once with
    /// `--breaker-fail-fast`.
    async fn pass_gates(
        &self,
        state: &dyn HostEntry,
        (host, cost, breaker): (&Host, u64, Option<BreakerSettings>),
        first: bool,
        active: &Active,
        trace: &Trace,
    ) -> Result<(Option<Slot>, Option<Permit>), AttemptError> {
        // After Ctrl-C, jobs that have not sent a request yet do not start.
        let stopped = || first && self.stop.is_cancelled();
        loop {
            let mut slot = state.try_slot();
            let rate_taken = slot.is_some() && state.try_rate();
            let cost_taken = rate_taken && state.try_cost(cost);
            if !cost_taken {
                active.release();
                let held = slot.take();
                let wait = async {
                    let s = match held {
                        Some(s) => Some(s),
                        None => state.slot().await,
                    };
                    if !rate_taken {
                        state.rate().await;
                    }
                    state.cost(cost).await;
                    active.reacquire().await;
                    s
                };
                slot = if first {
                    tokio::select! {
                        biased;
                        s = wait => s,
                        _ = self.stop.cancelled() => return Err(AttemptError::NotStarted),
                    }
                } else {
                    wait.await
                };
                if stopped() {
                    return Err(AttemptError::NotStarted);
                }
            }
            if let Some(g) = &self.gates.global_rate {
                g.until_ready().await;
            }
            if let Some(g) = &self.gates.global_cost {
                g.until_ready_n(cost).await;
            }
            let open = match state.admit() {
                Ok(permit) => return Ok((slot, permit)),
                Err(open) => open,
            };
            let refused = |why: String| {
                AttemptError::BreakerOpen(format!("circuit breaker for {host} is open{why}"))
            };
            // The host's own breaker settings (its `[hosts]` rule's, or the run's).
            let Some(b) = breaker else {
                return Err(refused(format!(": {open}")));
            };
            if b.fail_fast {
                return Err(refused(format!(": {open} (--breaker-fail-fast)")));
            }
            let since = *trace
                .held_since
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(tokio::time::Instant::now);
            let left = b.max_hold.saturating_sub(since.elapsed());
            if left.is_zero() {
                return Err(refused(format!(
                    "; the job waited {:?} for it (--breaker-max-hold-s)",
                    b.max_hold
                )));
            }
            // Held: neither the host's slot nor an active slot is kept meanwhile.
            drop(slot);
            active.release();
            let hold = async {
                let _ = tokio::time::timeout(left, state.breaker_wait(open)).await;
                active.reacquire().await;
            };
            tokio::select! {
                biased;
                () = hold => {}
                () = self.stop.cancelled() => {
                    if first {
                        return Err(AttemptError::NotStarted);
                    }
                    return Err(refused(": the run stopped while the job waited for it".into()));
                }
            }
        }
    }

    async fn send(
        &self,
        job: &Job,
        (host, view): (&Host, &ForHost<'_>),
        // When the attempt started, and the flag set once its request starts to go out.
        (started, sending): (Instant, &AtomicBool),
        head: &AtomicU16,
        held: &mut Option<OwnedSemaphorePermit>,
        fresh: bool,
    ) -> Result<Response, AttemptError> {
        // The host's `[hosts]` headers, where the job (with `--header`) sets none of that name.
        let mut headers = match view.headers() {
            None => Cow::Borrowed(&job.headers),
            Some(extra) => {
                let mut h = job.headers.clone();
                for name in extra.keys() {
                    if !h.contains_key(name) {
                        for v in extra.get_all(name) {
                            h.append(name.clone(), v.clone());
                        }
                    }
                }
                Cow::Owned(h)
            }
        };
        for (pattern, extra) in &self.gates.settings.scoped_headers {
            if pattern.matches(host) {
                for name in extra.keys() {
                    if !headers.contains_key(name) {
                        for v in extra.get_all(name) {
                            headers.to_mut().append(name.clone(), v.clone());
                        }
                    }
                }
            }
        }
        if self.gates.settings.compressed && !headers.contains_key(http::header::ACCEPT_ENCODING) {
            headers.to_mut().insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static(crate::http::decode::ACCEPT),
            );
        }
        let req = Request {
            method: &job.method,
            url: &job.url,
            headers: &headers,
            body: job.body.as_ref(),
            connect_timeout: view.index.map(|_| view.connect_timeout()),
        };
        // An `auto` rate reads the servers' RateLimit headers, `--compressed` Content-Encoding.
        let want_headers = self.gates.settings.save_headers
            || self.gates.adaptive
            || self.gates.settings.compressed;
        let Exchange {
            status,
            headers,
            mut body,
        } = self
            .clients
            .send(req, host, want_headers, sending, fresh)
            .await
            .map_err(AttemptError::from)?;
        head.store(status, Ordering::Relaxed);
        let mut body_bytes = 0u64;
        let pointer = self.gates.settings.cost_from_response.as_deref();
        // The body is kept to read its cost from, even when it is not saved (up to --max-body).
        let mut saved =
            (self.gates.settings.body == BodyMode::Save || pointer.is_some()).then(Vec::new);
        let mut truncated = false;
        let mut complete = false;
        // `--no-body` reads nothing over reqwest; over a direct connection it drains the body
        // (up to the cap, uncounted) so the connection can serve the next request.
        let read = self.gates.settings.body != BodyMode::Skip || body.drains();
        let body_error = |e: DecodeError| AttemptError::Transport {
            cause: Cause::Body,
            message: e.to_string(),
            sent: true,
            resend: false,
        };
        // `--compressed`: the body is decoded as it comes, the cap applies to what it decodes to.
        let mut decoder = match headers.get(http::header::CONTENT_ENCODING) {
            Some(v) if self.gates.settings.compressed && read => {
                Decoder::for_encoding(&String::from_utf8_lossy(v.as_bytes())).map_err(body_error)?
            }
            _ => None,
        };
        let mut file = match &self.gates.settings.save_body_dir {
            Some(dir) if self.gates.settings.body != BodyMode::Skip => {
                Some(BodyFile::create(dir, job).await?)
            }
            _ => None,
        };
        if read {
            let count = self.gates.settings.body != BodyMode::Skip;
            loop {
                let chunk = body.chunk().await.map_err(AttemptError::from)?;
                let end = chunk.is_none();
                let room = self.gates.settings.max_body - body_bytes;
                let (piece, cut) = within(
                    decoder.as_mut(),
                    chunk.as_deref().unwrap_or_default(),
                    room,
                    end,
                )
                .map_err(body_error)?;
                body_bytes += piece.len() as u64;
                if let Some(b) = saved.as_mut() {
                    b.extend_from_slice(&piece);
                }
                if let Some(f) = file.as_mut() {
                    f.write(&piece).await?;
                }
                if cut {
                    truncated = count; // the rest is never read; the connection is dropped
                    break;
                }
                if end {
                    complete = true;
                    break;
                }
            }
            if !count {
                body_bytes = 0;
            }
        }
        let body_file = match file {
            Some(f) => Some(f.close().await?),
            None => None,
        };
        body.finish(complete);
        let accepted = self.gates.settings.accept.contains(status);
        let cost = match (pointer, &saved) {
            (Some(p), Some(b)) if accepted => {
                serde_json::from_slice::<Value>(b).ok().and_then(|v| {
                    v.pointer(p)
                        .and_then(|c| c.as_u64().or(c.as_f64().map(|f| f.max(0.0).round() as u64)))
                })
            }
            _ => None,
        };
        if self.gates.settings.body != BodyMode::Save {
            saved = None;
        }
        let response = Response {
            status,
            headers,
            body_bytes,
            body: saved,
            body_file,
            truncated,
            latency: started.elapsed(),
            held: held.take(),
            cost,
        };
        if accepted {
            Ok(response)
        } else {
            let ra = corral::classify::retry_after(&response.headers);
            Err(AttemptError::Status(response, ra))
        }
    }

    /// A result line in the run's format.
    fn serialise(&self, line: &ResultLine<'_>) -> String {
        match self.gates.settings.results_format {
            ResultsFormat::Jsonl => to_json(line),
            ResultsFormat::Csv => to_csv(line),
        }
    }

    fn invalid(&self, inv: &Invalid) -> Outcome {
        let line = ResultLine {
            line: inv.line,
            id: &inv.id,
            method: inv.method.as_deref().unwrap_or(""),
            url: Cow::Borrowed(inv.url.as_deref().unwrap_or_default()),
            ok: false,
            status: None,
            attempts: 0,
            latency_ms: None,
            elapsed_ms: 0.0,
            started_at: Rfc3339(SystemTime::now()),
            redirects: 0,
            final_url: None,
            opened_breaker: 0,
            paused_host: 0,
            error: Some(ErrorOut::new(ErrorKind::InvalidInput, &inv.message, false)),
            body_bytes: None,
            truncated: false,
            headers: None,
            body: None,
            body_base64: None,
            body_file: None,
            meta: inv.meta.as_ref(),
        };
        Outcome {
            ok: false,
            status: None,
            error_kind: Some(ErrorKind::InvalidInput),
            attempts: 0,
            latency: None,
            json: self.serialise(&line),
            held: None,
        }
    }

    /// `(started_at, elapsed)`: when the job started, by the wall clock, and how long it took.
    fn finish(
        &self,
        job: &Job,
        mut result: Result<Response, Failure>,
        trace: &Trace,
        (started_at, elapsed): (SystemTime, Duration),
    ) -> Outcome {
        let attempts = trace.attempts.load(Ordering::Relaxed);
        let (held, saved) = match &mut result {
            Ok(r)
            | Err(Failure {
                response: Some(r), ..
            }) => (r.held.take(), r.body.take()),
            Err(_) => (None, None),
        };
        // Moved, not copied: a saved body can be megabytes. Bytes that are not UTF-8 (an
        // image, a protobuf) go as base64: a lossy conversion would corrupt them.
        let (saved, saved_base64) = match saved.map(String::from_utf8) {
            None => (None, None),
            Some(Ok(text)) => (Some(text), None),
            Some(Err(e)) => {
                use base64::Engine as _;
                (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
                )
            }
        };
        let body_file = match &result {
            Ok(r)
            | Err(Failure {
                response: Some(r), ..
            }) => r.body_file.as_ref().map(|p| p.display().to_string()),
            Err(_) => None,
        };
        // A response head that arrived before a timeout or a body error: its status is kept.
        let mut status = None;
        let (resp, error) = match result {
            Ok(r) => (Some(r), None),
            Err(Failure {
                kind,
                message,
                response: r,
            }) => {
                // With no response, say whether the server may still have seen the request.
                let maybe_sent = trace.maybe_sent.load(Ordering::Relaxed) && r.is_none();
                status = Some(trace.head.load(Ordering::Relaxed)).filter(|s| *s != 0);
                (r, Some(ErrorOut::new(kind, &message, maybe_sent)))
            }
        };
        let ok = error.is_none();
        let error_kind = error.as_ref().map(|e| e.kind);
        let headers = resp
            .as_ref()
            .filter(|_| self.gates.settings.save_headers)
            .map(|r| {
                r.headers
                    .iter()
                    .map(|(k, v)| {
                        let v = redact::header_value(k.as_str(), v.as_bytes());
                        (k.as_str().to_string(), v)
                    })
                    .collect()
            });
        let line = ResultLine {
            line: job.line,
            id: &job.id,
            method: job.method.as_str(),
            url: redact::url(&job.url),
            ok,
            status: resp.as_ref().map(|r| r.status).or(status),
            attempts,
            latency_ms: resp.as_ref().map(|r| r.latency.as_secs_f64() * 1000.0),
            elapsed_ms: elapsed.as_secs_f64() * 1000.0,
            started_at: Rfc3339(started_at),
            redirects: trace.redirects.load(Ordering::Relaxed),
            final_url: trace
                .final_url
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|u| redact::url(u).into_owned()),
            opened_breaker: trace.openings.load(Ordering::Relaxed),
            paused_host: trace.pauses.load(Ordering::Relaxed),
            error,
            body_bytes: resp
                .as_ref()
                .filter(|_| self.gates.settings.body != BodyMode::Skip)
                .map(|r| r.body_bytes),
            truncated: resp.as_ref().is_some_and(|r| r.truncated),
            headers,
            body: saved,
            body_base64: saved_base64,
            body_file,
            meta: job.meta.as_ref(),
        };
        Outcome {
            ok,
            status: line.status,
            error_kind,
            attempts,
            latency: resp.as_ref().map(|r| r.latency),
            json: self.serialise(&line),
            held,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `started_at` as the cached seconds plus milliseconds reads exactly as humantime writes
    /// the whole time, across second boundaries and back in time.
    #[test]
    fn started_at_is_rfc3339_with_milliseconds() {
        let base = std::time::UNIX_EPOCH + Duration::from_secs(1_795_654_923);
        for ms in [
            0u64, 1, 9, 10, 99, 100, 456, 999, 1000, 1001, 86_399_999, 3, 61_000,
        ] {
            let t = base + Duration::from_millis(ms);
            let json = serde_json::to_string(&Rfc3339(t)).unwrap();
            assert_eq!(
                json,
                format!("\"{}\"", humantime::format_rfc3339_millis(t)),
                "{ms}"
            );
        }
        let json = serde_json::to_string(&Rfc3339(base)).unwrap();
        assert_eq!(json, "\"2026-11-26T01:02:03.000Z\"");
    }

    /// A job whose host has no free slot waits without its active slot, so that other hosts'
    /// jobs can run meanwhile; once the host frees up, it takes a slot again and goes on.
    #[tokio::test]
    async fn a_job_waiting_for_its_host_gives_its_active_slot_back() {
        let mut s = test_settings(1);
        s.per_host_concurrency = 1;
        let gates = Gates::new(s).unwrap();
        let engine = Engine::new(gates.clone(), 1, CancellationToken::new()).unwrap();
        let active = engine.active_slots();
        // The host's only slot is taken; the job holds the engine's only active slot.
        let host = gates.hosts.entry(&Host::from("127.0.0.1:1")).unwrap();
        let busy = host.try_slot().unwrap();
        let mut slot = active.clone().try_acquire_owned().ok();
        assert_eq!(active.available_permits(), 0);
        // Port 1 refuses at once: the job ends as soon as it may send.
        let job = Parsed::get(1, "http://127.0.0.1:1/x");
        let outcome = {
            let run = engine.process(job, &mut slot);
            tokio::pin!(run);
            assert!(
                futures::poll!(run.as_mut()).is_pending(),
                "it waits for its host"
            );
            assert_eq!(
                active.available_permits(),
                1,
                "and gave its active slot back"
            );
            drop(busy);
            run.await.expect("an outcome")
        };
        assert_eq!(
            outcome.error_kind,
            Some(ErrorKind::Connect),
            "{}",
            outcome.json
        );
        assert!(
            slot.is_some(),
            "the slot is handed back to the caller for its next job"
        );
        assert_eq!(active.available_permits(), 0);
    }

    /// A Retry-After pause holds back its own host's jobs, and no other host's.
    #[tokio::test]
    async fn a_retry_after_pause_holds_back_its_host_only() {
        let gates = Gates::new(test_settings(4)).unwrap();
        let engine = Engine::new(gates.clone(), 4, CancellationToken::new()).unwrap();
        let paused = gates.hosts.entry(&Host::from("127.0.0.1:1")).unwrap();
        paused.pause_until(tokio::time::Instant::now() + Duration::from_secs(3600));
        let mut slots: Vec<_> = (0..2)
            .map(|_| engine.active_slots().try_acquire_owned().ok())
            .collect();
        let (sa, sb) = slots.split_at_mut(1);
        let a = engine.process(Parsed::get(1, "http://127.0.0.1:1/a"), &mut sa[0]);
        tokio::pin!(a);
        assert!(
            futures::poll!(a.as_mut()).is_pending(),
            "the paused host's job waits"
        );
        // Another host (port 1 of 127.0.0.2 refuses at once): its job goes out meanwhile.
        let b = engine
            .process(Parsed::get(2, "http://127.0.0.2:1/b"), &mut sb[0])
            .await
            .expect("an outcome");
        assert_eq!(b.error_kind, Some(ErrorKind::Connect), "{}", b.json);
        assert!(futures::poll!(a.as_mut()).is_pending(), "and still waits");
        let stats = gates.host_stats();
        assert_eq!(
            stats["127.0.0.1:1"].attempts, 0,
            "nothing was sent to the paused host"
        );
        assert_eq!(stats["127.0.0.1:1"].paused_by_retry_after, 1);
        assert_eq!(stats["127.0.0.2:1"].attempts, 1);
    }

    /// A host table that writes down each call the engine makes, with gates the test opens.
    struct Recorder {
        calls: Arc<Mutex<Vec<&'static str>>>,
        /// The host's slots (one); taken by the test to make the host busy.
        slots: Arc<Semaphore>,
        /// Rate tokens: `try_rate` is open while `rate_open`; `rate` waits for a permit here.
        rate_open: AtomicBool,
        tokens: Arc<Semaphore>,
        breaker_open: AtomicBool,
        /// `admit` opens the breaker when it is called for this time (0: never).
        open_on_admit: std::sync::atomic::AtomicUsize,
        admits: std::sync::atomic::AtomicUsize,
        /// Told when a job is held by the breaker.
        held: tokio::sync::Notify,
        /// Woken by the test when the breaker may let a request through again.
        breaker_changed: tokio::sync::Notify,
    }

    impl Recorder {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                calls: Arc::default(),
                slots: Arc::new(Semaphore::new(1)),
                rate_open: AtomicBool::new(true),
                tokens: Arc::new(Semaphore::new(0)),
                breaker_open: AtomicBool::new(false),
                open_on_admit: Default::default(),
                admits: Default::default(),
                held: tokio::sync::Notify::new(),
                breaker_changed: tokio::sync::Notify::new(),
            })
        }
        fn log(&self, call: &'static str) {
            self.calls.lock().unwrap().push(call);
        }
        fn calls(&self) -> Vec<&'static str> {
            self.calls.lock().unwrap().clone()
        }
    }

    struct Shared(Arc<Recorder>);

    impl HostTable for Shared {
        fn entry(&self, _: &Host) -> Result<Arc<dyn crate::hosts::HostEntry>, ConfigError> {
            Ok(self.0.clone())
        }
        fn stats(&self) -> HashMap<String, HostStat> {
            HashMap::new()
        }
        fn breaker_openings(&self) -> u64 {
            0
        }
    }

    impl crate::hosts::HostEntry for Recorder {
        fn try_slot(&self) -> Option<crate::hosts::Slot> {
            self.log("try_slot");
            self.slots.clone().try_acquire_owned().ok()
        }
        fn slot(&self) -> futures::future::BoxFuture<'_, Option<crate::hosts::Slot>> {
            self.log("slot");
            Box::pin(async { self.slots.clone().acquire_owned().await.ok() })
        }
        fn try_cost(&self, _: u64) -> bool {
            true
        }
        fn cost(&self, _: u64) -> futures::future::BoxFuture<'_, ()> {
            Box::pin(async {})
        }
        fn settle_cost(&self, _: i64, _: u64) {}
        fn observe(&self, _: Signal, _: Option<(u64, Duration)>) {}
        fn try_rate(&self) -> bool {
            self.log("try_rate");
            self.rate_open.load(Ordering::Relaxed)
        }
        fn rate(&self) -> futures::future::BoxFuture<'_, ()> {
            self.log("rate");
            Box::pin(async {
                self.tokens.acquire().await.unwrap().forget();
            })
        }
        fn admit(&self) -> Result<Option<crate::hosts::Permit>, crate::hosts::BreakerOpen> {
            self.log("admit");
            let n = self.admits.fetch_add(1, Ordering::Relaxed) + 1;
            if n == self.open_on_admit.load(Ordering::Relaxed) {
                self.breaker_open.store(true, Ordering::Relaxed);
            }
            if self.breaker_open.load(Ordering::Relaxed) {
                Err(crate::hosts::BreakerOpen { retry_at: None })
            } else {
                Ok(None)
            }
        }
        fn breaker_wait(&self, _: crate::hosts::BreakerOpen) -> futures::future::BoxFuture<'_, ()> {
            self.log("breaker_wait");
            self.held.notify_one();
            Box::pin(self.breaker_changed.notified())
        }
        fn attempted(&self) {
            self.log("attempted");
        }
        fn pause_until(&self, _: tokio::time::Instant) {
            self.log("pause_until");
        }
    }

    fn recorded(concurrency: usize) -> (Arc<Recorder>, Engine) {
        recorded_with(test_settings(concurrency))
    }

    fn recorded_with(settings: Settings) -> (Arc<Recorder>, Engine) {
        let rec = Recorder::new();
        let concurrency = settings.concurrency;
        let gates = Gates::with_hosts(settings, Arc::new(Shared(rec.clone()))).unwrap();
        let engine = Engine::new(gates, concurrency, CancellationToken::new()).unwrap();
        (rec, engine)
    }

    fn with_breaker(fail_fast: bool) -> Settings {
        let mut s = test_settings(1);
        s.breaker = Some(crate::settings::BreakerSettings {
            fail_fast,
            ..Default::default()
        });
        s
    }

    /// Port 1 refuses at once: a job there ends as soon as it is sent.
    fn refused(line: u64) -> Parsed {
        Parsed::get(line, "http://127.0.0.1:1/x")
    }

    #[tokio::test]
    async fn an_open_host_is_passed_slot_then_rate_then_breaker_then_sent() {
        let (rec, engine) = recorded(1);
        let mut slot = engine.active_slots().try_acquire_owned().ok();
        let out = tokio::select! {
            out = engine.process(refused(1), &mut slot) => out.unwrap(),
            () = rec.held.notified() => panic!("held, to be sent again with no retries allowed"),
        };
        assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{}", out.json);
        assert_eq!(rec.calls(), ["try_slot", "try_rate", "admit", "attempted"]);
    }

    #[tokio::test]
    async fn a_spent_rate_is_waited_for_without_the_active_slot_after_the_host_slot() {
        let (rec, engine) = recorded(1);
        rec.rate_open.store(false, Ordering::Relaxed);
        let active = engine.active_slots();
        let mut slot = active.clone().try_acquire_owned().ok();
        let run = engine.process(refused(1), &mut slot);
        tokio::pin!(run);
        assert!(futures::poll!(run.as_mut()).is_pending());
        assert_eq!(rec.calls(), ["try_slot", "try_rate", "rate"]);
        assert_eq!(
            active.available_permits(),
            1,
            "the active slot is given back"
        );
        assert_eq!(
            rec.slots.available_permits(),
            0,
            "the host slot taken is kept while the rate is waited for"
        );
        rec.tokens.add_permits(1);
        let out = run.await.unwrap();
        assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{}", out.json);
        assert_eq!(
            rec.calls(),
            ["try_slot", "try_rate", "rate", "admit", "attempted"]
        );
        assert_eq!(rec.slots.available_permits(), 1, "the host slot is back");
    }

    #[tokio::test]
    async fn a_busy_host_is_waited_for_slot_first_then_rate() {
        let (rec, engine) = recorded(1);
        let busy = rec.slots.clone().try_acquire_owned().unwrap();
        let mut slot = engine.active_slots().try_acquire_owned().ok();
        let run = engine.process(refused(1), &mut slot);
        tokio::pin!(run);
        assert!(futures::poll!(run.as_mut()).is_pending());
        // No rate token is taken while the job cannot send anyway.
        assert_eq!(rec.calls(), ["try_slot", "slot"]);
        drop(busy);
        rec.tokens.add_permits(1);
        run.await.unwrap();
        assert_eq!(
            rec.calls(),
            ["try_slot", "slot", "rate", "admit", "attempted"]
        );
    }

    #[tokio::test]
    async fn with_fail_fast_an_open_breaker_fails_the_job_before_anything_is_sent() {
        let (rec, engine) = recorded_with(with_breaker(true));
        rec.breaker_open.store(true, Ordering::Relaxed);
        let mut slot = engine.active_slots().try_acquire_owned().ok();
        let out = engine.process(refused(1), &mut slot).await.unwrap();
        assert_eq!(out.error_kind, Some(ErrorKind::CircuitOpen), "{}", out.json);
        assert!(out.json.contains("--breaker-fail-fast"), "{}", out.json);
        assert_eq!(rec.calls(), ["try_slot", "try_rate", "admit"]);
    }

    #[tokio::test]
    async fn an_open_breaker_holds_the_job_without_its_slots_until_it_may_pass() {
        let (rec, engine) = recorded_with(with_breaker(false));
        rec.breaker_open.store(true, Ordering::Relaxed);
        rec.tokens.add_permits(1);
        let active = engine.active_slots();
        let mut slot = active.clone().try_acquire_owned().ok();
        let run = engine.process(refused(1), &mut slot);
        tokio::pin!(run);
        assert!(futures::poll!(run.as_mut()).is_pending(), "held");
        assert_eq!(
            rec.calls(),
            ["try_slot", "try_rate", "admit", "breaker_wait"]
        );
        assert_eq!(
            active.available_permits(),
            1,
            "the active slot is given back"
        );
        assert_eq!(rec.slots.available_permits(), 1, "and the host's slot");
        // The breaker lets requests through again: the job passes the gates anew and goes.
        rec.breaker_open.store(false, Ordering::Relaxed);
        rec.breaker_changed.notify_waiters();
        let out = run.await.unwrap();
        assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{}", out.json);
        assert_eq!(
            rec.calls(),
            [
                "try_slot",
                "try_rate",
                "admit",
                "breaker_wait",
                "try_slot",
                "try_rate",
                "admit",
                "attempted"
            ]
        );
    }

    #[tokio::test]
    async fn with_no_retries_a_job_is_not_sent_again_after_the_outage() {
        let (rec, engine) = recorded_with(with_breaker(false));
        // The breaker opens with the job's only failure.
        rec.open_on_admit.store(2, Ordering::Relaxed);
        let mut slot = engine.active_slots().try_acquire_owned().ok();
        let out = tokio::select! {
            out = engine.process(refused(1), &mut slot) => out.unwrap(),
            () = rec.held.notified() => panic!("held, to be sent again with no retries allowed"),
        };
        assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{}", out.json);
        assert_eq!(rec.calls(), ["try_slot", "try_rate", "admit", "attempted"]);
    }

    #[tokio::test]
    async fn a_job_whose_retries_ran_out_as_the_breaker_opened_goes_once_more_after() {
        let mut settings = with_breaker(false);
        settings.retries = 1;
        let (rec, engine) = recorded_with(settings);
        rec.tokens.add_permits(1);
        // The breaker opens with the job's last failure: the third time it is asked.
        rec.open_on_admit.store(3, Ordering::Relaxed);
        let mut slot = engine.active_slots().try_acquire_owned().ok();
        let run = engine.process(refused(1), &mut slot);
        tokio::pin!(run);
        // Until it is held (its first request is a real connect to a closed port).
        tokio::select! {
            () = rec.held.notified() => {}
            _ = run.as_mut() => panic!("it ended without being held"),
        }
        assert_eq!(
            rec.calls(),
            [
                "try_slot",
                "try_rate",
                "admit",
                "attempted",
                "try_slot",
                "try_rate",
                "admit",
                "attempted",
                "admit",
                "try_slot",
                "try_rate",
                "admit",
                "breaker_wait"
            ]
        );
        rec.breaker_open.store(false, Ordering::Relaxed);
        rec.breaker_changed.notify_waiters();
        let out = run.await.unwrap();
        assert_eq!(out.error_kind, Some(ErrorKind::Connect), "{}", out.json);
        assert_eq!(out.attempts, 3, "one more attempt, once the host was back");
        assert_eq!(rec.calls().iter().filter(|c| **c == "attempted").count(), 3);
    }

    /// A host whose `[hosts]` rule gives it a breaker of its own (here in a run without
    /// breakers) is held by that breaker's rules, not the run's.
    #[tokio::test]
    async fn a_hosts_own_breaker_settings_decide_its_holding() {
        let mut s = test_settings(1);
        s.breaker = None;
        s.hosts.push(crate::settings::HostRule {
            pattern: "127.0.0.1".parse().unwrap(),
            settings: crate::settings::HostSettings {
                breaker: Some(crate::settings::BreakerSettings::default()),
                ..Default::default()
            },
        });
        let (rec, engine) = recorded_with(s);
        rec.breaker_open.store(true, Ordering::Relaxed);
        rec.tokens.add_permits(1);
        let mut slot = engine.active_slots().try_acquire_owned().ok();
        let run = engine.process(refused(1), &mut slot);
        tokio::pin!(run);
        assert!(
            futures::poll!(run.as_mut()).is_pending(),
            "held, as its own breaker says"
        );
        assert_eq!(rec.calls().last(), Some(&"breaker_wait"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_held_longer_than_the_max_hold_fails_circuit_open() {
        let (rec, engine) = recorded_with(with_breaker(false));
        rec.breaker_open.store(true, Ordering::Relaxed);
        rec.tokens.add_permits(10);
        let mut slot = engine.active_slots().try_acquire_owned().ok();
        let started = tokio::time::Instant::now();
        let out = engine.process(refused(1), &mut slot).await.unwrap();
        assert_eq!(out.error_kind, Some(ErrorKind::CircuitOpen), "{}", out.json);
        assert!(out.json.contains("--breaker-max-hold-s"), "{}", out.json);
        assert_eq!(
            started.elapsed(),
            crate::settings::BreakerSettings::default().max_hold
        );
        assert!(!rec.calls().contains(&"attempted"), "nothing was sent");
    }

    #[tokio::test]
    async fn after_a_stop_a_job_waiting_for_its_host_ends_not_started() {
        let rec = Recorder::new();
        let stop = CancellationToken::new();
        let gates = Gates::with_hosts(test_settings(1), Arc::new(Shared(rec.clone()))).unwrap();
        let engine = Engine::new(gates, 1, stop.clone()).unwrap();
        rec.rate_open.store(false, Ordering::Relaxed);
        let mut slot = engine.active_slots().try_acquire_owned().ok();
        let run = engine.process(refused(1), &mut slot);
        tokio::pin!(run);
        assert!(futures::poll!(run.as_mut()).is_pending());
        stop.cancel();
        assert!(run.await.is_none(), "no result: a resume runs it");
        assert!(!rec.calls().contains(&"attempted"), "nothing was sent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_counts_a_first_failure_only_when_no_retry_makes_it_good() {
        let b = corral::breaker::CircuitBreaker::builder()
            .min_calls(100)
            .build()
            .unwrap();
        let counts = |b: &corral::breaker::CircuitBreaker| {
            let s = b.stats();
            (s.window_ok, s.window_failed)
        };
        // Fails once, then succeeds on its retry: one success, no failure.
        let t = Trace::default();
        t.breaker_outcome(b.try_acquire().ok(), false, true);
        assert_eq!(counts(&b), (0, 0), "not counted while a retry may follow");
        t.forgive();
        t.breaker_outcome(b.try_acquire().ok(), true, false);
        t.settle();
        assert_eq!(counts(&b), (1, 0));
        // Fails, and its retry fails: the retry's failure counts at once.
        let t = Trace::default();
        t.breaker_outcome(b.try_acquire().ok(), false, true);
        t.forgive();
        t.breaker_outcome(b.try_acquire().ok(), false, false);
        assert_eq!(counts(&b), (1, 1));
        t.settle();
        assert_eq!(counts(&b), (1, 1));
        // Fails with no retry after it: counted when the job ends.
        let t = Trace::default();
        t.breaker_outcome(b.try_acquire().ok(), false, true);
        t.settle();
        assert_eq!(counts(&b), (1, 2));
        // Fails where no retry can follow (none allowed): counted at once.
        let t = Trace::default();
        t.breaker_outcome(b.try_acquire().ok(), false, false);
        assert_eq!(counts(&b), (1, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_counts_at_once_even_on_a_first_attempt() {
        let b = corral::breaker::CircuitBreaker::builder()
            .min_calls(1)
            .failure_rate(0.5)
            .cool_down(Duration::from_secs(1))
            .build()
            .unwrap();
        b.try_acquire().unwrap().failure();
        assert_eq!(b.state(), corral::breaker::State::Open);
        tokio::time::advance(Duration::from_secs(1)).await;
        let t = Trace::default();
        t.breaker_outcome(b.try_acquire().ok(), false, true);
        assert_eq!(b.state(), corral::breaker::State::Open, "the probe failed");
        assert_eq!(b.stats().openings, 2);
    }

    #[test]
    fn settings_that_cannot_work_are_refused_naming_their_option() {
        type Spoil = fn(&mut Settings);
        let cases: [(Spoil, &str); 5] = [
            (|s| s.concurrency = 0, "--concurrency: must be at least 1"),
            (
                |s| s.per_host_concurrency = 0,
                "--per-host-concurrency: must be at least 1",
            ),
            (
                |s| s.timeout = Duration::ZERO,
                "--timeout-ms: must be greater than 0",
            ),
            (
                |s| s.total_timeout = Some(Duration::ZERO),
                "--total-timeout-ms: must be greater than 0",
            ),
            (|s| s.max_body = 0, "--max-body: must be at least 1 byte"),
        ];
        for (spoil, want) in cases {
            let mut s = Settings::default();
            spoil(&mut s);
            let e = Gates::new(s).err().expect("refused").to_string();
            assert!(e.starts_with(want), "{e}");
        }
        assert!(Gates::new(Settings::default()).is_ok());
    }
}
