//! What anyone who can publish on the server can try, and what it changes: with the fleet's
//! key, nothing — a forged job is never run (its host sees no request) and is counted as
//! rejected, a forged result is never written, rewritten options stop the worker before its
//! first job; without a key, a result for a line the run does not have is still refused. On a
//! real nats-server and loopback HTTP servers.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::NatsServer;
use corral_queue::error::QueueErrorKind;
use corral_queue::record::RunInfo;
use corral_queue::sign::QueueKey;
use corral_queue::status::status;
use corral_queue::submit::Submitter;
use corral_queue::url::QueueUrl;
use corral_queue::worker::Worker;
use tokio_util::sync::CancellationToken;

fn key(secret: &str) -> Option<QueueKey> {
    Some(QueueKey::new(secret.as_bytes()).unwrap())
}

/// Publishes `payload` on `subject` as anyone could, with the `Nats-Msg-Id` `id` and any
/// other headers given.
async fn forge(
    queue: &QueueUrl,
    subject: String,
    id: &str,
    extra: &[(&str, &str)],
    payload: impl AsRef<[u8]>,
) {
    let js = async_nats::jetstream::new(
        QueueUrl::parse(&format!("nats://{}/{}", queue.server(), queue.run()))
            .unwrap()
            .client()
            .await
            .unwrap(),
    );
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    for (k, v) in extra {
        headers.insert(*k, *v);
    }
    js.publish_with_headers(subject, headers, Bytes::copy_from_slice(payload.as_ref()))
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Submits the real jobs 1..=`n` (to `base`), runs them with one worker and collects them:
/// the results file and the collection's report.
async fn submit_run_collect(
    queue: &QueueUrl,
    submitter: &Submitter,
    base: &str,
    n: u64,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    corral_queue::collect::CollectReport,
) {
    submitter
        .submit((1..=n).map(|i| (i, format!(r#"{{"url":"{base}/items/{i}"}}"#))))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let worker = common::start_worker(queue, 4, &stop).await;
    let collected =
        common::collect_within(queue, Duration::from_secs(60), "every real line collected").await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    collected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_key_forged_jobs_and_results_change_nothing() {
    let nats = NatsServer::start();
    let real = common::http_server(Duration::ZERO);
    let thief = common::http_server(Duration::ZERO);
    let queue = QueueUrl::parse(&nats.queue("signed"))
        .unwrap()
        .with_key(key("the fleet's own key, 32 bytes."));
    let n = 20u64;
    let submitter = Submitter::connect(&queue).await.unwrap();
    common::record_run(&submitter, n).await;
    // Forged before the real ones, under the ids an unsigned submit would use: they must
    // neither run nor keep the real ones out.
    let stolen = format!(r#"{{"url":"{}/stolen"}}"#, thief.base());
    let (jobs, results) = (queue.jobs_subject(), queue.results_subject());
    forge(&queue, jobs.clone(), "signed:999", &[], &stolen).await;
    forge(&queue, jobs.clone(), "signed:3", &[], &stolen).await;
    forge(
        &queue,
        jobs.clone(),
        "signed:4",
        &[("Corral-Signature", "00ff00ff")],
        &stolen,
    )
    .await;
    forge(
        &queue,
        results.clone(),
        "signed:1",
        &[],
        r#"{"line":1,"ok":true,"url":"forged"}"#,
    )
    .await;
    forge(
        &queue,
        results.clone(),
        "signed:9999",
        &[],
        r#"{"line":9999,"ok":true}"#,
    )
    .await;
    let base = real.base().to_string();
    let (_dir, out, report) = submit_run_collect(&queue, &submitter, &base, n).await;
    assert_eq!(thief.hits(), 0, "a forged job never reaches its host");
    assert_eq!(real.hits(), n);
    assert_eq!((report.written, report.rejected), (n, 2));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count() as u64, n);
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(v["url"].as_str().unwrap().starts_with(&base), "{l}");
        assert_eq!(v["ok"], true, "{l}");
    }
    // The three forged jobs are counted (the board is written as they are dropped).
    let mut rejected = 0;
    for _ in 0..50 {
        rejected = status(&queue).await.unwrap().rejected;
        if rejected >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rejected, 5, "3 jobs and 2 results refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_options_stop_a_worker_before_its_first_job() {
    let nats = NatsServer::start();
    let queue = QueueUrl::parse(&nats.queue("opts"))
        .unwrap()
        .with_key(key("the fleet's own key, 32 bytes."));
    let submitter = Submitter::connect(&queue).await.unwrap();
    common::record_run(&submitter, 3).await;
    // The signed record is believed by a worker with the key...
    let mut worker = Worker::connect(&queue).await.unwrap();
    assert_eq!(worker.run_info(|| {}).await.unwrap().jobs, 3);
    // ...and by no worker without it, or with another.
    for other in [None, key("somebody else's key, 32 bytes")] {
        let q = QueueUrl::parse(&nats.queue("opts"))
            .unwrap()
            .with_key(other);
        let mut w = Worker::connect(&q).await.unwrap();
        let e = w.run_info(|| {}).await.unwrap_err();
        assert_eq!(e.kind(), QueueErrorKind::Forged, "{e}");
    }
    // Rewritten on the server, by someone without the key: unsigned, or the signed text
    // changed (a proxy of the attacker's).
    let info = RunInfo {
        options: r#"{"options":{"proxy":"http://attacker:3128"}}"#.into(),
        jobs: 3,
        ..RunInfo::default()
    };
    let kv = async_nats::jetstream::new(queue.client().await.unwrap())
        .get_key_value(queue.bucket())
        .await
        .unwrap();
    let original = kv.get("options").await.unwrap().unwrap();
    let mut signed: serde_json::Value = serde_json::from_slice(&original).unwrap();
    signed["signed"] = serde_json::to_string(&info).unwrap().into();
    let unsigned = serde_json::json!({ "signed": serde_json::to_string(&info).unwrap() });
    for forged in [signed, unsigned] {
        kv.put("options", Bytes::from(forged.to_string()))
            .await
            .unwrap();
        let mut w = Worker::connect(&queue).await.unwrap();
        let e = w.run_info(|| {}).await.unwrap_err();
        assert_eq!(e.kind(), QueueErrorKind::Forged, "{e}");
        assert!(!e.to_string().contains("attacker"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_only_results_of_submitted_lines_count() {
    let nats = NatsServer::start();
    let real = common::http_server(Duration::ZERO);
    let queue = QueueUrl::parse(&nats.queue("open")).unwrap();
    let n = 10u64;
    let submitter = Submitter::connect(&queue).await.unwrap();
    common::record_run(&submitter, n).await;
    // Results for lines past the end would make a collector that counts messages end early;
    // a payload that is no result line, or a job of a line never submitted, is dropped too.
    for line in [11u64, 12, 13, 9999] {
        forge(
            &queue,
            queue.results_subject(),
            &format!("open:{line}"),
            &[],
            &format!(r#"{{"line":{line},"ok":true}}"#),
        )
        .await;
    }
    forge(&queue, queue.results_subject(), "open:2:x", &[], "not json").await;
    forge(
        &queue,
        queue.results_subject(),
        "open:5:x",
        &[],
        r#"{"line":6,"ok":true}"#,
    )
    .await;
    forge(
        &queue,
        queue.jobs_subject(),
        "open:77",
        &[],
        &format!(r#"{{"url":"{}/x"}}"#, real.base()),
    )
    .await;
    forge(
        &queue,
        queue.jobs_subject(),
        "open:8:x",
        &[],
        b"\xff\xfe not UTF-8",
    )
    .await;
    let base = real.base().to_string();
    let (_dir, out, report) = submit_run_collect(&queue, &submitter, &base, n).await;
    assert_eq!((report.written, report.rejected), (n, 6));
    assert_eq!(real.hits(), n, "the job of line 77 was not run");
    // 6 results and 2 jobs (line 77, not UTF-8) refused, on the board for `corral status`.
    let mut rejected = 0;
    for _ in 0..50 {
        rejected = status(&queue).await.unwrap().rejected;
        if rejected >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rejected, 8);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines: Vec<u64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    lines.sort_unstable();
    assert_eq!(lines, (1..=n).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_line_that_is_no_job_gets_its_invalid_input_result_as_run_gives_it() {
    let nats = NatsServer::start();
    let real = common::http_server(Duration::ZERO);
    let queue = QueueUrl::parse(&nats.queue("bad"))
        .unwrap()
        .with_key(key("the fleet's own key, 32 bytes."));
    let submitter = Submitter::connect(&queue).await.unwrap();
    common::record_run(&submitter, 3).await;
    let job = |i: u64| format!(r#"{{"url":"{}/items/{i}"}}"#, real.base());
    let lines = [(1, job(1)), (2, "not a job".to_string()), (3, job(3))];
    submitter.submit(lines).await.unwrap();
    let stop = CancellationToken::new();
    let worker = common::start_worker(&queue, 4, &stop).await;
    let (_dir, out, report) =
        common::collect_within(&queue, Duration::from_secs(60), "all three lines").await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!((report.written, report.rejected), (3, 0));
    let text = std::fs::read_to_string(&out).unwrap();
    let bad = text.lines().find(|l| l.contains("\"line\":2,")).unwrap();
    assert!(bad.contains("invalid_input"), "{bad}");
    assert_eq!(real.hits(), 2);
}
