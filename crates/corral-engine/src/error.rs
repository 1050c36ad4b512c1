//! How a job can fail: one vocabulary, written to results as today's strings.

use std::fmt;

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
}

impl ErrorKind {
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
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_the_strings_results_always_had() {
        for k in [
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
        ] {
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(ErrorKind::HttpStatus.to_string(), "http_status");
    }
}
