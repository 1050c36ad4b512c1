//! How a job can fail: one vocabulary, written to results as today's strings.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// Why a job failed: the `error.kind` of its result line (serialised in `snake_case`, e.g.
/// `http_status`), the key of the summary's failure counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No complete response within the attempt's timeout.
    Timeout,
    /// The TCP connection could not be made (refused, unreachable, connect timeout).
    Connect,
    /// The host's name did not resolve.
    Dns,
    /// The process ran out of file descriptors: not the host's fault.
    FdLimit,
    /// The connection failed after it was made (reset, closed, not HTTP).
    Connection,
    /// The response body could not be read to its end.
    Body,
    /// The last response's status was not a success (and retries, if any, did not help).
    HttpStatus,
    /// The host's circuit breaker was open.
    CircuitOpen,
    /// The job's total timeout (`--total-timeout-ms`) ran out.
    TotalTimeout,
    /// A redirect that must not be followed, or too many.
    Redirect,
    /// The input line is not a valid job.
    InvalidInput,
    /// The request could not be built.
    Request,
    /// The TLS handshake failed on a certificate: the server's is not trusted (`--cacert`,
    /// `--insecure`) or expired or for another name, or the server refused the client's
    /// (`--cert`). Not retried, and not counted by the host's breaker: it is a setting to
    /// fix, and every job says so at once rather than waiting for an outage to end.
    Tls,
    /// An earlier run was stopped while this job's request, which may not be repeated (a
    /// POST or PATCH without `Idempotency-Key`), may have been under way: it is not sent
    /// again unless `--retry-failed interrupted` says so (see [`crate::intents`]).
    Interrupted,
    /// The response was accepted by its status, but its body failed a content check
    /// (`--require-json`, `--require`): not JSON, a field missing or not the value asked for.
    /// Retried only when `--retry-on` names it.
    InvalidResponse,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Dns,
        ErrorKind::FdLimit,
        ErrorKind::Connection,
        ErrorKind::Body,
        ErrorKind::HttpStatus,
        ErrorKind::CircuitOpen,
        ErrorKind::TotalTimeout,
        ErrorKind::Redirect,
        ErrorKind::InvalidInput,
        ErrorKind::Request,
        ErrorKind::Tls,
        ErrorKind::Interrupted,
        ErrorKind::InvalidResponse,
    ];

    /// The kind written to results as `name`.
    ///
    /// ```
    /// use corral_engine::error::ErrorKind;
    /// assert_eq!(ErrorKind::named("http_status"), Some(ErrorKind::HttpStatus));
    /// assert_eq!(ErrorKind::named("oops"), None);
    /// ```
    pub fn named(name: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The name written to results (`"http_status"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Dns => "dns",
            ErrorKind::FdLimit => "fd_limit",
            ErrorKind::Connection => "connection",
            ErrorKind::Body => "body",
            ErrorKind::HttpStatus => "http_status",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::TotalTimeout => "total_timeout",
            ErrorKind::Redirect => "redirect",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Request => "request",
            ErrorKind::Tls => "tls",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::InvalidResponse => "invalid_response",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A setting that cannot work, named by the option it comes from (`--per-host-rate: ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option}: {message}")]
pub struct ConfigError {
    option: std::borrow::Cow<'static, str>,
    message: String,
}

impl ConfigError {
    /// `option` (as the command line or the config file names it: `--timeout-ms`,
    /// `[hosts."api.example.com"] timeout_ms`) cannot be `message`.
    pub fn new(
        option: impl Into<std::borrow::Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            option: option.into(),
            message: message.into(),
        }
    }

    /// From a refusal of one of corral's builders.
    pub fn from_corral(
        option: impl Into<std::borrow::Cow<'static, str>>,
        e: &corral::ConfigError,
    ) -> Self {
        Self::new(option, e.message())
    }

    /// The option whose value cannot work.
    pub fn option(&self) -> &str {
        &self.option
    }
}

/// Why a run could not start, or a piece of it could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting cannot work.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built (TLS roots, ...).
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The results writer could not start.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A worker thread or its runtime could not be started.
    #[error("cannot start a worker {what}: {source}")]
    Worker {
        /// `thread` or `runtime`.
        what: &'static str,
        /// The system's reason.
        source: std::io::Error,
    },
}

/// Why a results file cannot be used; nothing was written to it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The path is a directory.
    #[error("{0} is a directory")]
    Directory(PathBuf),
    /// The path is the jobs file itself.
    #[error(
        "{0} is the jobs file itself: results would overwrite the jobs; name another results file"
    )]
    IsInput(PathBuf),
    /// It holds results, and neither resume nor overwrite was asked for.
    #[error(
        "{0} already holds results; pass --resume to skip the jobs it has and run the rest, or \
         --overwrite to start over"
    )]
    NotEmpty(PathBuf),
    /// Another process holds its lock.
    #[error("{path} is being written by another corral run ({}); two runs on one results file would write jobs twice. Wait for it to end, or stop it", holder.map_or_else(|| "another process".to_string(), |pid| format!("pid {pid}")))]
    Locked {
        /// The results file.
        path: PathBuf,
        /// The holder's pid, when it can be known (`/proc/locks`).
        holder: Option<u32>,
    },
    /// Lines that are not results of this jobs file, and `--repair` was not asked for.
    #[error("{path}:{line}: {why}; {count} such line(s) in all. Pass --resume --repair to set them aside in {side} and run their jobs again", path = path.display(), side = side.display())]
    BadLines {
        /// The results file.
        path: PathBuf,
        /// The first bad line (1-based, in the results file).
        line: u64,
        /// What is wrong with it.
        why: String,
        /// How many there are.
        count: usize,
        /// Where `--repair` would put them.
        side: PathBuf,
    },
    /// Results could not be written (disk full ...).
    #[error("cannot write results: {0}")]
    Write(std::io::Error),
    /// A system call on it failed.
    #[error("cannot {action} {path}: {source}", path = path.display())]
    Io {
        /// What was being done (`read`, `lock`, `open for writing`, `repair`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
}

impl SinkError {
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| SinkError::Io {
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_the_strings_results_always_had() {
        for k in ErrorKind::ALL {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
            assert_eq!(ErrorKind::named(k.as_str()), Some(k));
        }
        assert_eq!(ErrorKind::HttpStatus.to_string(), "http_status");
    }
}
