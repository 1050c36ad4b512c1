//! Submitting jobs into a run's stream on a real nats-server.

mod common;

use common::NatsServer;
use corral_queue::submit::Submitter;
use corral_queue::url::QueueUrl;

fn lines(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
    range
        .map(|n| (n, format!(r#"{{"url":"http://127.0.0.1:9/items/{n}"}}"#)))
        .collect()
}

#[tokio::test]
async fn every_line_is_queued_once_however_often_it_is_submitted() {
    let server = NatsServer::start();
    let queue = QueueUrl::parse(&server.queue("run-1")).unwrap();
    let submitter = Submitter::connect(&queue).await.unwrap();
    let first = submitter.submit(lines(1..=600)).await.unwrap();
    assert_eq!((first.queued, first.duplicates), (600, 0));
    // A second submit of an overlapping range (a resume after a crash half-way, or the same
    // file again): only the new lines are queued.
    let again = Submitter::connect(&queue).await.unwrap();
    let second = again.submit(lines(400..=1000)).await.unwrap();
    assert_eq!((second.queued, second.duplicates), (400, 201));
    assert_eq!(again.pending().await.unwrap(), 1000);
    // Another run on the same server is separate.
    let other = QueueUrl::parse(&server.queue("run-2")).unwrap();
    let o = Submitter::connect(&other).await.unwrap();
    assert_eq!(o.submit(lines(1..=5)).await.unwrap().queued, 5);
    assert_eq!(o.pending().await.unwrap(), 5);
}

#[tokio::test]
async fn an_unreachable_server_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let queue = QueueUrl::parse(&format!("nats://127.0.0.1:{port}/r")).unwrap();
    let err = Submitter::connect(&queue).await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}
