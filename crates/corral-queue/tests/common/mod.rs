//! Helpers of the queue's tests: the nats-server fixture (from `corral_queue::testing`), a
//! loopback HTTP server, a worker in a task, and a collection with a time limit.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use corral_engine::job::Input;
use corral_engine::run::{Report, Run};
use corral_queue::collect::{collect, CollectReport};
use corral_queue::error::QueueError;
use corral_queue::record::{Lines, RunInfo};
use corral_queue::submit::Submitter;
use corral_queue::url::QueueUrl;
use corral_queue::worker::Worker;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use corral_queue::testing::{NatsServer, Recorder, Reply};

/// A loopback HTTP server answering 200 after `latency`; returns it (its base URL and a count
/// of the requests it answered).
pub fn http_server(latency: Duration) -> Recorder {
    Recorder::start(latency, |_, _| Reply::Ok)
}

/// A worker of `queue` running jobs `concurrency` at a time, in a task, until `stop`.
pub async fn start_worker(
    queue: &QueueUrl,
    concurrency: usize,
    stop: &CancellationToken,
) -> JoinHandle<Result<Report, QueueError>> {
    let mut worker = Worker::connect(queue).await.unwrap();
    worker.run_info(|| {}).await.unwrap();
    let run = Run::new(corral_engine::settings::Settings {
        concurrency,
        ..Default::default()
    })
    .unwrap();
    let stop = stop.clone();
    tokio::spawn(async move { worker.run(run, Input::default(), stop).await })
}

/// Collects `queue` into a new results file, failing with `why` if it takes over `limit`;
/// returns the file (in a temporary directory, kept while the first value lives) and the
/// collection's report.
pub async fn collect_within(
    queue: &QueueUrl,
    limit: Duration,
    why: &str,
) -> (tempfile::TempDir, PathBuf, CollectReport) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.jsonl");
    let report = tokio::time::timeout(limit, collect(queue, &out, &mut ()))
        .await
        .expect(why)
        .unwrap();
    (dir, out, report)
}

/// Stores the record of a run of `n` jobs, lines 1 to `n`, as `corral submit` does first.
pub async fn record_run(submitter: &Submitter, n: u64) {
    let mut lines = Lines::default();
    (1..=n).for_each(|l| lines.push(l));
    let info = RunInfo {
        options: "{}".into(),
        jobs: n,
        lines,
        ..RunInfo::default()
    };
    submitter.record(&info).await.unwrap();
}
