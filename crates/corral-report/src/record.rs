//! One result line as a report reads it: only the fields it counts, borrowed from the line
//! where JSON allows, everything else (bodies, headers, `meta`) skipped unparsed into values.

use std::borrow::Cow;
use std::time::UNIX_EPOCH;

use serde::Deserialize;

/// The fields of a result line a report uses. Fields a results file of an older corral lacks
/// (`started_at`, `opened_breaker`, `paused_host`) are `None` or zero.
#[derive(Debug, Deserialize)]
pub struct Record<'a> {
    /// The job's line number in the jobs file.
    pub line: Option<u64>,
    /// The job's `id`.
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    /// Its method.
    #[serde(borrow)]
    pub method: Option<Cow<'a, str>>,
    /// Its URL, as written (secrets already redacted).
    #[serde(borrow)]
    pub url: Option<Cow<'a, str>>,
    /// The job succeeded.
    pub ok: bool,
    /// The status of its last response.
    pub status: Option<u16>,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// The last attempt's latency, in milliseconds.
    pub latency_ms: Option<f64>,
    /// Its time to the response's head, in milliseconds.
    #[serde(default)]
    pub ttfb_ms: Option<f64>,
    /// Its time to a stream's first event with data, in milliseconds.
    #[serde(default)]
    pub ttfe_ms: Option<f64>,
    /// The whole job's time, retries and waits included, in milliseconds.
    #[serde(default)]
    pub elapsed_ms: f64,
    /// When the job started (RFC 3339).
    #[serde(borrow)]
    pub started_at: Option<Cow<'a, str>>,
    /// Times its failures opened its host's breaker.
    #[serde(default)]
    pub opened_breaker: u32,
    /// Times its responses paused its host.
    #[serde(default)]
    pub paused_host: u32,
    /// How it failed.
    #[serde(borrow)]
    pub error: Option<ErrorRecord<'a>>,
}

/// A result line's `error`.
#[derive(Debug, Deserialize)]
pub struct ErrorRecord<'a> {
    /// `error.kind`, e.g. `http_status`.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    /// `error.message` (redacted when it was written).
    #[serde(borrow, default)]
    pub message: Option<Cow<'a, str>>,
}

impl<'a> Record<'a> {
    /// Reads one result line.
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// When the job started, in milliseconds since the Unix epoch; `None` without a readable
    /// `started_at`.
    pub fn started_ms(&self) -> Option<i64> {
        let t = humantime::parse_rfc3339(self.started_at.as_deref()?).ok()?;
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_millis()).ok(),
            Err(e) => i64::try_from(e.duration().as_millis()).ok().map(|ms| -ms),
        }
    }

    /// The `host:port` its requests went to, as `corral run` keys its per-host limits.
    pub fn host(&self) -> Option<String> {
        let url = url::Url::parse(self.url.as_deref()?).ok()?;
        Some(corral_engine::job::host_key(&url)).filter(|h| !h.is_empty())
    }

    /// `error.kind`, if it failed.
    pub fn kind(&self) -> Option<&str> {
        self.error.as_ref().map(|e| e.kind.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_result_line_and_an_old_one() {
        let r = Record::parse(
            r#"{"line":3,"id":"a","method":"GET","url":"http://Example.com/x?k=REDACTED","ok":false,"status":503,"attempts":4,"latency_ms":12.5,"elapsed_ms":900.0,"started_at":"2026-11-26T01:02:03.456Z","opened_breaker":1,"error":{"kind":"http_status","message":"503"},"body":"big","meta":{"x":[1,2]}}"#,
        )
        .unwrap();
        assert_eq!(r.host().as_deref(), Some("example.com:80"));
        assert_eq!(r.kind(), Some("http_status"));
        assert_eq!(r.started_ms(), Some(1_795_654_923_456));
        assert_eq!((r.attempts, r.opened_breaker, r.paused_host), (4, 1, 0));
        let old = Record::parse(r#"{"line":1,"ok":true,"url":"https://a.b/"}"#).unwrap();
        assert_eq!(old.started_ms(), None);
        assert_eq!(old.host().as_deref(), Some("a.b:443"));
        assert!(Record::parse(r#"{"line":1,"ok":tr"#).is_err());
    }
}
