//! Where a run lives: `nats://[USER:PASSWORD@|TOKEN@]HOST:PORT[,HOST:PORT...]/RUN`, or `tls://`.
//!
//! The address names the NATS servers (several: a cluster, among which the client fails over),
//! how to log in, and the run; every name the run uses on the server is derived from the run's
//! name here, in one place, so the submitter, the workers and the collector cannot disagree. A
//! run name is 1 to 64 letters, digits, `-` or `_`: it becomes part of stream and subject
//! names, where dots, spaces and wildcards mean something else.
//!
//! A password or token in the address is a secret: it is kept in a [`Secret`], which neither
//! `Display` nor `Debug` shows, and the address is shown without it (errors quote the address
//! with its credentials `REDACTED`).

use std::fmt;

use crate::connect::Access;
use crate::sign::QueueKey;

/// The environment variable that gives the queue when `--queue` is not given.
pub const ENV: &str = "CORRAL_QUEUE";

/// A secret string (a password, a token): shown by neither `Display` nor `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, to hand to the client that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(REDACTED)")
    }
}

/// How the address says to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `nats://USER:PASSWORD@HOST/RUN`.
    UserPassword {
        /// The user name (not secret: it may be shown).
        user: String,
        /// The password.
        password: Secret,
    },
    /// `nats://TOKEN@HOST/RUN`.
    Token(Secret),
}

/// A parsed queue address; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrl {
    servers: Vec<String>,
    tls: bool,
    run: String,
    credentials: Option<Credentials>,
    access: Access,
    key: Option<QueueKey>,
}

/// Why a queue address cannot be used. The address it quotes has its credentials redacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueUrlError {
    /// It does not start with `nats://` or `tls://`.
    #[error("{0:?}: a queue is written nats://HOST:PORT/RUN (or tls://...)")]
    Scheme(String),
    /// No host, or a port that is not a number.
    #[error(
        "{0:?}: each server must be HOST or HOST:PORT (port 1-65535), several separated by commas"
    )]
    Server(String),
    /// The run name is missing or has characters a stream name cannot hold.
    #[error("{0:?}: the run name (after the /) must be 1-64 letters, digits, '-' or '_'")]
    Run(String),
    /// The credentials before `@` are empty or badly escaped.
    #[error("{0:?}: credentials are written USER:PASSWORD@ or TOKEN@, percent-encoded")]
    Credentials(String),
    /// Neither `--queue` nor `CORRAL_QUEUE` gave one.
    #[error("no queue: give --queue nats://HOST:PORT/RUN or set {ENV}")]
    Missing,
}

/// The address as it may be shown: credentials replaced by `REDACTED`.
fn shown(text: &str) -> String {
    let text = text.trim();
    match (text.split_once("://"), text.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://REDACTED{}", &text[at..]),
        _ => text.to_string(),
    }
}

/// Percent-decodes a user name, password or token.
fn decode(part: &str) -> Option<String> {
    crate::board::unescape(part, b'%')
}

impl QueueUrl {
    /// Parses `nats://[USER:PASSWORD@|TOKEN@]HOST[:PORT][,HOST[:PORT]...]/RUN` (port 4222 when
    /// omitted; `tls://` requires TLS).
    ///
    /// ```
    /// use corral_queue::url::QueueUrl;
    /// let q = QueueUrl::parse("nats://10.0.0.5:4222/crawl-7").unwrap();
    /// assert_eq!(q.server(), "10.0.0.5:4222");
    /// assert_eq!(q.jobs_stream(), "CORRAL_crawl-7_JOBS");
    /// assert!(QueueUrl::parse("nats://host/has.dots").is_err());
    /// let q = QueueUrl::parse("nats://fleet:s3cret@a:4222,b/run").unwrap();
    /// assert_eq!(q.servers(), ["a:4222", "b:4222"]);
    /// assert_eq!(q.to_string(), "nats://a:4222,b:4222/run");
    /// assert!(!format!("{q:?}").contains("s3cret"));
    /// ```
    pub fn parse(text: &str) -> Result<Self, QueueUrlError> {
        let trimmed = text.trim();
        let (tls, rest) = match (
            trimmed.strip_prefix("nats://"),
            trimmed.strip_prefix("tls://"),
        ) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => return Err(QueueUrlError::Scheme(shown(text))),
        };
        // The run name holds no `@`: the last one ends the credentials, which may hold `/`.
        let (credentials, rest) = match rest.rsplit_once('@') {
            None => (None, rest),
            Some((userinfo, rest)) => {
                let bad = || QueueUrlError::Credentials(shown(text));
                let credentials = match userinfo.split_once(':') {
                    Some((user, password)) => Credentials::UserPassword {
                        user: decode(user).filter(|u| !u.is_empty()).ok_or_else(bad)?,
                        password: Secret(decode(password).ok_or_else(bad)?),
                    },
                    None => Credentials::Token(Secret(
                        decode(userinfo).filter(|t| !t.is_empty()).ok_or_else(bad)?,
                    )),
                };
                (Some(credentials), rest)
            }
        };
        let (servers, run) = rest
            .split_once('/')
            .ok_or_else(|| QueueUrlError::Run(shown(text)))?;
        let mut list = Vec::new();
        for server in servers.split(',') {
            let server = server.trim();
            let server = match server.rsplit_once(':') {
                Some((host, port)) => {
                    let ok = !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0);
                    if !ok {
                        return Err(QueueUrlError::Server(shown(text)));
                    }
                    server.to_string()
                }
                None if !server.is_empty() => format!("{server}:4222"),
                None => return Err(QueueUrlError::Server(shown(text))),
            };
            list.push(server);
        }
        let run_ok = (1..=64).contains(&run.len())
            && run
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !run_ok {
            return Err(QueueUrlError::Run(shown(text)));
        }
        Ok(Self {
            servers: list,
            tls,
            run: run.to_string(),
            credentials,
            access: Access::default(),
            key: None,
        })
    }

    /// The queue from `--queue` if given, else from `CORRAL_QUEUE`.
    pub fn from_flag_or_env(flag: Option<&str>) -> Result<Self, QueueUrlError> {
        match flag {
            Some(f) => Self::parse(f),
            None => match std::env::var(ENV) {
                Ok(v) if !v.trim().is_empty() => Self::parse(&v),
                _ => Err(QueueUrlError::Missing),
            },
        }
    }

    /// The same queue, reached with `access` (credential files, TLS) besides what the
    /// address says.
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
        self
    }

    /// The same queue, its jobs, results and record signed and checked with `key` (see
    /// [`crate::sign`]).
    pub fn with_key(mut self, key: Option<QueueKey>) -> Self {
        self.key = key;
        self
    }

    /// The fleet's key, if this process has one.
    pub fn key(&self) -> Option<&QueueKey> {
        self.key.as_ref()
    }

    /// The first server's `HOST:PORT`.
    pub fn server(&self) -> &str {
        self.servers.first().map_or("", String::as_str)
    }

    /// Every server's `HOST:PORT`, in the order given.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// Whether the address requires TLS (`tls://`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The credentials the address gives, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// How to connect beyond the address.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The run's name.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// The work-queue stream holding the run's jobs.
    pub fn jobs_stream(&self) -> String {
        format!("CORRAL_{}_JOBS", self.run)
    }

    /// The subject jobs are published on.
    pub fn jobs_subject(&self) -> String {
        format!("corral.{}.jobs", self.run)
    }

    /// The stream holding the run's result lines, one message per job.
    pub fn results_stream(&self) -> String {
        format!("CORRAL_{}_RESULTS", self.run)
    }

    /// The subject result lines are published on.
    pub fn results_subject(&self) -> String {
        format!("corral.{}.results", self.run)
    }

    /// The KV bucket holding what the run's workers share: its options, each host's rate
    /// schedule, pauses and breakers (see [`crate::board`]).
    pub fn bucket(&self) -> String {
        format!("CORRAL_{}", self.run)
    }

    /// The input line a `Nats-Msg-Id` names, if it is one of this run's (`RUN:LINE`, or
    /// `RUN:LINE:rN` for a line published again by `submit --resume`).
    pub fn line_of(&self, id: &str) -> Option<u64> {
        let rest = id.strip_prefix(self.run.as_str())?.strip_prefix(':')?;
        rest.split(':').next()?.parse().ok()
    }

    /// The `Nats-Msg-Id` of input line `line`: the run and the line, so the server drops a
    /// line published twice.
    pub fn job_id(&self, line: u64) -> String {
        format!("{}:{line}", self.run)
    }

    /// The `Nats-Msg-Id` of input line `line` published again by the `resume`-th
    /// `submit --resume`: not a repeat of the first, so the server keeps it; [`Self::line_of`]
    /// reads its line.
    pub fn resubmit_id(&self, line: u64, resume: u64) -> String {
        format!("{}:r{resume}", self.job_id(line))
    }
}

/// The address without its credentials: what may be printed.
impl fmt::Display for QueueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "tls" } else { "nats" };
        write!(f, "{scheme}://{}/{}", self.servers.join(","), self.run)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_say_what_is_wrong() {
        let q = QueueUrl::parse("nats://localhost/run_1").unwrap();
        assert_eq!((q.server(), q.run()), ("localhost:4222", "run_1"));
        assert_eq!(q.to_string(), "nats://localhost:4222/run_1");
        assert_eq!(q.job_id(17), "run_1:17");
        assert_eq!(q.line_of("run_1:17"), Some(17));
        assert_eq!(q.line_of("run_1:17:r2"), Some(17));
        assert_eq!(q.line_of(&q.resubmit_id(17, 3)), Some(17));
        assert_eq!(q.line_of("run_2:17"), None);
        assert_eq!(q.line_of("run_1:x"), None);
        for (bad, what) in [
            ("http://h/r", "nats://HOST:PORT/RUN"),
            ("nats://h:0/r", "port"),
            ("nats://h:x/r", "port"),
            ("nats://:4222/r", "port"),
            ("nats://h:4222", "run name"),
            ("nats://h:4222/", "run name"),
            ("nats://h/a.b", "run name"),
            ("nats://h/a*", "run name"),
        ] {
            let e = QueueUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(what), "{bad}: {e}");
        }
        let long = format!("nats://h/{}", "x".repeat(65));
        assert!(QueueUrl::parse(&long).is_err());
    }

    #[test]
    fn credentials_clusters_and_tls_parse_and_are_never_shown() {
        let q = QueueUrl::parse("nats://fleet:p%40ss/w0rd@a:4222,b/run").unwrap();
        assert_eq!(
            q.credentials(),
            Some(&Credentials::UserPassword {
                user: "fleet".into(),
                password: Secret::new("p@ss/w0rd"),
            })
        );
        assert_eq!(q.servers(), ["a:4222", "b:4222"]);
        assert!(!q.tls());
        let q = QueueUrl::parse("tls://t0ken-xyz@h:4443/run").unwrap();
        assert_eq!(
            q.credentials(),
            Some(&Credentials::Token(Secret::new("t0ken-xyz")))
        );
        assert!(q.tls());
        assert_eq!(q.to_string(), "tls://h:4443/run");
        for q in [&q, &QueueUrl::parse("nats://u:t0ken-xyz@h/run").unwrap()] {
            assert!(!q.to_string().contains("t0ken-xyz"));
            assert!(!format!("{q:?}").contains("t0ken-xyz"));
        }
        // A bad address is quoted without its credentials.
        for bad in [
            "nats://fleet:t0ken-xyz@h:x/run",
            "nats://fleet:t0ken-xyz@h/bad.run",
            "nats://:t0ken-xyz@h/run",
            "nats://fleet:t0ken-xyz%zz@h/run",
            "http://fleet:t0ken-xyz@h/run",
        ] {
            let e = QueueUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("t0ken-xyz"), "{e}");
            assert!(e.contains("REDACTED"), "{e}");
        }
    }
}
