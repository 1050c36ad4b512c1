//! Everything that shapes a run, as plain data with the defaults of `corral run`, written here
//! once: each setting is one field, its doc here and nowhere else. The binary's flags are
//! these fields (the `clap` feature derives `clap::Args`: the doc is the help), its config
//! file deserialises into them (serde, unknown keys refused), and its `--help` and the README
//! quote [`Settings::default`] — as lychee reads its `HostConfig` and ripgrep keeps a flag's
//! doc beside its parser. Fill a [`Settings`]
//! (`Settings { concurrency: 200, ..Settings::default() }`, as hyper-util's and async-nats's
//! plain `Config` structs are filled) and hand it to [`crate::run::Run::new`] or
//! [`crate::run::RunBuilder::settings`]. They are checked once, when the run is built, and a
//! setting that cannot work is a [`ConfigError`] naming its option.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use corral::limit::Rate;

use crate::error::{ConfigError, ErrorKind};

mod content;
mod units;
pub use content::{Extraction, Requirement};
pub use units::{parse_header_lines, parse_size, HeaderLine, HeaderLineError, SizeError};

/// What to do with response bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BodyMode {
    /// Read (up to the cap) and count, do not store.
    Discard,
    /// Read up to the cap and store in the result.
    Save,
    /// Do not read at all.
    Skip,
}

/// A host's circuit breaker (see [`corral::breaker`]): made from the run's `breaker_*`
/// settings by [`Settings::breaker`], and a `[hosts]` table's over them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Share of failed calls in the window that opens it (`--breaker-failure-rate`).
    pub failure_rate: f64,
    /// Calls in the window before it may open (`--breaker-min-calls`).
    pub min_calls: u32,
    /// How far back calls are counted (`--breaker-window-s`).
    pub window: Duration,
    /// How long it stays open before probes go through (`--breaker-cool-down-s`).
    pub cool_down: Duration,
    /// Probes let through half-open (`--breaker-probes`).
    pub probes: u32,
    /// How long a job may wait for its host's open breaker before it fails `circuit_open`
    /// (`--breaker-max-hold-s`).
    pub max_hold: Duration,
    /// Fail a job at once when its host's breaker is open, instead of holding it
    /// (`--breaker-fail-fast`).
    pub fail_fast: bool,
}

/// Everything that shapes a run: the one declaration of `corral run`'s options. Each field is
/// one option — its doc is the option's `--help`, its `arg` attribute the flag (with the
/// `clap` feature), its serde name the config file's key (the flag's name with `_`) — and
/// [`Settings::default`] holds every default.
///
/// The config file deserialises straight into it (`#[serde(default)]`: a key not given keeps
/// its default; an unknown key is refused). It serialises too (a fleet's board carries it to
/// the workers, in `corral_queue`'s versioned record): what is a secret or belongs to one
/// machine is never serialised — the loaded client certificate ([`Settings::tls`]), a fleet
/// worker's own headers ([`Settings::scoped_headers`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Jobs under way at once (sending, or between retries), all hosts together; jobs waiting
    /// for a busy, rate-limited or paused host do not count
    #[cfg_attr(feature = "clap", arg(long, short = 'c', value_name = "N"))]
    pub concurrency: usize,
    /// Jobs taken from the input at once, running or waiting for their host (its slots, rate or
    /// Retry-After pause): a slow or paused host holds up the others only when its jobs fill all
    /// of these [default: 4 x --concurrency, at least 256]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub queue_size: Option<usize>,
    /// Threads that run requests, each with its share of the jobs [default: one per CPU]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub threads: Option<usize>,
    /// Requests in flight at once to one host (host:port)
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub per_host_concurrency: usize,
    /// Global request rate, e.g. 200/s, 3000/min, 10/100ms [default: unlimited]
    #[cfg_attr(feature = "clap", arg(long))]
    #[serde(with = "units::opt_rate")]
    pub rate: Option<Rate>,
    /// Requests the global rate lets through at once after idling
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub burst: u64,
    /// Request rate per host, e.g. 50/s; `auto` (or auto:START, e.g. auto:20/s) finds each
    /// host's rate while the run goes: lower on 429/503/refusals, higher while it is answered
    /// [default: unlimited]
    #[cfg_attr(feature = "clap", arg(long, value_name = "RATE"))]
    #[serde(with = "units::opt_rate_setting")]
    pub per_host_rate: Option<RateSetting>,
    /// Burst of the per-host rate
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub per_host_burst: u64,
    /// Retries after the first attempt (0 disables)
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub retries: u32,
    /// First retry's maximum backoff in ms; doubles each retry, full jitter
    #[cfg_attr(feature = "clap", arg(long = "retry-base-ms", value_name = "MS", value_parser = units::flag::ms))]
    #[serde(rename = "retry_base_ms", with = "units::ms")]
    pub retry_base: Duration,
    /// Largest backoff in ms
    #[cfg_attr(feature = "clap", arg(long = "retry-max-ms", value_name = "MS", value_parser = units::flag::ms))]
    #[serde(rename = "retry_max_ms", with = "units::ms")]
    pub retry_max: Duration,
    /// HTTP statuses that are retried (429, 500-599, 5xx), and invalid_response: a body that
    /// failed --require or --require-json (timeouts and connection errors always are)
    #[cfg_attr(feature = "clap", arg(long = "retry-on", value_name = "STATUSES"))]
    pub retry_on: RetryOn,
    /// Cap retries at this fraction of jobs (plus 10), e.g. 0.2, so retries cannot amplify an
    /// outage [default: no cap]
    #[cfg_attr(feature = "clap", arg(long, value_name = "SHARE"))]
    pub retry_budget: Option<f64>,
    /// Also retry POST and PATCH requests after a failure that may have reached the server (a
    /// timeout, a reset, a 5xx). Without it they are retried only when they cannot have been
    /// sent (connect failures) or carry an `Idempotency-Key` header.
    #[cfg_attr(feature = "clap", arg(long))]
    pub retry_unsafe: bool,
    /// Longest Retry-After honoured, in seconds; longer ones are cut to this
    #[cfg_attr(feature = "clap", arg(long = "max-retry-after-s", value_name = "SECONDS", value_parser = units::flag::secs))]
    #[serde(rename = "max_retry_after_s", with = "units::secs")]
    pub max_retry_after: Duration,
    /// Disable the per-host circuit breakers.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_breaker: bool,
    /// Failure rate over the window that opens a host's breaker
    #[cfg_attr(feature = "clap", arg(long, value_name = "SHARE"))]
    pub breaker_failure_rate: f64,
    /// Attempts in the window before the rate counts
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub breaker_min_calls: u32,
    /// Rolling window of the breaker, seconds
    #[cfg_attr(feature = "clap", arg(long = "breaker-window-s", value_name = "SECONDS", value_parser = units::flag::secs))]
    #[serde(rename = "breaker_window_s", with = "units::secs")]
    pub breaker_window: Duration,
    /// Seconds an open breaker waits before probing
    #[cfg_attr(feature = "clap", arg(long = "breaker-cool-down-s", value_name = "SECONDS", value_parser = units::flag::secs))]
    #[serde(rename = "breaker_cool_down_s", with = "units::secs")]
    pub breaker_cool_down: Duration,
    /// Probe requests a half-open breaker lets through
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub breaker_probes: u32,
    /// How long a job waits for its host's open breaker (without holding a slot; the host sees
    /// only probes meanwhile) before it fails circuit_open, seconds
    #[cfg_attr(feature = "clap", arg(long = "breaker-max-hold-s", value_name = "SECONDS", value_parser = units::flag::secs))]
    #[serde(rename = "breaker_max_hold_s", with = "units::secs")]
    pub breaker_max_hold: Duration,
    /// Fail a host's jobs circuit_open at once while its breaker is open, instead of holding
    /// them until it closes.
    #[cfg_attr(feature = "clap", arg(long))]
    pub breaker_fail_fast: bool,
    /// Per-attempt timeout (send to last body byte), ms; a job's timeout_ms overrides it
    #[cfg_attr(feature = "clap", arg(long = "timeout-ms", value_name = "MS", value_parser = units::flag::ms))]
    #[serde(rename = "timeout_ms", with = "units::ms")]
    pub timeout: Duration,
    /// Connect timeout (TLS included), ms
    #[cfg_attr(feature = "clap", arg(long = "connect-timeout-ms", value_name = "MS", value_parser = units::flag::ms))]
    #[serde(rename = "connect_timeout_ms", with = "units::ms")]
    pub connect_timeout: Duration,
    /// Timeout for a whole job including retries and their waits, ms [default: none]
    #[cfg_attr(feature = "clap", arg(long = "total-timeout-ms", value_name = "MS", value_parser = units::flag::ms))]
    #[serde(rename = "total_timeout_ms", with = "units::opt_ms")]
    pub total_timeout: Option<Duration>,
    /// Largest body read per response, e.g. 1MiB, 512KiB, 100000; the rest is cut and flagged
    #[cfg_attr(feature = "clap", arg(long, value_name = "SIZE", value_parser = units::flag::size))]
    #[serde(with = "units::size")]
    pub max_body: u64,
    /// Longest input line, e.g. 1MiB; a longer line is not read, its job fails as invalid_input
    #[cfg_attr(feature = "clap", arg(long, value_name = "SIZE", value_parser = units::flag::size_usize))]
    #[serde(with = "units::size")]
    pub max_line: usize,
    /// Store response bodies (up to --max-body) in the results.
    #[cfg_attr(feature = "clap", arg(long, conflicts_with = "no_body"))]
    pub save_body: bool,
    /// Do not read response bodies at all.
    #[cfg_attr(feature = "clap", arg(long))]
    pub no_body: bool,
    /// Store response headers in the results (secret ones redacted).
    #[cfg_attr(feature = "clap", arg(long))]
    pub save_headers: bool,
    /// Extra request header for every job, `Name: value` (repeatable); a job's own headers win
    /// (the config file's `header` lines come first)
    #[cfg_attr(feature = "clap", arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = units::flag::Quiet(units::header_line)))]
    #[serde(rename = "header", with = "units::header_list")]
    pub headers: Vec<HeaderLine>,
    /// Base URL that a job's relative url (/v1/chat/completions, as in Batch-API files) is
    /// joined to
    #[cfg_attr(feature = "clap", arg(long, value_name = "URL", value_parser = units::flag::Quiet(units::base_url)))]
    #[serde(with = "units::opt_url")]
    pub base_url: Option<url::Url>,
    /// After Ctrl-C, how long in-flight requests may finish, seconds
    #[cfg_attr(feature = "clap", arg(long = "drain-timeout-s", value_name = "SECONDS", value_parser = units::flag::secs))]
    #[serde(rename = "drain_timeout_s", with = "units::secs")]
    pub drain_timeout: Duration,
    /// Sync results to disk at most this often, ms (a power loss costs at most this much, re-run
    /// by --resume; one fsync per batch would bound the throughput by the disk's sync latency)
    #[cfg_attr(feature = "clap", arg(long = "fsync-interval-ms", value_name = "MS", value_parser = units::flag::ms))]
    #[serde(rename = "fsync_interval_ms", with = "units::ms")]
    pub fsync_interval: Duration,
    /// Seconds between progress lines when stderr is not a terminal
    #[cfg_attr(feature = "clap", arg(long = "progress-interval-s", value_name = "SECONDS", value_parser = units::flag::secs))]
    #[serde(rename = "progress_interval_s", with = "units::secs")]
    pub progress_interval: Duration,
    /// User-Agent header
    #[cfg_attr(feature = "clap", arg(long, value_name = "TEXT"))]
    pub user_agent: String,
    /// Statuses that count as ok, e.g. 200-299,404; any other fails the job (http_status)
    #[cfg_attr(feature = "clap", arg(long, value_name = "STATUSES"))]
    pub accept: StatusSet,
    /// Stop taking jobs after this many failed (those under way finish; --resume runs the rest)
    /// and exit 1
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub halt_after_failures: Option<u64>,
    /// Stop taking jobs once this share of them failed, e.g. 0.2 (judged after 100 jobs), and
    /// exit 1
    #[cfg_attr(feature = "clap", arg(long, value_name = "SHARE"))]
    pub halt_on_failure_rate: Option<f64>,
    /// Sum of job costs (a job's "cost", default 1) per period, all hosts together, e.g.
    /// 90000/min for tokens per minute; a bucket of --cost-burst, refilled continuously
    /// [default: unlimited]
    #[cfg_attr(feature = "clap", arg(long, value_name = "RATE"))]
    #[serde(with = "units::opt_rate")]
    pub cost_rate: Option<Rate>,
    /// Sum of job costs per period to each host [default: unlimited]
    #[cfg_attr(feature = "clap", arg(long, value_name = "RATE"))]
    #[serde(with = "units::opt_rate")]
    pub per_host_cost_rate: Option<Rate>,
    /// Job costs a cost rate lets through at once after idling, e.g. 90000 for a provider
    /// whose bucket holds the full minute of 90000/min (Anthropic's does) [default: one
    /// second's worth of the rate, at most one period's: a per-minute quota is not spent in
    /// one burst, which providers that enforce it per second answer with 429s]
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub cost_burst: Option<u64>,
    /// Spend at most this much in job costs (settled with --cost-from-response), the results
    /// file's earlier runs included: once reached, no new job starts (those under way finish)
    /// and the run exits 1; --resume runs the rest, with a raised cap
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub max_cost: Option<u64>,
    /// Send at most this many requests (retries and redirects count), the results file's
    /// earlier runs included: then as --max-cost
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub max_requests: Option<u64>,
    /// What costs are counted in, e.g. tokens or USD: only a label for the summary and the
    /// report
    #[cfg_attr(feature = "clap", arg(long, value_name = "NAME"))]
    pub cost_unit: Option<String>,
    /// An accepted response's body must be JSON, else the job fails invalid_response
    /// (retried when --retry-on names it)
    #[cfg_attr(feature = "clap", arg(long))]
    pub require_json: bool,
    /// A JSON pointer the body must hold, or hold with this value (repeatable), e.g.
    /// /choices/0/message/content or /status=done; else the job fails invalid_response
    #[cfg_attr(feature = "clap", arg(long, value_name = "POINTER[=VALUE]"))]
    pub require: Vec<Requirement>,
    /// Keep this field of each JSON body in the result's "extract" (repeatable), e.g.
    /// answer=/choices/0/message/content; null when absent; a CSV column each
    #[cfg_attr(feature = "clap", arg(long, value_name = "NAME=POINTER"))]
    pub extract: Vec<Extraction>,
    /// JSON pointer into a response body to the job's real cost, e.g. /usage/total_tokens; the
    /// difference from its "cost" is settled with the cost rates
    #[cfg_attr(feature = "clap", arg(long, value_name = "POINTER"))]
    pub cost_from_response: Option<String>,
    /// Ask for gzip, deflate and br bodies (Accept-Encoding) and decode them; --max-body caps
    /// the decoded size (curl's flag)
    #[cfg_attr(feature = "clap", arg(long))]
    pub compressed: bool,
    /// Write each response body to its own file in this directory (LINE.body, or LINE-ID.body
    /// when the id is a safe file name) instead of into the result, which says where (body_file)
    #[cfg_attr(feature = "clap", arg(long, value_name = "DIR", conflicts_with_all = ["save_body", "no_body"]))]
    pub save_body_dir: Option<std::path::PathBuf>,
    /// Speak HTTP/2 at once (h2c) to http:// servers, without an upgrade; over https HTTP/2
    /// is negotiated anyway (ALPN). A host's requests share few connections, still at most
    /// --per-host-concurrency at once
    #[cfg_attr(feature = "clap", arg(long))]
    pub http2_prior_knowledge: bool,
    /// Redirects followed per job, each hop through the gates of the host it goes to; 0: a
    /// 3xx is the job's response (curl's default), more fail the job (kind redirect)
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub max_redirects: u32,
    /// Also trust the CA certificates of this PEM file (repeatable), besides the platform's
    /// trust store and the bundled Mozilla roots
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub cacert: Vec<std::path::PathBuf>,
    /// Do not check servers' TLS certificates (curl's -k): for test servers only
    #[cfg_attr(feature = "clap", arg(long))]
    pub insecure: bool,
    /// Client certificate (PEM) for servers that ask for one; with --key
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE", requires = "key"))]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --cert
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE", requires = "cert"))]
    pub key: Option<std::path::PathBuf>,
    /// Send every request through this proxy: http://, https://, socks5:// (names resolved
    /// here) or socks5h:// (resolved by the proxy), with user:password@ if it needs them;
    /// without it, HTTPS_PROXY / HTTP_PROXY / ALL_PROXY are honoured
    #[cfg_attr(feature = "clap", arg(long, value_name = "URL"))]
    pub proxy: Option<String>,
    /// Hosts reached directly, not through a proxy: comma-separated names (subdomains
    /// included), IP addresses, CIDR blocks, or * (also NO_PROXY)
    #[cfg_attr(feature = "clap", arg(long, value_name = "HOSTS"))]
    pub no_proxy: Option<String>,
    /// Settings of some hosts that differ from the ones above: the config file's
    /// `[hosts."api.example.com"]` tables. A host takes the best match: see [`HostPattern`].
    #[cfg_attr(feature = "clap", arg(skip))]
    #[serde(with = "units::host_tables")]
    pub hosts: Vec<HostRule>,
    /// Headers for the hosts a pattern matches only, every matching pattern's (not just the
    /// best one's, unlike [`Settings::hosts`]), added where neither the job nor its host's rule
    /// sets that header: a fleet worker's own secrets, which must reach the hosts they are for
    /// and no other — each hop of a redirect gets its own host's. Never serialised.
    #[cfg_attr(feature = "clap", arg(skip))]
    #[serde(skip)]
    pub scoped_headers: Vec<(HostPattern, http::HeaderMap)>,
    /// The CA certificates and client certificate the clients use, PEM: read from `cacert`,
    /// `cert` and `key` by [`Settings::read_files`] (or given as bytes by a library user).
    /// Never serialised: the client certificate's key is a secret.
    #[cfg_attr(feature = "clap", arg(skip))]
    #[serde(skip)]
    pub tls: TlsSettings,
    /// Idle connections each worker thread keeps for reuse, all hosts together (the binary
    /// sizes it from the open-file limit).
    #[cfg_attr(feature = "clap", arg(skip))]
    #[serde(skip)]
    pub idle_connections: usize,
    /// How result lines are written (`corral run --format`, the command's own).
    #[cfg_attr(feature = "clap", arg(skip))]
    #[serde(skip)]
    pub results_format: ResultsFormat,
}

/// How result lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ResultsFormat {
    /// One JSON object per line (what `--resume` and `corral report` read).
    #[default]
    Jsonl,
    /// One CSV row per job, the columns of [`crate::result::CSV_COLUMNS`] (the JSONL keys
    /// whose values are scalars, `error` as `error_kind`, `error_message`, `maybe_sent`), after
    /// a header row the caller writes.
    Csv,
}

/// The certificates the clients use, PEM: read from the files of [`Settings::cacert`],
/// [`Settings::cert`] and [`Settings::key`] (see [`Settings::read_files`]). The platform's
/// trust store and the bundled Mozilla roots are always trusted, unless
/// [`Settings::insecure`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// More CA certificates to trust, each a PEM file's contents (a file may hold several).
    pub ca_pem: Vec<Vec<u8>>,
    /// A client certificate and its private key, PEM, for servers that ask for one (the two
    /// files' contents concatenated). A secret.
    pub identity_pem: Option<Vec<u8>>,
}

/// Where requests go through ([`Settings::proxy`], [`Settings::no_proxy`]). Without `url`,
/// the environment's `HTTPS_PROXY`, `HTTP_PROXY` and `ALL_PROXY` (and `NO_PROXY`) are
/// honoured, as curl does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// Every request goes through this proxy (`--proxy URL`: `http://`, `https://`,
    /// `socks5://` resolving names here, `socks5h://` resolving them at the proxy), instead
    /// of the environment's.
    pub url: Option<String>,
    /// Hosts reached directly, not through a proxy (`--no-proxy`, curl's syntax: a comma
    /// separated list of names, which match their subdomains too, IP addresses and CIDR
    /// blocks; `*` for all); also applies to the environment's proxies.
    pub no_proxy: Option<String>,
}

/// Which hosts a [`HostRule`] applies to: `api.example.com` (any port), `api.example.com:8443`
/// (that port only), `*.example.com` (any host under example.com, not example.com itself).
/// Names are compared without case.
///
/// ```
/// use corral_engine::settings::HostPattern;
///
/// let p: HostPattern = "*.example.com".parse().unwrap();
/// assert!(p.matches("api.example.com:443") && !p.matches("example.com:443"));
/// let p: HostPattern = "api.example.com:8443".parse().unwrap();
/// assert!(p.matches("API.example.com:8443") && !p.matches("api.example.com:443"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lower case, without the `*.` of a wildcard.
    name: String,
    wildcard: bool,
    port: Option<u16>,
}

impl HostPattern {
    /// True when the host key `host:port` matches.
    pub fn matches(&self, key: &str) -> bool {
        let (host, port) = split_key(key);
        if self.port.is_some_and(|p| Some(p) != port) {
            return false;
        }
        if self.wildcard {
            host.len() > self.name.len() + 1
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
                && host[host.len() - self.name.len()..].eq_ignore_ascii_case(&self.name)
        } else {
            host.eq_ignore_ascii_case(&self.name)
        }
    }

    /// How specific the pattern is: an exact name before a wildcard, a port before none, a
    /// longer wildcard before a shorter one.
    fn rank(&self) -> (bool, bool, usize) {
        (!self.wildcard, self.port.is_some(), self.name.len())
    }
}

/// `host:port` (an IPv6 address in brackets) into its host and port.
fn split_key(key: &str) -> (&str, Option<u16>) {
    match key.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
            (h, p.parse().ok())
        }
        _ => (key, None),
    }
}

impl FromStr for HostPattern {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::new("[hosts]", format!("{s:?}: {why}"));
        let (host, port) = match split_key(s.trim()) {
            (h, Some(p)) => (h, Some(p)),
            (_, None)
                if s.trim()
                    .rsplit_once(':')
                    .is_some_and(|(h, _)| !h.contains(':')) =>
            {
                return Err(bad("the port is not a number from 1 to 65535"))
            }
            (h, None) => (h, None),
        };
        let (name, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (host, false),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b));
        if !valid || port == Some(0) {
            return Err(bad(
                "expected a host name, host:port, or *.domain (as in \"api.example.com\")",
            ));
        }
        Ok(Self {
            name: name.to_ascii_lowercase(),
            wildcard,
            port,
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

/// The bucket of a cost `rate`: `given` (`--cost-burst`, a table's `cost_burst`), else one
/// second's worth of the rate and at most one period's — `12000/min` holds 200 at once, not a
/// minute's 12000 — and at least 1. A job that costs more than the bucket still goes, once the
/// rate has paid for it.
pub fn cost_burst(rate: Rate, given: Option<u64>) -> u64 {
    given.unwrap_or_else(|| {
        let period = rate.period().as_nanos().max(1);
        let per_second = u128::from(rate.count())
            .saturating_mul(1_000_000_000)
            .div_ceil(period);
        let per_second = u64::try_from(per_second).unwrap_or(u64::MAX);
        per_second.min(rate.count()).max(1)
    })
}

/// Jobs held at once when `--queue-size` is not given: four per job under way, at least 256.
pub fn default_queue(concurrency: usize) -> usize {
    concurrency.saturating_mul(4).max(256)
}

/// Jobs that must have finished before `--halt-on-failure-rate` judges the rate: a few early
/// failures are not a trend.
pub const HALT_RATE_AFTER: u64 = 100;

/// A rate that is either fixed (`50/s`) or found while the run goes, from where it starts
/// (`auto`, `auto:START`): one value, parsed once, for `--per-host-rate` and a `[hosts]`
/// table's `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSetting {
    /// This many requests per period.
    Fixed(Rate),
    /// Found from the responses (see [`crate::hosts`]'s `adaptive`), starting here.
    Auto(Rate),
}

impl RateSetting {
    /// Where an `auto` rate starts when `auto` says nothing more.
    pub const AUTO_START: Rate = Rate::per_second(10);
}

impl FromStr for RateSetting {
    type Err = RateSettingError;

    fn from_str(s: &str) -> Result<Self, RateSettingError> {
        let t = s.trim();
        let Some(rest) = t.strip_prefix("auto") else {
            return t
                .parse::<Rate>()
                .map(RateSetting::Fixed)
                .map_err(|e| RateSettingError(e.message().to_owned()));
        };
        let start = match rest.strip_prefix(':') {
            Some(start) => start,
            None if rest.is_empty() => return Ok(RateSetting::Auto(Self::AUTO_START)),
            None => {
                return Err(RateSettingError(
                    "expected auto or auto:START (as in auto:20/s)".into(),
                ))
            }
        };
        start
            .parse::<Rate>()
            .map(RateSetting::Auto)
            .map_err(|e| RateSettingError(format!("auto:{start}: {}", e.message())))
    }
}

impl fmt::Display for RateSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateSetting::Fixed(r) => write!(f, "{r}"),
            RateSetting::Auto(r) => write!(f, "auto:{r}"),
        }
    }
}

/// A rate setting that is neither a rate (`50/s`) nor `auto[:START]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RateSettingError(String);

/// Settings for the hosts a pattern matches: a `[hosts."PATTERN"]` table of the config file,
/// deserialised straight into this type (its keys are the per-host options' names without
/// `per-host-`, with `_`; an unknown key is refused with its line). Each `None` falls back to
/// the run's own.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSettings {
    /// `concurrency`: requests in flight to the host.
    pub concurrency: Option<usize>,
    /// `rate`: requests per period to the host (`"50/s"`), or `"auto[:START]"`: found while
    /// the run goes.
    #[serde(default, with = "units::opt_rate_setting")]
    pub rate: Option<RateSetting>,
    /// `burst` of that rate.
    pub burst: Option<u64>,
    /// `cost_rate`: the sum of job costs per period to the host.
    #[serde(default, with = "units::opt_rate")]
    pub cost_rate: Option<Rate>,
    /// `cost_burst`: job costs that cost rate lets through at once (see
    /// [`Settings::cost_burst`]).
    pub cost_burst: Option<u64>,
    /// `retries` after the first attempt.
    pub retries: Option<u32>,
    /// `retry_on`: statuses (and `invalid_response`) retried.
    pub retry_on: Option<RetryOn>,
    /// `require_json`: the body must be JSON (see [`Settings::require_json`]).
    pub require_json: Option<bool>,
    /// `require = ["/pointer", "/pointer=value"]`: what the body must hold, instead of the
    /// run's (see [`Settings::require`]).
    pub require: Option<Vec<Requirement>>,
    /// `timeout_ms`: one attempt.
    #[serde(rename = "timeout_ms", default, with = "units::opt_ms")]
    pub timeout: Option<Duration>,
    /// `connect_timeout_ms`: connecting, TLS included.
    #[serde(rename = "connect_timeout_ms", default, with = "units::opt_ms")]
    pub connect_timeout: Option<Duration>,
    /// `header = ["Name: value", ...]`: extra request headers for the host's jobs, sent where
    /// the job (with `--header`) sets none of that name.
    #[serde(rename = "header", default, with = "units::header_lines")]
    pub headers: http::HeaderMap,
    /// `no_breaker`: no breaker for the host.
    #[serde(default)]
    pub no_breaker: bool,
    /// `breaker_failure_rate`: see [`BreakerSettings::failure_rate`]. Each `breaker_*` changes
    /// that one field of the run's breaker (or of a default one, when the run has none).
    pub breaker_failure_rate: Option<f64>,
    /// `breaker_min_calls`.
    pub breaker_min_calls: Option<u32>,
    /// `breaker_window_s`.
    #[serde(rename = "breaker_window_s", default, with = "units::opt_secs")]
    pub breaker_window: Option<Duration>,
    /// `breaker_cool_down_s`.
    #[serde(rename = "breaker_cool_down_s", default, with = "units::opt_secs")]
    pub breaker_cool_down: Option<Duration>,
    /// `breaker_probes`.
    pub breaker_probes: Option<u32>,
    /// `breaker_max_hold_s`.
    #[serde(rename = "breaker_max_hold_s", default, with = "units::opt_secs")]
    pub breaker_max_hold: Option<Duration>,
    /// `breaker_fail_fast`.
    pub breaker_fail_fast: Option<bool>,
}

impl HostSettings {
    /// The host's breaker: `None` with `no_breaker`; the run's (`run`) with this table's
    /// `breaker_*` changes over it, a default one under them when the run has none.
    pub fn breaker_over(&self, run: Option<BreakerSettings>) -> Option<BreakerSettings> {
        if self.no_breaker {
            return None;
        }
        let changes = self.breaker_failure_rate.is_some()
            || self.breaker_min_calls.is_some()
            || self.breaker_window.is_some()
            || self.breaker_cool_down.is_some()
            || self.breaker_probes.is_some()
            || self.breaker_max_hold.is_some()
            || self.breaker_fail_fast.is_some();
        if !changes {
            return run;
        }
        let b = run.unwrap_or_default();
        Some(BreakerSettings {
            failure_rate: self.breaker_failure_rate.unwrap_or(b.failure_rate),
            min_calls: self.breaker_min_calls.unwrap_or(b.min_calls),
            window: self.breaker_window.unwrap_or(b.window),
            cool_down: self.breaker_cool_down.unwrap_or(b.cool_down),
            probes: self.breaker_probes.unwrap_or(b.probes),
            max_hold: self.breaker_max_hold.unwrap_or(b.max_hold),
            fail_fast: self.breaker_fail_fast.unwrap_or(b.fail_fast),
        })
    }
}

/// Settings for the hosts that match a pattern.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct HostRule {
    /// Which hosts.
    pub pattern: HostPattern,
    /// What differs for them.
    pub settings: HostSettings,
}

impl HostRule {
    /// The config file's `[hosts."PATTERN"]` tables as rules; a pattern that is not one is
    /// refused, naming it.
    pub fn from_tables<'a>(
        tables: impl IntoIterator<Item = (&'a String, &'a HostSettings)>,
    ) -> Result<Vec<HostRule>, ConfigError> {
        tables
            .into_iter()
            .map(|(pattern, settings)| {
                Ok(HostRule {
                    pattern: pattern.parse()?,
                    settings: settings.clone(),
                })
            })
            .collect()
    }
}

/// A host's settings: the run's, with those of its best-matching [`HostRule`] over them.
#[derive(Debug, Clone, Copy)]
pub struct ForHost<'a> {
    run: &'a Settings,
    rule: Option<&'a HostSettings>,
    /// The rule's place in [`Settings::hosts`].
    pub index: Option<usize>,
}

impl ForHost<'_> {
    /// Requests in flight to the host.
    pub fn concurrency(&self) -> usize {
        self.rule
            .and_then(|r| r.concurrency)
            .unwrap_or(self.run.per_host_concurrency)
    }
    /// Where the host's rate starts, when it is found while the run goes (`auto`).
    pub fn rate_auto(&self) -> Option<Rate> {
        match self.rule.and_then(|r| r.rate) {
            Some(RateSetting::Auto(start)) => Some(start),
            Some(RateSetting::Fixed(_)) => None,
            None => match self.run.per_host_rate {
                Some(RateSetting::Auto(start)) => Some(start),
                _ => None,
            },
        }
    }

    /// The host's rate and burst, if it has a rate (an `auto` rate: where it starts).
    pub fn rate(&self) -> Option<(Rate, u64)> {
        let rate = match self.rule.and_then(|r| r.rate) {
            Some(RateSetting::Fixed(r) | RateSetting::Auto(r)) => r,
            None => match self.run.per_host_rate? {
                RateSetting::Fixed(r) | RateSetting::Auto(r) => r,
            },
        };
        let burst = self
            .rule
            .and_then(|r| r.burst)
            .unwrap_or(self.run.per_host_burst);
        Some((rate, burst))
    }
    /// The host's breaker, if it has one.
    pub fn breaker(&self) -> Option<BreakerSettings> {
        match self.rule {
            Some(r) => r.breaker_over(self.run.breaker()),
            None => self.run.breaker(),
        }
    }
    /// Retries after the first attempt.
    pub fn retries(&self) -> u32 {
        self.rule
            .and_then(|r| r.retries)
            .unwrap_or(self.run.retries)
    }
    /// Statuses retried.
    pub fn retry_on(&self) -> &RetryOn {
        self.rule
            .and_then(|r| r.retry_on.as_ref())
            .unwrap_or(&self.run.retry_on)
    }
    /// The body must be JSON.
    pub fn require_json(&self) -> bool {
        self.rule
            .and_then(|r| r.require_json)
            .unwrap_or(self.run.require_json)
    }
    /// What the body must hold.
    pub fn require(&self) -> &[Requirement] {
        self.rule
            .and_then(|r| r.require.as_deref())
            .unwrap_or(&self.run.require)
    }
    /// One attempt's timeout (a job's own `timeout_ms` wins over it).
    pub fn timeout(&self) -> Duration {
        self.rule
            .and_then(|r| r.timeout)
            .unwrap_or(self.run.timeout)
    }
    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.rule
            .and_then(|r| r.connect_timeout)
            .unwrap_or(self.run.connect_timeout)
    }
    /// The sum of job costs per period to the host, if limited.
    pub fn cost_rate(&self) -> Option<(Rate, u64)> {
        let rate = self
            .rule
            .and_then(|r| r.cost_rate)
            .or(self.run.per_host_cost_rate)?;
        let given = self.rule.and_then(|r| r.cost_burst).or(self.run.cost_burst);
        Some((rate, cost_burst(rate, given)))
    }
    /// Extra headers for the host's jobs (empty without a rule).
    pub fn headers(&self) -> Option<&http::HeaderMap> {
        self.rule.map(|r| &r.headers).filter(|h| !h.is_empty())
    }

    /// The headers a job's request to this host (keyed `key`) carries: the job's own (with
    /// `--header`'s), then its `[hosts]` rule's and a fleet worker's scoped headers (see
    /// [`Settings::scoped_headers`]) where the job sets none of that name. Borrowed when
    /// nothing is added. What the engine sends and `--dry-run` shows.
    pub fn request_headers<'h>(
        &self,
        key: &str,
        job: &'h http::HeaderMap,
    ) -> std::borrow::Cow<'h, http::HeaderMap> {
        let mut headers = std::borrow::Cow::Borrowed(job);
        if let Some(extra) = self.headers() {
            add_absent(&mut headers, extra);
        }
        for (pattern, extra) in &self.run.scoped_headers {
            if pattern.matches(key) {
                add_absent(&mut headers, extra);
            }
        }
        headers
    }
}

impl Settings {
    /// The settings of a host no `[hosts]` rule matches: the run's own.
    pub fn for_other_hosts(&self) -> ForHost<'_> {
        ForHost {
            run: self,
            rule: None,
            index: None,
        }
    }

    /// The settings of the hosts of rule `i` (of [`Settings::hosts`]).
    pub fn for_rule(&self, i: usize) -> ForHost<'_> {
        ForHost {
            run: self,
            rule: self.hosts.get(i).map(|r| &r.settings),
            index: Some(i).filter(|i| *i < self.hosts.len()),
        }
    }

    /// The settings of the host keyed `key` (`host:port`): its best-matching rule over the
    /// run's.
    pub fn for_host(&self, key: &str) -> ForHost<'_> {
        let best = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(_, r)| r.pattern.matches(key))
            .max_by_key(|(i, r)| (r.pattern.rank(), std::cmp::Reverse(*i)));
        ForHost {
            run: self,
            rule: best.map(|(_, r)| &r.settings),
            index: best.map(|(i, _)| i),
        }
    }
}

/// Adds to `headers` those of `extra` whose name it does not hold (every value of each).
fn add_absent(headers: &mut std::borrow::Cow<'_, http::HeaderMap>, extra: &http::HeaderMap) {
    for name in extra.keys() {
        if !headers.contains_key(name) {
            for v in extra.get_all(name) {
                headers.to_mut().append(name.clone(), v.clone());
            }
        }
    }
}

/// A set of HTTP statuses, written as `--accept` takes it: single statuses and ranges,
/// comma-separated (`200-299,404`).
///
/// ```
/// use corral_engine::settings::StatusSet;
///
/// let ok: StatusSet = "200-299,404".parse().unwrap();
/// assert!(ok.contains(204) && ok.contains(404) && !ok.contains(301));
/// assert_eq!(ok.to_string(), "200-299,404");
/// assert!("200-99".parse::<StatusSet>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    /// `from..=to`, one range.
    pub fn range(from: u16, to: u16) -> Self {
        Self(vec![(from, to)])
    }

    /// True when `status` is in the set.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&status))
    }
}

/// One part of a status list: `404`, `200-299`, or `5xx` (500-599); `None` when it is none.
fn status_range(part: &str) -> Option<(u16, u16)> {
    let status = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|n| (100..=599).contains(n))
    };
    let (a, b) = match part.split_once('-') {
        Some((a, b)) => (status(a)?, status(b)?),
        None => match part.strip_suffix("xx").and_then(|d| d.parse::<u16>().ok()) {
            Some(d) if (1..=5).contains(&d) => (d * 100, d * 100 + 99),
            _ => (status(part)?, status(part)?),
        },
    };
    (a <= b).then_some((a, b))
}

impl FromStr for StatusSet {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        s.split(',')
            .map(str::trim)
            .map(|part| {
                status_range(part).ok_or_else(|| {
                    ConfigError::new(
                        "--accept",
                        format!(
                            "{part:?} is not a status or a range of statuses (100-599), as in 200-299,404 or 2xx"
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// Which failures are retried besides timeouts and connection errors (those always are):
/// statuses (`429`, `500-599`, `5xx`) and `invalid_response` (a body that failed
/// `--require`/`--require-json`), as `--retry-on 429,5xx,invalid_response` gives them.
///
/// ```
/// use corral_engine::settings::RetryOn;
///
/// let r: RetryOn = "429,5xx,invalid_response".parse().unwrap();
/// assert!(r.status(429) && r.status(502) && !r.status(404) && r.invalid_response());
/// assert_eq!(r.to_string(), "429,500-599,invalid_response");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn {
    statuses: Vec<(u16, u16)>,
    invalid_response: bool,
}

impl RetryOn {
    /// True when a response of `status` is retried.
    pub fn status(&self, status: u16) -> bool {
        self.statuses
            .iter()
            .any(|(a, b)| (*a..=*b).contains(&status))
    }

    /// True when a body that failed a content check is retried.
    pub fn invalid_response(&self) -> bool {
        self.invalid_response
    }
}

impl FromStr for RetryOn {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut on = RetryOn {
            statuses: Vec::new(),
            invalid_response: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == ErrorKind::InvalidResponse.as_str() {
                on.invalid_response = true;
            } else if let Some(r) = status_range(part) {
                on.statuses.push(r);
            } else {
                let why = if ErrorKind::named(part).is_some() {
                    "timeouts and connection errors are always retried; --retry-on names statuses and invalid_response"
                } else {
                    "not a status (429), a range (500-599, 5xx) or invalid_response"
                };
                return Err(ConfigError::new("--retry-on", format!("{part:?}: {why}")));
            }
        }
        Ok(on)
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .statuses
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        if self.invalid_response {
            parts.push(ErrorKind::InvalidResponse.as_str().to_owned());
        }
        f.write_str(&parts.join(","))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// Refusals that name their option, each check written once for every setting it applies to.
mod refuse {
    use std::borrow::Cow;
    use std::time::Duration;

    use crate::error::ConfigError;

    pub(super) type Name = Cow<'static, str>;

    pub(super) fn at_least_one(v: u64, option: impl Into<Name>) -> Result<(), ConfigError> {
        if v == 0 {
            return Err(ConfigError::new(option, "must be at least 1"));
        }
        Ok(())
    }

    pub(super) fn longer_than_zero(
        d: Duration,
        option: impl Into<Name>,
    ) -> Result<(), ConfigError> {
        if d.is_zero() {
            return Err(ConfigError::new(option, "must be greater than 0"));
        }
        Ok(())
    }

    /// A share (0, 1]: NaN, zero, negative and above 1 refused.
    pub(super) fn share(v: f64, option: impl Into<Name>, example: &str) -> Result<(), ConfigError> {
        if !(v > 0.0 && v <= 1.0) {
            return Err(ConfigError::new(
                option,
                format!("{v} is not a share: give one above 0 and at most 1, as in {example}"),
            ));
        }
        Ok(())
    }
}

impl BreakerSettings {
    /// Refuses a breaker that cannot work; `name` turns a field's name into its option's.
    fn check(&self, name: impl Fn(&'static str) -> refuse::Name) -> Result<(), ConfigError> {
        refuse::share(self.failure_rate, name("failure-rate"), "0.5")?;
        refuse::at_least_one(u64::from(self.min_calls), name("min-calls"))?;
        refuse::longer_than_zero(self.window, name("window-s"))?;
        refuse::longer_than_zero(self.cool_down, name("cool-down-s"))?;
        refuse::at_least_one(u64::from(self.probes), name("probes"))?;
        refuse::longer_than_zero(self.max_hold, name("max-hold-s"))?;
        if self.window < self.cool_down {
            return Err(ConfigError::new(
                name("window-s"),
                format!(
                    "{} s is shorter than the cool-down ({} s): the failures that opened the \
                     breaker would be forgotten before it probes",
                    self.window.as_secs(),
                    self.cool_down.as_secs()
                ),
            ));
        }
        Ok(())
    }
}

impl HostSettings {
    /// Refuses a `[hosts."PATTERN"]` table's setting that cannot work, naming it as the config
    /// file does.
    fn check(
        &self,
        pattern: &HostPattern,
        run_breaker: Option<BreakerSettings>,
    ) -> Result<(), ConfigError> {
        let at = |key: &str| -> refuse::Name { format!("[hosts.\"{pattern}\"] {key}").into() };
        if let Some(c) = self.concurrency {
            refuse::at_least_one(c as u64, at("concurrency"))?;
        }
        if let Some(b) = self.burst {
            refuse::at_least_one(b, at("burst"))?;
        }
        if let Some(b) = self.cost_burst {
            refuse::at_least_one(b, at("cost_burst"))?;
        }
        if let Some(t) = self.timeout {
            refuse::longer_than_zero(t, at("timeout_ms"))?;
        }
        if let Some(t) = self.connect_timeout {
            refuse::longer_than_zero(t, at("connect_timeout_ms"))?;
        }
        if let Some(b) = self.breaker_over(run_breaker) {
            b.check(|field| at(&format!("breaker_{}", field.replace('-', "_"))))?;
        }
        Ok(())
    }
}

impl Settings {
    /// Refuses settings that cannot work (a zero or nonsense duration, size, count or share
    /// that would stop every job, hang the run or mean nothing), naming the option they come
    /// from: `--connect-timeout-ms`, `[hosts."api.example.com"] connect_timeout_ms`.
    pub fn check(&self) -> Result<(), ConfigError> {
        refuse::at_least_one(self.concurrency as u64, "--concurrency")?;
        if let Some(n) = self.queue_size {
            refuse::at_least_one(n as u64, "--queue-size")?;
        }
        if let Some(n) = self.threads {
            refuse::at_least_one(n as u64, "--threads")?;
        }
        if let Some(n) = self.halt_after_failures {
            refuse::at_least_one(n, "--halt-after-failures")?;
        }
        if let Some(r) = self.halt_on_failure_rate {
            refuse::share(r, "--halt-on-failure-rate", "0.2")?;
        }
        refuse::at_least_one(self.per_host_concurrency as u64, "--per-host-concurrency")?;
        refuse::at_least_one(self.burst, "--burst")?;
        refuse::at_least_one(self.per_host_burst, "--per-host-burst")?;
        if let Some(b) = self.cost_burst {
            refuse::at_least_one(b, "--cost-burst")?;
        }
        if let Some(n) = self.max_cost {
            refuse::at_least_one(n, "--max-cost")?;
        }
        if let Some(n) = self.max_requests {
            refuse::at_least_one(n, "--max-requests")?;
        }
        refuse::longer_than_zero(self.timeout, "--timeout-ms")?;
        if let Some(t) = self.total_timeout {
            refuse::longer_than_zero(t, "--total-timeout-ms")?;
        }
        // A zero connect timeout fails every connection before it is tried.
        refuse::longer_than_zero(self.connect_timeout, "--connect-timeout-ms")?;
        // A zero backoff retries at once, into the failure it is retrying.
        refuse::longer_than_zero(self.retry_base, "--retry-base-ms")?;
        if self.retry_max < self.retry_base {
            return Err(ConfigError::new(
                "--retry-max-ms",
                format!(
                    "{} ms is shorter than --retry-base-ms ({} ms)",
                    self.retry_max.as_millis(),
                    self.retry_base.as_millis()
                ),
            ));
        }
        // Zero would ignore every Retry-After: the server's own pause.
        refuse::longer_than_zero(self.max_retry_after, "--max-retry-after-s")?;
        if let Some(b) = self.retry_budget {
            refuse::share(b, "--retry-budget", "0.1")?;
        }
        // Checked even with --no-breaker: a `[hosts]` table may turn a breaker on over them.
        self.breaker_values()
            .check(|field| format!("--breaker-{field}").into())?;
        if let Some(p) = &self.proxy {
            let url = url::Url::parse(p).map_err(|e| {
                ConfigError::new("--proxy", format!("{}: {e}", crate::redact::text(p)))
            })?;
            if !matches!(url.scheme(), "http" | "https" | "socks5" | "socks5h") {
                return Err(ConfigError::new(
                    "--proxy",
                    format!(
                        "scheme {:?} is not http, https, socks5 or socks5h",
                        url.scheme()
                    ),
                ));
            }
        }
        for rule in &self.hosts {
            rule.settings.check(&rule.pattern, self.breaker())?;
        }
        if let Some(p) = &self.cost_from_response {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(ConfigError::new(
                    "--cost-from-response",
                    format!("{p:?} is not a JSON pointer: it starts with '/', as in /usage/total_tokens"),
                ));
            }
        }
        if self.max_body == 0 {
            return Err(ConfigError::new(
                "--max-body",
                "must be at least 1 byte (use --no-body to skip bodies)",
            ));
        }
        let mut names: Vec<&str> = self.extract.iter().map(|e| e.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::new(
                "--extract",
                format!("{:?} is named twice", w[0]),
            ));
        }
        if self.max_line == 0 {
            return Err(ConfigError::new("--max-line", "must be at least 1 byte"));
        }
        refuse::longer_than_zero(self.progress_interval, "--progress-interval-s")?;
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::new("--cert", "--cert and --key go together"));
        }
        Ok(())
    }

    /// The breaker each host has unless its `[hosts]` table says otherwise: `None` with
    /// `no_breaker`.
    pub fn breaker(&self) -> Option<BreakerSettings> {
        (!self.no_breaker).then(|| self.breaker_values())
    }

    /// The `breaker_*` settings as one breaker, `no_breaker` aside.
    fn breaker_values(&self) -> BreakerSettings {
        BreakerSettings {
            failure_rate: self.breaker_failure_rate,
            min_calls: self.breaker_min_calls,
            window: self.breaker_window,
            cool_down: self.breaker_cool_down,
            probes: self.breaker_probes,
            max_hold: self.breaker_max_hold,
            fail_fast: self.breaker_fail_fast,
        }
    }

    /// What is done with bodies: not read with `no_body`, stored with `save_body`, else read
    /// and counted.
    pub fn body(&self) -> BodyMode {
        if self.no_body {
            BodyMode::Skip
        } else if self.save_body {
            BodyMode::Save
        } else {
            BodyMode::Discard
        }
    }

    /// `proxy` and `no_proxy` together.
    pub fn proxy_settings(&self) -> ProxySettings {
        ProxySettings {
            url: self.proxy.clone(),
            no_proxy: self.no_proxy.clone(),
        }
    }

    /// The every-job headers (`headers`) as a map.
    pub fn header_map(&self) -> http::HeaderMap {
        let mut map = http::HeaderMap::with_capacity(self.headers.len());
        for h in &self.headers {
            map.append(h.name.clone(), h.value.clone());
        }
        map
    }

    /// Reads the PEM files `cacert`, `cert` and `key` name into [`Settings::tls`] (each error
    /// names its option and file); the CA certificates already there are kept.
    pub fn read_files(&mut self) -> Result<(), crate::files::FileError> {
        use crate::files::read_option;
        for p in &self.cacert {
            self.tls.ca_pem.push(read_option("--cacert", p)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let mut pem = read_option("--cert", cert)?;
            pem.push(b'\n');
            pem.extend(read_option("--key", key)?);
            self.tls.identity_pem = Some(pem);
        }
        Ok(())
    }
}

/// The defaults of `corral run`, written here once: the binary's options fall back to these.
impl Default for Settings {
    fn default() -> Self {
        let b = BreakerSettings::default();
        Self {
            concurrency: 64,
            queue_size: None,
            threads: None,
            fsync_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            progress_interval: Duration::from_secs(5),
            halt_after_failures: None,
            halt_on_failure_rate: None,
            per_host_concurrency: 8,
            rate: None,
            burst: 1,
            per_host_rate: None,
            per_host_burst: 1,
            retries: 3,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_millis(10_000),
            retry_on: RetryOn {
                statuses: [429, 500, 502, 503, 504].map(|s| (s, s)).to_vec(),
                invalid_response: false,
            },
            require_json: false,
            require: Vec::new(),
            extract: Vec::new(),
            retry_budget: None,
            retry_unsafe: false,
            max_retry_after: Duration::from_secs(60),
            idle_connections: 256,
            no_breaker: false,
            breaker_failure_rate: b.failure_rate,
            breaker_min_calls: b.min_calls,
            breaker_window: b.window,
            breaker_cool_down: b.cool_down,
            breaker_probes: b.probes,
            breaker_max_hold: b.max_hold,
            breaker_fail_fast: b.fail_fast,
            timeout: Duration::from_millis(30_000),
            connect_timeout: Duration::from_millis(10_000),
            total_timeout: None,
            max_body: 1 << 20,
            max_line: 1 << 20,
            save_body: false,
            no_body: false,
            save_headers: false,
            user_agent: format!("corral/{}", env!("CARGO_PKG_VERSION")),
            accept: StatusSet::range(200, 399),
            cost_rate: None,
            per_host_cost_rate: None,
            cost_burst: None,
            max_cost: None,
            max_requests: None,
            cost_unit: None,
            cost_from_response: None,
            hosts: Vec::new(),
            scoped_headers: Vec::new(),
            tls: TlsSettings::default(),
            cacert: Vec::new(),
            insecure: false,
            cert: None,
            key: None,
            proxy: None,
            no_proxy: None,
            headers: Vec::new(),
            base_url: None,
            max_redirects: 5,
            compressed: false,
            save_body_dir: None,
            results_format: ResultsFormat::Jsonl,
            http2_prior_knowledge: false,
        }
    }
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(30),
            cool_down: Duration::from_secs(10),
            probes: 1,
            max_hold: Duration::from_secs(300),
            fail_fast: false,
        }
    }
}

/// Settings for in-process tests: `concurrency` jobs, short timeouts, no limits.
#[cfg(test)]
pub(crate) fn test_settings(concurrency: usize) -> Settings {
    Settings {
        concurrency,
        retries: 0,
        retry_base: Duration::from_millis(1),
        retry_max: Duration::from_millis(1),
        retry_on: "503"
            .parse()
            .unwrap_or_else(|_| Settings::default().retry_on),
        max_retry_after: Duration::from_secs(1),
        idle_connections: 8,
        no_breaker: true,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        user_agent: "corral-test".into(),
        ..Settings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, concurrency: usize) -> HostRule {
        HostRule {
            pattern: pattern.parse().unwrap(),
            settings: HostSettings {
                concurrency: Some(concurrency),
                ..HostSettings::default()
            },
        }
    }

    #[test]
    fn a_host_takes_its_most_specific_rule() {
        let s = Settings {
            hosts: vec![
                rule("*.example.com", 1),
                rule("*.api.example.com", 2),
                rule("api.example.com", 3),
                rule("api.example.com:8443", 4),
                rule("[::1]:8080", 5),
            ],
            ..Settings::default()
        };
        let c = |key: &str| s.for_host(key).concurrency();
        assert_eq!(c("www.example.com:443"), 1);
        assert_eq!(c("v1.api.example.com:443"), 2, "the longer wildcard");
        assert_eq!(c("API.example.com:443"), 3, "an exact name over wildcards");
        assert_eq!(c("api.example.com:8443"), 4, "a port over none");
        assert_eq!(c("[::1]:8080"), 5);
        assert_eq!(c("example.com:443"), 8, "*.example.com is not example.com");
        assert_eq!(c("other.org:80"), 8);
        assert_eq!(s.for_host("other.org:80").index, None);
    }

    #[test]
    fn a_rule_changes_only_what_it_sets() {
        let mut s = Settings {
            per_host_rate: Some(RateSetting::Fixed(Rate::per_second(50))),
            ..Settings::default()
        };
        s.hosts.push(HostRule {
            pattern: "slow.example".parse().unwrap(),
            settings: HostSettings {
                rate: Some(RateSetting::Fixed(Rate::per_second(2))),
                retries: Some(0),
                no_breaker: true,
                ..HostSettings::default()
            },
        });
        let h = s.for_host("slow.example:80");
        assert_eq!(h.rate(), Some((Rate::per_second(2), 1)));
        assert_eq!(
            (h.retries(), h.concurrency(), h.breaker().is_none()),
            (0, 8, true)
        );
        assert_eq!(h.timeout(), s.timeout);
        let other = s.for_host("fast.example:80");
        assert_eq!(other.rate(), Some((Rate::per_second(50), 1)));
        assert!(other.breaker().is_some());
    }

    /// Every duration, size, count and share that cannot work is refused, naming its option;
    /// the defaults pass, and each case differs from them in that one setting only.
    #[test]
    fn every_setting_that_cannot_work_is_refused_by_its_option() {
        Settings::default().check().unwrap();
        type Change = fn(&mut Settings);
        let cases: Vec<(&str, Change)> = vec![
            ("--concurrency", |s| s.concurrency = 0),
            ("--queue-size", |s| s.queue_size = Some(0)),
            ("--threads", |s| s.threads = Some(0)),
            ("--halt-after-failures", |s| s.halt_after_failures = Some(0)),
            ("--halt-on-failure-rate", |s| {
                s.halt_on_failure_rate = Some(0.0)
            }),
            ("--halt-on-failure-rate", |s| {
                s.halt_on_failure_rate = Some(1.5)
            }),
            ("--per-host-concurrency", |s| s.per_host_concurrency = 0),
            ("--burst", |s| s.burst = 0),
            ("--per-host-burst", |s| s.per_host_burst = 0),
            ("--cost-burst", |s| s.cost_burst = Some(0)),
            ("--max-cost", |s| s.max_cost = Some(0)),
            ("--max-requests", |s| s.max_requests = Some(0)),
            ("--timeout-ms", |s| s.timeout = Duration::ZERO),
            ("--total-timeout-ms", |s| {
                s.total_timeout = Some(Duration::ZERO)
            }),
            ("--connect-timeout-ms", |s| {
                s.connect_timeout = Duration::ZERO
            }),
            ("--retry-base-ms", |s| s.retry_base = Duration::ZERO),
            ("--retry-max-ms", |s| s.retry_max = s.retry_base / 2),
            ("--max-retry-after-s", |s| {
                s.max_retry_after = Duration::ZERO
            }),
            ("--retry-budget", |s| s.retry_budget = Some(0.0)),
            ("--retry-budget", |s| s.retry_budget = Some(-0.5)),
            ("--retry-budget", |s| s.retry_budget = Some(f64::NAN)),
            ("--retry-budget", |s| s.retry_budget = Some(1.5)),
            ("--max-body", |s| s.max_body = 0),
            ("--max-line", |s| s.max_line = 0),
            ("--progress-interval-s", |s| {
                s.progress_interval = Duration::ZERO
            }),
            ("--breaker-failure-rate", |s| s.breaker_failure_rate = 0.0),
            ("--breaker-failure-rate", |s| {
                s.breaker_failure_rate = f64::NAN
            }),
            ("--breaker-failure-rate", |s| s.breaker_failure_rate = 2.0),
            ("--breaker-min-calls", |s| s.breaker_min_calls = 0),
            ("--breaker-window-s", |s| s.breaker_window = Duration::ZERO),
            ("--breaker-window-s", |s| {
                s.breaker_cool_down = s.breaker_window * 2
            }),
            ("--breaker-cool-down-s", |s| {
                s.breaker_cool_down = Duration::ZERO
            }),
            ("--breaker-probes", |s| s.breaker_probes = 0),
            ("--breaker-max-hold-s", |s| {
                s.breaker_max_hold = Duration::ZERO
            }),
            ("[hosts.\"*.a.example\"] concurrency", |s| {
                host(s).concurrency = Some(0)
            }),
            ("[hosts.\"*.a.example\"] burst", |s| host(s).burst = Some(0)),
            ("[hosts.\"*.a.example\"] cost_burst", |s| {
                host(s).cost_burst = Some(0)
            }),
            ("[hosts.\"*.a.example\"] timeout_ms", |s| {
                host(s).timeout = Some(Duration::ZERO)
            }),
            ("[hosts.\"*.a.example\"] connect_timeout_ms", |s| {
                host(s).connect_timeout = Some(Duration::ZERO)
            }),
            ("[hosts.\"*.a.example\"] breaker_probes", |s| {
                host(s).breaker_probes = Some(0)
            }),
            ("[hosts.\"*.a.example\"] breaker_cool_down_s", |s| {
                host(s).breaker_cool_down = Some(Duration::ZERO)
            }),
        ];
        for (option, change) in cases {
            let mut s = Settings::default();
            change(&mut s);
            let e = s.check().expect_err(option);
            assert_eq!(e.option(), option, "{e}");
        }
        // A host table that changes nothing that cannot work passes.
        let mut s = Settings::default();
        host(&mut s).connect_timeout = Some(Duration::from_millis(1));
        s.check().unwrap();
    }

    /// One `[hosts."*.a.example"]` table, to change one field of it.
    fn host(s: &mut Settings) -> &mut HostSettings {
        if s.hosts.is_empty() {
            s.hosts.push(HostRule {
                pattern: "*.a.example".parse().unwrap(),
                settings: HostSettings::default(),
            });
        }
        &mut s.hosts[0].settings
    }

    /// A cost rate's bucket: one second's worth, at most one period's, at least 1; or as given.
    #[test]
    fn a_cost_bucket_holds_about_a_second() {
        let b = |rate: &str, given| cost_burst(rate.parse().unwrap(), given);
        assert_eq!(b("12000/min", None), 200);
        assert_eq!(b("90000/min", None), 1500);
        assert_eq!(b("100/h", None), 1);
        assert_eq!(b("10/100ms", None), 10, "one period's worth");
        assert_eq!(b("1000/s", None), 1000);
        assert_eq!(b("12000/min", Some(12_000)), 12_000);
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "*.", "a b", "host:0", "host:http", "a/b"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?}");
        }
    }
}
