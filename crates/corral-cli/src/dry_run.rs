//! `corral run --dry-run [N]`: the jobs read and checked as the run would read them (all, or
//! the first N), each request printed as it would go out — method, URL, headers, body size,
//! its host's settings — secrets redacted as everywhere, then a table per host with the least
//! time its limits allow. Nothing is sent and no results file is opened: lychee's `--dump`
//! and oha's `--dump-urls`, for a run of a million calls one would rather check first.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use corral::limit::Rate;
use corral_engine::job::{self, Input, Parsed};
use corral_engine::redact;
use corral_engine::settings::Settings;
use futures::StreamExt;

use crate::exit::{code as exit, Fail};

/// What one host's jobs add up to.
#[derive(Default)]
struct HostJobs {
    jobs: u64,
    cost: u64,
}

/// Reads the jobs of `path` (`-`: standard input) as `input` says, prints each (the first
/// `limit`), then the table; exit 0, or 1 when some line is not a valid job.
pub(crate) async fn show(
    path: &Path,
    input: Input,
    settings: &Settings,
    limit: Option<u64>,
) -> Result<u8, Fail> {
    let reader: Box<dyn tokio::io::AsyncBufRead + Unpin + Send> = if path.as_os_str() == "-" {
        Box::new(tokio::io::BufReader::new(tokio::io::stdin()))
    } else {
        let f = tokio::fs::File::open(path).await.map_err(|e| {
            Fail(
                exit::BAD_INPUT,
                format!("cannot read jobs file {}: {e}", path.display()),
            )
        })?;
        Box::new(tokio::io::BufReader::new(f))
    };
    let mut jobs = Box::pin(job::read_jobs(reader, input, settings.max_line, |_| false));
    let mut hosts: BTreeMap<String, HostJobs> = BTreeMap::new();
    let (mut shown, mut invalid, mut cut) = (0u64, 0u64, false);
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| writeln!(out, "{line}");
    while let Some(parsed) = jobs.next().await {
        if limit.is_some_and(|n| shown >= n) {
            cut = true;
            break;
        }
        shown += 1;
        let parsed =
            parsed.map_err(|e| Fail(exit::BAD_INPUT, format!("cannot read the jobs: {e}")))?;
        let line = match parsed {
            Parsed::Invalid(inv) => {
                invalid += 1;
                format!("line {}: invalid: {}", inv.line, redact::text(&inv.message))
            }
            Parsed::Job(job) => {
                let key = job.host_key();
                let view = settings.for_host(&key);
                // Exactly as the engine adds them.
                let headers = view.request_headers(&key, &job.headers);
                let shown_headers: Vec<String> = headers
                    .iter()
                    .map(|(n, v)| {
                        format!("{n}: {}", redact::header_value(n.as_str(), v.as_bytes()))
                    })
                    .collect();
                let h = hosts.entry(key).or_default();
                h.jobs += 1;
                h.cost = h.cost.saturating_add(job.cost);
                format!(
                    "line {}: {} {}  headers: [{}]  body: {} bytes  cost: {}  retries: {}  timeout: {} ms",
                    job.line,
                    job.method,
                    redact::url(&job.url),
                    shown_headers.join(", "),
                    job.body.as_ref().map_or(0, |b| b.len()),
                    job.cost,
                    view.retries(),
                    job.timeout.unwrap_or(view.timeout()).as_millis(),
                )
            }
        };
        say(line).map_err(|e| Fail(exit::FATAL, format!("standard output: {e}")))?;
    }
    let mut table = vec![format!(
        "{:<32} {:>8} {:>12} {:>14} {:>16} {:>12}",
        "host", "jobs", "concurrency", "rate", "cost rate", "least time"
    )];
    let mut least_all = Duration::ZERO;
    for (key, h) in &hosts {
        let view = settings.for_host(key);
        let rate = view.rate().map(|(r, _)| r);
        let cost_rate = view.cost_rate().map(|(r, _)| r);
        let least = at_rate(h.jobs, rate).max(at_rate(h.cost, cost_rate));
        least_all = least_all.max(least);
        table.push(format!(
            "{:<32} {:>8} {:>12} {:>14} {:>16} {:>12}",
            key,
            h.jobs,
            view.concurrency(),
            rate.map_or("unlimited".into(), |r| r.to_string()),
            cost_rate.map_or("unlimited".into(), |r| r.to_string()),
            format!("{:.1} s", least.as_secs_f64()),
        ));
    }
    let (jobs, cost): (u64, u64) = hosts
        .values()
        .fold((0, 0), |(j, c), h| (j + h.jobs, c + h.cost));
    least_all = least_all
        .max(at_rate(jobs, settings.rate))
        .max(at_rate(cost, settings.cost_rate));
    for row in table {
        say(row).map_err(|e| Fail(exit::FATAL, format!("standard output: {e}")))?;
    }
    say(format!(
        "{jobs} jobs to {} hosts, {invalid} invalid lines{}; the limits allow it in no less than {:.1} s; nothing was sent",
        hosts.len(),
        if cut { " (the first lines only: --dry-run N)" } else { "" },
        least_all.as_secs_f64()
    ))
    .map_err(|e| Fail(exit::FATAL, format!("standard output: {e}")))?;
    Ok(if invalid > 0 {
        exit::SOME_FAILED
    } else {
        exit::OK
    })
}

/// How long `n` cells take at `rate` (none: no time), its first period's worth at once.
fn at_rate(n: u64, rate: Option<Rate>) -> Duration {
    match rate {
        Some(r) if r.count() > 0 && n > r.count() => r
            .period()
            .mul_f64((n - r.count()) as f64 / r.count() as f64),
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_time_is_what_the_rate_allows_after_its_first_period() {
        let r = |s: &str| Some(s.parse::<Rate>().unwrap());
        assert_eq!(at_rate(100, r("50/s")), Duration::from_secs(1));
        assert_eq!(at_rate(10, r("50/s")), Duration::ZERO);
        assert_eq!(at_rate(100, None), Duration::ZERO);
        assert_eq!(at_rate(3000, r("1000/min")), Duration::from_secs(120));
    }
}
