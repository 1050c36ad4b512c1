//! `corral worker`: run a queue's jobs through the same engine as `corral run`, under the
//! run's options and the limits the fleet shares, until stopped.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use clap::Args;
use corral::shutdown::Shutdown;
use corral_engine::hosts::HostTable;
use corral_engine::job::{Format, Input};
use corral_engine::run::{Ending, Observer};
use corral_engine::summary::Stats;
use corral_queue::hosts::FleetHosts;
use corral_queue::worker::{Counters, Worker};

use super::{check_shareable, QueueArg, RunRecord};
use crate::exit::{code as exit, fail, Fail};
use crate::flags::plan;
use crate::metrics::{self, Render, Text};

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

/// The latest counters of the engine, for metrics.
#[derive(Default)]
struct Latest {
    stats: Option<Stats>,
    running: u64,
    waiting: u64,
}

struct Shared(Arc<Mutex<Latest>>);

impl Observer for Shared {
    fn tick(&mut self, stats: &Stats, running: u64, waiting: u64) {
        let mut l = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        l.stats = Some(stats.clone());
        (l.running, l.waiting) = (running, waiting);
    }
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

    let latest = Arc::new(Mutex::new(Latest::default()));
    let _metrics = match args.metrics_addr {
        Some(addr) => Some(
            metrics::serve(addr, render(latest.clone(), table, worker.counters()))
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
        .run_observed(run, input, shutdown.token(), &mut Shared(latest))
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

/// The worker's metrics: jobs, in flight, and per host requests, pauses and breakers.
fn render(latest: Arc<Mutex<Latest>>, hosts: Arc<FleetHosts>, counters: Arc<Counters>) -> Render {
    Arc::new(move || {
        let (stats, running, waiting) = {
            let l = latest.lock().unwrap_or_else(PoisonError::into_inner);
            (l.stats.clone(), l.running, l.waiting)
        };
        let (done, ok, failed, retries) =
            stats.map_or((0, 0, 0, 0), |s| (s.done, s.ok, s.failed, s.retries));
        let host_stats = hosts.stats();
        let mut per: Vec<_> = host_stats.iter().collect();
        per.sort_by(|a, b| a.0.cmp(b.0));
        let held = counters.held.load(std::sync::atomic::Ordering::Relaxed);
        let mut t = Text::default();
        t.one(
            "corral_jobs_done_total",
            "counter",
            "Jobs finished by this worker (results stored).",
            done as f64,
        )
        .one(
            "corral_jobs_ok_total",
            "counter",
            "Jobs that succeeded.",
            ok as f64,
        )
        .one(
            "corral_jobs_failed_total",
            "counter",
            "Jobs that failed.",
            failed as f64,
        )
        .one(
            "corral_retries_total",
            "counter",
            "Retries sent.",
            retries as f64,
        )
        .one(
            "corral_jobs_in_flight",
            "gauge",
            "Jobs under way (sending, or between retries).",
            running as f64,
        )
        .one(
            "corral_jobs_waiting",
            "gauge",
            "Jobs waiting for their host (slots, rate, pause, breaker).",
            waiting as f64,
        )
        .one(
            "corral_jobs_held",
            "gauge",
            "Jobs pulled from the queue and not yet acked.",
            held as f64,
        )
        .per_host(
            "corral_host_requests_total",
            "counter",
            "Requests sent to each host; its rate is the per-host rate.",
            per.iter().map(|(h, s)| (h.as_str(), s.attempts as f64)),
        )
        .per_host(
            "corral_host_retry_after_pauses_total",
            "counter",
            "Retry-After pauses of each host seen by this worker.",
            per.iter()
                .map(|(h, s)| (h.as_str(), s.paused_by_retry_after as f64)),
        )
        .per_host(
            "corral_host_breaker_openings_total",
            "counter",
            "Times each host's breaker opened in this worker.",
            per.iter()
                .map(|(h, s)| (h.as_str(), s.breaker_openings as f64)),
        )
        .per_host(
            "corral_host_breaker_open",
            "gauge",
            "1 while the host's breaker is open.",
            per.iter()
                .map(|(h, s)| (h.as_str(), f64::from(u8::from(s.breaker_open)))),
        );
        t.done()
    })
}
