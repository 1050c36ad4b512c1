//! Everything that shapes a run, as plain data with the defaults of `corral run`, written here
//! once: the binary's options fall back to these, and its `--help` and the README quote them.
//! Set them one by one with [`crate::run::RunBuilder`], or fill a [`Settings`] whole (as the
//! binary does when it merges its config file and flags) and hand it to
//! [`crate::run::RunBuilder::settings`]. They are checked once, when the run is built, and a
//! setting that cannot work is a [`ConfigError`] naming its option.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use corral::limit::Rate;

use crate::error::ConfigError;

/// What to do with response bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// Read (up to the cap) and count, do not store.
    Discard,
    /// Read up to the cap and store in the result.
    Save,
    /// Do not read at all.
    Skip,
}

/// A host's circuit breaker (see [`corral::breaker`]).
#[derive(Debug, Clone, Copy)]
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

/// Everything that shapes a run. Each field names the `corral run` option it comes from.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Jobs under way at once, all hosts together (`--concurrency`).
    pub concurrency: usize,
    /// Requests in flight to one host (`--per-host-concurrency`).
    pub per_host_concurrency: usize,
    /// Requests per period, all hosts together (`--rate`); `None`: no limit.
    pub rate: Option<Rate>,
    /// Requests the global rate lets through at once (`--burst`).
    pub burst: u64,
    /// Requests per period to one host (`--per-host-rate`); `None`: no limit.
    pub per_host_rate: Option<Rate>,
    /// Requests the per-host rate lets through at once (`--per-host-burst`).
    pub per_host_burst: u64,
    /// `--per-host-rate auto[:START]`: each host's rate is found while the run goes, from
    /// this one (see [`crate::hosts`]'s `adaptive`); `per_host_rate` is then `None`.
    pub per_host_rate_auto: Option<Rate>,
    /// Attempts after the first (`--retries`).
    pub retries: u32,
    /// First backoff delay, doubled per retry with full jitter (`--retry-base-ms`).
    pub retry_base: Duration,
    /// Longest backoff delay (`--retry-max-ms`).
    pub retry_max: Duration,
    /// Response statuses retried (`--retry-on`).
    pub retry_statuses: Vec<u16>,
    /// Retries allowed as a share of first attempts (`--retry-budget`); `None`: no budget.
    pub retry_budget: Option<f64>,
    /// Retry requests that are not idempotent even when they may have reached the server
    /// (`--retry-unsafe`).
    pub retry_unsafe: bool,
    /// Longest `Retry-After` honoured (`--max-retry-after-s`).
    pub max_retry_after: Duration,
    /// Idle connections each worker thread keeps for reuse, all hosts together (sized from the
    /// open-file limit).
    pub idle_connections: usize,
    /// Each host's circuit breaker; `None`: no breakers (`--no-breaker`).
    pub breaker: Option<BreakerSettings>,
    /// One attempt, connect to last body byte (`--timeout-ms`).
    pub timeout: Duration,
    /// Connecting, TLS included (`--connect-timeout-ms`).
    pub connect_timeout: Duration,
    /// One job, all its attempts and waits (`--total-timeout-ms`); `None`: no bound.
    pub total_timeout: Option<Duration>,
    /// Body bytes read per response (`--max-body`).
    pub max_body: u64,
    /// What to do with bodies (`--save-body`, `--no-body`).
    pub body: BodyMode,
    /// Keep response headers in results (`--save-headers`).
    pub save_headers: bool,
    /// The `User-Agent` sent unless a job sets its own (`--user-agent`).
    pub user_agent: String,
    /// Response statuses that make a job ok (`--accept`); any other is a failure
    /// (`http_status`), retried when it is in `retry_statuses`.
    pub accept: StatusSet,
    /// The sum of job costs per period, all hosts together (`--cost-rate`, e.g. 90000/min
    /// for tokens per minute); `None`: no limit. A cost rate is a bucket that holds one
    /// period's worth and refills continuously, as API providers' quotas do.
    pub cost_rate: Option<Rate>,
    /// The sum of job costs per period to each host (`--per-host-cost-rate`).
    pub per_host_cost_rate: Option<Rate>,
    /// Where a response says what the job really cost (`--cost-from-response`, a JSON pointer
    /// into the body such as `/usage/total_tokens`): the difference from the job's `cost` is
    /// settled with the cost rates.
    pub cost_from_response: Option<String>,
    /// Settings of some hosts that differ from the ones above (`[hosts."api.example.com"]` in
    /// the config file). A host takes the best match: see [`HostPattern`].
    pub hosts: Vec<HostRule>,
    /// Headers for the hosts a pattern matches only, every matching pattern's (not just the
    /// best one's, unlike [`Settings::hosts`]), added where neither the job nor its host's rule
    /// sets that header: a fleet worker's own secrets, which must reach the hosts they are for
    /// and no other — each hop of a redirect gets its own host's.
    pub scoped_headers: Vec<(HostPattern, http::HeaderMap)>,
    /// How TLS servers are trusted and how the run proves who it is (`--cacert`,
    /// `--insecure`, `--cert`, `--key`).
    pub tls: TlsSettings,
    /// Where requests go through (`--proxy`, `--no-proxy`).
    pub proxy: ProxySettings,
    /// Redirects followed per job (`--max-redirects`); 0: a 3xx is the job's response.
    /// Each hop is a request through the gates of the host it goes to.
    pub max_redirects: u32,
    /// Ask for gzip, deflate and br bodies and decode them, the cap (`max_body`) applying to
    /// the decoded size (`--compressed`).
    pub compressed: bool,
    /// Write each body to its own file in this directory instead of into the result
    /// (`--save-body-dir`); the result says where (`body_file`).
    pub save_body_dir: Option<std::path::PathBuf>,
    /// How result lines are written (`--format`).
    pub results_format: ResultsFormat,
    /// Speak HTTP/2 without asking first (`--http2-prior-knowledge`): h2c to `http://`
    /// servers. Over TLS, HTTP/2 is negotiated (ALPN) without it.
    pub http2_prior_knowledge: bool,
}

/// How result lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ResultsFormat {
    /// One JSON object per line (what `--resume` and `corral report` read).
    #[default]
    Jsonl,
    /// One CSV row per job, the columns of [`crate::result::CSV_COLUMNS`] (the JSONL keys
    /// whose values are scalars, `error` as `error_kind`, `error_message`, `maybe_sent`), after
    /// a header row the caller writes.
    Csv,
}

/// How TLS servers are trusted, and the client certificate if one is needed. The platform's
/// trust store and the bundled Mozilla roots are always trusted, unless `insecure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// More CA certificates to trust, each a PEM file's contents (`--cacert FILE`,
    /// repeatable; a file may hold several certificates).
    pub ca_pem: Vec<Vec<u8>>,
    /// Trust any server certificate, even expired or for another name (`--insecure`, curl's
    /// `-k`): for test servers only, the connection can be read by anyone in between.
    pub insecure: bool,
    /// A client certificate and its private key, PEM, for servers that ask for one
    /// (`--cert FILE --key FILE`, contents concatenated).
    pub identity_pem: Option<Vec<u8>>,
}

/// Where requests go through. Without `url`, the environment's `HTTPS_PROXY`, `HTTP_PROXY`
/// and `ALL_PROXY` (and `NO_PROXY`) are honoured, as curl does.
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

/// Settings for the hosts a pattern matches; each `None` falls back to the run's own.
#[derive(Debug, Clone, Default)]
pub struct HostSettings {
    /// `concurrency`: requests in flight to the host.
    pub concurrency: Option<usize>,
    /// `rate`: requests per period to the host.
    pub rate: Option<Rate>,
    /// `rate = "auto[:START]"`: the host's rate is found while the run goes.
    pub rate_auto: Option<Rate>,
    /// `burst` of that rate.
    pub burst: Option<u64>,
    /// `cost_rate`: the sum of job costs per period to the host.
    pub cost_rate: Option<Rate>,
    /// `retries` after the first attempt.
    pub retries: Option<u32>,
    /// `retry_on`: statuses retried.
    pub retry_statuses: Option<Vec<u16>>,
    /// `timeout_ms`: one attempt.
    pub timeout: Option<Duration>,
    /// `connect_timeout_ms`.
    pub connect_timeout: Option<Duration>,
    /// `header`: extra request headers for the host's jobs, sent where the job (with
    /// `--header`) sets none of that name.
    pub headers: http::HeaderMap,
    /// `breaker_*`: the host's breaker, whole (the run's with this host's changes).
    pub breaker: Option<BreakerSettings>,
    /// `no_breaker`: no breaker for the host.
    pub no_breaker: bool,
}

/// Settings for the hosts that match a pattern.
#[derive(Debug, Clone)]
pub struct HostRule {
    /// Which hosts.
    pub pattern: HostPattern,
    /// What differs for them.
    pub settings: HostSettings,
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
        match self.rule {
            Some(r) if r.rate.is_some() => None,
            Some(HostSettings {
                rate_auto: Some(start),
                ..
            }) => Some(*start),
            _ => self.run.per_host_rate_auto,
        }
    }

    /// The host's rate and burst, if it has a rate (an `auto` rate: where it starts).
    pub fn rate(&self) -> Option<(Rate, u64)> {
        let rate = self
            .rate_auto()
            .or(self.rule.and_then(|r| r.rate))
            .or(self.run.per_host_rate)?;
        let burst = self
            .rule
            .and_then(|r| r.burst)
            .unwrap_or(self.run.per_host_burst);
        Some((rate, burst))
    }
    /// The host's breaker, if it has one.
    pub fn breaker(&self) -> Option<BreakerSettings> {
        match self.rule {
            Some(r) if r.no_breaker => None,
            Some(HostSettings {
                breaker: Some(b), ..
            }) => Some(*b),
            _ => self.run.breaker,
        }
    }
    /// Retries after the first attempt.
    pub fn retries(&self) -> u32 {
        self.rule
            .and_then(|r| r.retries)
            .unwrap_or(self.run.retries)
    }
    /// Statuses retried.
    pub fn retry_statuses(&self) -> &[u16] {
        self.rule
            .and_then(|r| r.retry_statuses.as_deref())
            .unwrap_or(&self.run.retry_statuses)
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
    pub fn cost_rate(&self) -> Option<Rate> {
        self.rule
            .and_then(|r| r.cost_rate)
            .or(self.run.per_host_cost_rate)
    }
    /// Extra headers for the host's jobs (empty without a rule).
    pub fn headers(&self) -> Option<&http::HeaderMap> {
        self.rule.map(|r| &r.headers).filter(|h| !h.is_empty())
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

impl FromStr for StatusSet {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |part: &str| {
            ConfigError::new(
                "--accept",
                format!(
                    "{part:?} is not a status or a range of statuses (100-599), as in 200-299,404"
                ),
            )
        };
        let status = |t: &str, part: &str| -> Result<u16, ConfigError> {
            t.trim()
                .parse::<u16>()
                .ok()
                .filter(|n| (100..=599).contains(n))
                .ok_or_else(|| bad(part))
        };
        let mut set = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (status(a, part)?, status(b, part)?),
                None => {
                    let n = status(part, part)?;
                    (n, n)
                }
            };
            if a > b {
                return Err(bad(part));
            }
            set.push((a, b));
        }
        Ok(Self(set))
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

impl Settings {
    /// Refuses settings that cannot work (a zero that would stop every job, or hang the run),
    /// naming the option they come from.
    pub fn check(&self) -> Result<(), ConfigError> {
        let at_least_one = |v: usize, option| {
            if v == 0 {
                Err(ConfigError::new(option, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        at_least_one(self.concurrency, "--concurrency")?;
        at_least_one(self.per_host_concurrency, "--per-host-concurrency")?;
        if self.timeout.is_zero() {
            return Err(ConfigError::new("--timeout-ms", "must be greater than 0"));
        }
        if self.total_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "--total-timeout-ms",
                "must be greater than 0",
            ));
        }
        // A zero connect timeout fails every connection before it is tried.
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                "--connect-timeout-ms",
                "must be greater than 0",
            ));
        }
        if let Some(p) = &self.proxy.url {
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
            if rule.settings.concurrency == Some(0) {
                return Err(ConfigError::new(
                    "[hosts] concurrency",
                    "must be at least 1",
                ));
            }
            if rule.settings.timeout.is_some_and(|t| t.is_zero()) {
                return Err(ConfigError::new(
                    "[hosts] timeout_ms",
                    "must be greater than 0",
                ));
            }
            if rule.settings.connect_timeout.is_some_and(|t| t.is_zero()) {
                return Err(ConfigError::new(
                    "[hosts] connect_timeout_ms",
                    "must be greater than 0",
                ));
            }
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
        Ok(())
    }
}

/// The defaults of `corral run`, written here once: the binary's options fall back to these.
impl Default for Settings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            per_host_concurrency: 8,
            rate: None,
            burst: 1,
            per_host_rate: None,
            per_host_burst: 1,
            per_host_rate_auto: None,
            retries: 3,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_millis(10_000),
            retry_statuses: vec![429, 500, 502, 503, 504],
            retry_budget: None,
            retry_unsafe: false,
            max_retry_after: Duration::from_secs(60),
            idle_connections: 256,
            breaker: Some(BreakerSettings::default()),
            timeout: Duration::from_millis(30_000),
            connect_timeout: Duration::from_millis(10_000),
            total_timeout: None,
            max_body: 1 << 20,
            body: BodyMode::Discard,
            save_headers: false,
            user_agent: format!("corral/{}", env!("CARGO_PKG_VERSION")),
            accept: StatusSet::range(200, 399),
            cost_rate: None,
            per_host_cost_rate: None,
            cost_from_response: None,
            hosts: Vec::new(),
            scoped_headers: Vec::new(),
            tls: TlsSettings::default(),
            proxy: ProxySettings::default(),
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
        retry_statuses: vec![503],
        max_retry_after: Duration::from_secs(1),
        idle_connections: 8,
        breaker: None,
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
            per_host_rate: Some(Rate::per_second(50)),
            ..Settings::default()
        };
        s.hosts.push(HostRule {
            pattern: "slow.example".parse().unwrap(),
            settings: HostSettings {
                rate: Some(Rate::per_second(2)),
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

    #[test]
    fn a_zero_connect_timeout_is_refused_by_its_option() {
        let run = Settings {
            connect_timeout: Duration::ZERO,
            ..Settings::default()
        };
        assert_eq!(run.check().unwrap_err().option(), "--connect-timeout-ms");
        let mut s = Settings::default();
        s.hosts.push(HostRule {
            pattern: "a.example".parse().unwrap(),
            settings: HostSettings {
                connect_timeout: Some(Duration::ZERO),
                ..HostSettings::default()
            },
        });
        assert_eq!(
            s.check().unwrap_err().option(),
            "[hosts] connect_timeout_ms"
        );
        s.hosts[0].settings.connect_timeout = Some(Duration::from_millis(1));
        s.check().unwrap();
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["", "*.", "a b", "host:0", "host:http", "a/b"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?}");
        }
    }
}
