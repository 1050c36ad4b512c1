//! `corral run`: open the input and the results file, run every job, print the summary.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral::shutdown::Shutdown;
use futures::StreamExt;

use corral_engine::engine::{self as runner, Engine};
use corral_engine::job::{self, Format};
use corral_engine::sink::{self as output, Existing, InputFacts, OpenMode, Sink, Writer};
use corral_engine::summary::{Stats, Summary};
use corral_engine::{redact, workers, workers::Workers};

use crate::exit::{code as exit, fail, Fail};
use crate::flags::{load_config, plan, Plan, RunArgs};
use crate::progress::Progress;

/// Counts non-blank lines of a file in the background, for the progress bar's length.
pub(crate) fn count_lines(path: PathBuf) -> tokio::task::JoinHandle<Option<u64>> {
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let f = std::fs::File::open(path).ok()?;
        let mut n = 0;
        let mut r = std::io::BufReader::with_capacity(1 << 20, f);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).ok()? > 0 {
            if buf.iter().any(|b| !b.is_ascii_whitespace()) {
                n += 1;
            }
            buf.clear();
        }
        Some(n)
    })
}

/// One run, from opened input to summary. Returns the exit code.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn execute(
    engine: Engine,
    plan: Plan,
    input: Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
    count_path: Option<PathBuf>,
    format: Format,
    sink: Sink,
    resumed: output::Resumed,
    quiet: bool,
    summary_json: Option<PathBuf>,
) -> Result<u8, Fail> {
    // The summary counts what the results file holds: a job is counted once its line is written.
    let stats = Arc::new(Mutex::new(
        Stats::new(resumed.done.len()).map_err(fail(exit::FATAL))?,
    ));
    let counted = stats.clone();
    let writer = Writer::start(
        sink,
        plan.fsync_interval,
        Box::new(move |written: &[runner::Outcome]| {
            let mut stats = counted.lock().unwrap_or_else(|p| p.into_inner());
            for outcome in written {
                stats.record(outcome);
            }
        }),
    )
    .map_err(fail(exit::FATAL))?;
    let stats_now = || stats.lock().unwrap_or_else(|p| p.into_inner());
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
    if let Some((n, side)) = &resumed.set_aside {
        notes.push(format!(
            "--repair moved {n} lines that were not results of this jobs file to {}; their jobs ran again",
            side.display()
        ));
    }
    let mut progress = Progress::new(quiet, plan.progress_every);
    // Only a regular file is counted: any other input can be read once, by the job reader.
    let total = count_path.map(count_lines);

    let done = Arc::new(resumed.done);
    let skip = {
        let done = done.clone();
        move |line: u64| done.contains(line)
    };
    let read_error: Arc<Mutex<Option<String>>> = Arc::default();
    let re = read_error.clone();
    let jobs = job::read_jobs(
        input,
        format,
        plan.extra_headers.clone(),
        plan.max_line,
        skip,
    )
    .scan((), move |_, r| {
        let out = match r {
            Ok(p) => Some(p),
            Err(e) => {
                *re.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(format!("cannot read the jobs: {e}"));
                None
            }
        };
        futures::future::ready(out)
    });
    let gates = engine.gates_handle();
    let taken = Arc::new(AtomicU64::new(0));
    let mut workers = Workers::start(
        engine,
        jobs,
        plan.threads,
        plan.settings.concurrency,
        plan.queue,
        workers::Stop {
            intake: shutdown.token(),
            force: shutdown.force_token(),
        },
        taken.clone(),
    )
    .map_err(fail(exit::FATAL))?;
    let sender = writer.sender();
    let force = shutdown.force_token();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut total = total;
    let mut fatal: Option<String> = None;
    let mut lost_to_panic = 0u64;
    let mut finished = 0u64;
    let mut first_panic: Option<String> = None;
    loop {
        tokio::select! {
            biased;
            _ = force.cancelled() => break,
            r = workers.next() => match r {
                None => break,
                Some(batch) => {
                    for r in batch {
                        match r {
                            // Not started before Ctrl-C: no result, --resume runs it.
                            Ok(None) => {}
                            Ok(Some(outcome)) => {
                                finished += 1;
                                if sender.push(outcome).await.is_err() {
                                    fatal.get_or_insert_with(|| "the results writer stopped".into());
                                }
                            }
                            // Not expected; the job's result is not written, so --resume runs it again.
                            Err(workers::Lost(why)) => {
                                lost_to_panic += 1;
                                first_panic.get_or_insert(why);
                            }
                        }
                    }
                }
            },
            _ = tick.tick() => {
                if let Some(h) = total.as_mut().filter(|h| h.is_finished()) {
                    if let Ok(Some(n)) = h.await {
                        progress.set_total(n);
                    }
                    total = None;
                }
                let stats = stats_now();
                let held = taken.load(Ordering::Relaxed).saturating_sub(stats.done);
                let running = gates.running().min(held);
                progress.update(&stats, running, held - running);
            }
        }
        if let Some(e) = writer.failed() {
            fatal.get_or_insert(e);
        }
        if fatal.is_some() {
            shutdown.force();
            break;
        }
    }
    workers.join().await; // after a forced stop, the threads abandon what is in flight
    drop(sender);
    if let Err(e) = writer.close().await {
        fatal.get_or_insert(e);
    }
    let stats = stats_now();
    progress.update(&stats, 0, 0);
    progress.finish();
    let unwritten = finished.saturating_sub(stats.done);
    if unwritten > 0 {
        notes.push(format!(
            "{unwritten} finished jobs could not be written to the results and are not counted above; --resume runs them"
        ));
    }
    if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        fatal.get_or_insert(e);
    }
    if lost_to_panic > 0 {
        notes.push(format!(
            "{lost_to_panic} jobs hit an internal error and were not recorded; --resume will run them (first error: {})",
            first_panic.as_deref().unwrap_or("unknown")
        ));
    }
    let interrupted = shutdown.is_triggered();
    let (outcome, code) = if let Some(e) = &fatal {
        eprintln!("corral: {}", redact::text(e));
        ("stopped by an error", exit::FATAL)
    } else if interrupted {
        notes.push("interrupted: rerun with --resume to finish the remaining jobs".into());
        ("interrupted", exit::INTERRUPTED)
    } else if stats.failed > 0 || lost_to_panic > 0 {
        ("finished with failures", exit::SOME_FAILED)
    } else {
        ("finished", exit::OK)
    };
    let hosts = gates
        .hosts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let summary = Summary::build(
        &stats,
        &hosts,
        gates.breaker_openings.load(Ordering::Relaxed),
        outcome,
        i32::from(code),
        notes,
    );
    if !quiet {
        eprint!("{}", summary.render());
    }
    if let Some(p) = summary_json {
        let json = serde_json::to_vec_pretty(&summary).unwrap_or_default();
        if let Err(e) = std::fs::write(&p, json) {
            eprintln!("corral: cannot write {}: {e}", p.display());
        }
    }
    Ok(code)
}

pub(crate) async fn run_cmd(args: RunArgs) -> Result<u8, Fail> {
    let opts = match &args.config {
        Some(path) => args
            .opts
            .merged_with(&load_config(path).map_err(fail(exit::BAD_INPUT))?),
        None => args.opts.clone(),
    };
    let plan = plan(&opts).map_err(fail(exit::BAD_INPUT))?;
    let format = if args.urls {
        Format::Urls
    } else {
        Format::Jsonl
    };
    // Every check first: nothing is written before the options and the input are known good.
    let engine = Engine::new(plan.settings.clone()).map_err(fail(exit::BAD_INPUT))?;
    let (input, facts, counted): (
        Box<dyn tokio::io::AsyncBufRead + Unpin + Send>,
        InputFacts,
        Option<PathBuf>,
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
            None,
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
        let lines = if regular && args.resume {
            let path = args.jobs.clone();
            let n = tokio::task::spawn_blocking(move || output::count_all_lines(&path))
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
                lines,
            },
            regular.then(|| args.jobs.clone()),
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
    };
    let (sink, resumed) = match &args.output {
        None => (Sink::Stdout, output::Resumed::default()),
        Some(path) => {
            let opened = output::open(path, mode, facts).map_err(fail(exit::BAD_INPUT))?;
            let sink = Sink::File {
                file: opened.file,
                path: path.clone(),
                sync: opened.regular,
            };
            (sink, opened.resumed)
        }
    };
    execute(
        engine,
        plan,
        input,
        counted,
        format,
        sink,
        resumed,
        args.quiet,
        args.summary_json,
    )
    .await
}
