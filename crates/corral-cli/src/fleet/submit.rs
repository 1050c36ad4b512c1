//! `corral submit`: publish a jobs file and the run's options to a queue, for `corral worker`s
//! to run.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use corral_queue::collect::lines_with_results;
use corral_queue::submit::{Submitter, DEFAULT_ACK_WAIT, DEFAULT_MAX_DELIVERIES};
use corral_queue::url::QueueUrl;

use super::{check_shareable, QueueArg, RunRecord};
use crate::exit::{code as exit, fail, Fail};
use crate::flags::{plan, Options};

pub(crate) const SUBMIT_EXAMPLES: &str = "\
Examples:
  corral submit jobs.jsonl --queue nats://127.0.0.1:4222/batch1 --per-host-rate 50/s
  corral worker --queue nats://127.0.0.1:4222/batch1 -c 64        # on each machine
  corral collect --queue nats://127.0.0.1:4222/batch1 -o results.jsonl
  corral submit jobs.jsonl --queue nats://127.0.0.1:4222/batch1 --resume   # lines without a result

The options are the run's, stored with the jobs: every worker enforces the same set. The
per-host rate and burst, Retry-After pauses and circuit breakers are shared by the fleet;
--per-host-concurrency is per worker. Headers given here (-H) are stored on the NATS server:
give secret ones to the workers instead (corral worker -H).";

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
    pub(crate) opts: Options,
}

pub(crate) async fn submit_cmd(args: SubmitArgs) -> Result<u8, Fail> {
    let queue = args.queue.url()?;
    let opts = args
        .opts
        .with_config(args.config.as_deref())
        .map_err(fail(exit::BAD_INPUT))?;
    let job = Submission {
        jobs: args.jobs,
        urls: args.urls,
        ack_wait: Duration::from_secs(args.ack_wait_s),
        max_deliveries: args.max_deliveries,
        resume: args.resume,
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
}

/// Checks the options, stores them on the board, publishes the jobs, and (unless `quiet`) says
/// what it did.
pub(crate) async fn submit(
    queue: &QueueUrl,
    job: &Submission,
    opts: Options,
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
    check_shareable(&opts).map_err(fail(exit::BAD_INPUT))?;
    // The same checks as `corral run`, before anything is published.
    plan(&opts).map_err(fail(exit::BAD_INPUT))?;
    let lines = read_lines(&job.jobs, job.urls)?;
    let total = lines.len() as u64;

    let unreachable = |e: corral_queue::submit::SubmitError| Fail(exit::FATAL, e.to_string());
    let submitter = Submitter::connect(queue).await.map_err(unreachable)?;
    let board = submitter.board();
    let record = RunRecord {
        options: opts,
        urls: job.urls,
    };
    let record = serde_json::to_vec(&record).map_err(fail(exit::FATAL))?;
    board
        .set_options(Bytes::from(record))
        .await
        .map_err(fail(exit::FATAL))?;
    submitter
        .configure(job.ack_wait, job.max_deliveries)
        .await
        .map_err(unreachable)?;
    // Counted before publishing: a collector waits for every line, even those a crashed
    // submit did not publish (submit again to publish them).
    board
        .raise_submitted(total)
        .await
        .map_err(fail(exit::FATAL))?;
    let report = if job.resume {
        let done = lines_with_results(queue).await.map_err(fail(exit::FATAL))?;
        let n = board.next_resume().await.map_err(fail(exit::FATAL))?;
        let todo = lines.into_iter().filter(|(line, _)| !done.contains(*line));
        submitter.resubmit(todo, n).await.map_err(unreachable)?
    } else {
        submitter.submit(lines).await.map_err(unreachable)?
    };
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

/// The jobs of a file (or of standard input, `-`): each non-blank line with its number (URL
/// mode skips `#` comment lines), as `corral run` numbers them.
fn read_lines(path: &Path, urls: bool) -> Result<Vec<(u64, String)>, Fail> {
    let shown = path.display();
    let unreadable = |e: std::io::Error| {
        Fail(
            exit::BAD_INPUT,
            format!("cannot read jobs file {shown}: {e}"),
        )
    };
    let reader: Box<dyn Read> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        if path.is_dir() {
            return Err(Fail(
                exit::BAD_INPUT,
                format!("{shown} is a directory, not a jobs file"),
            ));
        }
        Box::new(std::fs::File::open(path).map_err(unreadable)?)
    };
    let mut reader = BufReader::new(reader);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(unreadable)? == 0 {
            break;
        }
        n += 1;
        let bytes = match (n, buf.strip_prefix(b"\xEF\xBB\xBF")) {
            (1, Some(rest)) => rest,
            _ => &buf[..],
        };
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        if text.is_empty() || (urls && text.starts_with('#')) {
            continue;
        }
        let text = if urls {
            corral_engine::job::strip_comment(text)
        } else {
            text
        };
        out.push((n, text.to_string()));
    }
    Ok(out)
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
        let urls = read_lines(&p, true).unwrap();
        assert_eq!(
            urls,
            [(1, "http://a/1".to_string()), (4, "http://a/2".to_string())]
        );
        // Not in URL mode, a `#` line is a job (an invalid one, as `run` says).
        assert_eq!(read_lines(&p, false).unwrap().len(), 3);
        assert!(read_lines(dir.path(), false).is_err());
    }
}
