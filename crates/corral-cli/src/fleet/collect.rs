//! `corral collect`: the one writer of a queue run's results file; and `corral run --queue`,
//! which submits and then collects.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use corral::shutdown::Shutdown;
use corral_queue::collect::{collect, CollectProgress, CollectReport};
use corral_queue::url::QueueUrl;
use indicatif::ProgressBar;

use super::submit::{submit, Submission};
use super::QueueArg;
use crate::exit::{code as exit, fail, Fail};
use crate::flags::{ResultsFormatArg, RunArgs};
use crate::metrics::{self, Text};

#[derive(Args)]
pub(crate) struct CollectArgs {
    #[command(flatten)]
    pub(crate) queue: QueueArg,
    /// The results file (JSONL), one line per job.
    #[arg(short, long)]
    pub(crate) output: PathBuf,
    /// The results file exists: keep its lines and add only the jobs it lacks (after the
    /// collector was stopped or killed).
    #[arg(long)]
    pub(crate) resume: bool,
    /// Write the final summary as JSON to this file.
    #[arg(long)]
    pub(crate) summary_json: Option<PathBuf>,
    /// Once every result is in the file, remove the run's streams and board from the server
    /// (as `corral purge --force`: the workers have nothing left to do).
    #[arg(long)]
    pub(crate) purge: bool,
    /// Serve Prometheus text metrics (collected, failed, submitted) at this address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
    /// No progress output.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

pub(crate) async fn collect_cmd(args: CollectArgs) -> Result<u8, Fail> {
    let queue = args.queue.url()?;
    let end = Ending {
        quiet: args.quiet,
        summary_json: args.summary_json,
        metrics_addr: args.metrics_addr,
    };
    let code = collect_into(&queue, &args.output, args.resume, end).await?;
    // Only a collection that ended with every result (not one interrupted).
    if args.purge && matches!(code, exit::OK | exit::SOME_FAILED) {
        let purged = corral_queue::purge::purge(&queue, true)
            .await
            .map_err(super::queue_fail)?;
        if !args.quiet {
            super::purge::say(&queue, &purged);
        }
    }
    Ok(code)
}

/// What a collection does besides collecting.
struct Ending {
    quiet: bool,
    summary_json: Option<PathBuf>,
    metrics_addr: Option<std::net::SocketAddr>,
}

/// `corral run JOBS -o FILE --queue ...`: submit the jobs, then collect their results as the
/// workers elsewhere run them.
pub(crate) async fn run_on_queue(args: RunArgs, queue: QueueUrl) -> Result<u8, Fail> {
    let bad = |m: &str| Err(Fail(exit::BAD_INPUT, m.to_string()));
    let Some(out) = args.output.clone() else {
        return bad("--queue needs -o FILE: the results of the workers are collected there");
    };
    if args.csv {
        return bad("--csv is not supported with --queue: give JSONL jobs or --urls");
    }
    if args.format != ResultsFormatArg::Jsonl {
        return bad(
            "--format csv is not supported with --queue (convert with `corral report --csv`)",
        );
    }
    if args.retry_failed.is_some() || args.repair {
        return bad("--retry-failed and --repair are not supported with --queue");
    }
    if args.queue.is_none() && !args.quiet {
        eprintln!("corral: running on the queue {queue} ($CORRAL_QUEUE; set it empty to run here)");
    }
    let opts = args
        .settings
        .with_config(args.config.as_deref())
        .map_err(fail(exit::BAD_INPUT))?;
    crate::run::check_files(&args, &opts, None)?;
    if args.overwrite {
        match std::fs::remove_file(&out) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Fail(exit::FATAL, format!("{}: {e}", out.display()))),
        }
    } else if !args.resume && out.exists() {
        return Err(exists(&out));
    }
    let job = Submission {
        jobs: args.jobs.clone(),
        urls: args.urls,
        ack_wait: Duration::from_secs(args.ack_wait_s),
        max_deliveries: args.max_deliveries,
        resume: args.resume,
        replicas: args.replicas,
    };
    submit(&queue, &job, opts, args.quiet).await?;
    let end = Ending {
        quiet: args.quiet,
        summary_json: args.summary_json.clone(),
        metrics_addr: args.metrics_addr,
    };
    let code = collect_into(&queue, &out, true, end).await?;
    if let Some(html) = &args.report {
        match crate::report::report_html(&out, html) {
            Ok(()) if !args.quiet => eprintln!("corral: report written to {}", html.display()),
            Ok(()) => {}
            Err(Fail(_, e)) => eprintln!("corral: {e}"),
        }
    }
    Ok(code)
}

fn exists(out: &Path) -> Fail {
    Fail(
        exit::BAD_INPUT,
        format!(
            "{} exists: --resume to collect into it (its lines are kept, none written twice), or --overwrite / another file",
            out.display()
        ),
    )
}

/// Collects into `out` until every submitted job has its result, with progress and signals,
/// then prints the summary and returns `run`'s exit code.
async fn collect_into(queue: &QueueUrl, out: &Path, resume: bool, end: Ending) -> Result<u8, Fail> {
    if !resume && out.exists() {
        return Err(exists(out));
    }
    let counts = Arc::new(Counts::default());
    let _metrics = match end.metrics_addr {
        Some(addr) => {
            let c = counts.clone();
            let render = Arc::new(move || {
                Text::default()
                    .one(
                        "corral_jobs_submitted",
                        "gauge",
                        "Jobs submitted to the run.",
                        c.submitted.load(Ordering::Relaxed) as f64,
                    )
                    .one(
                        "corral_results_collected_total",
                        "counter",
                        "Results in the results file.",
                        c.done.load(Ordering::Relaxed) as f64,
                    )
                    .done()
            });
            Some(
                metrics::serve(addr, render)
                    .await
                    .map_err(|e| Fail(exit::BAD_INPUT, format!("--metrics-addr {addr}: {e}")))?,
            )
        }
        None => None,
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.listen_for_signals() {
        eprintln!("corral: cannot install signal handlers: {e}");
    }
    if !end.quiet
        && corral_queue::status::submitted(queue)
            .await
            .is_ok_and(|n| n == 0)
    {
        eprintln!("corral: nothing submitted to {queue} yet: waiting for `corral submit`");
    }
    let mut progress = Shown::new(end.quiet, counts.clone());
    let stop = shutdown.token();
    let collected = tokio::select! {
        r = collect(queue, out, &mut progress) => Some(r),
        () = stop.cancelled() => None,
    };
    progress.finish();
    let report: CollectReport = match collected {
        None => {
            eprintln!(
                "corral: interrupted: what was collected is in {}; `corral collect --resume` (or `run --resume`) goes on",
                out.display()
            );
            return Ok(exit::INTERRUPTED);
        }
        Some(r) => r.map_err(super::queue_fail)?,
    };
    let results = out.to_path_buf();
    let (text, json, failed) =
        tokio::task::spawn_blocking(move || crate::report::summary_of(&results))
            .await
            .map_err(fail(exit::FATAL))??;
    if !end.quiet {
        eprint!("{text}");
        eprintln!(
            "corral: collected {} results from {queue} ({} already in the file or repeated{}{})",
            report.written,
            report.duplicates,
            match report.undeliverable {
                0 => String::new(),
                n => format!(", {n} failed max_deliveries"),
            },
            match report.rejected {
                0 => String::new(),
                n => format!(", {n} refused: forged or not of this run"),
            }
        );
    }
    if let Some(p) = &end.summary_json {
        if let Err(e) = corral_engine::files::write_whole(p, json.as_ref()) {
            eprintln!("corral: cannot write {}: {e}", p.display());
        }
    }
    Ok(if failed > 0 {
        exit::SOME_FAILED
    } else {
        exit::OK
    })
}

/// The collection's counts, for metrics.
#[derive(Default)]
struct Counts {
    done: AtomicU64,
    submitted: AtomicU64,
}

/// Progress of a collection: a bar on a terminal, a line every few seconds otherwise.
struct Shown {
    bar: Option<ProgressBar>,
    lines: Option<Instant>,
    counts: Arc<Counts>,
    started: Instant,
}

impl Shown {
    fn new(quiet: bool, counts: Arc<Counts>) -> Self {
        let terminal = !quiet && std::io::stderr().is_terminal();
        let bar = terminal.then(crate::progress::bar);
        Self {
            bar,
            lines: (!quiet && !terminal).then(Instant::now),
            counts,
            started: Instant::now(),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl CollectProgress for Shown {
    fn collected(&mut self, done: u64, submitted: u64) {
        self.counts.done.store(done, Ordering::Relaxed);
        self.counts.submitted.store(submitted, Ordering::Relaxed);
        let per_s = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        if let Some(b) = &self.bar {
            b.set_length(submitted);
            b.set_position(done);
            b.set_message(format!("collected, {per_s:.0}/s"));
        }
        if let Some(last) = &mut self.lines {
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                eprintln!("corral: {done}/{submitted} results collected");
            }
        }
    }
}
