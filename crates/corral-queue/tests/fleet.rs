//! Jobs submitted once, run by two workers, collected into one results file: every input line
//! exactly once — on a real nats-server and a loopback HTTP server.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::NatsServer;
use corral_queue::collect::collect;
use corral_queue::submit::Submitter;
use corral_queue::url::QueueUrl;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_and_a_collector_give_every_line_exactly_once() {
    let nats = NatsServer::start();
    let server = common::http_server(Duration::ZERO);
    let base = server.base().to_string();
    let queue = QueueUrl::parse(&nats.queue("fleet")).unwrap();
    let n = 300u64;
    let jobs: Vec<(u64, String)> = (1..=n)
        .map(|i| (i, format!(r#"{{"url":"{base}/items/{i}"}}"#)))
        .collect();
    let submitter = Submitter::connect(&queue).await.unwrap();
    common::record_run(&submitter, n).await;
    let submitted = submitter.submit(jobs).await.unwrap();
    assert_eq!(submitted.queued, n);

    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..2 {
        workers.push(common::start_worker(&queue, 8, &stop).await);
    }
    let (_dir, out, collected) =
        common::collect_within(&queue, Duration::from_secs(60), "collected within a minute").await;
    stop.cancel();
    let mut ran = 0;
    for w in workers {
        let report = w.await.unwrap().unwrap();
        ran += report.stats.ok;
    }
    assert_eq!(collected.written, n);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = BTreeSet::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["ok"], true, "{l}");
        assert!(lines.insert(v["line"].as_u64().unwrap()), "line twice: {l}");
    }
    assert_eq!(lines, (1..=n).collect());
    assert_eq!(ran, n, "each job ran once between the two workers");
    assert_eq!(server.hits(), n);
    // Every job was acked after its result was stored: nothing is left to deliver.
    assert_eq!(
        Submitter::connect(&queue)
            .await
            .unwrap()
            .pending()
            .await
            .unwrap(),
        0
    );
    // A collector that crashed after writing but before acking gets every result again:
    // forget the collector's acks (delete its consumer) and collect again. The file is read
    // back first, so nothing is written twice.
    let js = async_nats::jetstream::new(async_nats::connect(queue.server()).await.unwrap());
    let forget_acks = || async {
        js.get_stream(queue.results_stream())
            .await
            .unwrap()
            .delete_consumer(corral_queue::collect::CONSUMER)
            .await
            .unwrap();
    };
    forget_acks().await;
    let again = collect(&queue, &out, &mut ()).await.unwrap();
    assert_eq!(again.written, 0, "the file already had every line");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().lines().count() as u64,
        n
    );
    // With a line missing from the file, only that line is written back, from the stream.
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("\"line\":7,"))
        .collect();
    assert_eq!(kept.len() as u64, n - 1);
    std::fs::write(&out, kept.join("\n") + "\n").unwrap();
    forget_acks().await;
    let refill = collect(&queue, &out, &mut ()).await.unwrap();
    assert_eq!(refill.written, 1);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().lines().count() as u64,
        n
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_out_of_deliveries_gets_a_max_deliveries_result() {
    use futures::StreamExt;
    let nats = NatsServer::start();
    let server = common::http_server(Duration::ZERO);
    let base = server.base().to_string();
    let queue = QueueUrl::parse(&nats.queue("dead")).unwrap();
    let n = 6u64;
    let submitter = Submitter::connect(&queue).await.unwrap();
    // Each job is handed out once at most; a holder that says nothing for 1 s loses it.
    submitter
        .configure(Duration::from_secs(1), 1)
        .await
        .unwrap();
    common::record_run(&submitter, n).await;
    let jobs = (1..=n).map(|i| (i, format!(r#"{{"id":"j{i}","url":"{base}/items/{i}"}}"#)));
    submitter.submit(jobs).await.unwrap();

    // A worker that takes two jobs and dies without a word.
    let js = async_nats::jetstream::new(async_nats::connect(queue.server()).await.unwrap());
    let consumer: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream(queue.jobs_stream())
        .await
        .unwrap()
        .get_consumer(corral_queue::worker::CONSUMER)
        .await
        .unwrap();
    let mut taken = consumer.fetch().max_messages(2).messages().await.unwrap();
    let mut lost = Vec::new();
    while let Some(m) = taken.next().await {
        lost.push(
            queue
                .line_of(
                    m.unwrap()
                        .headers
                        .as_ref()
                        .unwrap()
                        .get(async_nats::header::NATS_MESSAGE_ID)
                        .unwrap()
                        .as_str(),
                )
                .unwrap(),
        );
    }
    assert_eq!(lost.len(), 2);

    let stop = CancellationToken::new();
    let running = common::start_worker(&queue, 4, &stop).await;
    let (_dir, out, report) = common::collect_within(
        &queue,
        Duration::from_secs(30),
        "the collector ends: jobs out of deliveries get their result",
    )
    .await;
    stop.cancel();
    running.await.unwrap().unwrap();
    assert_eq!((report.written, report.undeliverable), (n, 2));
    assert_eq!(server.hits(), n - 2, "the lost jobs were not run");
    let text = std::fs::read_to_string(&out).unwrap();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let line = v["line"].as_u64().unwrap();
        if lost.contains(&line) {
            assert_eq!(v["ok"], false, "{l}");
            assert_eq!(v["error"]["kind"], "max_deliveries", "{l}");
            assert_eq!(v["id"], format!("j{line}"), "{l}");
            // Its worker may have sent it before it died: never "0 attempts".
            assert_eq!(v["error"]["maybe_sent"], true, "{l}");
            assert!(v["attempts"].as_u64().unwrap() >= 1, "{l}");
        } else {
            assert_eq!(v["ok"], true, "{l}");
        }
    }
    assert_eq!(text.lines().count() as u64, n);
}
