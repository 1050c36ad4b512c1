//! The options of `corral run`, from the command line and the config file, merged and
//! checked into a [`Plan`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use corral::limit::Rate;
use http::header::HeaderMap;
use serde::{Deserialize, Serialize};

use corral_engine::error::{ConfigError, ErrorKind};
use corral_engine::redact;
use corral_engine::settings::{
    BodyMode, BreakerSettings, HostRule, HostSettings, ProxySettings, RateSetting, Settings,
    TlsSettings,
};
use corral_engine::sink::RetryFailed;

pub(crate) const RUN_EXAMPLES: &str = "\
Examples:
  corral run jobs.jsonl -o results.jsonl
  corral run jobs.jsonl -o results.jsonl --resume          # after a crash or Ctrl-C
  corral run urls.txt --urls --per-host-rate 50/s --per-host-concurrency 4 -o out.jsonl
  cat jobs.jsonl | corral run - --rate 3000/min --retries 5 --header 'Authorization: Bearer $T'
  corral run jobs.jsonl --config corral.toml -o out.jsonl --summary-json summary.json
  corral run jobs.jsonl -o out.jsonl --report report.html   # then open report.html

A job line: {\"id\"?, \"method\"?, \"url\", \"headers\"?, \"body\"? | \"json\"?, \"timeout_ms\"?, \"cost\"?, \"meta\"?}
A result line: {\"line\", \"id\", \"method\", \"url\", \"ok\", \"status\", \"attempts\", \"latency_ms\",
  \"elapsed_ms\", \"started_at\", \"redirects\"?, \"final_url\"?, \"opened_breaker\"?, \"paused_host\"?,
  \"error\"?: {\"kind\", \"message\"},
  \"body_bytes\"?, \"truncated\"?, \"headers\"?, \"body\"?, \"meta\"?}
Secrets (Authorization, Cookie, *token*, *key* headers; key/token query values) never reach
results or logs. Resume identifies jobs by input line number: resume with the same jobs file.";

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The jobs file (JSONL, or one URL per line with --urls); `-` reads standard input.
    pub(crate) jobs: PathBuf,
    /// Results file (JSONL). Without it, results go to standard output.
    #[arg(short, long)]
    pub(crate) output: Option<PathBuf>,
    /// The input is one URL per line (GET), `#` starts a comment line.
    #[arg(long, conflicts_with = "csv")]
    pub(crate) urls: bool,
    /// The input is CSV: the first line names the columns, each further line is one job, its
    /// fields filled into --template.
    #[arg(long, requires = "template")]
    pub(crate) csv: bool,
    /// With --csv: a JSON job with {column} placeholders ({{ and }} for braces), or @FILE, e.g.
    /// '{"url": "https://api.example.com/users/{id}", "json": {"name": "{name}"}}'.
    #[arg(long, value_name = "JSON", requires = "csv")]
    pub(crate) template: Option<String>,
    /// The results file exists: skip the jobs it already holds, repair a torn last line, run the rest.
    #[arg(long, conflicts_with = "overwrite")]
    pub(crate) resume: bool,
    /// The results file exists: start over, discarding it.
    #[arg(long)]
    pub(crate) overwrite: bool,
    /// With --resume: lines of the results file that are not results of this jobs file (torn,
    /// foreign, or naming a line the input does not have) are moved to RESULTS.rejected and
    /// their jobs run again, instead of refusing to resume.
    #[arg(long, requires = "resume")]
    pub(crate) repair: bool,
    /// With --resume: run again the jobs whose result failed, or only those that failed with
    /// these kinds (e.g. timeout,http_status). Their old results move to RESULTS.retried; the
    /// file keeps one line per job, the newest. `interrupted` (a POST/PATCH a killed run may
    /// have sent) is sent again only when named.
    #[arg(
        long,
        requires = "resume",
        num_args = 0..=1,
        value_delimiter = ',',
        value_name = "KINDS"
    )]
    pub(crate) retry_failed: Option<Vec<String>>,
    /// A TOML file with any of the options below (names with `_`); command-line options win.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// How result lines are written: jsonl, or csv (one row per job after a header row: the
    /// JSONL keys whose values are scalars; --resume and `corral report` read JSONL only)
    #[arg(long, value_enum, default_value = "jsonl", conflicts_with = "resume")]
    pub(crate) format: ResultsFormatArg,
    /// Write the final summary as JSON to this file.
    #[arg(long)]
    pub(crate) summary_json: Option<PathBuf>,
    /// At the end, write an HTML report of the results file (needs -o) to this file, as
    /// `corral report RESULTS --html FILE` would.
    #[arg(long, value_name = "FILE", requires = "output")]
    pub(crate) report: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    /// Run on a NATS JetStream queue instead of here: submit the jobs to it and collect the
    /// results into -o as `corral worker`s elsewhere run them (default: $CORRAL_QUEUE)
    #[arg(long, value_name = "nats://HOST:PORT/RUN")]
    pub(crate) queue: Option<String>,
    #[command(flatten)]
    pub(crate) nats: crate::fleet::NatsArgs,
    /// With --queue: how long a worker may hold a job unacknowledged before another worker
    /// gets it, seconds
    #[arg(long, value_name = "SECONDS", default_value_t = corral_queue::submit::DEFAULT_ACK_WAIT.as_secs())]
    pub(crate) ack_wait_s: u64,
    /// With --queue: deliveries of a job at most (its workers died); then its result is a
    /// failure of kind max_deliveries
    #[arg(long, value_name = "N", default_value_t = corral_queue::submit::DEFAULT_MAX_DELIVERIES)]
    pub(crate) max_deliveries: i64,
    /// With --queue: keep the run's streams and board on this many servers of a JetStream
    /// cluster (1-5)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) replicas: u8,
    /// Serve Prometheus text metrics at this address, e.g. 127.0.0.1:9464: jobs done, ok,
    /// failed, in flight, retries, per host requests, pauses and breakers (with --queue: jobs
    /// submitted and collected)
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub(crate) opts: Options,
}

/// `--format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ResultsFormatArg {
    /// One JSON object per line.
    Jsonl,
    /// One CSV row per job, after a header row.
    Csv,
}

/// Every tunable, from the command line or the config file.
#[derive(Args, Deserialize, Serialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct Options {
    /// Jobs under way at once (sending, or between retries), all hosts together; jobs waiting
    /// for a busy, rate-limited or paused host do not count
    #[arg(long, short = 'c')]
    pub(crate) concurrency: Option<usize>,
    /// Jobs taken from the input at once, running or waiting for their host (its slots, rate or
    /// Retry-After pause): a slow or paused host holds up the others only when its jobs fill all
    /// of these
    #[arg(long)]
    pub(crate) queue_size: Option<usize>,
    /// Threads that run requests, each with its share of the jobs
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Requests in flight at once to one host (host:port)
    #[arg(long)]
    pub(crate) per_host_concurrency: Option<usize>,
    /// Global request rate, e.g. 200/s, 3000/min, 10/100ms
    #[arg(long)]
    pub(crate) rate: Option<String>,
    /// Requests the global rate lets through at once after idling
    #[arg(long)]
    pub(crate) burst: Option<u64>,
    /// Request rate per host, e.g. 50/s; `auto` (or auto:START, e.g. auto:20/s) finds each
    /// host's rate while the run goes: lower on 429/503/refusals, higher while it is answered
    #[arg(long)]
    pub(crate) per_host_rate: Option<String>,
    /// Burst of the per-host rate
    #[arg(long)]
    pub(crate) per_host_burst: Option<u64>,
    /// Retries after the first attempt (0 disables)
    #[arg(long)]
    pub(crate) retries: Option<u32>,
    /// First retry's maximum backoff in ms; doubles each retry, full jitter
    #[arg(long)]
    pub(crate) retry_base_ms: Option<u64>,
    /// Largest backoff in ms
    #[arg(long)]
    pub(crate) retry_max_ms: Option<u64>,
    /// HTTP statuses that are retried (timeouts and connection errors always are)
    #[arg(long, value_delimiter = ',')]
    pub(crate) retry_on: Option<Vec<u16>>,
    /// Cap retries at this fraction of jobs (plus 10), e.g. 0.2, so retries cannot amplify an outage
    #[arg(long)]
    pub(crate) retry_budget: Option<f64>,
    /// Also retry POST and PATCH requests after a failure that may have reached the server (a
    /// timeout, a reset, a 5xx). Without it they are retried only when they cannot have been
    /// sent (connect failures) or carry an `Idempotency-Key` header.
    #[arg(long)]
    #[serde(default)]
    pub(crate) retry_unsafe: bool,
    /// Longest Retry-After honoured, in seconds; longer ones are cut to this
    #[arg(long)]
    pub(crate) max_retry_after_s: Option<u64>,
    /// Disable the per-host circuit breakers.
    #[arg(long)]
    #[serde(default)]
    pub(crate) no_breaker: bool,
    /// Failure rate over the window that opens a host's breaker
    #[arg(long)]
    pub(crate) breaker_failure_rate: Option<f64>,
    /// Attempts in the window before the rate counts
    #[arg(long)]
    pub(crate) breaker_min_calls: Option<u32>,
    /// Rolling window of the breaker, seconds
    #[arg(long)]
    pub(crate) breaker_window_s: Option<u64>,
    /// Seconds an open breaker waits before probing
    #[arg(long)]
    pub(crate) breaker_cool_down_s: Option<u64>,
    /// Probe requests a half-open breaker lets through
    #[arg(long)]
    pub(crate) breaker_probes: Option<u32>,
    /// How long a job waits for its host's open breaker (without holding a slot; the host sees
    /// only probes meanwhile) before it fails circuit_open, seconds
    #[arg(long)]
    pub(crate) breaker_max_hold_s: Option<u64>,
    /// Fail a host's jobs circuit_open at once while its breaker is open, instead of holding
    /// them until it closes.
    #[arg(long)]
    #[serde(default)]
    pub(crate) breaker_fail_fast: bool,
    /// Per-attempt timeout (send to last body byte), ms; a job's timeout_ms overrides it
    #[arg(long)]
    pub(crate) timeout_ms: Option<u64>,
    /// Connect timeout, ms
    #[arg(long)]
    pub(crate) connect_timeout_ms: Option<u64>,
    /// Timeout for a whole job including retries and their waits, ms
    #[arg(long)]
    pub(crate) total_timeout_ms: Option<u64>,
    /// Largest body read per response, e.g. 1MiB, 512KiB, 100000; the rest is cut and flagged
    #[arg(long)]
    pub(crate) max_body: Option<String>,
    /// Longest input line, e.g. 1MiB; a longer line is not read, its job fails as invalid_input
    #[arg(long)]
    pub(crate) max_line: Option<String>,
    /// Store response bodies (up to --max-body) in the results.
    #[arg(long, conflicts_with = "no_body")]
    #[serde(default)]
    pub(crate) save_body: bool,
    /// Do not read response bodies at all.
    #[arg(long)]
    #[serde(default)]
    pub(crate) no_body: bool,
    /// Store response headers in the results (secret ones redacted).
    #[arg(long)]
    #[serde(default)]
    pub(crate) save_headers: bool,
    /// Extra request header for every job, `Name: value` (repeatable); a job's own headers win.
    #[arg(long = "header", short = 'H')]
    #[serde(default)]
    pub(crate) header: Vec<String>,
    /// After Ctrl-C, how long in-flight requests may finish, seconds
    #[arg(long)]
    pub(crate) drain_timeout_s: Option<u64>,
    /// Sync results to disk at most this often, ms (a power loss costs at most this much, re-run by --resume)
    #[arg(long)]
    pub(crate) fsync_interval_ms: Option<u64>,
    /// Seconds between progress lines when stderr is not a terminal
    #[arg(long)]
    pub(crate) progress_interval_s: Option<u64>,
    /// User-Agent header
    #[arg(long)]
    pub(crate) user_agent: Option<String>,
    /// Statuses that count as ok, e.g. 200-299,404; any other fails the job (http_status)
    #[arg(long)]
    pub(crate) accept: Option<String>,
    /// Stop taking jobs after this many failed (those under way finish; --resume runs the rest)
    /// and exit 1
    #[arg(long)]
    pub(crate) halt_after_failures: Option<u64>,
    /// Stop taking jobs once this share of them failed, e.g. 0.2 (judged after 100 jobs), and
    /// exit 1
    #[arg(long)]
    pub(crate) halt_on_failure_rate: Option<f64>,
    /// Sum of job costs (a job's "cost", default 1) per period, all hosts together, e.g.
    /// 90000/min for tokens per minute; a bucket of one period's worth, refilled continuously
    #[arg(long)]
    pub(crate) cost_rate: Option<String>,
    /// Sum of job costs per period to each host
    #[arg(long)]
    pub(crate) per_host_cost_rate: Option<String>,
    /// JSON pointer into a response body to the job's real cost, e.g. /usage/total_tokens; the
    /// difference from its "cost" is settled with the cost rates
    #[arg(long)]
    pub(crate) cost_from_response: Option<String>,
    /// Ask for gzip, deflate and br bodies (Accept-Encoding) and decode them; --max-body caps
    /// the decoded size (curl's flag)
    #[arg(long)]
    #[serde(default)]
    pub(crate) compressed: bool,
    /// Write each response body to its own file in this directory (LINE.body, or LINE-ID.body
    /// when the id is a safe file name) instead of into the result, which says where (body_file)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["save_body", "no_body"])]
    pub(crate) save_body_dir: Option<PathBuf>,
    /// Base URL that a job's relative url (/v1/chat/completions, as in Batch-API files) is
    /// joined to
    #[arg(long, value_name = "URL")]
    pub(crate) base_url: Option<String>,
    /// Speak HTTP/2 at once (h2c) to http:// servers, without an upgrade; over https HTTP/2
    /// is negotiated anyway (ALPN). A host's requests share few connections, still at most
    /// --per-host-concurrency at once
    #[arg(long)]
    #[serde(default)]
    pub(crate) http2_prior_knowledge: bool,
    /// Redirects followed per job, each hop through the gates of the host it goes to; 0: a
    /// 3xx is the job's response (curl's default), more fail the job (kind redirect)
    #[arg(long)]
    pub(crate) max_redirects: Option<u32>,
    /// Also trust the CA certificates of this PEM file (repeatable), besides the platform's
    /// trust store and the bundled Mozilla roots
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub(crate) cacert: Vec<PathBuf>,
    /// Do not check servers' TLS certificates (curl's -k): for test servers only
    #[arg(long)]
    #[serde(default)]
    pub(crate) insecure: bool,
    /// Client certificate (PEM) for servers that ask for one; with --key
    #[arg(long, value_name = "FILE", requires = "key")]
    pub(crate) cert: Option<PathBuf>,
    /// Private key (PEM) of --cert
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub(crate) key: Option<PathBuf>,
    /// Send every request through this proxy: http://, https://, socks5:// (names resolved
    /// here) or socks5h:// (resolved by the proxy), with user:password@ if it needs them;
    /// without it, HTTPS_PROXY / HTTP_PROXY / ALL_PROXY are honoured
    #[arg(long, value_name = "URL")]
    pub(crate) proxy: Option<String>,
    /// Hosts reached directly, not through a proxy: comma-separated names (subdomains
    /// included), IP addresses, CIDR blocks, or * (also NO_PROXY)
    #[arg(long, value_name = "HOSTS")]
    pub(crate) no_proxy: Option<String>,
    /// `[hosts."api.example.com"]` tables of the config file: settings of some hosts.
    #[arg(skip)]
    #[serde(default)]
    /// `[hosts."PATTERN"]` tables, read straight into the engine's type.
    pub(crate) hosts: std::collections::BTreeMap<String, HostSettings>,
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
            breaker_fail_fast: $cli.breaker_fail_fast || $cfg.breaker_fail_fast,
            header: [$cfg.header.clone(), $cli.header.clone()].concat(),
            cacert: [$cfg.cacert.clone(), $cli.cacert.clone()].concat(),
            insecure: $cli.insecure || $cfg.insecure,
            compressed: $cli.compressed || $cfg.compressed,
            http2_prior_knowledge: $cli.http2_prior_knowledge || $cfg.http2_prior_knowledge,
            hosts: $cfg.hosts.clone(),
        }
    };
}

impl Options {
    /// These options over those of the config file `config`, if one is given (command-line
    /// options win); `Err` names the file and what is wrong with it.
    pub(crate) fn with_config(&self, config: Option<&Path>) -> Result<Options, String> {
        match config {
            Some(path) => Ok(self.merged_with(&load_config(path)?)),
            None => Ok(self.clone()),
        }
    }

    pub(crate) fn merged_with(&self, cfg: &Options) -> Options {
        let cli = self;
        merge!(
            cli,
            cfg,
            concurrency,
            queue_size,
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
            breaker_max_hold_s,
            timeout_ms,
            connect_timeout_ms,
            total_timeout_ms,
            max_body,
            max_line,
            drain_timeout_s,
            fsync_interval_ms,
            progress_interval_s,
            user_agent,
            accept,
            halt_after_failures,
            halt_on_failure_rate,
            cost_rate,
            per_host_cost_rate,
            cost_from_response,
            max_redirects,
            base_url,
            save_body_dir,
            cert,
            key,
            proxy,
            no_proxy
        )
    }
}

pub(crate) fn parse_size(s: &str, what: &str) -> Result<u64, String> {
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

pub(crate) fn parse_headers(list: &[String]) -> Result<HeaderMap, String> {
    corral_engine::settings::parse_header_lines(list, "--header (counting the config file's first)")
        .map_err(|e| e.to_string())
}

/// A rate option's value (`50/s`, `3000/min`), the error naming `option`.
fn parse_rate(spec: Option<&str>, option: &str) -> Result<Option<Rate>, String> {
    spec.map(|r| {
        r.parse::<Rate>()
            .map_err(|e| format!("{option}: {}", e.message()))
    })
    .transpose()
}

/// `--retry-failed [KINDS]`: which failures to run again (no kinds: all of them).
pub(crate) fn retry_failed(kinds: &[String]) -> Result<RetryFailed, String> {
    if kinds.is_empty() {
        return Ok(RetryFailed { kinds: None });
    }
    let named: Result<Vec<ErrorKind>, String> = kinds
        .iter()
        .map(|k| {
            ErrorKind::named(k.trim()).ok_or_else(|| {
                let all: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "--retry-failed: {k:?} is not an error kind ({}); to run every failure again, \
                     give --retry-failed after the jobs file or with no value",
                    all.join(", ")
                )
            })
        })
        .collect();
    Ok(RetryFailed {
        kinds: Some(named?),
    })
}

/// Everything a run needs, validated: the engine's settings, and what only the binary does
/// (reading the input, Ctrl-C, progress).
pub(crate) struct Plan {
    pub(crate) settings: Settings,
    pub(crate) extra_headers: HeaderMap,
    /// `--base-url`.
    pub(crate) base_url: Option<url::Url>,
    /// Longest input line read (bytes).
    pub(crate) max_line: usize,
    pub(crate) drain_timeout: Duration,
    pub(crate) progress_every: Duration,
}

pub(crate) fn plan(o: &Options) -> Result<Plan, String> {
    let per_host_rate = o
        .per_host_rate
        .as_deref()
        .map(|r| r.parse::<RateSetting>())
        .transpose()
        .map_err(|e| format!("--per-host-rate: {e}"))?;
    // Every default comes from the engine's `Settings::default()`, written there once.
    let d = Settings::default();
    let db = BreakerSettings::default();
    let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
    let secs = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_secs);
    let mut settings = Settings {
        idle_connections: 0, // below, once the threads are known
        concurrency: o.concurrency.unwrap_or(d.concurrency),
        queue_size: o.queue_size, // `Run` holds at least the concurrency
        threads: o.threads,
        fsync_interval: ms(o.fsync_interval_ms, d.fsync_interval),
        halt_after_failures: o.halt_after_failures,
        halt_on_failure_rate: o.halt_on_failure_rate,
        per_host_concurrency: o.per_host_concurrency.unwrap_or(d.per_host_concurrency),
        rate: parse_rate(o.rate.as_deref(), "--rate")?,
        burst: o.burst.unwrap_or(d.burst),
        per_host_rate,
        per_host_burst: o.per_host_burst.unwrap_or(d.per_host_burst),
        retries: o.retries.unwrap_or(d.retries),
        retry_base: ms(o.retry_base_ms, d.retry_base),
        retry_max: ms(o.retry_max_ms, d.retry_max),
        retry_statuses: o.retry_on.clone().unwrap_or(d.retry_statuses),
        retry_budget: o.retry_budget,
        retry_unsafe: o.retry_unsafe,
        max_retry_after: secs(o.max_retry_after_s, d.max_retry_after),
        breaker: (!o.no_breaker).then(|| BreakerSettings {
            failure_rate: o.breaker_failure_rate.unwrap_or(db.failure_rate),
            min_calls: o.breaker_min_calls.unwrap_or(db.min_calls),
            window: secs(o.breaker_window_s, db.window),
            cool_down: secs(o.breaker_cool_down_s, db.cool_down),
            probes: o.breaker_probes.unwrap_or(db.probes),
            max_hold: secs(o.breaker_max_hold_s, db.max_hold),
            fail_fast: o.breaker_fail_fast,
        }),
        timeout: ms(o.timeout_ms, d.timeout),
        connect_timeout: ms(o.connect_timeout_ms, d.connect_timeout),
        total_timeout: o.total_timeout_ms.map(Duration::from_millis),
        max_body: match o.max_body.as_deref() {
            None => d.max_body,
            Some(m) => parse_size(m, "max-body")
                .map_err(|e| format!("{e} (use --no-body to skip bodies)"))?,
        },
        body: if o.no_body {
            BodyMode::Skip
        } else if o.save_body {
            BodyMode::Save
        } else {
            BodyMode::Discard
        },
        save_headers: o.save_headers,
        user_agent: o.user_agent.clone().unwrap_or(d.user_agent),
        cost_rate: parse_rate(o.cost_rate.as_deref(), "--cost-rate")?,
        per_host_cost_rate: parse_rate(o.per_host_cost_rate.as_deref(), "--per-host-cost-rate")?,
        cost_from_response: o.cost_from_response.clone(),
        hosts: Vec::new(), // below
        scoped_headers: Vec::new(),
        accept: match o.accept.as_deref() {
            None => d.accept,
            Some(a) => a.parse().map_err(|e: ConfigError| e.to_string())?,
        },
        tls: tls_settings(o)?,
        max_redirects: o.max_redirects.unwrap_or(d.max_redirects),
        compressed: o.compressed,
        http2_prior_knowledge: o.http2_prior_knowledge,
        results_format: d.results_format, // `--format` is the run's, set by `run`
        // Made by `run` once every check has passed: planning writes nothing.
        save_body_dir: o.save_body_dir.clone(),
        proxy: ProxySettings {
            url: o.proxy.clone(),
            no_proxy: o.no_proxy.clone(),
        },
    };
    settings.hosts = HostRule::from_tables(&o.hosts).map_err(|e| e.to_string())?;
    let mut plan = plan_from(settings, &o.header, o.base_url.as_deref())?;
    if let Some(m) = o.max_line.as_deref() {
        plan.max_line = usize::try_from(parse_size(m, "max-line")?).unwrap_or(usize::MAX);
    }
    plan.drain_timeout = secs(o.drain_timeout_s, DEFAULT_DRAIN);
    plan.progress_every =
        secs(o.progress_interval_s, DEFAULT_PROGRESS_INTERVAL).max(Duration::from_secs(1));
    Ok(plan)
}

/// A plan of `settings` (made by [`plan`], or read from a fleet's board), every-job `headers`
/// and `base_url`: checked as the engine checks them, with this machine's own idle-connection
/// budget, and the binary's defaults for the rest.
pub(crate) fn plan_from(
    mut settings: Settings,
    headers: &[String],
    base_url: Option<&str>,
) -> Result<Plan, String> {
    // The engine says what cannot work, once, for the binary and the library alike.
    settings.check().map_err(|e| e.to_string())?;
    let threads = settings
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    settings.idle_connections = idle_budget(fd_limit(), settings.concurrency, threads);
    Ok(Plan {
        settings,
        extra_headers: parse_headers(headers)?,
        base_url: match base_url {
            None => None,
            Some(b) => {
                let u = url::Url::parse(b).map_err(|e| format!("--base-url {b:?}: {e}"))?;
                if !matches!(u.scheme(), "http" | "https") {
                    return Err(format!("--base-url {b:?}: not an http or https URL"));
                }
                Some(u)
            }
        },
        max_line: DEFAULT_MAX_LINE,
        drain_timeout: DEFAULT_DRAIN,
        progress_every: DEFAULT_PROGRESS_INTERVAL,
    })
}

/// The TLS options, their files read (each error names its option and file).
pub(crate) fn tls_settings(o: &Options) -> Result<TlsSettings, String> {
    let read = |option: &str, p: &PathBuf| {
        corral_engine::files::read_option(option, p).map_err(|e| e.to_string())
    };
    let ca_pem = o
        .cacert
        .iter()
        .map(|p| read("--cacert", p))
        .collect::<Result<Vec<_>, _>>()?;
    let identity_pem = match (&o.cert, &o.key) {
        (Some(cert), Some(key)) => {
            let mut pem = read("--cert", cert)?;
            pem.push(b'\n');
            pem.extend(read("--key", key)?);
            Some(pem)
        }
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    Ok(TlsSettings {
        ca_pem,
        insecure: o.insecure,
        identity_pem,
    })
}

/// Longest input line read, when `--max-line` is not given.
const DEFAULT_MAX_LINE: usize = 1 << 20;
/// After Ctrl-C, how long jobs under way may finish, when `--drain-timeout-s` is not given.
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);
/// Seconds between progress lines off a terminal, when `--progress-interval-s` is not given.
const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Each option's default as `corral run --help` shows it, taken from where the default is
/// written (the engine's `Settings::default()`, the constants above): written once.
pub(crate) fn defaults() -> Vec<(&'static str, String)> {
    let d = Settings::default();
    let b = BreakerSettings::default();
    let size = |n: u64| match n {
        n if n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    };
    let statuses: Vec<String> = d.retry_statuses.iter().map(u16::to_string).collect();
    vec![
        ("concurrency", d.concurrency.to_string()),
        ("queue_size", "4 x --concurrency, at least 256".into()),
        ("threads", "one per CPU".into()),
        ("per_host_concurrency", d.per_host_concurrency.to_string()),
        ("rate", d.rate.map_or("unlimited".into(), |r| r.to_string())),
        ("burst", d.burst.to_string()),
        (
            "per_host_rate",
            d.per_host_rate
                .map_or("unlimited".into(), |r| r.to_string()),
        ),
        ("per_host_burst", d.per_host_burst.to_string()),
        ("retries", d.retries.to_string()),
        ("retry_base_ms", d.retry_base.as_millis().to_string()),
        ("retry_max_ms", d.retry_max.as_millis().to_string()),
        ("retry_on", statuses.join(",")),
        ("retry_budget", "no cap".into()),
        ("max_retry_after_s", d.max_retry_after.as_secs().to_string()),
        ("breaker_failure_rate", b.failure_rate.to_string()),
        ("breaker_min_calls", b.min_calls.to_string()),
        ("breaker_window_s", b.window.as_secs().to_string()),
        ("breaker_cool_down_s", b.cool_down.as_secs().to_string()),
        ("breaker_probes", b.probes.to_string()),
        ("breaker_max_hold_s", b.max_hold.as_secs().to_string()),
        ("timeout_ms", d.timeout.as_millis().to_string()),
        (
            "connect_timeout_ms",
            d.connect_timeout.as_millis().to_string(),
        ),
        ("total_timeout_ms", "none".into()),
        ("max_body", size(d.max_body)),
        ("max_line", size(DEFAULT_MAX_LINE as u64)),
        ("drain_timeout_s", DEFAULT_DRAIN.as_secs().to_string()),
        (
            "fsync_interval_ms",
            d.fsync_interval.as_millis().to_string(),
        ),
        (
            "progress_interval_s",
            DEFAULT_PROGRESS_INTERVAL.as_secs().to_string(),
        ),
        ("user_agent", d.user_agent),
        ("accept", d.accept.to_string()),
        ("max_redirects", d.max_redirects.to_string()),
    ]
}

/// `corral run`'s arguments with their defaults in their help (see [`defaults`]).
pub(crate) fn with_defaults(mut run: clap::Command) -> clap::Command {
    for (id, default) in defaults() {
        run = run.mut_arg(id, |a| {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            a.help(format!("{help} [default: {default}]"))
        });
    }
    run
}

/// The process's open-file limit (after [`raise_fd_limit`]); unlimited when it cannot be read.
pub(crate) fn fd_limit() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(u64::MAX, |(soft, _)| soft)
}

/// Raises the soft open-file limit to the hard one: a run over many hosts needs a socket for
/// each connection, and the usual soft limit (1024) is far below what the system allows.
pub(crate) fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// Idle connections each of `threads` worker threads may keep for reuse: what the open-file
/// limit leaves after the connections in use (one per job under way) and a reserve (standard
/// streams, the jobs and results files, the runtimes' own descriptors), split between the
/// threads, and at most [`MAX_IDLE_PER_THREAD`] (each holds a read buffer).
pub(crate) fn idle_budget(fd_limit: u64, concurrency: usize, threads: usize) -> usize {
    const RESERVE: u64 = 64;
    let left = fd_limit.saturating_sub(RESERVE.saturating_add(concurrency as u64));
    let per_thread = left / threads.max(1) as u64;
    usize::try_from(per_thread).map_or(MAX_IDLE_PER_THREAD, |n| n.min(MAX_IDLE_PER_THREAD))
}

/// See [`idle_budget`].
pub(crate) const MAX_IDLE_PER_THREAD: usize = 512;

pub(crate) fn load_config(path: &Path) -> Result<Options, String> {
    let text = corral_engine::files::read_option_text("--config", path)
        .map_err(|e| format!("cannot read config: {e}"))?;
    parse_config(&text, &path.display().to_string())
}

/// A config file's text as options. An error names the line, its table and key, and says
/// what is wrong, but never quotes the line (toml's own message does): it may hold a secret
/// header.
pub(crate) fn parse_config(text: &str, shown: &str) -> Result<Options, String> {
    toml::from_str(text).map_err(|e| {
        let what = redact::text(e.message());
        let Some(span) = e.span() else {
            return format!("config {shown}: {what}");
        };
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        format!("config {shown}, line {line}{}: {what}", where_in(before))
    })
}

/// ` ([table] key)` of the value that starts at the end of `before`: the last table header
/// and the key on the value's own line — names only, never a value.
fn where_in(before: &str) -> String {
    let mut lines = before.lines().rev();
    let own = if before.ends_with('\n') {
        ""
    } else {
        lines.next().unwrap_or("")
    };
    let key = own
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.contains(char::is_whitespace));
    let table = lines
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'));
    match (table, key) {
        (Some(t), Some(k)) => format!(" ({t} {k})"),
        (None, Some(k)) => format!(" ({k})"),
        (Some(t), None) => format!(" ({t})"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
pub(crate) fn plan_of(args: &[&str], config: Option<&str>) -> Result<Plan, String> {
    plan(&options_of(args, config)?)
}

/// The options of `corral run jobs.jsonl ARGS...` with a config file's text (if any), before
/// planning.
#[cfg(test)]
pub(crate) fn options_of(args: &[&str], config: Option<&str>) -> Result<Options, String> {
    use clap::Parser;
    let argv = ["corral", "run", "jobs.jsonl"].iter().chain(args);
    let cli = crate::Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    let crate::Cmd::Run(run) = cli.cmd else {
        return Err("not run".into());
    };
    Ok(match config {
        Some(text) => run.opts.merged_with(&parse_config(text, "corral.toml")?),
        None => run.opts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table of options quotes the same defaults as `--help` (where a row names
    /// as many options as it gives values).
    #[test]
    fn the_readme_quotes_the_defaults_help_shows() {
        let readme = include_str!("../../../README.md");
        let defaults: std::collections::HashMap<&str, String> = defaults().into_iter().collect();
        let mut compared = 0;
        for row in readme.lines().filter(|l| l.starts_with("| `-")) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (names, values) = (cells[1], cells[2]);
            let ids: Vec<String> = names
                .split(',')
                .filter_map(|n| n.trim().trim_matches('`').split_whitespace().next())
                .filter(|n| n.starts_with("--"))
                .map(|n| n.trim_start_matches("--").replace('-', "_"))
                .collect();
            let values: Vec<&str> = values.split(", ").map(str::trim).collect();
            if ids.len() != values.len() {
                continue;
            }
            for (id, value) in ids.iter().zip(values) {
                if let Some(d) = defaults.get(id.as_str()) {
                    assert_eq!(value, d, "README's default of --{id}");
                    compared += 1;
                }
            }
        }
        assert!(compared >= 15, "only {compared} defaults compared");
    }

    /// Each bad option is refused with its name, before anything is opened or written (the
    /// binary exits 2 on any of these: `tests/cli.rs` shows one).
    #[test]
    fn bad_options_are_refused_naming_the_option() {
        for (args, want) in [
            (&["--rate", "fast"][..], "--rate"),
            (
                &["--per-host-rate", "auto:fast"],
                "--per-host-rate: auto:fast",
            ),
            (&["--concurrency", "0"], "--concurrency: must be at least 1"),
            (
                &["--per-host-concurrency", "0"],
                "--per-host-concurrency: must be at least 1",
            ),
            (&["--threads", "0"], "--threads: must be at least 1"),
            (&["--queue-size", "0"], "--queue-size: must be at least 1"),
            (
                &["--halt-after-failures", "0"],
                "--halt-after-failures: must be at least 1",
            ),
            (
                &["--halt-on-failure-rate", "1.5"],
                "--halt-on-failure-rate: 1.5 is not a share",
            ),
            (&["--max-body", "12parsecs"], "unknown unit"),
            (&["--max-body", "0"], "--max-body must be at least 1 byte"),
            (&["--max-line", "0"], "--max-line must be at least 1 byte"),
            (&["--header", "NoColon"], "Name: value"),
            (
                &["--breaker-failure-rate", "0"],
                "--breaker-failure-rate: 0 is not a share",
            ),
            (
                &["--breaker-probes", "0"],
                "--breaker-probes: must be at least 1",
            ),
            (
                &["--breaker-window-s", "0"],
                "--breaker-window-s: must be greater than 0",
            ),
            (
                &["--timeout-ms", "0"],
                "--timeout-ms: must be greater than 0",
            ),
            (
                &["--connect-timeout-ms", "0"],
                "--connect-timeout-ms: must be greater than 0",
            ),
            (
                &["--total-timeout-ms", "0"],
                "--total-timeout-ms: must be greater than 0",
            ),
            (
                &["--retry-base-ms", "0"],
                "--retry-base-ms: must be greater than 0",
            ),
            (
                &["--retry-base-ms", "500", "--retry-max-ms", "100"],
                "--retry-max-ms: 100 ms is shorter",
            ),
            (&["--retry-budget", "0"], "--retry-budget: 0 is not a share"),
            (&["--burst", "0"], "--burst: must be at least 1"),
            (
                &["--per-host-burst", "0"],
                "--per-host-burst: must be at least 1",
            ),
            (
                &["--max-retry-after-s", "0"],
                "--max-retry-after-s: must be greater than 0",
            ),
            (&["--accept", "200-1000"], "--accept"),
            (&["--accept", "200-2x9"], "--accept"),
            (
                &["--cost-from-response", "usage"],
                "--cost-from-response: \"usage\" is not a JSON pointer",
            ),
            (&["--proxy", "ftp://p:1"], "--proxy: scheme \"ftp\""),
            (&["--cert", "/nonexistent.pem"], "--key"),
            (&["--cacert", "/nonexistent.pem"], "--cacert"),
            (&["--bogus"], "unexpected argument"),
        ] {
            let e = plan_of(args, None)
                .err()
                .unwrap_or_else(|| panic!("{args:?} accepted"));
            assert!(e.contains(want), "{args:?}: {e}");
        }
        plan_of(&[], None).expect("the defaults pass");
    }

    /// The config file's `[hosts]` tables are checked the same way, naming the table and key.
    #[test]
    fn bad_host_tables_are_refused_naming_the_table_and_key() {
        for (toml, want) in [
            (
                "[hosts.\"a.example\"]\nconnect_timeout_ms = 0\n",
                "[hosts.\"a.example\"] connect_timeout_ms: must be greater than 0",
            ),
            (
                "[hosts.\"a.example\"]\ntimeout_ms = 0\n",
                "[hosts.\"a.example\"] timeout_ms: must be greater than 0",
            ),
            (
                "[hosts.\"a.example\"]\nconcurrency = 0\n",
                "[hosts.\"a.example\"] concurrency: must be at least 1",
            ),
            (
                "[hosts.\"a.example\"]\nburst = 0\n",
                "[hosts.\"a.example\"] burst: must be at least 1",
            ),
            (
                "[hosts.\"a.example\"]\nbreaker_probes = 0\n",
                "[hosts.\"a.example\"] breaker_probes: must be at least 1",
            ),
            (
                "[hosts.\"a.example\"]\nrate = \"often\"\n",
                "[hosts.\"a.example\"] rate",
            ),
            (
                "[hosts.\"a.example\"]\nheader = [\"NoColon\"]\n",
                "[hosts.\"a.example\"] header",
            ),
            (
                "[hosts.\"a.example\"]\nconcurency = 2\n",
                "unknown field `concurency`",
            ),
            ("concurency = 5\n", "unknown field `concurency`"),
            ("[hosts.\"bad host\"]\nrate = \"5/s\"\n", "\"bad host\""),
        ] {
            let e = plan_of(&[], Some(toml))
                .err()
                .unwrap_or_else(|| panic!("{toml:?} accepted"));
            assert!(e.contains(want), "{toml:?}: {e}");
            assert!(!e.contains("sk-secret"), "a header line quoted: {e}");
        }
        plan_of(&[], Some("[hosts.\"a.example\"]\nconnect_timeout_ms = 1\n"))
            .expect("a good table");
    }

    /// Every default shown belongs to an option of `corral run`, and every option that has a
    /// default shows it.
    #[test]
    fn help_shows_each_default_from_where_it_is_written() {
        use clap::CommandFactory;
        let run = crate::Cli::command()
            .find_subcommand("run")
            .cloned()
            .expect("run");
        let ids: Vec<String> = run
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .collect();
        for (id, _) in defaults() {
            assert!(
                ids.iter().any(|i| i == id),
                "{id} is not an option of corral run"
            );
        }
        let run = with_defaults(run);
        let concurrency = run
            .get_arguments()
            .find(|a| a.get_id() == "concurrency")
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let want = format!("[default: {}]", Settings::default().concurrency);
        assert!(concurrency.ends_with(&want), "{concurrency}");
    }
}
