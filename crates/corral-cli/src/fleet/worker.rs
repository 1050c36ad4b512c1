//! `corral worker`: run a queue's jobs through the same engine as `corral run`, under the
//! run's options and the limits the fleet shares, until stopped.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use corral::shutdown::Shutdown;
use corral_engine::hosts::HostTable;
use corral_engine::job::{Format, Input};
use corral_engine::run::Ending;
use corral_queue::hosts::FleetHosts;
use corral_queue::worker::Worker;

use super::{check_shareable, QueueArg, RunRecord};
use crate::exit::{code as exit, fail, Fail};
use crate::flags::plan;
use crate::metrics::{self, Latest};

pub(crate) const WORKER_EXAMPLES: &str = "\
Examples:
  corral worker --queue nats://10.0.0.5:4222/batch1 -c 64
  CORRAL_QUEUE=nats://10.0.0.5:4222/batch1 corral worker --metrics-addr 0.0.0.0:9464
  corral worker --queue nats://10.0.0.5:4222/batch1 -H 'Authorization: Bearer $TOKEN'

A worker runs until Ctrl-C / SIGTERM (jobs under way finish, their results are stored, then
acked) or until it is killed (its unacked jobs go to other workers after --ack-wait-s). It waits
for `corral submit` if the run does not exist yet.";

#[derive(Args)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub(crate) queue: QueueArg,
    /// Jobs under way at once in this worker [default: the run's -c]
    #[arg(long, short = 'c')]
    pub(crate) concurrency: Option<usize>,
    /// Threads that run requests [default: the run's, else one per CPU]
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Jobs held at once, running or waiting for their host [default: the run's]
    #[arg(long)]
    pub(crate) queue_size: Option<usize>,
    /// Extra request header for every job, `Name: value` (repeatable), after the run's own:
    /// secrets given here stay on this machine
    #[arg(long = "header", short = 'H')]
    pub(crate) header: Vec<String>,
    /// Serve Prometheus text metrics at this address, e.g. 0.0.0.0:9464
    #[arg(long, value_name = "ADDR")]
    pub(crate) metrics_addr: Option<SocketAddr>,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

pub(crate) async fn worker_cmd(args: WorkerArgs) -> Result<u8, Fail> {
    let queue = args.queue.url()?;
    let mut worker = Worker::connect(&queue).await.map_err(fail(exit::FATAL))?;
    let quiet = args.quiet;
    let record = worker
        .run_options(|| {
            if !quiet {
                eprintln!("corral worker: waiting for `corral submit` to {queue}");
            }
        })
        .await
        .map_err(fail(exit::FATAL))?;
    let record: RunRecord = serde_json::from_slice(&record).map_err(|e| {
        Fail(
            exit::BAD_INPUT,
            format!("the run's options on {queue} cannot be read by this corral ({e}); use the same version as `corral submit`"),
        )
    })?;
    let mut opts = record.options;
    // This worker's own size, over the run's.
    opts.concurrency = args.concurrency.or(opts.concurrency);
    opts.threads = args.threads.or(opts.threads);
    opts.queue_size = args.queue_size.or(opts.queue_size);
    opts.header.extend(args.header.iter().cloned());
    check_shareable(&opts).map_err(fail(exit::BAD_INPUT))?;
    let plan = plan(&opts).map_err(fail(exit::BAD_INPUT))?;

    let table = Arc::new(
        FleetHosts::start(&plan.settings, worker.board().clone(), worker.id())
            .await
            .map_err(fail(exit::FATAL))?,
    );
    worker.report_hosts(table.clone());
    let run = crate::run::build_with(&plan, Some(table.clone() as Arc<dyn HostTable>))
        .map_err(fail(exit::BAD_INPUT))?;
    let input = Input {
        format: if record.urls {
            Format::Urls
        } else {
            Format::Jsonl
        },
        headers: plan.extra_headers.clone(),
        base_url: plan.base_url.clone(),
    };

    let latest = Latest::default();
    let counters = worker.counters();
    let held = move || counters.held.load(std::sync::atomic::Ordering::Relaxed);
    let _metrics = match args.metrics_addr {
        Some(addr) => Some(
            metrics::serve(
                addr,
                metrics::engine(latest.clone(), table, Some(Arc::new(held))),
            )
            .await
            .map_err(|e| Fail(exit::BAD_INPUT, format!("--metrics-addr {addr}: {e}")))?,
        ),
        None => None,
    };
    let shutdown = Shutdown::new();
    if let Err(e) = shutdown.listen_for_signals() {
        eprintln!("corral worker: cannot install signal handlers: {e}");
    }
    if !quiet {
        eprintln!("corral worker {}: running jobs of {queue}", worker.id());
    }
    let report = worker
        .run_observed(run, input, shutdown.token(), &mut latest.clone())
        .await
        .map_err(fail(exit::FATAL))?;
    if !quiet {
        let s = &report.stats;
        eprintln!(
            "corral worker {}: stopped after {} jobs ({} ok, {} failed, {} retries)",
            worker.id(),
            s.done,
            s.ok,
            s.failed,
            s.retries
        );
    }
    Ok(match report.ending {
        Ending::Fatal(e) => {
            eprintln!("corral worker: {e}");
            exit::FATAL
        }
        _ => exit::INTERRUPTED,
    })
}
