//! Where a run lives: `nats://HOST:PORT/RUN`.
//!
//! The address names the NATS server and the run; every name the run uses on the server is
//! derived from the run's name here, in one place, so the submitter, the workers and the
//! collector cannot disagree. A run name is 1 to 64 letters, digits, `-` or `_`: it becomes
//! part of stream and subject names, where dots, spaces and wildcards mean something else.

use std::fmt;

/// The environment variable that gives the queue when `--queue` is not given.
pub const ENV: &str = "CORRAL_QUEUE";

/// A parsed `nats://HOST:PORT/RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueUrl {
    server: String,
    run: String,
}

/// Why a queue address cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueUrlError {
    /// It does not start with `nats://`.
    #[error("{0:?}: a queue is written nats://HOST:PORT/RUN")]
    Scheme(String),
    /// No host, or a port that is not a number.
    #[error("{0:?}: the server must be HOST or HOST:PORT (port 1-65535)")]
    Server(String),
    /// The run name is missing or has characters a stream name cannot hold.
    #[error("{0:?}: the run name (after the /) must be 1-64 letters, digits, '-' or '_'")]
    Run(String),
    /// Neither `--queue` nor `CORRAL_QUEUE` gave one.
    #[error("no queue: give --queue nats://HOST:PORT/RUN or set {ENV}")]
    Missing,
}

impl QueueUrl {
    /// Parses `nats://HOST[:PORT]/RUN` (port 4222 when omitted).
    ///
    /// ```
    /// use corral_queue::url::QueueUrl;
    /// let q = QueueUrl::parse("nats://10.0.0.5:4222/crawl-7").unwrap();
    /// assert_eq!(q.server(), "10.0.0.5:4222");
    /// assert_eq!(q.jobs_stream(), "CORRAL_crawl-7_JOBS");
    /// assert!(QueueUrl::parse("nats://host/has.dots").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, QueueUrlError> {
        let rest = text
            .trim()
            .strip_prefix("nats://")
            .ok_or_else(|| QueueUrlError::Scheme(text.to_string()))?;
        let (server, run) = rest
            .split_once('/')
            .ok_or_else(|| QueueUrlError::Run(text.to_string()))?;
        let server = match server.rsplit_once(':') {
            Some((host, port)) => {
                let ok = !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0);
                if !ok {
                    return Err(QueueUrlError::Server(text.to_string()));
                }
                server.to_string()
            }
            None if !server.is_empty() => format!("{server}:4222"),
            None => return Err(QueueUrlError::Server(text.to_string())),
        };
        let run_ok = (1..=64).contains(&run.len())
            && run
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !run_ok {
            return Err(QueueUrlError::Run(text.to_string()));
        }
        Ok(Self {
            server,
            run: run.to_string(),
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

    /// `HOST:PORT`, to connect to.
    pub fn server(&self) -> &str {
        &self.server
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

impl fmt::Display for QueueUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nats://{}/{}", self.server, self.run)
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
}
