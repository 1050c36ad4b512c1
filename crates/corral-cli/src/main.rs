//! `corral`: run a very large number of HTTP requests under control.
//!
//! See `corral --help`, `corral run --help` and the README.

/// mimalloc instead of the system allocator: every request allocates and frees small buffers
/// on its worker thread, and glibc's malloc spent ~10% of `corral run`'s CPU on it (perf); with
/// mimalloc user time for 100 000 loopback GETs fell from ~1.1 s to ~0.8 s (`bench/http.sh`).
/// The price is a larger, still flat, resident set (~40 MiB instead of ~17 MiB, 10k or 1M jobs,
/// `bench/memory.sh`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod demo;
mod dry_run;
mod exit;
mod flags;
mod fleet;
mod log;
mod metrics;
mod mock;
mod progress;
mod report;
mod run;
mod serve_mock;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use corral_engine::redact;

use crate::exit::{code, Fail, EXIT_CODES};
use crate::flags::{raise_fd_limit, RunArgs, RUN_EXAMPLES};

#[derive(Parser)]
#[command(
    name = "corral",
    version,
    about = "Run a very large number of HTTP requests under control: concurrency and rate limits, retries, circuit breakers, crash-safe resume.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the requests of a JSONL (or URL list) file, writing one result line per job.
    #[command(after_help = format!("{RUN_EXAMPLES}\n\n{EXIT_CODES}"))]
    Run(Box<RunArgs>),
    /// Run a few thousand jobs against an embedded mock server with injected faults (no network).
    Demo(demo::DemoArgs),
    /// Summarise a results file again: the summary `run` ends with, JSON, CSV, or an HTML page.
    #[command(after_help = report::REPORT_EXAMPLES)]
    Report(report::ReportArgs),
    /// Run the mock server alone (for benchmarks and experiments) until Ctrl-C.
    ServeMock(serve_mock::ServeArgs),
    /// Publish a jobs file and the run's options to a NATS JetStream queue, for `corral worker`s.
    #[command(after_help = fleet::submit::SUBMIT_EXAMPLES)]
    Submit(Box<fleet::submit::SubmitArgs>),
    /// Run a queue's jobs under the run's shared limits, until stopped (many on many machines).
    #[command(after_help = fleet::worker::WORKER_EXAMPLES)]
    Worker(fleet::worker::WorkerArgs),
    /// Write a queue run's results file: each job's result exactly once; ends when all are in.
    #[command(after_help = EXIT_CODES)]
    Collect(fleet::collect::CollectArgs),
    /// Show a queue run's state: jobs submitted, pending, in flight, done; workers; hosts.
    Status(fleet::status::StatusArgs),
    /// Remove a queue run's streams and board from the server (refused while its workers run,
    /// unless --force).
    Purge(fleet::purge::PurgeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    log::init();
    // `run` and `demo` do their requests on worker threads of their own (see `workers`): the
    // main thread only reads jobs and writes results. The mock server alone wants every core.
    let mut builder = match cli.cmd {
        Cmd::ServeMock(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corral: cannot start the runtime: {e}");
            return ExitCode::from(code::FATAL);
        }
    };
    let code = rt
        .block_on(async move {
            match cli.cmd {
                Cmd::Run(args) => run::run_cmd(*args).await,
                Cmd::Demo(args) => demo::demo(args).await,
                Cmd::Report(args) => report::report_cmd(args).await,
                Cmd::ServeMock(args) => serve_mock::serve_mock(args).await,
                Cmd::Submit(args) => fleet::submit::submit_cmd(*args).await,
                Cmd::Worker(args) => fleet::worker::worker_cmd(args).await,
                Cmd::Collect(args) => fleet::collect::collect_cmd(args).await,
                Cmd::Status(args) => fleet::status::status_cmd(args).await,
                Cmd::Purge(args) => fleet::purge::purge_cmd(args).await,
            }
        })
        .unwrap_or_else(|Fail(code, message)| {
            eprintln!("corral: {}", redact::text(&message));
            code
        });
    // Do not wait for stray blocking reads (stdin) at exit.
    rt.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(code)
}
