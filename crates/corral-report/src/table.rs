//! The per-host table as CSV (`corral report --csv`): one row per host, the busiest first,
//! every count a column, statuses and error kinds as `name=count` lists.

use std::io::Write;

use crate::{ReportError, Tally};

/// The columns, in order.
pub const COLUMNS: [&str; 12] = [
    "host",
    "jobs",
    "attempts",
    "attempts_per_s",
    "ok",
    "failed",
    "retries",
    "breaker_openings",
    "paused_by_retry_after",
    "latency_mean_ms",
    "by_status",
    "by_error",
];

/// Writes the per-host table of `tally` to `out` as CSV, with a header row.
///
/// ```
/// let results = "{\"line\":1,\"url\":\"http://a.test/\",\"ok\":false,\"status\":503,\"attempts\":2,\"error\":{\"kind\":\"http_status\"}}\n";
/// let tally = corral_report::Tally::read(results.as_bytes()).unwrap();
/// let mut out = Vec::new();
/// corral_report::table::hosts_csv(&tally, &mut out).unwrap();
/// let text = String::from_utf8(out).unwrap();
/// assert_eq!(text.lines().nth(1), Some("a.test:80,1,2,0.0,0,1,1,0,0,0.000,503=1,http_status=1"));
/// ```
pub fn hosts_csv(tally: &Tally, out: impl Write) -> Result<(), ReportError> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    for (host, h) in tally.hosts() {
        let statuses: Vec<String> = h
            .by_status
            .iter()
            .map(|(s, n)| format!("{s}={n}"))
            .collect();
        let kinds: Vec<String> = h.by_error.iter().map(|(k, n)| format!("{k}={n}")).collect();
        // A results file is read as it is: its hosts and kinds may be formulas.
        w.write_record([
            corral_engine::result::cell_text(host).into_owned(),
            h.jobs.to_string(),
            h.attempts.to_string(),
            format!("{:.1}", h.attempts_per_s()),
            h.ok.to_string(),
            h.failed.to_string(),
            h.retries.to_string(),
            h.breaker_openings.to_string(),
            h.paused_by_retry_after.to_string(),
            format!("{:.3}", h.latency_mean_ms()),
            statuses.join(" "),
            corral_engine::result::cell_text(&kinds.join(" ")).into_owned(),
        ])?;
    }
    w.flush()?;
    Ok(())
}
