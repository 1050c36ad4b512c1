//! `corral submit`: publish a jobs file and the run's options to a queue, for `corral worker`s
//! to run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use corral_queue::collect::lines_with_results;
use corral_queue::record::{Lines, RunInfo, RunSettings};
use corral_queue::submit::{SubmitError, Submitter, DEFAULT_ACK_WAIT, DEFAULT_MAX_DELIVERIES};
use corral_queue::url::QueueUrl;

use super::{check_no_secrets, check_shareable, queue_fail, QueueArg};
use crate::exit::{code as exit, fail, Fail};
use crate::flags::{plan, SettingsFlags};
use corral_engine::settings::Settings;

pub(crate) const SUBMIT_EXAMPLES: &str = "\
Examples:
  corral submit jobs.jsonl --queue nats://127.0.0.1:4222/batch1 --per-host-rate 50/s
  corral worker --queue nats://127.0.0.1:4222/batch1 -c 64        # on each machine
  corral collect --queue nats://127.0.0.1:4222/batch1 -o results.jsonl
  corral submit jobs.jsonl --queue nats://127.0.0.1:4222/batch1 --resume   # lines without a result

The options are the run's, stored with the jobs: every worker enforces the same set. The
per-host rate and burst, Retry-After pauses and circuit breakers are shared by the fleet;
--per-host-concurrency is per worker. The options are stored on the NATS server, so secret
headers (Authorization, Cookie, *token*, *key* ...) and proxy or base-URL credentials are
refused here: give them to the workers (corral worker --config FILE). With the fleet's key
($CORRAL_QUEUE_KEY or --queue-key-file) every job and the options are signed.";

#[derive(Args)]
pub(crate) struct SubmitArgs {
    /// The jobs file (JSONL, or one URL per line with --urls); `-` reads standard input.
    pub(crate) jobs: PathBuf,
    #[command(flatten)]
    pub(crate) queue: QueueArg,
    /// The input is one URL per line (GET), `#` starts a comment line.
    #[arg(long)]
    pub(crate) urls: bool,
    /// How long a worker may hold a job unacknowledged before another worker gets it, seconds
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_ACK_WAIT.as_secs())]
    pub(crate) ack_wait_s: u64,
    /// Deliveries of a job at most (its workers died); then its result is a failure of kind
    /// max_deliveries
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_DELIVERIES)]
    pub(crate) max_deliveries: i64,
    /// Keep the run's streams and board on this many servers of a JetStream cluster (1-5), so
    /// that a server that dies stops nothing
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) replicas: u8,
    /// Publish again only the lines that have no result yet (after the queue lost them, or
    /// to run max_deliveries failures again).
    #[arg(long)]
    pub(crate) resume: bool,
    /// A TOML file with the run's options (as for `corral run`); command-line options win.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub(crate) quiet: bool,
    #[command(flatten)]
    pub(crate) settings: SettingsFlags,
}

pub(crate) async fn submit_cmd(args: SubmitArgs) -> Result<u8, Fail> {
    let queue = args.queue.url()?;
    let opts = args
        .settings
        .with_config(args.config.as_deref())
        .map_err(fail(exit::BAD_INPUT))?;
    let job = Submission {
        jobs: args.jobs,
        urls: args.urls,
        ack_wait: Duration::from_secs(args.ack_wait_s),
        max_deliveries: args.max_deliveries,
        resume: args.resume,
        replicas: args.replicas,
    };
    submit(&queue, &job, opts, args.quiet).await?;
    Ok(exit::OK)
}

/// One submit: what `corral submit` and `corral run --queue` both do.
pub(crate) struct Submission {
    pub(crate) jobs: PathBuf,
    pub(crate) urls: bool,
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliveries: i64,
    pub(crate) resume: bool,
    pub(crate) replicas: u8,
}

/// Checks the options, stores them on the board, publishes the jobs, and (unless `quiet`) says
/// what it did.
pub(crate) async fn submit(
    queue: &QueueUrl,
    job: &Submission,
    opts: Settings,
    quiet: bool,
) -> Result<(), Fail> {
    if job.ack_wait.is_zero() {
        return Err(Fail(
            exit::BAD_INPUT,
            "--ack-wait-s must be at least 1".into(),
        ));
    }
    if job.max_deliveries < 1 {
        return Err(Fail(
            exit::BAD_INPUT,
            "--max-deliveries must be at least 1".into(),
        ));
    }
    check_no_secrets(&opts).map_err(fail(exit::BAD_INPUT))?;
    // The same checks as `corral run`, then what a fleet cannot share, on the typed values,
    // before anything is published.
    let mut planned = plan(opts).map_err(fail(exit::BAD_INPUT))?;
    check_shareable(&planned).map_err(fail(exit::BAD_INPUT))?;
    let (jobs, total, lines) = Jobs::open(&job.jobs, job.urls)?;

    let unreachable = |e: SubmitError| match e {
        SubmitError::Connect(e) => queue_fail(e),
        e => Fail(exit::FATAL, e.to_string()),
    };
    let submitter = Submitter::connect(queue).await.map_err(unreachable)?;
    submitter
        .replicate(usize::from(job.replicas))
        .await
        .map_err(unreachable)?;
    let board = submitter.board();
    // The CA files travel as their contents: their paths would mean nothing on a worker.
    planned.cacert.clear();
    let record = RunSettings {
        ca_pem: std::mem::take(&mut planned.tls.ca_pem),
        settings: planned,
        urls: job.urls,
    };
    let info = RunInfo::of(&record, total, lines).map_err(queue_fail)?;
    board
        .set_run(queue.run(), &info, queue.key())
        .await
        .map_err(queue_fail)?;
    submitter
        .configure(job.ack_wait, job.max_deliveries)
        .await
        .map_err(unreachable)?;
    // Counted before publishing: a collector waits for every line, even those a crashed
    // submit did not publish (submit again to publish them).
    board.raise_submitted(total).await.map_err(queue_fail)?;
    // A read error ends the lines; what was published before it stays, and is said.
    let failed = std::cell::RefCell::new(None);
    let lines = jobs.lines()?.map_while(|l| match l {
        Ok(l) => Some(l),
        Err(e) => {
            *failed.borrow_mut() = Some(e);
            None
        }
    });
    let report = if job.resume {
        let done = lines_with_results(queue).await.map_err(queue_fail)?;
        let n = board.next_resume().await.map_err(queue_fail)?;
        let todo = lines.filter(|(line, _)| !done.contains(*line));
        submitter.resubmit(todo, n).await.map_err(unreachable)?
    } else {
        submitter.submit(lines).await.map_err(unreachable)?
    };
    if let Some(e) = failed.into_inner() {
        return Err(Fail(
            exit::BAD_INPUT,
            format!(
                "cannot read jobs file {}: {e} ({} lines were queued; submit again to queue the rest)",
                job.jobs.display(),
                report.queued
            ),
        ));
    }
    if !quiet {
        let what = if job.resume {
            "published again"
        } else {
            "queued"
        };
        eprintln!(
            "corral: {total} jobs in {queue}: {} {what}, {} already there",
            report.queued, report.duplicates
        );
    }
    Ok(())
}

/// A job line read: its number and text.
type Line = std::io::Result<(u64, String)>;

/// A submit's jobs: a file, read twice (once to count its jobs, once to publish them, so it
/// is never held in memory), or standard input, held (it can be read only once).
enum Jobs {
    /// The file, and whether its lines are URLs.
    File(PathBuf, bool),
    Held(Vec<(u64, String)>),
}

impl Jobs {
    /// Opens the jobs, counts them and notes their lines. `Err` names the file and what is
    /// wrong.
    fn open(path: &Path, urls: bool) -> Result<(Jobs, u64, Lines), Fail> {
        let shown = path.display();
        let unreadable = |e: std::io::Error| {
            Fail(
                exit::BAD_INPUT,
                format!("cannot read jobs file {shown}: {e}"),
            )
        };
        if path.as_os_str() == "-" {
            let held = JobLines::new(std::io::stdin().lock(), urls)
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(unreadable)?;
            let mut lines = Lines::default();
            for (n, _) in &held {
                lines.push(*n);
            }
            let n = held.len() as u64;
            return Ok((Jobs::Held(held), n, lines));
        }
        if path.is_dir() {
            return Err(Fail(
                exit::BAD_INPUT,
                format!("{shown} is a directory, not a jobs file"),
            ));
        }
        let file = std::fs::File::open(path).map_err(unreadable)?;
        let (mut n, mut lines) = (0, Lines::default());
        for l in JobLines::new(BufReader::new(file), urls) {
            lines.push(l.map_err(unreadable)?.0);
            n += 1;
        }
        Ok((Jobs::File(path.to_path_buf(), urls), n, lines))
    }

    /// The jobs again, in order, each with its line number.
    fn lines(self) -> Result<Box<dyn Iterator<Item = Line>>, Fail> {
        Ok(match self {
            Jobs::Held(held) => Box::new(held.into_iter().map(Ok)),
            Jobs::File(path, urls) => {
                let file = std::fs::File::open(&path).map_err(|e| {
                    Fail(
                        exit::BAD_INPUT,
                        format!("cannot read jobs file {}: {e}", path.display()),
                    )
                })?;
                Box::new(JobLines::new(BufReader::new(file), urls))
            }
        })
    }
}

/// The jobs of a reader: each non-blank line with its number (URL mode skips `#` comment lines
/// and strips ` #` comments), as `corral run` numbers them.
struct JobLines<R> {
    reader: R,
    urls: bool,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> JobLines<R> {
    fn new(reader: R, urls: bool) -> Self {
        Self {
            reader,
            urls,
            line: 0,
            buf: Vec::new(),
        }
    }
}

impl<R: BufRead> Iterator for JobLines<R> {
    type Item = Line;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Err(e) => return Some(Err(e)),
                Ok(0) => return None,
                Ok(_) => {}
            }
            self.line += 1;
            let bytes = match (self.line, self.buf.strip_prefix(b"\xEF\xBB\xBF")) {
                (1, Some(rest)) => rest,
                _ => &self.buf[..],
            };
            let text = String::from_utf8_lossy(bytes);
            let text = text.trim();
            if text.is_empty() || (self.urls && text.starts_with('#')) {
                continue;
            }
            let text = if self.urls {
                corral_engine::job::strip_comment(text)
            } else {
                text
            };
            return Some(Ok((self.line, text.to_string())));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_numbered_as_run_numbers_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("jobs.txt");
        std::fs::write(&p, "\u{feff}http://a/1\n\n# note\n  http://a/2 # two \n").unwrap();
        let lines = |urls| {
            let (jobs, n, set) = Jobs::open(&p, urls).unwrap();
            let all: Vec<_> = jobs.lines().unwrap().map(Result::unwrap).collect();
            assert_eq!(all.len() as u64, n, "counted as read");
            for (line, _) in &all {
                assert!(set.contains(*line), "line {line} noted");
            }
            assert!(!set.contains(2), "a blank line has no job");
            all
        };
        let urls = lines(true);
        assert_eq!(
            urls,
            [(1, "http://a/1".to_string()), (4, "http://a/2".to_string())]
        );
        // Not in URL mode, a `#` line is a job (an invalid one, as `run` says).
        assert_eq!(lines(false).len(), 3);
        assert!(Jobs::open(dir.path(), false).is_err());
    }
}
