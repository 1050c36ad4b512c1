//! What `corral submit` stores for a run, and every worker and the collector read before
//! anything else: the run's options, how many jobs it has and which input lines they are —
//! so that only what was submitted counts (a job or result for any other line is refused) —
//! signed with the fleet's key when there is one (see [`crate::sign`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use corral_engine::settings::Settings;

use crate::error::{QueueError, QueueErrorKind};

/// The input lines of a run's jobs, as sorted ranges (`1-1000,1002-5000`): a jobs file's
/// blank lines (and, with `--urls`, comments) have no job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lines(Vec<(u64, u64)>);

impl Lines {
    /// Ranges kept at most; past this (a file with blank lines all through) the set becomes
    /// the one range from the first line to the last, so the board's value stays small.
    pub const MAX_RANGES: usize = 10_000;

    /// Adds `line`, which comes after every line added before (a smaller one is ignored).
    pub fn push(&mut self, line: u64) {
        match self.0.last_mut() {
            Some((_, end)) if line <= *end => {}
            Some((_, end)) if line == *end + 1 => *end = line,
            _ => {
                if self.0.len() >= Self::MAX_RANGES {
                    if let Some(first) = self.0.first().map(|r| r.0) {
                        self.0 = vec![(first, line)];
                        return;
                    }
                }
                self.0.push((line, line));
            }
        }
    }

    /// Whether `line` is one of the run's.
    pub fn contains(&self, line: u64) -> bool {
        let i = self.0.partition_point(|&(_, end)| end < line);
        self.0.get(i).is_some_and(|&(start, _)| start <= line)
    }

    /// The last line, if any.
    pub fn last(&self) -> Option<u64> {
        self.0.last().map(|r| r.1)
    }
}

impl fmt::Display for Lines {
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

/// A line set that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a line set is written as increasing ranges, as in 1-10,12,14-20")]
pub struct LinesError;

impl FromStr for Lines {
    type Err = LinesError;

    fn from_str(s: &str) -> Result<Self, LinesError> {
        let mut lines = Lines::default();
        if s.trim().is_empty() {
            return Ok(lines);
        }
        for part in s.split(',') {
            let (a, b) = match part.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (part.trim(), part.trim()),
            };
            let (a, b): (u64, u64) = (
                a.parse().map_err(|_| LinesError)?,
                b.parse().map_err(|_| LinesError)?,
            );
            if a > b || lines.last().is_some_and(|l| a <= l) {
                return Err(LinesError);
            }
            lines.0.push((a, b));
        }
        Ok(lines)
    }
}

impl Serialize for Lines {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lines {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The run as every worker takes it: the engine's [`Settings`] (what is a secret or one
/// machine's own is never serialised: see [`Settings`]), the CA certificates it trusts, and
/// how its jobs read. Carried in [`RunInfo::options`], in this crate's format of
/// [`RunInfo::FORMAT`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSettings {
    /// The run's settings, as `corral submit` planned and checked them (its every-job headers
    /// among them: none secret, `corral submit` refuses those).
    pub settings: Settings,
    /// The contents of the run's `--cacert` files (public certificates), which the workers
    /// trust beside their own: the files' paths would mean nothing on another machine.
    pub ca_pem: Vec<Vec<u8>>,
    /// The lines are URLs (`--urls`), not JSON jobs.
    pub urls: bool,
}

/// A run as submitted; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The board format this record is written in: [`RunInfo::FORMAT`] for this version. A
    /// process reads only its own ([`RunInfo::from_json`]): a worker of another version
    /// refuses the run, saying so, instead of misreading its options. Records written before
    /// formats were numbered have none, read as 0.
    #[serde(default)]
    pub format: u32,
    /// The run's options: a [`RunSettings`] as JSON ([`RunInfo::settings`] reads it).
    pub options: String,
    /// Jobs submitted.
    pub jobs: u64,
    /// Their input lines.
    pub lines: Lines,
}

impl RunInfo {
    /// The board format this version writes and reads. Raise it whenever the record, or the
    /// options it carries, change in a way another version would misread.
    pub const FORMAT: u32 = 3;

    /// The record of a run of `settings`, `jobs` jobs on input `lines`, in this version's
    /// format.
    pub fn of(settings: &RunSettings, jobs: u64, lines: Lines) -> Result<Self, QueueError> {
        let options = serde_json::to_string(settings)
            .map_err(|e| QueueError::of(QueueErrorKind::Config, "write the run's options", e))?;
        Ok(Self {
            format: Self::FORMAT,
            options,
            jobs,
            lines,
        })
    }

    /// The run's settings, as the workers take them.
    pub fn settings(&self) -> Result<RunSettings, QueueError> {
        serde_json::from_str(&self.options).map_err(|e| {
            QueueError::of(
                QueueErrorKind::Forged,
                "read the run's options",
                format!("the run's options cannot be read: {e}"),
            )
        })
    }

    /// Reads a record's JSON text (as [`crate::board::Board::run`] finds it, its signature
    /// already checked); a record of another format is [`QueueErrorKind::Version`], naming
    /// both formats.
    pub fn from_json(text: &str) -> Result<Self, QueueError> {
        #[derive(Deserialize)]
        struct Format {
            #[serde(default)]
            format: u32,
        }
        let what = "read the run's options";
        let unreadable = |e: serde_json::Error| {
            QueueError::of(
                QueueErrorKind::Forged,
                what,
                format!("the run's record cannot be read: {e}"),
            )
        };
        let found = serde_json::from_str::<Format>(text)
            .map_err(unreadable)?
            .format;
        if found != Self::FORMAT {
            return Err(QueueError::of(
                QueueErrorKind::Version,
                what,
                format!(
                    "the run was submitted by a corral whose board format is {found}; this one reads format {}: run `corral submit`, the workers and the collector of one version",
                    Self::FORMAT
                ),
            ));
        }
        serde_json::from_str(text).map_err(unreadable)
    }
}

/// A record of this version's format, with no options, no jobs.
impl Default for RunInfo {
    fn default() -> Self {
        Self {
            format: Self::FORMAT,
            options: String::new(),
            jobs: 0,
            lines: Lines::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn line_sets_hold_exactly_the_lines_pushed() {
        let mut l = Lines::default();
        for n in [1, 2, 3, 5, 8, 9, 9, 4] {
            l.push(n);
        }
        assert_eq!(l.to_string(), "1-3,5,8-9");
        for (n, inside) in [
            (0, false),
            (1, true),
            (3, true),
            (4, false),
            (5, true),
            (6, false),
            (9, true),
            (10, false),
        ] {
            assert_eq!(l.contains(n), inside, "{n}");
        }
        assert_eq!(l.to_string().parse::<Lines>().unwrap(), l);
        for bad in ["3-1", "1,1", "5,2", "x", "1-"] {
            assert!(bad.parse::<Lines>().is_err(), "{bad}");
        }
        let mut many = Lines::default();
        for n in 0..(Lines::MAX_RANGES as u64 + 5) {
            many.push(2 * n + 1);
        }
        assert!(many.0.len() <= Lines::MAX_RANGES);
        assert!(many.contains(1) && many.contains(many.last().unwrap()));
    }

    #[test]
    fn a_record_of_another_format_is_refused_saying_both() {
        let ours = RunInfo {
            jobs: 3,
            ..RunInfo::default()
        };
        let text = serde_json::to_string(&ours).unwrap();
        assert_eq!(RunInfo::from_json(&text).unwrap(), ours);
        let newer = text.replace(
            &format!("\"format\":{}", RunInfo::FORMAT),
            &format!("\"format\":{}", RunInfo::FORMAT + 1),
        );
        assert_ne!(newer, text);
        let e = RunInfo::from_json(&newer).unwrap_err();
        assert_eq!(e.kind(), QueueErrorKind::Version, "{e}");
        assert!(
            e.to_string()
                .contains(&format!("board format is {}", RunInfo::FORMAT + 1)),
            "{e}"
        );
        // A record from before formats were numbered has none: format 0, refused the same way.
        let old = r#"{"options":"{}","jobs":3,"lines":"1-3"}"#;
        let e = RunInfo::from_json(old).unwrap_err();
        assert_eq!(e.kind(), QueueErrorKind::Version, "{e}");
        assert!(e.to_string().contains("board format is 0"), "{e}");
        assert_eq!(
            RunInfo::from_json("{").unwrap_err().kind(),
            QueueErrorKind::Forged
        );
    }

    /// The settings travel whole, but never the client certificate's key nor a worker's own
    /// headers.
    #[test]
    fn settings_travel_without_their_secrets() {
        let mut settings = Settings {
            concurrency: 7,
            per_host_rate: Some(corral_engine::settings::RateSetting::Fixed(
                corral::limit::Rate::per_minute(90),
            )),
            halt_after_failures: Some(3),
            ..Settings::default()
        };
        settings.tls.identity_pem = Some(b"-----BEGIN PRIVATE KEY-----secret".to_vec());
        settings.headers = vec!["X-Team: t1".parse().unwrap()];
        settings.hosts.push(
            corral_engine::settings::HostRule::from_tables([(
                &"*.a.example".to_string(),
                &corral_engine::settings::HostSettings {
                    connect_timeout: Some(std::time::Duration::from_millis(1500)),
                    ..Default::default()
                },
            )])
            .unwrap()
            .remove(0),
        );
        settings.scoped_headers.push((
            "b.example".parse().unwrap(),
            http::HeaderMap::from_iter([(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_static("Bearer worker-secret"),
            )]),
        ));
        let run = RunSettings {
            settings,
            ca_pem: vec![b"-----BEGIN CERTIFICATE-----public".to_vec()],
            urls: true,
        };
        let info = RunInfo::of(&run, 5, Lines::default()).unwrap();
        assert!(!info.options.contains("secret"), "{}", info.options);
        let back = info.settings().unwrap();
        assert_eq!(back.settings.concurrency, 7);
        assert_eq!(
            back.settings
                .per_host_rate
                .map(|r| r.to_string())
                .as_deref(),
            Some("90/min")
        );
        assert_eq!(back.settings.halt_after_failures, Some(3));
        assert_eq!(back.ca_pem, run.ca_pem);
        assert_eq!(back.settings.tls.identity_pem, None);
        assert!(back.settings.scoped_headers.is_empty());
        assert_eq!(back.settings.hosts[0].pattern.to_string(), "*.a.example");
        assert_eq!(
            back.settings.hosts[0].settings.connect_timeout,
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(back.settings.accept, run.settings.accept);
        assert!(back.urls);
        assert_eq!(back.settings.headers, run.settings.headers);
    }
}
