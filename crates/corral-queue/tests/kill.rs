//! A worker killed with SIGKILL in the middle of a run loses nothing: the jobs it had pulled
//! and not acked are delivered again (after the ack wait) to another worker, and the results
//! file still has every line exactly once. The killed worker is this test binary run again as
//! a child process (`FLEET_CHILD` set), so the kill is a real one.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::NatsServer;
use corral_engine::job::Input;
use corral_engine::run::Run;
use corral_queue::submit::Submitter;
use corral_queue::url::QueueUrl;
use corral_queue::worker::Worker;
use tokio_util::sync::CancellationToken;

const ACK_WAIT: Duration = Duration::from_secs(1);

async fn results_stored(queue: &QueueUrl) -> u64 {
    let js = async_nats::jetstream::new(async_nats::connect(queue.server()).await.unwrap());
    match js.get_stream(queue.results_stream()).await {
        Ok(s) => s.get_info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_no_job() {
    if let Ok(queue) = std::env::var("FLEET_CHILD") {
        // The child: a worker that runs until it is killed.
        let queue = QueueUrl::parse(&queue).unwrap();
        let mut worker = Worker::connect(&queue).await.unwrap();
        worker.run_info(|| {}).await.unwrap();
        let run = Run::new(corral_engine::settings::Settings {
            concurrency: 8,
            ..Default::default()
        })
        .unwrap();
        let _ = worker
            .run(run, Input::default(), CancellationToken::new())
            .await;
        return;
    }
    let nats = NatsServer::start();
    // 50 ms a request: the child cannot finish before it is killed.
    let server = common::http_server(Duration::from_millis(50));
    let base = server.base().to_string();
    let queue = QueueUrl::parse(&nats.queue("kill")).unwrap();
    let n = 300u64;
    let jobs: Vec<(u64, String)> = (1..=n)
        .map(|i| (i, format!(r#"{{"url":"{base}/items/{i}"}}"#)))
        .collect();
    let submitter = Submitter::connect(&queue).await.unwrap();
    submitter.configure(ACK_WAIT, 5).await.unwrap();
    common::record_run(&submitter, n).await;
    submitter.submit(jobs).await.unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_worker_killed_mid_run_loses_no_job",
            "--nocapture",
        ])
        .env("FLEET_CHILD", queue.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Let it store some results and hold more jobs in flight, then kill it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while results_stored(&queue).await < 40 {
        assert!(
            Instant::now() < deadline,
            "the child worker stored no results"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let stored_by_child = results_stored(&queue).await;
    assert!(
        stored_by_child < n,
        "the child finished before it was killed"
    );

    let stop = CancellationToken::new();
    let survivor = common::start_worker(&queue, 16, &stop).await;
    let (_dir, out, collected) = common::collect_within(
        &queue,
        Duration::from_secs(60),
        "every job's result within a minute: a job was lost",
    )
    .await;
    stop.cancel();
    survivor.await.unwrap().unwrap();
    assert_eq!(collected.written, n);
    let mut lines = BTreeSet::new();
    for l in std::fs::read_to_string(&out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["ok"], true, "{l}");
        assert!(lines.insert(v["line"].as_u64().unwrap()), "line twice: {l}");
    }
    assert_eq!(lines, (1..=n).collect());
}
