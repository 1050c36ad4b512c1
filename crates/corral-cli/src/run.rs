//! `corral run`: open the input and the results file, run every job, print the summary.

use std::os::fd::AsFd;
use std::path::PathBuf;

use corral::shutdown::Shutdown;
use corral_engine::error::StartError;
use corral_engine::job::{self, Format, Input, Template};
use corral_engine::redact;
use corral_engine::run::{Ending, Observer, Run};
use corral_engine::sink::{self as output, Existing, InputFacts, OpenMode, Sink};
use corral_engine::summary::{Stats, Summary};

use crate::exit::{code as exit, fail, Fail};
use crate::flags::{plan, retry_failed, ResultsFormatArg, RunArgs};
use crate::metrics;
use crate::progress::Progress;
use corral_engine::settings::ResultsFormat;
use corral_engine::settings::Settings;

/// How many jobs the input holds, for the progress bar's length.
pub(crate) enum Total {
    /// Not to be known: the input is not a regular file (it can be read only once).
    Unknown,
    /// Counted already (for `--resume`, which needs the line count first).
    Known(u64),
    /// A regular file, to count beside the run.
    Count(PathBuf),
}

impl Total {
    fn start(self) -> Option<tokio::task::JoinHandle<Option<u64>>> {
        match self {
            Total::Unknown => None,
            Total::Known(n) => Some(tokio::spawn(async move { Some(n) })),
            Total::Count(path) => Some(tokio::task::spawn_blocking(move || {
                output::count_lines(&path).ok().map(|c| c.jobs)
            })),
        }
    }
}

/// Shows the run's progress on the bar or lines of [`Progress`].
impl Observer for Progress {
    fn total(&mut self, jobs: u64) {
        self.set_total(jobs);
    }
    fn tick(&mut self, stats: &Stats, running: u64, waiting: u64) {
        self.update(stats, running, waiting);
    }
}

/// One run, from opened input to summary: signals, progress, the engine's [`Run`], the
/// summary and the exit code.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn execute(
    run: Run,
    plan: Settings,
    reader: Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
    total: Total,
    input: Input,
    sink: Sink,
    resumed: output::Resumed,
    after: After,
) -> Result<u8, Fail> {
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.listen_for_signals() {
        eprintln!("corral: cannot install signal handlers: {e}");
    }
    // After the first signal: stop intake, give in-flight jobs the drain deadline, then force.
    {
        let (token, s, drain) = (shutdown.token(), shutdown.clone(), plan.drain_timeout);
        tokio::spawn(async move {
            token.cancelled().await;
            tokio::time::sleep(drain).await;
            s.force();
        });
    }
    let mut notes = resume_notes(&resumed);
    let After {
        quiet,
        summary_json,
        report: report_html,
        metrics,
    } = after;
    let results_path = match &sink {
        Sink::File { path, .. } => Some(path.clone()),
        _ => None,
    };
    let mut watched = Watched {
        progress: Progress::new(quiet, plan.progress_interval),
        metrics,
    };
    let mut run = run
        .skipped(resumed.done.len())
        .spent_before(resumed.spent)
        .stop_on(shutdown.token(), shutdown.force_token());
    if let Some(count) = total.start() {
        run = run.total(count);
    }
    let done = resumed.done;
    let cost_unit = plan.cost_unit.clone();
    let jobs = job::read_jobs(reader, input, plan.max_line, move |line: u64| {
        done.contains(line)
    });
    let report = run
        .run_observed(jobs, sink, &mut watched)
        .await
        .map_err(fail(exit::FATAL))?;
    watched.progress.finish();
    notes.extend(report.notes.iter().cloned());
    let (outcome, code) = match &report.ending {
        Ending::Fatal(e) => {
            eprintln!("corral: {}", redact::text(e));
            ("stopped by an error", exit::FATAL)
        }
        Ending::Interrupted => {
            notes.push("interrupted: rerun with --resume to finish the remaining jobs".into());
            ("interrupted", exit::INTERRUPTED)
        }
        Ending::Halted(why) => {
            // Said even with --quiet, as an error is: the run did not do all it was asked.
            eprintln!(
                "corral: halted: {why}; the jobs not started have no result, --resume runs them"
            );
            ("halted", exit::SOME_FAILED)
        }
        Ending::Finished if report.stats.failed > 0 || report.lost > 0 => {
            ("finished with failures", exit::SOME_FAILED)
        }
        Ending::Finished => ("finished", exit::OK),
    };
    let mut summary = Summary::build(
        &report.stats,
        &report.hosts,
        report.breaker_openings,
        outcome,
        i32::from(code),
        notes,
    );
    summary.cost_unit = cost_unit;
    if !quiet {
        eprint!("{}", summary.render());
    }
    if let Some(p) = summary_json {
        let json = serde_json::to_vec_pretty(&summary).unwrap_or_default();
        if let Err(e) = corral_engine::files::write_whole(&p, &json) {
            eprintln!("corral: cannot write {}: {e}", p.display());
        }
    }
    // The report reads the results file as written (a resumed run's earlier lines too). Its
    // failure is said but does not change the exit code: the results themselves are whole.
    if let (Some(html), Some(results)) = (report_html, results_path) {
        let written = tokio::task::spawn_blocking({
            let html = html.clone();
            move || crate::report::report_html(&results, &html)
        })
        .await;
        match written {
            Ok(Ok(())) if !quiet => eprintln!("corral: report written to {}", html.display()),
            Ok(Ok(())) => {}
            Ok(Err(Fail(_, e))) => eprintln!("corral: {}", redact::text(&e)),
            Err(e) => eprintln!("corral: cannot write the report: {e}"),
        }
    }
    Ok(code)
}

/// What a run does besides its results: progress, and what it writes at the end.
pub(crate) struct After {
    /// No progress and no printed summary.
    pub(crate) quiet: bool,
    /// Write the summary as JSON here (`--summary-json`).
    pub(crate) summary_json: Option<PathBuf>,
    /// Write an HTML report of the results file here (`--report`).
    pub(crate) report: Option<PathBuf>,
    /// Keep the counters here too, for `--metrics-addr`.
    pub(crate) metrics: Option<metrics::Latest>,
}

/// The run's observers: progress, and the metrics' counters.
struct Watched {
    progress: Progress,
    metrics: Option<metrics::Latest>,
}

impl Observer for Watched {
    fn total(&mut self, jobs: u64) {
        self.progress.total(jobs);
    }
    fn tick(&mut self, stats: &Stats, running: u64, waiting: u64) {
        self.progress.tick(stats, running, waiting);
        if let Some(m) = &mut self.metrics {
            m.tick(stats, running, waiting);
        }
    }
}

/// The engine for `plan`: its settings, checked.
pub(crate) fn build(plan: &Settings) -> Result<Run, StartError> {
    build_with(plan, None)
}

/// [`build`], keeping per-host state in `hosts` (a fleet's shared table) when given.
pub(crate) fn build_with(
    plan: &Settings,
    hosts: Option<std::sync::Arc<dyn corral_engine::hosts::HostTable>>,
) -> Result<Run, StartError> {
    let mut run = Run::builder().settings(plan.clone());
    if let Some(h) = hosts {
        run = run.hosts(h);
    }
    run.build()
}

/// What resuming found in the results file, as notes for the summary.
fn resume_notes(resumed: &output::Resumed) -> Vec<String> {
    let mut notes = Vec::new();
    if !resumed.done.is_empty() {
        notes.push(format!(
            "resumed: {} jobs already in the results were skipped",
            resumed.done.len()
        ));
    }
    if resumed.repaired_bytes > 0 {
        notes.push(format!(
            "repaired a torn last result line ({} bytes cut)",
            resumed.repaired_bytes
        ));
    }
    if resumed.duplicates > 0 {
        notes.push(format!(
            "the results file already held {} duplicate lines",
            resumed.duplicates
        ));
    }
    if let Some((n, side)) = &resumed.retried {
        notes.push(format!(
            "--retry-failed: {n} failed results moved to {}; their jobs ran again",
            side.display()
        ));
    }
    if let Some((n, side)) = &resumed.set_aside {
        notes.push(format!(
            "--repair moved {n} lines that were not results of this jobs file to {}; their jobs ran again",
            side.display()
        ));
    }
    notes
}

/// Refuses a run whose outputs (results, summary, report, saved bodies, standard output when
/// it is a file) would overwrite one of its inputs or each other, before anything is sent.
pub(crate) fn check_files(
    args: &RunArgs,
    opts: &Settings,
    bodies: Option<&std::path::Path>,
) -> Result<(), Fail> {
    use corral_engine::files::{self, Place};
    let mut places = vec![if args.jobs.as_os_str() == "-" {
        Place::stdin()
    } else {
        Place::input("jobs file", &args.jobs)
    }];
    let inputs = [("--config", args.config.as_deref())]
        .into_iter()
        .chain(opts.cacert.iter().map(|p| ("--cacert", Some(p.as_path()))))
        .chain([
            ("--cert", opts.cert.as_deref()),
            ("--key", opts.key.as_deref()),
        ])
        .chain([(
            "--template",
            args.template
                .as_deref()
                .and_then(|t| t.strip_prefix('@'))
                .map(std::path::Path::new),
        )]);
    places.extend(inputs.filter_map(|(o, p)| p.map(|p| Place::input(o, p))));
    let outputs = [
        ("-o", args.output.as_deref()),
        ("--summary-json", args.summary_json.as_deref()),
        ("--report", args.report.as_deref()),
    ];
    places.extend(
        outputs
            .into_iter()
            .filter_map(|(o, p)| p.map(|p| Place::output(o, p))),
    );
    places.push(Place::stdout());
    places.extend(bodies.map(|d| Place::bodies("--save-body-dir", d)));
    files::check(&places).map_err(fail(exit::BAD_INPUT))
}

pub(crate) async fn run_cmd(args: RunArgs) -> Result<u8, Fail> {
    // A dry run sends nothing, to a queue neither ($CORRAL_QUEUE included).
    let queue = match args.dry_run {
        None => crate::fleet::parse(args.queue.as_deref())?,
        Some(_) => None,
    };
    if let Some(queue) = queue {
        let queue = args.nats.apply(queue)?;
        return crate::fleet::collect::run_on_queue(args, queue).await;
    }
    let opts = args
        .settings
        .with_config(args.config.as_deref())
        .map_err(fail(exit::BAD_INPUT))?;
    // The outputs against the inputs (--cacert, --cert, --key among them) before any is read.
    check_files(&args, &opts, opts.save_body_dir.as_deref())?;
    let mut plan = plan(opts).map_err(fail(exit::BAD_INPUT))?;
    let csv_out = args.format == ResultsFormatArg::Csv;
    if csv_out {
        plan.results_format = ResultsFormat::Csv;
    }
    let format = if args.urls {
        Format::Urls
    } else if args.csv {
        let text = match args.template.as_deref() {
            Some(t) => match t.strip_prefix('@') {
                Some(path) => corral_engine::files::read_option_text("--template", path.as_ref())
                    .map_err(fail(exit::BAD_INPUT))?,
                None => t.to_string(),
            },
            None => {
                return Err(Fail(
                    exit::BAD_INPUT,
                    "--csv needs --template, a JSON job with {column} placeholders".into(),
                ))
            }
        };
        Format::Csv(Template::parse(&text).map_err(fail(exit::BAD_INPUT))?)
    } else {
        Format::Jsonl
    };
    let input = Input {
        format,
        headers: plan.header_map(),
        base_url: plan.base_url.clone(),
    };
    if let Some(n) = args.dry_run {
        return crate::dry_run::show(&args.jobs, input, &plan, (n > 0).then_some(n)).await;
    }
    if let Some(dir) = &plan.save_body_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            Fail(
                exit::BAD_INPUT,
                format!("--save-body-dir {}: {e}", dir.display()),
            )
        })?;
    }
    // Every check first: nothing is written before the options and the input are known good.
    // With --metrics-addr, the run's host table is made here, for the scrapes to read.
    let (run, metrics) = match args.metrics_addr {
        None => (build(&plan).map_err(fail(exit::BAD_INPUT))?, None),
        Some(addr) => {
            let hosts: std::sync::Arc<dyn corral_engine::hosts::HostTable> = std::sync::Arc::new(
                corral_engine::hosts::Hosts::new(&plan).map_err(fail(exit::BAD_INPUT))?,
            );
            let run = build_with(&plan, Some(hosts.clone())).map_err(fail(exit::BAD_INPUT))?;
            let latest = metrics::Latest::default();
            let server = metrics::serve(addr, metrics::engine(latest.clone(), hosts, None))
                .await
                .map_err(|e| Fail(exit::BAD_INPUT, format!("--metrics-addr {addr}: {e}")))?;
            (run, Some((latest, server)))
        }
    };
    let (reader, facts, total): (
        Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
        InputFacts,
        Total,
    ) = if args.jobs.as_os_str() == "-" {
        let identity = std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| std::fs::File::from(fd).metadata())
            .ok()
            .map(|m| output::identity(&m));
        (
            Box::new(tokio::io::BufReader::new(tokio::io::stdin())),
            InputFacts {
                identity,
                lines: None,
            },
            Total::Unknown,
        )
    } else {
        let shown = args.jobs.display();
        let f = tokio::fs::File::open(&args.jobs).await.map_err(|e| {
            Fail(
                exit::BAD_INPUT,
                format!("cannot read jobs file {shown}: {e}"),
            )
        })?;
        let meta = f.metadata().await.map_err(|e| {
            Fail(
                exit::BAD_INPUT,
                format!("cannot read jobs file {shown}: {e}"),
            )
        })?;
        if meta.is_dir() {
            return Err(Fail(
                exit::BAD_INPUT,
                format!("{shown} is a directory, not a jobs file"),
            ));
        }
        // A pipe, FIFO or device can be read only once: by the job reader, nothing else.
        let regular = meta.is_file();
        // With --resume the lines are counted first (they bound the results' line numbers),
        // once for both uses; otherwise beside the run.
        let counted = if regular && args.resume {
            let path = args.jobs.clone();
            let n = tokio::task::spawn_blocking(move || output::count_lines(&path))
                .await
                .map_err(fail(exit::FATAL))?
                .map_err(|e| {
                    Fail(
                        exit::BAD_INPUT,
                        format!("cannot read jobs file {shown}: {e}"),
                    )
                })?;
            Some(n)
        } else {
            None
        };
        (
            Box::new(tokio::io::BufReader::with_capacity(1 << 16, f)),
            InputFacts {
                identity: Some(output::identity(&meta)),
                lines: counted.map(|c| c.lines),
            },
            match counted {
                Some(c) => Total::Known(c.jobs),
                None if regular => Total::Count(args.jobs.clone()),
                None => Total::Unknown,
            },
        )
    };
    let existing = if args.resume {
        Existing::Resume
    } else if args.overwrite {
        Existing::Overwrite
    } else {
        Existing::Refuse
    };
    let mode = OpenMode {
        existing,
        repair: args.repair,
        retry_failed: args
            .retry_failed
            .as_deref()
            .map(retry_failed)
            .transpose()
            .map_err(fail(exit::BAD_INPUT))?,
    };
    let resend_interrupted = mode
        .retry_failed
        .as_ref()
        .is_some_and(|r| r.resends_interrupted());
    let resuming = mode.existing == Existing::Resume;
    let mut run = run;
    let (sink, resumed) = match &args.output {
        None => {
            if csv_out {
                println!("{}", corral_engine::result::csv_header(&plan.extract));
            }
            (Sink::Stdout, output::Resumed::default())
        }
        Some(path) => {
            let opened = output::open(path, mode, facts).map_err(fail(exit::BAD_INPUT))?;
            // Requests that may not be repeated are journaled beside a results file.
            if opened.regular {
                let earlier = resuming.then_some((&opened.resumed.done, &opened.resumed.again));
                let intents =
                    corral_engine::intents::Intents::open(path, earlier, resend_interrupted)
                        .map_err(fail(exit::BAD_INPUT))?;
                run = run.intents(intents);
            }
            if csv_out {
                // A new (or emptied) file: `--format csv` cannot resume.
                use std::io::Write;
                writeln!(
                    &opened.file,
                    "{}",
                    corral_engine::result::csv_header(&plan.extract)
                )
                .map_err(|e| Fail(exit::FATAL, format!("cannot write {}: {e}", path.display())))?;
            }
            let sink = Sink::File {
                file: opened.file,
                path: path.clone(),
                sync: opened.regular,
            };
            (sink, opened.resumed)
        }
    };
    execute(
        run,
        plan,
        reader,
        total,
        input,
        sink,
        resumed,
        After {
            quiet: args.quiet,
            summary_json: args.summary_json,
            report: args.report,
            metrics: metrics.map(|(latest, _server)| latest),
        },
    )
    .await
}
