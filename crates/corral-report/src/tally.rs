//! A results file read once, line by line, into what a report shows: totals, per host, over
//! time, the slowest and the failed jobs.
//!
//! Memory is flat in the number of lines: counters and histograms of fixed size, a
//! [`Timeline`] of at most [`crate::timeline::MAX_WINDOWS`] windows, the 100 slowest and the
//! first 100 failed jobs, and one entry per host up to [`MAX_HOSTS`] (past that, the rest are
//! counted together). Only a line itself is held while it is read.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::BufRead;
use std::time::Duration;

use corral_engine::sink::Done;
use corral_engine::summary::{HostJobs, HostSummary, Latency, Stats, Summary};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::record::Record;
use crate::timeline::Timeline;
use crate::ReportError;

/// Hosts kept one by one; the results of any further host are counted under [`OTHER_HOSTS`].
pub const MAX_HOSTS: usize = 10_000;

/// The name under which hosts past [`MAX_HOSTS`] are counted together.
pub const OTHER_HOSTS: &str = "(other hosts)";

/// The name under which results without a readable URL (invalid input lines) are counted.
pub const NO_HOST: &str = "(no url)";

/// Jobs listed among the slowest, and among the failed.
pub const LISTED: usize = 100;

/// Characters of a URL or message kept for a listed job (the rest is cut, marked `…`).
const SHOWN_CHARS: usize = 300;

/// Bad lines whose numbers a note names.
const NAMED_BAD_LINES: usize = 5;

/// One listed job: the slowest, or a failed one.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    /// Its line in the jobs file.
    pub line: Option<u64>,
    /// Its `id`.
    pub id: String,
    /// Its method.
    pub method: String,
    /// Its URL (redacted when written; cut to 300 characters).
    pub url: String,
    /// When it started (RFC 3339), if the file says.
    pub started_at: Option<String>,
    /// The status of its last response.
    pub status: Option<u16>,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's latency, in milliseconds.
    pub latency_ms: Option<f64>,
    /// The whole job's time, in milliseconds.
    pub elapsed_ms: f64,
    /// `error.kind`, if it failed.
    pub kind: Option<String>,
    /// `error.message` (cut to 300 characters).
    pub message: Option<String>,
}

impl JobRow {
    fn of(r: &Record<'_>) -> Self {
        JobRow {
            line: r.line,
            id: cut(r.id.as_deref().unwrap_or_default()),
            method: cut(r.method.as_deref().unwrap_or_default()),
            url: cut(r.url.as_deref().unwrap_or_default()),
            started_at: r.started_at.as_deref().map(cut),
            status: r.status,
            attempts: r.attempts,
            latency_ms: r.latency_ms,
            elapsed_ms: r.elapsed_ms,
            kind: r.kind().map(str::to_string),
            message: r.error.as_ref().and_then(|e| e.message.as_deref()).map(cut),
        }
    }
}

fn cut(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A slow job, ordered by its time (then by arrival, so that equal times keep the first).
struct Slow(f64, u64, JobRow);

impl PartialEq for Slow {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Slow {}
impl PartialOrd for Slow {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Slow {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// One host's counts.
#[derive(Debug, Clone, Default)]
pub struct HostTally {
    /// Result lines.
    pub jobs: u64,
    /// Requests sent (the sum of `attempts`).
    pub attempts: u64,
    /// Ok jobs.
    pub ok: u64,
    /// Failed jobs.
    pub failed: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Breaker openings its jobs caused.
    pub breaker_openings: u64,
    /// Pauses (`Retry-After`, an allowance spent) its jobs' responses caused.
    pub paused_by_retry_after: u64,
    latency_sum_ms: f64,
    latency_n: u64,
    /// Jobs by the status of their last response.
    pub by_status: BTreeMap<u16, u64>,
    /// Failed jobs by kind.
    pub by_error: BTreeMap<String, u64>,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
}

impl HostTally {
    fn add(&mut self, r: &Record<'_>, span: Option<(i64, i64)>) {
        self.jobs += 1;
        self.attempts += u64::from(r.attempts);
        self.retries += u64::from(r.attempts.saturating_sub(1));
        if r.ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        self.breaker_openings += u64::from(r.opened_breaker);
        self.paused_by_retry_after += u64::from(r.paused_host);
        if let Some(l) = r.latency_ms.filter(|l| l.is_finite() && *l >= 0.0) {
            self.latency_sum_ms += l;
            self.latency_n += 1;
        }
        if let Some(s) = r.status {
            *self.by_status.entry(s).or_insert(0) += 1;
        }
        if let Some(k) = r.kind() {
            corral_engine::summary::count_kind(&mut self.by_error, k);
        }
        if let Some((start, end)) = span {
            self.first_ms = Some(self.first_ms.map_or(start, |f| f.min(start)));
            self.last_ms = Some(self.last_ms.map_or(end, |l| l.max(end)));
        }
    }

    /// Mean latency of its jobs with a response, in milliseconds.
    pub fn latency_mean_ms(&self) -> f64 {
        if self.latency_n == 0 {
            0.0
        } else {
            self.latency_sum_ms / self.latency_n as f64
        }
    }

    /// Requests per second between its first job's start and its last job's end (0 when the
    /// file has no times).
    pub fn attempts_per_s(&self) -> f64 {
        match (self.first_ms, self.last_ms) {
            (Some(a), Some(b)) if b > a => self.attempts as f64 * 1000.0 / (b - a) as f64,
            _ => 0.0,
        }
    }
}

/// Everything a report shows, counted from result lines. Feed it with [`Tally::add_line`] or
/// read a whole file with [`Tally::read`].
///
/// ```
/// use corral_report::Tally;
///
/// let results = "\
/// {\"line\":1,\"url\":\"http://a.test/\",\"ok\":true,\"status\":200,\"attempts\":1,\"latency_ms\":12.0,\"elapsed_ms\":12.5,\"started_at\":\"2026-11-26T10:00:00.000Z\"}
/// {\"line\":2,\"url\":\"http://a.test/\",\"ok\":false,\"status\":503,\"attempts\":4,\"latency_ms\":30.0,\"elapsed_ms\":900.0,\"started_at\":\"2026-11-26T10:00:00.100Z\",\"error\":{\"kind\":\"http_status\",\"message\":\"503\"}}
/// ";
/// let tally = Tally::read(results.as_bytes()).unwrap();
/// let summary = tally.summary();
/// assert_eq!((summary.ok, summary.failed, summary.retries), (1, 1, 3));
/// assert_eq!(summary.by_error["http_status"], 1);
/// assert_eq!(summary.hosts["a.test:80"].attempts, 5);
/// ```
pub struct Tally {
    lines: u64,
    /// What `corral run` counts over the results it writes, counted the same way here.
    totals: Stats,
    breaker_openings: u64,
    hosts: HashMap<String, HostTally>,
    other_hosts: Option<HostTally>,
    timeline: Timeline,
    first_ms: Option<i64>,
    last_ms: Option<i64>,
    slowest: BinaryHeap<Reverse<Slow>>,
    failed_jobs: Vec<JobRow>,
    unreadable: u64,
    unreadable_lines: Vec<u64>,
    untimed: u64,
    seen: Done,
    repeated: u64,
    /// Time to the response's head, of every job whose result has it, in microseconds.
    ttfb_us: Histogram<u64>,
    /// Time to a stream's first event, where there was one, in microseconds.
    ttfe_us: Histogram<u64>,
}

/// A histogram of microseconds up to an hour, 3 significant figures (as the run's latency).
fn micros() -> Result<Histogram<u64>, ReportError> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| ReportError::Histogram(e.to_string()))
}

/// `ms` as microseconds for a histogram, when it is a time at all.
fn us(ms: Option<f64>) -> Option<u64> {
    ms.filter(|l| l.is_finite() && *l >= 0.0)
        .map(|l| ((l * 1000.0) as u64).clamp(1, 3_600_000_000))
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Result<Self, ReportError> {
        Ok(Self {
            lines: 0,
            totals: Stats::new(0).map_err(|e| ReportError::Histogram(e.to_string()))?,
            breaker_openings: 0,
            hosts: HashMap::new(),
            other_hosts: None,
            timeline: Timeline::default(),
            first_ms: None,
            last_ms: None,
            slowest: BinaryHeap::with_capacity(LISTED + 1),
            failed_jobs: Vec::new(),
            unreadable: 0,
            unreadable_lines: Vec::new(),
            untimed: 0,
            seen: Done::default(),
            repeated: 0,
            ttfb_us: micros()?,
            ttfe_us: micros()?,
        })
    }

    /// Reads a whole results file, one line at a time. Lines that are not results (a torn
    /// last line after a crash, anything else) are counted and named in a note; only a read
    /// error fails.
    pub fn read(mut reader: impl BufRead) -> Result<Self, ReportError> {
        let mut tally = Self::new()?;
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            match std::str::from_utf8(&buf) {
                Ok(text) => tally.add_line(text)?,
                Err(_) => {
                    tally.lines += 1;
                    tally.bad_line();
                }
            }
        }
        Ok(tally)
    }

    /// Counts the next line of the file (blank lines are skipped, not counted as results).
    pub fn add_line(&mut self, text: &str) -> Result<(), ReportError> {
        self.lines += 1;
        let text = text.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            return Ok(());
        }
        match Record::parse(text) {
            Ok(r) => self.add(&r),
            Err(_) => {
                self.bad_line();
                Ok(())
            }
        }
    }

    fn bad_line(&mut self) {
        self.unreadable += 1;
        if self.unreadable_lines.len() < NAMED_BAD_LINES {
            self.unreadable_lines.push(self.lines);
        }
    }

    /// Counts one result.
    pub fn add(&mut self, r: &Record<'_>) -> Result<(), ReportError> {
        let latency = r
            .latency_ms
            .filter(|l| l.is_finite() && *l >= 0.0)
            .map(|l| Duration::from_secs_f64((l / 1000.0).min(1e9)));
        self.totals
            .count(r.ok, r.status, r.kind(), r.attempts, latency);
        for (h, ms) in [
            (&mut self.ttfb_us, r.ttfb_ms),
            (&mut self.ttfe_us, r.ttfe_ms),
        ] {
            if let Some(v) = us(ms) {
                let _ = h.record(v);
            }
        }
        self.breaker_openings += u64::from(r.opened_breaker);
        if let Some(line) = r.line {
            if !self.seen.insert(line) {
                self.repeated += 1;
            }
        }
        // When it started and ended, by the wall clock.
        let span = r.started_ms().map(|start| {
            let took = if r.elapsed_ms.is_finite() {
                r.elapsed_ms.clamp(0.0, 1e12) as i64
            } else {
                0
            };
            (start, start.saturating_add(took))
        });
        match span {
            Some((start, end)) => {
                self.first_ms = Some(self.first_ms.map_or(start, |f| f.min(start)));
                self.last_ms = Some(self.last_ms.map_or(end, |l| l.max(end)));
                self.timeline.add(end, r.ok, latency)?;
            }
            None => self.untimed += 1,
        }
        let host = r.host().unwrap_or_else(|| NO_HOST.to_string());
        let room = self.hosts.len() < MAX_HOSTS;
        match self.hosts.get_mut(&host) {
            Some(h) => h.add(r, span),
            None if room => {
                let mut h = HostTally::default();
                h.add(r, span);
                self.hosts.insert(host, h);
            }
            None => self
                .other_hosts
                .get_or_insert_with(HostTally::default)
                .add(r, span),
        }
        self.list(r);
        Ok(())
    }

    /// Keeps `r` among the slowest and the first failed, if it belongs there.
    fn list(&mut self, r: &Record<'_>) {
        if !r.ok && self.failed_jobs.len() < LISTED {
            self.failed_jobs.push(JobRow::of(r));
        }
        let t = if r.elapsed_ms.is_finite() {
            r.elapsed_ms
        } else {
            0.0
        };
        let beats = self.slowest.len() < LISTED
            || self
                .slowest
                .peek()
                .is_some_and(|Reverse(least)| t > least.0);
        if beats {
            self.slowest
                .push(Reverse(Slow(t, self.totals.done, JobRow::of(r))));
            if self.slowest.len() > LISTED {
                self.slowest.pop();
            }
        }
    }

    /// The summary `corral run` prints, from the results: per host with its jobs' outcomes.
    /// Elapsed time runs from the first job's start to the last one's end.
    pub fn summary(&self) -> Summary {
        let elapsed_s = self.span().map_or(0.0, |d| d.as_secs_f64());
        let mut hosts: BTreeMap<String, HostSummary> = self
            .hosts
            .iter()
            .map(|(k, h)| (k.clone(), host_summary(h)))
            .collect();
        if let Some(o) = &self.other_hosts {
            hosts.insert(OTHER_HOSTS.to_string(), host_summary(o));
        }
        Summary {
            outcome: "report",
            exit_code: 0,
            jobs_done: self.totals.done,
            ok: self.totals.ok,
            failed: self.totals.failed,
            skipped_already_done: 0,
            retries: self.totals.retries,
            breaker_openings: self.breaker_openings,
            elapsed_s,
            jobs_per_s: if elapsed_s > 0.0 {
                self.totals.done as f64 / elapsed_s
            } else {
                0.0
            },
            by_status: self.totals.by_status.clone(),
            by_error: self.totals.by_error.clone(),
            latency_ms: Latency::of(self.totals.latency_us()),
            hosts,
            notes: self.notes(),
            cost_unit: None,
        }
    }

    /// From the first job's start to the last job's end, if the file has times.
    pub fn span(&self) -> Option<Duration> {
        let (a, b) = (self.first_ms?, self.last_ms?);
        Some(Duration::from_millis(u64::try_from(b - a).unwrap_or(0)))
    }

    /// When the first job started, in milliseconds since the Unix epoch.
    pub fn first_ms(&self) -> Option<i64> {
        self.first_ms
    }

    /// Results over time.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The latency of every job with a response, in microseconds.
    pub fn latency_us(&self) -> &Histogram<u64> {
        self.totals.latency_us()
    }

    /// Time to the response's head (`ttfb_ms`), in microseconds.
    pub fn ttfb_us(&self) -> &Histogram<u64> {
        &self.ttfb_us
    }

    /// Time to a stream's first event (`ttfe_ms`), in microseconds.
    pub fn ttfe_us(&self) -> &Histogram<u64> {
        &self.ttfe_us
    }

    /// Hosts, the busiest (most requests) first, with [`OTHER_HOSTS`] last if there is one.
    pub fn hosts(&self) -> Vec<(&str, &HostTally)> {
        let mut v: Vec<(&str, &HostTally)> =
            self.hosts.iter().map(|(k, h)| (k.as_str(), h)).collect();
        v.sort_by(|a, b| b.1.attempts.cmp(&a.1.attempts).then(a.0.cmp(b.0)));
        v.extend(self.other_hosts.iter().map(|h| (OTHER_HOSTS, h)));
        v
    }

    /// The slowest jobs (by their whole time), slowest first: at most [`LISTED`].
    pub fn slowest(&self) -> Vec<&JobRow> {
        let mut v: Vec<&Slow> = self.slowest.iter().map(|Reverse(s)| s).collect();
        v.sort_by(|a, b| b.cmp(a));
        v.into_iter().map(|s| &s.2).collect()
    }

    /// The first failed jobs, in file order: at most [`LISTED`].
    pub fn failed_jobs(&self) -> &[JobRow] {
        &self.failed_jobs
    }

    /// Results read.
    pub fn results(&self) -> u64 {
        self.totals.done
    }

    /// True when some result has a `started_at`: charts over time can be drawn.
    pub fn has_times(&self) -> bool {
        !self.timeline.is_empty()
    }

    /// What the reader should know about the file: lines that were not results, results
    /// without times, repeated line numbers, hosts counted together.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.unreadable > 0 {
            let named: Vec<String> = self.unreadable_lines.iter().map(u64::to_string).collect();
            notes.push(format!(
                "{} lines are not results and were left out (line{} {}{} of the file); a torn last line is what a crash leaves, `corral run --resume` repairs it",
                self.unreadable,
                if named.len() > 1 { "s" } else { "" },
                named.join(", "),
                if self.unreadable > named.len() as u64 { " ..." } else { "" },
            ));
        }
        if self.untimed > 0 {
            notes.push(format!(
                "{} of {} results have no started_at (written by an older corral): they are left out of the charts over time{}",
                self.untimed,
                self.totals.done,
                if self.untimed == self.totals.done { ", which are not drawn" } else { "" }
            ));
        }
        if self.repeated > 0 {
            notes.push(format!(
                "{} results repeat the line number of an earlier one (a file joined from several runs?); each is counted",
                self.repeated
            ));
        }
        if let Some(o) = &self.other_hosts {
            notes.push(format!(
                "more than {MAX_HOSTS} hosts: the results of the rest ({} jobs) are counted together as {OTHER_HOSTS}",
                o.jobs
            ));
        }
        notes
    }
}

fn host_summary(h: &HostTally) -> HostSummary {
    HostSummary {
        attempts: h.attempts,
        attempts_per_s: (h.attempts_per_s() * 10.0).round() / 10.0,
        breaker_openings: h.breaker_openings,
        paused_by_retry_after: h.paused_by_retry_after,
        cost: 0,
        rate_found_per_s: None,
        jobs: Some(HostJobs {
            jobs: h.jobs,
            ok: h.ok,
            failed: h.failed,
            retries: h.retries,
            latency_mean_ms: (h.latency_mean_ms() * 1000.0).round() / 1000.0,
            by_status: h.by_status.clone(),
            by_error: h.by_error.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(
        n: u64,
        host: &str,
        ok: bool,
        status: u16,
        attempts: u32,
        lat: f64,
        at_ms: u64,
    ) -> String {
        let started = humantime::format_rfc3339_millis(
            std::time::UNIX_EPOCH + Duration::from_millis(1_795_654_920_000 + at_ms),
        );
        let error = if ok {
            String::new()
        } else {
            r#","error":{"kind":"http_status","message":"status 503"}"#.to_string()
        };
        format!(
            r#"{{"line":{n},"id":"j{n}","method":"GET","url":"http://{host}/p","ok":{ok},"status":{status},"attempts":{attempts},"latency_ms":{lat},"elapsed_ms":{lat},"started_at":"{started}"{error}}}"#
        )
    }

    #[test]
    fn totals_hosts_and_lists_from_known_lines() {
        let mut text = String::new();
        // Host a: 10 ok at 10..100 ms, 1 per 100 ms; host b: 3 failed (503, 4 attempts).
        for i in 0..10u64 {
            text += &line(
                i + 1,
                "a.test",
                true,
                200,
                1,
                (i + 1) as f64 * 10.0,
                i * 100,
            );
            text.push('\n');
        }
        for i in 0..3u64 {
            text += &line(11 + i, "b.test:8080", false, 503, 4, 1000.0, 2000 + i);
            text.push('\n');
        }
        text += "{\"line\": 14, \"ok\": tr\n"; // torn
        let t = Tally::read(text.as_bytes()).unwrap();
        let s = t.summary();
        assert_eq!((s.jobs_done, s.ok, s.failed, s.retries), (13, 10, 3, 9));
        assert_eq!(s.by_status[&200], 10);
        assert_eq!(s.by_status[&503], 3);
        assert_eq!(s.by_error["http_status"], 3);
        let a = &s.hosts["a.test:80"];
        let aj = a.jobs.as_ref().unwrap();
        assert_eq!((a.attempts, aj.ok, aj.failed), (10, 10, 0));
        assert_eq!(aj.latency_mean_ms, 55.0);
        // 10 attempts between 0 ms and 900 + 100 ms.
        assert_eq!(a.attempts_per_s, 10.0);
        let b = &s.hosts["b.test:8080"];
        assert_eq!((b.attempts, b.jobs.as_ref().unwrap().retries), (12, 9));
        // Elapsed: from 0 to 2002 + 1000 ms.
        assert!((s.elapsed_s - 3.002).abs() < 1e-9, "{}", s.elapsed_s);
        assert!((s.latency_ms.p50 - 70.0).abs() < 0.1, "{:?}", s.latency_ms);
        assert!(
            (s.latency_ms.max - 1000.0).abs() < 1.0,
            "{:?}",
            s.latency_ms
        );
        let slowest: Vec<u64> = t.slowest().iter().filter_map(|j| j.line).collect();
        assert_eq!(&slowest[..5], [11, 12, 13, 10, 9]);
        let failed: Vec<u64> = t.failed_jobs().iter().filter_map(|j| j.line).collect();
        assert_eq!(failed, [11, 12, 13]);
        assert_eq!(t.hosts()[0].0, "b.test:8080", "the busiest first");
        assert!(s.notes[0].contains("1 lines are not results") && s.notes[0].contains("line 14"));
    }

    #[test]
    fn only_the_hundred_slowest_are_kept() {
        let mut t = Tally::new().unwrap();
        for i in 0..1000u64 {
            // Times 0..999 in a shuffled order.
            let ms = (i * 7919) % 1000;
            t.add_line(&line(i + 1, "a.test", true, 200, 1, ms as f64, i))
                .unwrap();
        }
        let times: Vec<f64> = t.slowest().iter().map(|j| j.elapsed_ms).collect();
        assert_eq!(times.len(), LISTED);
        assert_eq!(times[0], 999.0);
        assert_eq!(times[99], 900.0);
        assert!(t.failed_jobs().is_empty());
    }

    #[test]
    fn an_old_file_without_times_still_counts_and_says_so() {
        let t = Tally::read(
            "{\"line\":1,\"url\":\"http://a.test/\",\"ok\":true,\"status\":200,\"attempts\":1,\"latency_ms\":5.0,\"elapsed_ms\":5.0}\n"
                .as_bytes(),
        )
        .unwrap();
        assert!(!t.has_times());
        let s = t.summary();
        assert_eq!((s.ok, s.elapsed_s), (1, 0.0));
        assert!(
            s.notes.iter().any(|n| n.contains("no started_at")),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn a_file_of_endless_kinds_keeps_a_few_by_name_and_sums_the_rest() {
        use corral_engine::summary::{KIND_CHARS, MAX_OTHER_KINDS, OTHER_KINDS};
        let mut t = Tally::new().unwrap();
        for i in 0..5_000u64 {
            let kind = if i % 2 == 0 {
                "timeout".to_string()
            } else {
                format!("made-up-{i}-{}", "x".repeat(200))
            };
            t.add_line(&format!(
                r#"{{"line":{},"url":"http://a.test/","ok":false,"attempts":1,"error":{{"kind":"{kind}"}}}}"#,
                i * 1_000_003 + 1
            ))
            .unwrap();
        }
        let s = t.summary();
        assert_eq!(s.by_error["timeout"], 2_500);
        assert_eq!(
            s.by_error.len(),
            1 + MAX_OTHER_KINDS + 1,
            "{:?}",
            s.by_error.keys()
        );
        assert_eq!(s.by_error[OTHER_KINDS], 2_500 - MAX_OTHER_KINDS as u64);
        assert!(s
            .by_error
            .keys()
            .all(|k| k.chars().count() <= KIND_CHARS + 1));
        assert_eq!(s.by_error.values().sum::<u64>(), 5_000);
    }

    #[test]
    fn repeated_lines_and_unknown_kinds_are_counted() {
        let mut t = Tally::new().unwrap();
        for _ in 0..2 {
            t.add_line(r#"{"line":7,"url":"http://a.test/","ok":false,"attempts":9,"error":{"kind":"max_deliveries"}}"#)
                .unwrap();
        }
        let s = t.summary();
        assert_eq!(s.by_error["max_deliveries"], 2);
        assert!(
            s.notes.iter().any(|n| n.starts_with("1 results repeat")),
            "{:?}",
            s.notes
        );
    }
}
